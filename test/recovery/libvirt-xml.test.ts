import { inflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { bridgeName, diskTarget, domainXml, type DomainXmlOptions, FERRY_NS, networkXml, probeMac, specProblem, xmlEscape } from '../../recovery/targets/libvirt-xml';
import { domainStopped } from '../../recovery/targets/libvirt';
import { isPng, ppmToPng, pngSize } from '../../recovery/targets/png';
import type { VmSpec } from '../../recovery/targets/target';

function spec(over: Partial<VmSpec> = {}): VmSpec {
  return {
    name: 'ferry-t1-web',
    vcpus: 2,
    memoryMiB: 512,
    disks: [
      { path: '/srv/ferry/overlays/web-boot.qcow2', format: 'qcow2' },
      { path: '/srv/ferry/overlays/web-data.img', format: 'raw' },
    ],
    network: { kind: 'sandbox', name: 'ferry-t1-net', address: '10.77.0.11', mac: '52:54:00:AB:cd:01' },
    serialLog: '/srv/ferry/jobs/t1/web.serial.log',
    workDir: '/srv/ferry/jobs/t1/web',
    probePorts: [],
    ...over,
  };
}

const TCG: DomainXmlOptions = { accel: 'tcg', qemuUser: 'root', probeForwards: [] };

/** The elements named `tag` with their attributes, in document order (enough for our flat XML). */
function elements(xml: string, tag: string): string[] {
  return [...xml.matchAll(new RegExp(`<${tag}[^>]*>`, 'g'))].map((m) => m[0]);
}

describe('libvirt domain XML', () => {
  it('escapes every value that comes from the spec', () => {
    expect(xmlEscape(`a&b<c>"d"'e'`)).toBe('a&amp;b&lt;c&gt;&quot;d&quot;&apos;e&apos;');
    const xml = domainXml(spec({ disks: [{ path: `/srv/it's <a> & "b".img`, format: 'raw' }], serialLog: '/srv/log&<1>.txt' }), TCG);
    expect(xml).toContain('<source file="/srv/it&apos;s &lt;a&gt; &amp; &quot;b&quot;.img"/>');
    expect(xml).toContain('<source path="/srv/log&amp;&lt;1&gt;.txt" append="off"/>');
    expect(xml).not.toMatch(/<a>|& "b"/);
  });

  it('lists disks in order with their formats on virtio, the first one booting', () => {
    const xml = domainXml(spec(), TCG);
    expect(elements(xml, 'source file=')).toEqual(['<source file="/srv/ferry/overlays/web-boot.qcow2"/>', '<source file="/srv/ferry/overlays/web-data.img"/>']);
    expect(elements(xml, 'driver ').map((d) => /type="(\w+)"/.exec(d)?.[1])).toEqual(['qcow2', 'raw']);
    expect(elements(xml, 'target dev=')).toEqual(['<target dev="vda" bus="virtio"/>', '<target dev="vdb" bus="virtio"/>']);
    expect(elements(xml, 'boot ')).toEqual(['<boot order="1"/>']);
    expect(xml.indexOf('<boot order="1"/>')).toBeLessThan(xml.indexOf('web-data.img'));
    expect([0, 25, 26, 27, 701].map(diskTarget)).toEqual(['vda', 'vdz', 'vdaa', 'vdab', 'vdzz']);
  });

  it('carries memory, vCPUs, name, accelerator, serial file, VGA and the MAC', () => {
    const xml = domainXml(spec(), TCG);
    expect(xml).toMatch(/^<domain type="qemu"/);
    expect(xml).toContain('<name>ferry-t1-web</name>');
    expect(xml).toContain('<memory unit="MiB">512</memory>');
    expect(xml).toContain('<vcpu>2</vcpu>');
    expect(xml).toContain('<cpu mode="maximum" check="none"/>');
    expect(xml).toMatch(/<serial type="file">\s*<source path="\/srv\/ferry\/jobs\/t1\/web.serial.log" append="off"\/>/);
    expect(xml).toContain('<model type="vga"');
    expect(xml).toMatch(/<interface type="network">\s*<source network="ferry-t1-net"\/>\s*<mac address="52:54:00:ab:cd:01"\/>/);
    expect(xml).toContain('<rom enabled="no"/>');
    expect(xml).toContain(FERRY_NS);
    expect(xml).toContain('<label>+0:+0</label>');
    expect(xml).not.toContain('qemu:commandline');
    const kvm = domainXml(spec({ vcpus: 4, memoryMiB: 2048 }), { ...TCG, accel: 'kvm', qemuUser: 'libvirt' });
    expect(kvm).toMatch(/^<domain type="kvm"/);
    expect(kvm).toContain('<cpu mode="host-passthrough" check="none"/>');
    expect(kvm).toContain('<vcpu>4</vcpu>');
    expect(kvm).toContain('<memory unit="MiB">2048</memory>');
    expect(kvm).not.toContain('seclabel');
  });

  it('a site VM joins the named libvirt network', () => {
    const xml = domainXml(spec({ network: { kind: 'site', name: 'dr-lan', address: '', mac: '52:54:00:00:00:09' } }), TCG);
    expect(xml).toContain('<source network="dr-lan"/>');
  });

  it('probe ports become a restricted user-mode NIC with host forwards on 127.0.0.1', () => {
    const xml = domainXml(spec({ probePorts: [22, 80] }), {
      ...TCG,
      probeForwards: [
        { hostPort: 40022, guestPort: 22 },
        { hostPort: 40080, guestPort: 80 },
      ],
    });
    expect(xml).toContain('xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0"');
    expect(xml).toContain('<qemu:arg value="user,id=ferryprobe,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22,hostfwd=tcp:127.0.0.1:40080-:80"/>');
    expect(xml).toContain(`mac=${probeMac('52:54:00:AB:cd:01')},addr=0x1e,romfile="`);
    expect(probeMac('52:54:00:AB:cd:01')).toBe('52:54:00:2b:cd:01');
  });

  it('refuses specs that cannot become a domain, with the reason', () => {
    expect(specProblem(spec())).toBeNull();
    expect(specProblem(spec({ name: 'bad name' }))).toMatch(/VM name "bad name" is not a safe identifier/);
    expect(specProblem(spec({ name: '../x' }))).toMatch(/not a safe identifier/);
    expect(specProblem(spec({ vcpus: 0 }))).toMatch(/vcpus must be an integer from 1/);
    expect(specProblem(spec({ memoryMiB: 1.5 }))).toMatch(/memoryMiB must be an integer/);
    expect(specProblem(spec({ disks: [] }))).toMatch(/at least one disk/);
    expect(specProblem(spec({ disks: [{ path: 'rel.img', format: 'raw' }] }))).toMatch(/must be absolute/);
    expect(specProblem(spec({ network: { kind: 'sandbox', name: 'n', address: '', mac: 'aa:bb' } }))).toMatch(/MAC must look like/);
    expect(specProblem(spec({ probePorts: [70000] }))).toMatch(/probe port must be 1-65535/);
    expect(() => domainXml(spec({ vcpus: -1 }), TCG)).toThrow(/vcpus/);
  });
});

describe('libvirt sandbox network XML', () => {
  it('is a bridge with no <forward> and no host address', () => {
    const xml = networkXml('ferry-t1-net', bridgeName('ferry-t1-net'));
    expect(xml).toContain('<name>ferry-t1-net</name>');
    expect(xml).toMatch(/<bridge name="fy[0-9a-f]{10}" stp="off" delay="0"\/>/);
    expect(xml).not.toContain('<forward');
    expect(xml).not.toContain('<ip');
    expect(xml).not.toContain('<dns');
    expect(xml).toContain(FERRY_NS);
    expect(networkXml('a<b', 'br&')).toContain('<name>a&lt;b</name>');
  });

  it('bridge names fit IFNAMSIZ and are stable and distinct', () => {
    const long = 'ferry-test-failover-plan-with-a-very-long-name-job-123456';
    expect(bridgeName(long).length).toBeLessThanOrEqual(15);
    expect(bridgeName(long)).toBe(bridgeName(long));
    expect(bridgeName('ferry-j1-net')).not.toBe(bridgeName('ferry-j2-net'));
  });
});

describe('domain state and console pictures', () => {
  it('knows when virsh domstate means qemu is gone', () => {
    expect(domainStopped('shut off (destroyed)')).toBe(true);
    expect(domainStopped('shut off (shutdown)\n')).toBe(true);
    expect(domainStopped('crashed (panicked)')).toBe(true);
    expect(domainStopped('running (booted)')).toBe(false);
    expect(domainStopped('in shutdown')).toBe(false);
    expect(domainStopped('paused (user)')).toBe(false);
  });

  it('converts a PPM screen to a PNG with the same pixels', () => {
    const width = 3;
    const height = 2;
    const pixels = Buffer.from([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
    const ppm = Buffer.concat([Buffer.from(`P6\n# qemu\n${width} ${height}\n255\n`), pixels]);
    const png = ppmToPng(ppm);
    expect(isPng(png)).toBe(true);
    expect(pngSize(png)).toEqual({ width, height });
    const idatLen = png.readUInt32BE(33);
    expect(png.subarray(37, 41).toString('ascii')).toBe('IDAT');
    const raw = inflateSync(png.subarray(41, 41 + idatLen));
    expect(raw).toEqual(Buffer.concat([Buffer.from([0]), pixels.subarray(0, 9), Buffer.from([0]), pixels.subarray(9)]));
    expect(() => ppmToPng(Buffer.from('P6\n3 2\n255\n\x00'))).toThrow(/truncated/);
    expect(() => ppmToPng(Buffer.from('GIF89a'))).toThrow(/PPM/);
  });
});
