/**
 * The qemu recovery target with real qemu (TCG) and real boots of the tiny bootable disk
 * (test/vm/bootable/tiny-disk.sh): two VMs on overlays over two disks share one sandbox network,
 * a third runs on the site network, a fourth has a disk that does not boot. The VMs boot once;
 * the assertions share them. Needs root (the disk fixture uses loop devices and mount): skipped
 * locally when not root, never in CI.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOverlay, createPersistentDisk, removeDisk } from '../../recovery/disks';
import { qemuArgs, probeMac, specProblems } from '../../recovery/targets/qemu-args';
import { QemuTarget, type QemuVm } from '../../recovery/targets/qemu';
import { splitQmpLines } from '../../recovery/targets/qmp';
import { FrameReader, MAX_FRAME, SandboxSwitch } from '../../recovery/targets/sandbox-switch';
import { TargetError, type VmSpec } from '../../recovery/targets/target';
import { sha256File } from '../../common/file-hash';

const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false' && process.env.CI !== '0';
const isRoot = process.getuid?.() === 0;
const skip = !isRoot && !inCi;
if (skip) console.warn('test/recovery/qemu-target.test.ts: SKIPPED: the tiny disk fixture needs root (loop devices). With CI=true it fails instead.');

const repo = path.resolve(__dirname, '../..');
const LOGIN = /ferry-tiny login: /;

function sh(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 300_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${stderr || err.message}`));
      else resolve(stdout);
    });
  });
}

/** The EUI-64 IPv6 link-local address a Linux guest derives from its MAC. */
function linkLocal(mac: string): string {
  const b = mac.split(':').map((x) => Number.parseInt(x, 16));
  b[0] ^= 2;
  const words = [(b[0] << 8) | b[1], (b[2] << 8) | 0xff, (0xfe << 8) | b[3], (b[4] << 8) | b[5]];
  return `fe80::${words.map((w) => w.toString(16)).join(':')}`;
}

/** One command to the tiny guest's port 22 through the host forward; its one-line answer. */
function ask(vm: QemuVm, command: string, timeoutMs = 15_000): Promise<string> {
  const { host, port } = vm.hostForward(22);
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ host, port });
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer to ${command} within ${timeoutMs} ms (got ${JSON.stringify(data)})`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${command}\n`));
    socket.on('data', (d: string) => {
      data += d;
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      const lines = data.trim().split('\n');
      if (lines[0] !== 'ferry-tiny ready') reject(new Error(`unexpected answer to ${command}: ${JSON.stringify(data)}`));
      else resolve(lines.slice(1).join('\n').trim());
    });
  });
}

/** Asks until the answer is `want` (a guest's link-local address needs a moment after the NIC comes up). */
async function askUntil(vm: QemuVm, command: string, want: string, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let answer = '';
  while (Date.now() < deadline) {
    answer = await ask(vm, command);
    if (answer === want) return answer;
  }
  return answer;
}

interface PngInfo {
  width: number;
  height: number;
  distinctBytes: number;
}

function readPng(file: string): PngInfo {
  const buf = fs.readFileSync(file);
  expect(buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))).toBe(true);
  expect(buf.toString('latin1', 12, 16)).toBe('IHDR');
  const width = buf.readUInt32BE(16);
  const height = buf.readUInt32BE(20);
  const idat: Buffer[] = [];
  for (let off = 8; off + 8 <= buf.length; ) {
    const len = buf.readUInt32BE(off);
    if (buf.toString('latin1', off + 4, off + 8) === 'IDAT') idat.push(buf.subarray(off + 8, off + 8 + len));
    off += 12 + len;
  }
  const pixels = zlib.inflateSync(Buffer.concat(idat));
  const seen = new Set<number>();
  for (const byte of pixels) seen.add(byte);
  return { width, height, distinctBytes: seen.size };
}

describe('qemu target: pure parts', () => {
  const spec: VmSpec = {
    name: 'web-1',
    vcpus: 2,
    memoryMiB: 512,
    disks: [{ path: '/d/a.qcow2', format: 'qcow2' }, { path: '/d/b.img', format: 'raw' }],
    network: { kind: 'sandbox', name: 'job-7', address: '10.77.0.11', mac: '52:54:00:00:00:11' },
    serialLog: '/w/serial.log',
    workDir: '/w',
    probePorts: [22],
  };

  it('accepts a good spec and names every problem of a bad one', () => {
    expect(specProblems(spec)).toEqual([]);
    const bad = specProblems({ ...spec, name: '../x', vcpus: 0, disks: [], workDir: '/w,x', network: { ...spec.network, mac: 'zz' }, probePorts: [22, 22, 70000] });
    expect(bad.join('\n')).toMatch(/name "..\/x"/);
    expect(bad.join('\n')).toMatch(/vcpus/);
    expect(bad.join('\n')).toMatch(/must not contain a comma/);
    expect(bad.join('\n')).toMatch(/no disks/);
    expect(bad.join('\n')).toMatch(/mac "zz"/);
    expect(bad.join('\n')).toMatch(/22 appears twice/);
    expect(bad.join('\n')).toMatch(/70000 is not a TCP port/);
  });

  it('builds a sandbox command line: hub NIC, restricted probe NIC, virtio disks, first disk boots', () => {
    const args = qemuArgs(spec, { accel: 'tcg', pidFile: '/r/web-1.pid', qmpSocket: '/w/qmp.sock', switchSocket: '/r/sandbox-job-7.sock', biosSerialPortFile: '/w/b', probeForwards: new Map([[22, 40022]]) }).join(' ');
    expect(args).toContain('-accel tcg -cpu max');
    expect(args).toContain('-netdev stream,id=net0,server=off,addr.type=unix,addr.path=/r/sandbox-job-7.sock');
    expect(args).toContain('virtio-net-pci,netdev=net0,mac=52:54:00:00:00:11,addr=0x3,romfile=');
    expect(args).toContain('-netdev user,id=probe0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22');
    expect(args).toContain(`mac=${probeMac(spec.network.mac)},addr=0x4`);
    expect(args).toContain('file=/d/a.qcow2,format=qcow2');
    expect(args).toContain('drive=disk0,addr=0x5,bootindex=1');
    expect(args).toMatch(/drive=disk1,addr=0x6$/);
    expect(args).not.toMatch(/restrict=off/);
  });

  it('site network: one user-mode NIC with the probe forwards, no restriction', () => {
    const args = qemuArgs({ ...spec, network: { ...spec.network, kind: 'site' } }, { accel: 'kvm', pidFile: '/p', qmpSocket: '/q', switchSocket: null, biosSerialPortFile: '/w/b', probeForwards: new Map([[80, 40080]]) }).join(' ');
    expect(args).toContain('-accel kvm -cpu host');
    expect(args).toContain('-netdev user,id=net0,hostfwd=tcp:127.0.0.1:40080-:80');
    expect(args).not.toContain('probe0');
  });

  it('splits length-prefixed frames across chunk boundaries and refuses absurd lengths', () => {
    const frame = (n: number, fill: number): Buffer => {
      const b = Buffer.alloc(4 + n, fill);
      b.writeUInt32BE(n, 0);
      return b;
    };
    const stream = Buffer.concat([frame(60, 1), frame(1514, 2)]);
    const reader = new FrameReader();
    const out = [...reader.push(stream.subarray(0, 3)), ...reader.push(stream.subarray(3, 70)), ...reader.push(stream.subarray(70))];
    expect(out.map((f) => f.length)).toEqual([64, 1518]);
    expect(out[1][4]).toBe(2);
    const bad = Buffer.alloc(4);
    bad.writeUInt32BE(MAX_FRAME + 1, 0);
    expect(() => new FrameReader().push(bad)).toThrow(/bad frame length/);
  });

  it('splits QMP lines and keeps a partial one', () => {
    expect(splitQmpLines('{"a":1}\r\n{"b":2}\n{"c"')).toEqual({ lines: ['{"a":1}', '{"b":2}'], rest: '{"c"' });
  });
});

describe('sandbox switch over real unix sockets', () => {
  const frame = (payload: string): Buffer => {
    const body = Buffer.from(payload);
    const b = Buffer.alloc(4 + body.length);
    b.writeUInt32BE(body.length, 0);
    body.copy(b, 4);
    return b;
  };
  const port = async (socketPath: string): Promise<{ socket: net.Socket; received: () => string }> => {
    const socket = net.createConnection(socketPath);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    let got = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
    });
    return { socket, received: () => got.toString('latin1') };
  };
  const until = async (cond: () => boolean, what: string): Promise<void> => {
    const deadline = Date.now() + 5_000;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setImmediate(r));
    }
  };

  it('forwards each frame to every other port, not back; drops a port that sends garbage; close removes the socket', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-sw-'));
    const sw = await SandboxSwitch.start(path.join(dir, 'hub.sock'));
    try {
      const [p1, p2, p3] = [await port(sw.socketPath), await port(sw.socketPath), await port(sw.socketPath)];
      await until(() => sw.portCount === 3, 'three ports');
      p1.socket.write(frame('from-one'));
      await until(() => p2.received().includes('from-one') && p3.received().includes('from-one'), 'frame at ports 2 and 3');
      p2.socket.write(frame('from-two').subarray(0, 5));
      p2.socket.write(frame('from-two').subarray(5));
      await until(() => p1.received().includes('from-two') && p3.received().includes('from-two'), 'split frame at ports 1 and 3');
      expect(p1.received()).not.toContain('from-one');
      expect(p2.received()).not.toContain('from-two');
      expect(p3.received()).toBe(`${frame('from-one').toString('latin1')}${frame('from-two').toString('latin1')}`);
      const bad = Buffer.alloc(4);
      bad.writeUInt32BE(MAX_FRAME + 1, 0);
      p3.socket.write(bad);
      await until(() => sw.portCount === 2, 'the bad port dropped');
    } finally {
      await sw.close();
    }
    expect(fs.existsSync(path.join(dir, 'hub.sock'))).toBe(false);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

describe.skipIf(skip)('qemu target: real VMs (TCG)', () => {
  let dir: string;
  let target: QemuTarget;
  const vms: QemuVm[] = [];
  let a: QemuVm;
  let b: QemuVm;
  let site: QemuVm;
  let zero: QemuVm;
  const base = { a: '', b: '', c: '' };
  const baseHash = { a: '', b: '' };
  const overlay = { a: '', b: '' };
  const overlayHashAtStart = { a: '' };
  const macA = '52:54:00:00:00:11';
  const macB = '52:54:00:00:00:12';
  let bootMs = 0;
  let hostListener: net.Server;
  let hostPort = 0;
  let hostConnections = 0;

  const spec = (name: string, disk: string, format: 'raw' | 'qcow2', network: VmSpec['network']): VmSpec => ({
    name,
    vcpus: 1,
    memoryMiB: 256,
    disks: [{ path: disk, format }],
    network,
    serialLog: path.join(dir, name, 'serial.log'),
    workDir: path.join(dir, name),
    probePorts: [22, 23],
  });

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-qemu-'));
    const tiny = path.join(repo, 'test/vm/bootable/tiny-disk.sh');
    base.a = path.join(dir, 'a.img');
    base.b = path.join(dir, 'b.img');
    base.c = path.join(dir, 'c.img');
    await sh(tiny, [base.a, '--marker', 'disk-a', '--ip', '10.77.0.11/24']);
    await sh(tiny, [base.b, '--marker', 'disk-b', '--ip', '10.77.0.12/24']);
    await sh(tiny, [base.c, '--marker', 'disk-c']);
    const zeros = path.join(dir, 'zeros.img');
    fs.writeFileSync(zeros, Buffer.alloc(1024 * 1024));
    baseHash.a = sha256File(base.a);
    baseHash.b = sha256File(base.b);
    overlay.a = path.join(dir, 'a.qcow2');
    overlay.b = path.join(dir, 'b.qcow2');
    await createOverlay(base.a, 'raw', overlay.a);
    await createOverlay(base.b, 'raw', overlay.b);
    overlayHashAtStart.a = sha256File(overlay.a);

    // A listener on every host address: the sandbox must not reach it, the site network does.
    hostListener = net.createServer((s) => {
      hostConnections++;
      s.end('host\n');
    });
    await new Promise<void>((resolve) => hostListener.listen(0, '0.0.0.0', () => resolve()));
    hostPort = (hostListener.address() as net.AddressInfo).port;

    target = new QemuTarget({ runtimeDir: path.join(dir, 'run'), accel: 'tcg' });
    const started = Date.now();
    [a, b, site, zero] = await Promise.all([
      target.boot(spec('t-a', overlay.a, 'qcow2', { kind: 'sandbox', name: 'job1', address: '10.77.0.11', mac: macA })),
      target.boot(spec('t-b', overlay.b, 'qcow2', { kind: 'sandbox', name: 'job1', address: '10.77.0.12', mac: macB })),
      target.boot(spec('t-site', base.c, 'raw', { kind: 'site', name: 'site', address: '', mac: '52:54:00:00:00:13' })),
      target.boot(spec('t-zero', zeros, 'raw', { kind: 'sandbox', name: 'job2', address: '10.77.0.20', mac: '52:54:00:00:00:20' })),
    ]);
    vms.push(a, b, site, zero);
    await Promise.all([a, b, site].map((vm) => vm.waitSerial(LOGIN, 90_000)));
    bootMs = Date.now() - started;
    console.log(`qemu-target: 3 tiny VMs booted to login under TCG in ${bootMs} ms (in parallel on ${os.cpus().length} cores)`);
  }, 180_000);

  afterAll(async () => {
    await Promise.all(vms.map((vm) => vm.stop({ graceful: false })));
    hostListener?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('boots each overlay from its own disk to the login prompt', () => {
    expect(fs.readFileSync(path.join(dir, 't-a', 'serial.log'), 'utf8')).toContain('ferry-tiny: marker: disk-a');
    expect(fs.readFileSync(path.join(dir, 't-b', 'serial.log'), 'utf8')).toContain('ferry-tiny: marker: disk-b');
    expect(a.runsOn).toBe('qemu:t-a');
  });

  it('sandbox: the VMs reach each other (IPv4 and IPv6 link-local)', async () => {
    expect(await askUntil(a, 'ping 10.77.0.12', 'reachable', 20_000)).toBe('reachable');
    expect(await askUntil(b, 'ping 10.77.0.11', 'reachable', 20_000)).toBe('reachable');
    expect(await askUntil(a, `ping ${linkLocal(macB)} eth0`, 'reachable', 20_000)).toBe('reachable');
    expect(await askUntil(b, `ping ${linkLocal(macA)} eth0`, 'reachable', 20_000)).toBe('reachable');
  });

  it('sandbox: the VMs do not reach the host; the site network does', async () => {
    // 10.0.2.2 is the host as user-mode networking shows it; on the sandbox only the restricted probe NIC is in that subnet.
    expect(await ask(a, `connect 10.0.2.2 ${hostPort}`)).toBe('unreachable');
    expect(await ask(b, `connect 10.0.2.2 ${hostPort}`)).toBe('unreachable');
    expect(hostConnections).toBe(0);
    expect(await askUntil(site, `connect 10.0.2.2 ${hostPort}`, 'reachable', 20_000)).toBe('reachable');
    expect(hostConnections).toBeGreaterThan(0);
    // A sandbox of another job is another L2: job2's address does not answer job1.
    expect(await ask(a, 'ping 10.77.0.20')).toBe('unreachable');
  });

  it('probeTcp: true for a port the guest serves, false for one it does not', async () => {
    expect(await a.probeTcp(22, 10_000)).toBe(true);
    expect(await site.probeTcp(22, 10_000)).toBe(true);
    expect(await a.probeTcp(23, 3_000)).toBe(false);
    await expect(a.probeTcp(80, 1_000)).rejects.toThrow(/port 80 is not one of its probe ports/);
  });

  it('screenshot: a real PNG of the console', async () => {
    const png = path.join(dir, 'shots', 'a.png');
    await a.screenshot(png);
    const info = readPng(png);
    expect(info.width).toBeGreaterThan(0);
    expect(info.height).toBeGreaterThan(0);
    expect(info.distinctBytes).toBeGreaterThan(2);
  });

  it('a disk that does not boot never reaches the pattern: waitSerial rejects at its timeout', async () => {
    const started = Date.now();
    const err = await zero.waitSerial(LOGIN, 3_000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TargetError);
    expect((err as Error).message).toMatch(/did not reach .*login.* within 3000 ms; last serial lines:\n(.|\n)*No bootable device/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(2_900);
    const ac = new AbortController();
    const aborted = zero.waitSerial(LOGIN, 60_000, ac.signal);
    ac.abort();
    await expect(aborted).rejects.toThrow(/aborted/);
  });

  it('writes in the VM go to the overlay; graceful stop powers off and the process is gone', async () => {
    expect(await ask(a, 'write changed-in-vm')).toBe('ok');
    const pid = Number.parseInt(fs.readFileSync(path.join(dir, 'run', 't-a.pid'), 'utf8'), 10);
    await a.stop({ graceful: true, timeoutMs: 30_000 });
    expect(await a.exited).toBe('qemu exited with status 0');
    expect(fs.readFileSync(path.join(dir, 't-a', 'serial.log'), 'utf8')).toContain('power button: powering off');
    expect(() => process.kill(pid, 0)).toThrow();
    await a.stop({ graceful: true }); // idempotent
    expect(sha256File(base.a)).toBe(baseHash.a);
    expect(sha256File(overlay.a)).not.toBe(overlayHashAtStart.a);
    // A VM that is gone fails a wait at once, with its console's last lines.
    await expect(a.waitSerial(/never printed/, 60_000)).rejects.toThrow(/stopped \(qemu exited with status 0\).*\n(.|\n)*powering off/);
  });

  it('sweep: a new target on the same runtime dir kills what an earlier one left running', async () => {
    const afterCrash = new QemuTarget({ runtimeDir: path.join(dir, 'run'), accel: 'tcg' });
    expect(await afterCrash.sweep('t-zero')).toEqual(['t-zero']);
    expect(await zero.exited).toBe('qemu killed by SIGKILL');
    expect(await afterCrash.sweep('t-zero')).toEqual([]);
    // The owner's own VMs: stopped hard.
    expect(await target.sweep('t-b')).toEqual(['t-b']);
    expect(await b.exited).toMatch(/qemu (exited|killed)/);
    // The last VM of job1 left: its hub is gone.
    expect(fs.existsSync(path.join(dir, 'run', 'sandbox-job1.sock'))).toBe(false);
    expect(fs.readdirSync(path.join(dir, 'run')).filter((f) => f.endsWith('.pid'))).toEqual(['t-site.pid']);
    expect(sha256File(base.b)).toBe(baseHash.b);
  });

  it('refuses a second VM of the same name and a spec with problems', async () => {
    const second = target.boot(spec('t-site', base.c, 'raw', { kind: 'site', name: 'site', address: '', mac: '52:54:00:00:00:13' }));
    void second.then((vm) => vms.push(vm), () => undefined);
    await expect(second).rejects.toThrow(/already runs/);
    // Two boots of one name at once: one of them is refused.
    const twinDisk = path.join(dir, 'twin.img');
    fs.writeFileSync(twinDisk, Buffer.alloc(1024 * 1024));
    const racing = await Promise.allSettled([0, 1].map(() => target.boot(spec('t-twin', twinDisk, 'raw', { kind: 'sandbox', name: 'job4', address: '', mac: '52:54:00:00:00:17' }))));
    for (const r of racing) if (r.status === 'fulfilled') vms.push(r.value);
    expect(racing.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect(String((racing.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason)).toMatch(/a VM named t-twin already runs/);
    await expect(target.boot(spec('bad name', base.c, 'raw', { kind: 'site', name: 'site', address: '', mac: '52:54:00:00:00:13' }))).rejects.toThrow(TargetError);
    await expect(target.boot(spec('t-nodisk', path.join(dir, 'missing.img'), 'raw', { kind: 'site', name: 'site', address: '', mac: '52:54:00:00:00:14' }))).rejects.toThrow(/missing.img does not exist/);
  });

  it('a qemu that cannot start gives a TargetError with what qemu said', async () => {
    const raw = path.join(dir, 'not-qcow2.img');
    fs.writeFileSync(raw, Buffer.alloc(1024 * 1024));
    await expect(target.boot(spec('t-badfmt', raw, 'qcow2', { kind: 'sandbox', name: 'job3', address: '', mac: '52:54:00:00:00:16' }))).rejects.toThrow(
      /VM t-badfmt: qemu did not start \(qemu exited with status 1.*\).*qcow2/s,
    );
    expect(fs.existsSync(path.join(dir, 'run', 'sandbox-job3.sock'))).toBe(false);
  });

  it("'auto' boots to the login prompt whatever KVM does here: a VM that KVM stops is booted again under TCG", async () => {
    // On some nested hosts KVM passes the probe and then stops the guest's bootloader with an
    // emulation failure (qemu status internal-error): the guest would hang silently.
    const auto = new QemuTarget({ runtimeDir: path.join(dir, 'run-auto') });
    const before = await auto.check();
    const disk = path.join(dir, 'auto.img');
    fs.copyFileSync(base.c, disk);
    const vm = await auto.boot(spec('t-auto', disk, 'raw', { kind: 'site', name: 'site', address: '', mac: '52:54:00:00:00:17' }));
    try {
      await vm.waitSerial(LOGIN, 120_000);
    } finally {
      await vm.stop({ graceful: false });
    }
    const after = await auto.check();
    console.log(`qemu-target: auto mode checked ${before.detail}; after a boot: ${after.detail}`);
    if (before.accel === 'kvm' && after.accel === 'tcg') expect(after.detail).toMatch(/TCG: a KVM VM stopped: KVM internal error/);
    else expect(after.accel).toBe(before.accel);
  }, 180_000);

  it('check(): reports qemu and the accelerator; a missing binary gives ok:false and boot refuses', async () => {
    const real = await new QemuTarget({ runtimeDir: path.join(dir, 'run') }).check();
    expect(real.ok).toBe(true);
    expect(real.detail).toMatch(/^qemu \d+\.\d+/);
    expect(['kvm', 'tcg']).toContain(real.accel);
    // Without usable KVM, a target that requires it refuses; 'auto' falls back to TCG (above).
    const kvmOnly = await new QemuTarget({ runtimeDir: path.join(dir, 'run'), accel: 'kvm' }).check();
    if (kvmOnly.ok) expect(kvmOnly.accel).toBe('kvm');
    else expect(kvmOnly.detail).toMatch(/KVM is required by configuration but not usable: /);
    const missing = new QemuTarget({ runtimeDir: path.join(dir, 'run'), qemuBinary: path.join(dir, 'no-such-qemu') });
    const c = await missing.check();
    expect(c.ok).toBe(false);
    expect(c.detail).toMatch(/no-such-qemu not found \(install: apt-get install qemu-system-x86\)/);
    await expect(missing.boot(spec('t-x', base.c, 'raw', { kind: 'site', name: 'site', address: '', mac: '52:54:00:00:00:15' }))).rejects.toThrow(
      /the qemu target cannot run VMs: .*not found/,
    );
  });
});

describe.skipIf(skip)('recovery disks', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-disks-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('persistent copy is byte-identical and independent; removeDisk tolerates a missing file', async () => {
    const src = path.join(dir, 'src.img');
    const data = Buffer.alloc(4 * 1024 * 1024);
    data.write('ferry', 1024 * 1024);
    fs.writeFileSync(src, data);
    const dest = path.join(dir, 'copies', 'dest.img');
    await createPersistentDisk(src, dest);
    expect(sha256File(dest)).toBe(sha256File(src));
    fs.writeFileSync(dest, 'changed', { flag: 'r+' });
    expect(fs.readFileSync(src).subarray(0, 7).toString()).not.toBe('changed');
    await expect(createPersistentDisk(src, dest)).rejects.toThrow(/already exists/);
    removeDisk(dest);
    removeDisk(dest);
    expect(fs.existsSync(dest)).toBe(false);
  });

  it('overlay: clear errors for a missing base or a missing qemu-img', async () => {
    await expect(createOverlay(path.join(dir, 'nope.img'), 'raw', path.join(dir, 'o.qcow2'))).rejects.toThrow(/base image .*nope.img does not exist/);
    const src = path.join(dir, 'base.img');
    fs.writeFileSync(src, Buffer.alloc(1024 * 1024));
    await expect(createOverlay(src, 'raw', path.join(dir, 'o.qcow2'), path.join(dir, 'no-qemu-img'))).rejects.toThrow(
      /no-qemu-img not found \(install: apt-get install qemu-utils\)/,
    );
  });
});
