import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { inflateSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LibvirtTarget } from '../../recovery/targets/libvirt';
import { bridgeName } from '../../recovery/targets/libvirt-xml';
import { isPng, pngSize } from '../../recovery/targets/png';
import { type RunningVm, TargetError, type VmSpec } from '../../recovery/targets/target';
import { type Libvirtd, libvirtdMissing, startLibvirtd, stopLibvirtd } from '../helpers/libvirtd';
import { tempDirs } from '../helpers/temp-dirs';

const repo = path.resolve(__dirname, '../..');
const tinyDisk = path.join(repo, 'test/vm/bootable/tiny-disk.sh');
const PREFIX = 'ferry-lvtest-';
const LOGIN = /ferry-tiny login: /;
const missing = libvirtdMissing();

describe('libvirt target without a daemon', () => {
  it('check() says when virsh is missing', async () => {
    const c = await new LibvirtTarget({ uri: 'qemu:///system', virsh: '/nonexistent/virsh' }).check();
    expect(c.ok).toBe(false);
    expect(c.detail).toMatch(/virsh not found \(\/nonexistent\/virsh; install libvirt-clients\)/);
  });

  it.skipIf(missing !== null && process.env.CI !== 'true')('check() says when the daemon is not reachable', async () => {
    const c = await new LibvirtTarget({ uri: 'qemu+unix:///system?socket=/nonexistent/libvirt-sock' }).check();
    expect(c.ok).toBe(false);
    expect(c.detail).toMatch(/libvirt at qemu\+unix:\/\/\/system\?socket=\/nonexistent\/libvirt-sock is not reachable \(is libvirtd running\?\): virsh version: .*/);
  });

  it('refuses a bad spec before touching libvirt', async () => {
    const t = new LibvirtTarget({ uri: 'qemu:///system', virsh: '/nonexistent/virsh' });
    const bad = { name: 'a b', vcpus: 1, memoryMiB: 64, disks: [], network: { kind: 'sandbox', name: 'n', address: '', mac: '52:54:00:00:00:01' }, serialLog: '/tmp/x', workDir: '/tmp', probePorts: [] } as VmSpec;
    await expect(t.boot(bad)).rejects.toThrow(TargetError);
    await expect(t.boot(bad)).rejects.toThrow(/VM name "a b" is not a safe identifier/);
  });
});

/** Sends one command to the tiny guest's port-22 service through the probe forward; returns its answer line. */
function guestCommand(hostPort: number, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port: hostPort });
    let text = '';
    let sent = false;
    const timer = setTimeout(() => (s.destroy(), reject(new Error(`guest command "${command}" got no answer: ${JSON.stringify(text)}`))), 15_000);
    s.on('data', (d) => {
      text += d.toString();
      const lines = text.split('\n');
      if (!sent && lines.length > 1) {
        sent = true;
        s.write(`${command}\n`);
      }
      if (lines.length > 2) {
        clearTimeout(timer);
        s.destroy();
        resolve(lines[1]);
      }
    });
    s.on('error', (e) => (clearTimeout(timer), reject(e)));
  });
}

/** The host port libvirt's domain forwards to guest port `port` (read from the running domain's XML). */
function forwardedPort(name: string, port: number): number {
  const xml = execFileSync('virsh', ['-c', 'qemu:///system', 'dumpxml', name], { encoding: 'utf8' });
  const m = new RegExp(`hostfwd=tcp:127\\.0\\.0\\.1:(\\d+)-:${port}\\b`).exec(xml);
  if (!m) throw new Error(`no forward of port ${port} in ${name}'s XML`);
  return Number(m[1]);
}

function distinctPixelBytes(png: Buffer): number {
  const idat: Buffer[] = [];
  for (let off = 8; off < png.length; ) {
    const len = png.readUInt32BE(off);
    if (png.subarray(off + 4, off + 8).toString('ascii') === 'IDAT') idat.push(png.subarray(off + 8, off + 8 + len));
    off += 12 + len;
  }
  return new Set(inflateSync(Buffer.concat(idat))).size;
}

const sha = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

// Real libvirtd (qemu:///system, TCG). In CI a missing libvirt fails here instead of skipping.
describe.skipIf(missing !== null && process.env.CI !== 'true')('libvirt target on a real libvirtd', () => {
  const tmp = tempDirs();
  let daemon: Libvirtd | null = null;
  let target: LibvirtTarget;
  let dir: string;
  const vms: RunningVm[] = [];

  beforeAll(async () => {
    if (missing) throw new Error(`libvirt cannot run here: ${missing}`);
    daemon = await startLibvirtd();
    console.log(`libvirtd ready after ${daemon.readyMs} ms${daemon.started.length ? ' (started by the test)' : ' (already running)'}`);
    target = new LibvirtTarget({ uri: daemon.uri });
    await target.sweep(PREFIX);
    dir = tmp('libvirt');
  });

  afterAll(async () => {
    for (const vm of vms) await vm.stop({ graceful: false }).catch(() => undefined);
    if (target) await target.sweep(PREFIX).catch(() => undefined);
    if (daemon) await stopLibvirtd(daemon);
  });

  it('boots two machines on their own isolated network, sees them log in, probes, screenshots, stops and leaves nothing', async () => {
    const check = await target.check();
    expect(check.ok, check.detail).toBe(true);
    expect(check.detail).toMatch(/^libvirt [\d.]+ at qemu:\/\/\/system, QEMU [\d.]+ \((KVM|TCG)/);

    // Machine a boots from a qcow2 overlay over its "replica" (which must stay untouched), b from a raw disk.
    const replica = path.join(dir, 'a-replica.img');
    execFileSync(tinyDisk, [replica, '--ip', '10.77.0.11/24', '--marker', 'libvirt-a'], { stdio: 'pipe' });
    const overlay = path.join(dir, 'a-overlay.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', replica, '-F', 'raw', overlay]);
    const diskB = path.join(dir, 'b.img');
    execFileSync(tinyDisk, [diskB, '--ip', '10.77.0.12/24', '--marker', 'libvirt-b'], { stdio: 'pipe' });
    const replicaHash = sha(replica);

    const netName = `${PREFIX}net`;
    const spec = (id: 'a' | 'b', disk: VmSpec['disks'][number], mac: string, address: string): VmSpec => {
      const workDir = path.join(dir, id);
      fs.mkdirSync(workDir, { recursive: true });
      return { name: `${PREFIX}${id}`, vcpus: 1, memoryMiB: 256, disks: [disk], network: { kind: 'sandbox', name: netName, address, mac }, serialLog: path.join(workDir, 'serial.log'), workDir, probePorts: [22] };
    };
    const specA = spec('a', { path: overlay, format: 'qcow2' }, '52:54:00:77:00:11', '10.77.0.11');
    const specB = spec('b', { path: diskB, format: 'raw' }, '52:54:00:77:00:12', '10.77.0.12');

    const t0 = Date.now();
    const [a, b] = await Promise.all([target.boot(specA), target.boot(specB)]);
    vms.push(a, b);
    expect(a.runsOn).toBe(`libvirt:${PREFIX}a`);
    await expect(target.boot(specA)).rejects.toThrow(/already exists/);

    await Promise.all([a.waitSerial(LOGIN, 90_000), b.waitSerial(LOGIN, 90_000)]);
    console.log(`both machines at their login prompt after ${Date.now() - t0} ms`);
    expect(fs.readFileSync(specA.serialLog, 'utf8')).toContain('ferry-tiny: marker: libvirt-a');
    expect(fs.readFileSync(specB.serialLog, 'utf8')).toContain('ferry-tiny: marker: libvirt-b');

    // The sandbox: a bridge of its own, no forward, no host address; the machines reach each other.
    const netXml = execFileSync('virsh', ['-c', daemon!.uri, 'net-dumpxml', netName], { encoding: 'utf8' });
    expect(netXml).not.toContain('<forward');
    // No host address at all on the bridge: not IPv4, not even an IPv6 link-local (libvirt turns IPv6 off there).
    expect(execFileSync('ip', ['-o', 'addr', 'show', 'dev', bridgeName(netName)], { encoding: 'utf8' }).trim()).toBe('');
    expect(await a.probeTcp(22, 10_000)).toBe(true);
    await expect(a.probeTcp(80, 1000)).rejects.toThrow(/port 80 is not one of its probe ports \(22\)/);
    expect(await guestCommand(forwardedPort(a.name, 22), 'connect 10.77.0.12 22')).toBe('reachable');
    expect(await guestCommand(forwardedPort(b.name, 22), 'ping 10.77.0.11')).toBe('reachable');
    // Nothing else: not the host through the probe NIC (qemu's 10.0.2.2 is the host's loopback there).
    const hostService = net.createServer((c) => c.end('host\n'));
    await new Promise<void>((r) => hostService.listen(0, '127.0.0.1', r));
    try {
      const hostPort = (hostService.address() as net.AddressInfo).port;
      expect(await guestCommand(forwardedPort(a.name, 22), `connect 10.0.2.2 ${hostPort}`)).toBe('unreachable');
    } finally {
      hostService.close();
    }

    const shot = path.join(dir, 'a.png');
    await a.screenshot(shot);
    const png = fs.readFileSync(shot);
    expect(isPng(png)).toBe(true);
    expect(pngSize(png).width).toBeGreaterThanOrEqual(640);
    expect(distinctPixelBytes(png)).toBeGreaterThan(2); // text on a console, not a blank screen
    if (process.env.FERRY_LIBVIRT_SHOT) fs.copyFileSync(shot, process.env.FERRY_LIBVIRT_SHOT); // to look at it

    // a: ACPI power button (the tiny guest powers off on it); the network stays for b.
    await a.stop({ graceful: true, timeoutMs: 30_000 });
    expect(await a.exited).toMatch(/^shut off \(shutdown\)/);
    expect(fs.readFileSync(specA.serialLog, 'utf8')).toContain('power button: powering off');
    expect(execFileSync('virsh', ['-c', daemon!.uri, 'net-info', netName], { encoding: 'utf8' })).toMatch(/Active:\s+yes/);

    // b: a wait still pending when the machine stops fails at once with the log's tail.
    const waiting = expect(b.waitSerial(/never printed/, 60_000)).rejects.toThrow(
      /the VM stopped \(shut off \(destroyed\)\) before its serial console matched .*serial log ends:\n[\s\S]*ferry-tiny login: /,
    );
    const stoppedAt = Date.now();
    await b.stop({ graceful: false });
    await waiting;
    expect(Date.now() - stoppedAt).toBeLessThan(15_000);
    await b.stop({ graceful: false }); // idempotent

    expect(await target.domainExists(a.name)).toBe(false);
    expect(await target.domainExists(b.name)).toBe(false);
    expect(() => execFileSync('virsh', ['-c', daemon!.uri, 'net-info', netName], { stdio: 'pipe' })).toThrow(/failed to get network/);
    expect(sha(replica)).toBe(replicaHash);
    expect(await target.sweep(PREFIX)).toEqual([]);
  }, 180_000);

  it('refuses a missing site network and a missing disk clearly, leaving nothing behind', async () => {
    const workDir = path.join(dir, 'bad');
    fs.mkdirSync(workDir, { recursive: true });
    const base: VmSpec = { name: `${PREFIX}bad`, vcpus: 1, memoryMiB: 64, disks: [{ path: path.join(workDir, 'missing.img'), format: 'raw' }], network: { kind: 'site', name: `${PREFIX}nosuch`, address: '', mac: '52:54:00:77:00:14' }, serialLog: path.join(workDir, 'serial.log'), workDir, probePorts: [] };
    await expect(target.boot(base)).rejects.toThrow(new RegExp(`site network ${PREFIX}nosuch is not defined on qemu:///system`));
    const sandbox: VmSpec = { ...base, network: { ...base.network, kind: 'sandbox', name: `${PREFIX}net3` } };
    await expect(target.boot(sandbox)).rejects.toThrow(new RegExp(`libvirt could not start ${PREFIX}bad: .*missing\\.img`));
    expect(await target.domainExists(`${PREFIX}bad`)).toBe(false);
    expect(execFileSync('virsh', ['-c', daemon!.uri, 'net-list', '--all', '--name'], { encoding: 'utf8' })).not.toContain(`${PREFIX}net3`);
  });

  it('sweep removes what a crashed run left behind (domain and network), and only Ferry\'s', async () => {
    const workDir = path.join(dir, 'c');
    fs.mkdirSync(workDir, { recursive: true });
    const disk = path.join(workDir, 'c.img');
    fs.writeFileSync(disk, Buffer.alloc(1024 * 1024));
    const vm = await target.boot({ name: `${PREFIX}c`, vcpus: 1, memoryMiB: 64, disks: [{ path: disk, format: 'raw' }], network: { kind: 'sandbox', name: `${PREFIX}net2`, address: '', mac: '52:54:00:77:00:13' }, serialLog: path.join(workDir, 'serial.log'), workDir, probePorts: [] });
    // Someone else's network under the same prefix: a sweep leaves it alone.
    const foreign = `${PREFIX}foreign`;
    const foreignXml = path.join(workDir, 'foreign.xml');
    fs.writeFileSync(foreignXml, `<network><name>${foreign}</name><bridge name="fylvforeign" stp="off"/></network>`);
    execFileSync('virsh', ['-c', daemon!.uri, 'net-define', foreignXml], { stdio: 'pipe' });
    try {
      // A different target instance, as after a restart of the service.
      const swept = await new LibvirtTarget({ uri: daemon!.uri }).sweep(PREFIX);
      expect(swept.sort()).toEqual([`${PREFIX}c`, `network:${PREFIX}net2`]);
      expect(execFileSync('virsh', ['-c', daemon!.uri, 'net-list', '--all', '--name'], { encoding: 'utf8' })).toContain(foreign);
    } finally {
      execFileSync('virsh', ['-c', daemon!.uri, 'net-undefine', foreign], { stdio: 'pipe' });
    }
    expect(await vm.exited).toMatch(/shut off|gone/);
    expect(await target.domainExists(`${PREFIX}c`)).toBe(false);
    await vm.stop({ graceful: false }); // after a sweep: nothing left, no error
  });
});
