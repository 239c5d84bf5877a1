/**
 * The embedded recovery target: qemu-system-x86_64 driven directly (KVM when /dev/kvm is usable,
 * else TCG). Each VM is one qemu process with its serial console in a file, a QMP socket
 * (screenshots, power button, quit) and a pid file in the target's runtime dir (the registry
 * that sweep() reads after a crash). Sandbox networks are L2 hubs in this process
 * (sandbox-switch.ts); health probes reach the guest through a second, restricted user-mode NIC.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { QmpClient } from './qmp';
import { type Accel, BIOS_SERIAL_PORT, qemuArgs, specProblems, tailLines } from './qemu-args';
import { SandboxSwitch } from './sandbox-switch';
import { SerialLog } from './serial-log';
import { type RecoveryTarget, type RunningVm, type TargetCheck, TargetError, type VmSpec } from './target';

export interface QemuTargetOptions {
  /** Pid files of this target's VMs and the sandbox hubs' sockets (created if missing). One per receiver: sweep() reads it. Keep it short: unix socket paths are limited to 107 bytes. */
  runtimeDir: string;
  /** Default: qemu-system-x86_64 from PATH. */
  qemuBinary?: string;
  /** 'auto' (default): KVM when /dev/kvm opens and a KVM VM starts, else TCG. */
  accel?: 'auto' | Accel;
  /** How long boot() waits for qemu to answer on QMP (default 20 s). */
  startTimeoutMs?: number;
  /** How long a KVM VM is watched for a KVM internal error before boot() returns it (default 10 s). */
  kvmWatchMs?: number;
}

const SOCKET_PATH_MAX = 107;
const INSTALL_HINT = 'install: apt-get install qemu-system-x86';

export class QemuTarget implements RecoveryTarget {
  readonly kind = 'qemu' as const;
  private readonly binary: string;
  private readonly accelOption: 'auto' | Accel;
  private readonly startTimeoutMs: number;
  private readonly runtimeDir: string;
  private readonly vms = new Map<string, QemuVm>();
  /** Names being booted: a second boot of the same name is refused before the first registers. */
  private readonly starting = new Set<string>();
  private readonly switches = new Map<string, { sw: Promise<SandboxSwitch>; users: number }>();
  private lastCheck: Promise<TargetCheck> | null = null;
  private readonly kvmWatchMs: number;
  /** Set when a KVM VM stopped on a KVM internal error: in 'auto' mode later boots use TCG. */
  private kvmFailure: string | null = null;

  constructor(options: QemuTargetOptions) {
    this.runtimeDir = path.resolve(options.runtimeDir);
    this.binary = options.qemuBinary ?? 'qemu-system-x86_64';
    this.accelOption = options.accel ?? 'auto';
    this.startTimeoutMs = options.startTimeoutMs ?? 20_000;
    this.kvmWatchMs = options.kvmWatchMs ?? 10_000;
  }

  check(): Promise<TargetCheck> {
    this.lastCheck = this.runCheck();
    return this.lastCheck;
  }

  private async runCheck(): Promise<TargetCheck> {
    const version = await qemuVersion(this.binary);
    if ('error' in version) return { ok: false, detail: version.error };
    const name = `qemu ${version.version}`;
    if (this.accelOption === 'tcg') return { ok: true, detail: `${name} (TCG: chosen by configuration)`, accel: 'tcg' };
    const kvmProblem = this.kvmFailure ? `a KVM VM stopped: ${this.kvmFailure}` : await kvmUnusable(this.binary);
    if (kvmProblem === null) return { ok: true, detail: `${name} (KVM)`, accel: 'kvm' };
    if (this.accelOption === 'kvm') return { ok: false, detail: `${name}: KVM is required by configuration but not usable: ${kvmProblem}` };
    return { ok: true, detail: `${name} (TCG: ${kvmProblem})`, accel: 'tcg' };
  }

  async boot(spec: VmSpec): Promise<QemuVm> {
    const problems = specProblems(spec);
    if (problems.length > 0) throw new TargetError(`VM ${spec.name}: ${problems.join('; ')}`);
    const check = await (this.lastCheck ?? this.check());
    if (!check.ok || !check.accel) throw new TargetError(`the qemu target cannot run VMs: ${check.detail}`);
    for (const disk of spec.disks) {
      try {
        fs.accessSync(disk.path, fs.constants.R_OK | fs.constants.W_OK);
      } catch {
        throw new TargetError(`VM ${spec.name}: disk ${disk.path} does not exist or is not writable`);
      }
    }
    fs.mkdirSync(this.runtimeDir, { recursive: true });
    const pidFile = path.join(this.runtimeDir, `${spec.name}.pid`);
    if (this.vms.has(spec.name) || this.starting.has(spec.name) || livePid(pidFile) !== null) {
      throw new TargetError(`a VM named ${spec.name} already runs on this target`);
    }
    this.starting.add(spec.name);
    try {
      return await this.bootNew(spec, pidFile, check.accel);
    } catch (err) {
      if (!(err instanceof KvmRunFailure)) throw err;
      // Seen on a nested host: KVM passes the probe, then stops the guest's bootloader with an
      // emulation failure. Say so once; this and later boots run under TCG.
      this.kvmFailure = err.message;
      this.lastCheck = null;
      if (this.accelOption === 'kvm') throw new TargetError(`VM ${spec.name}: KVM is required by configuration but the VM stopped: ${err.message}`);
      return await this.bootNew(spec, pidFile, 'tcg');
    } finally {
      this.starting.delete(spec.name);
    }
  }

  private async bootNew(spec: VmSpec, pidFile: string, accel: Accel): Promise<QemuVm> {
    fs.mkdirSync(spec.workDir, { recursive: true });
    fs.mkdirSync(path.dirname(spec.serialLog), { recursive: true });
    let qmpSocket = path.join(spec.workDir, 'qmp.sock');
    if (qmpSocket.length > SOCKET_PATH_MAX) qmpSocket = path.join(this.runtimeDir, `${spec.name}.qmp`);
    if (qmpSocket.length > SOCKET_PATH_MAX) throw new TargetError(`runtime dir ${this.runtimeDir} is too long for a unix socket path`);

    const biosSerialPortFile = path.join(spec.workDir, 'bios-serial-port.bin');
    fs.writeFileSync(biosSerialPortFile, BIOS_SERIAL_PORT);
    const switchSocket = spec.network.kind === 'sandbox' ? await this.acquireSwitch(spec.network.name) : null;
    try {
      // A probe port found free may be taken before qemu binds it: try again with others.
      for (let attempt = 1; ; attempt++) {
        const probeForwards = new Map<number, number>();
        for (const port of spec.probePorts) probeForwards.set(port, await freePort());
        const args = qemuArgs(spec, { accel, pidFile, qmpSocket, switchSocket, biosSerialPortFile, probeForwards });
        try {
          return await this.start(spec, args, { pidFile, qmpSocket, accel }, probeForwards);
        } catch (err) {
          if (!(err instanceof HostForwardBusy) || attempt >= 3) throw err;
        }
      }
    } catch (err) {
      // A VM that KVM stopped had started: its exit released its hub port already.
      if (spec.network.kind === 'sandbox' && !(err instanceof KvmRunFailure)) await this.releaseSwitch(spec.network.name);
      throw err;
    }
  }

  private async start(spec: VmSpec, args: string[], files: { pidFile: string; qmpSocket: string; accel: Accel }, probeForwards: Map<number, number>): Promise<QemuVm> {
    const { pidFile, qmpSocket, accel } = files;
    fs.rmSync(qmpSocket, { force: true });
    const logPath = path.join(spec.workDir, 'qemu.log');
    const logFd = fs.openSync(logPath, 'w');
    let child: ChildProcess;
    try {
      // Detached: a failed-over machine keeps running when the receiver restarts (sweep() finds test VMs).
      child = spawn(this.binary, args, { stdio: ['ignore', logFd, logFd], detached: true });
    } finally {
      fs.closeSync(logFd);
    }
    const processExit = new Promise<string>((resolve) => {
      child.once('error', (err) => resolve(`qemu did not start: ${err.message}`));
      child.once('exit', (code, signal) => resolve(signal ? `qemu killed by ${signal}` : `qemu exited with status ${code}`));
    });
    const alive = (): boolean => child.exitCode === null && child.signalCode === null && child.pid !== undefined;
    let qmp: QmpClient;
    try {
      qmp = await QmpClient.connect(qmpSocket, this.startTimeoutMs, alive);
    } catch (err) {
      if (alive()) child.kill('SIGKILL');
      const status = await processExit;
      fs.rmSync(pidFile, { force: true });
      // qemu warns about the SeaBIOS fw_cfg name on every start: not what went wrong.
      const log = readText(logPath)
        .split('\n')
        .filter((line) => !line.includes('fw_cfg item names should be prefixed'))
        .join('\n')
        .trim();
      if (/Could not set up host forwarding rule/.test(log)) throw new HostForwardBusy(log);
      throw new TargetError(`VM ${spec.name}: qemu did not start (${status}; ${(err as Error).message})${log ? `: ${tailLines(log, 5)}` : ''}`);
    }
    // `exited` resolves once everything of the VM here is released (QMP, registry, its sandbox hub port).
    const exited = processExit.then(async (status) => {
      qmp.close();
      this.vms.delete(spec.name);
      fs.rmSync(qmpSocket, { force: true });
      fs.rmSync(pidFile, { force: true });
      if (spec.network.kind === 'sandbox') await this.releaseSwitch(spec.network.name);
      return status;
    });
    if (accel === 'kvm') {
      const failure = await watchForKvmError(qmp, alive, this.kvmWatchMs);
      if (failure !== null) {
        child.kill('SIGKILL');
        await exited;
        const detail = readText(logPath).split('\n').find((line) => /KVM internal error|emulation failure/i.test(line));
        throw new KvmRunFailure(detail ? `${failure} (${detail.trim()})` : failure);
      }
    }
    const vm = new QemuVm(spec.name, child, qmp, new SerialLog(spec.serialLog), probeForwards, exited);
    this.vms.set(spec.name, vm);
    return vm;
  }

  private async acquireSwitch(network: string): Promise<string> {
    const socketPath = path.join(this.runtimeDir, `sandbox-${network}.sock`);
    if (socketPath.length > SOCKET_PATH_MAX) throw new TargetError(`sandbox network ${network}: socket path ${socketPath} is too long`);
    let entry = this.switches.get(network);
    if (!entry) {
      entry = { sw: SandboxSwitch.start(socketPath), users: 0 };
      this.switches.set(network, entry);
    }
    entry.users++;
    try {
      return (await entry.sw).socketPath;
    } catch (err) {
      this.switches.delete(network);
      throw err;
    }
  }

  private async releaseSwitch(network: string): Promise<void> {
    const entry = this.switches.get(network);
    if (!entry) return;
    entry.users--;
    if (entry.users > 0) return;
    this.switches.delete(network);
    await (await entry.sw.catch(() => null))?.close();
  }

  async sweep(prefix: string): Promise<string[]> {
    const swept: string[] = [];
    for (const [name, vm] of [...this.vms]) {
      if (!name.startsWith(prefix)) continue;
      await vm.stop({ graceful: false });
      swept.push(name);
    }
    let entries: string[];
    try {
      entries = fs.readdirSync(this.runtimeDir);
    } catch {
      return swept;
    }
    for (const entry of entries) {
      if (!entry.endsWith('.pid')) continue;
      const name = entry.slice(0, -4);
      if (!name.startsWith(prefix) || this.vms.has(name)) continue;
      const pidFile = path.join(this.runtimeDir, entry);
      const pid = livePid(pidFile);
      if (pid !== null) {
        process.kill(pid, 'SIGKILL');
        await waitGone(pid, 10_000);
        swept.push(name);
      }
      fs.rmSync(pidFile, { force: true });
    }
    return swept;
  }
}

class HostForwardBusy extends TargetError {}

/** A KVM VM stopped on a KVM internal error (boot() retries under TCG in 'auto' mode). */
class KvmRunFailure extends TargetError {}

/**
 * Null when the VM ran `watchMs` without a KVM internal error (QMP status internal-error: qemu
 * stops the vCPU, the guest hangs silently), else what happened.
 */
async function watchForKvmError(qmp: QmpClient, alive: () => boolean, watchMs: number): Promise<string | null> {
  const deadline = Date.now() + watchMs;
  while (Date.now() < deadline && alive()) {
    const status = (await qmp.execute('query-status').catch(() => undefined)) as { status?: string } | undefined;
    if (status?.status === 'internal-error') return 'KVM internal error (qemu status internal-error)';
    await delay(250);
  }
  return null;
}

export class QemuVm implements RunningVm {
  readonly runsOn: string;

  constructor(
    readonly name: string,
    private readonly child: ChildProcess,
    private readonly qmp: QmpClient,
    private readonly serial: SerialLog,
    private readonly probeForwards: Map<number, number>,
    readonly exited: Promise<string>,
  ) {
    this.runsOn = `qemu:${name}`;
  }

  /** Where the host reaches guest `port` (one of spec.probePorts): 127.0.0.1 and a forwarded port. */
  hostForward(port: number): { host: string; port: number } {
    const hostPort = this.probeForwards.get(port);
    if (hostPort === undefined) throw new TargetError(`VM ${this.name}: port ${port} is not one of its probe ports (${[...this.probeForwards.keys()].join(', ') || 'none'})`);
    return { host: '127.0.0.1', port: hostPort };
  }

  private get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  waitSerial(pattern: RegExp, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const matches = (): boolean => this.serial.read().search(pattern) >= 0;
      const finish = (err: TargetError | null): void => {
        if (settled) return;
        settled = true;
        stopFollowing();
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      const tail = (): string => {
        const t = tailLines(this.serial.read(), 10);
        return t ? `; last serial lines:\n${t}` : '; the serial console stayed empty';
      };
      const check = (): void => {
        if (!settled && matches()) finish(null);
      };
      const onAbort = (): void => finish(new TargetError(`VM ${this.name}: waiting for ${pattern} aborted${tail()}`));
      const stopFollowing = this.serial.follow(check);
      const timer = setTimeout(() => {
        if (matches()) finish(null);
        else finish(new TargetError(`VM ${this.name}: serial console did not reach ${pattern} within ${timeoutMs} ms${tail()}`));
      }, timeoutMs);
      signal?.addEventListener('abort', onAbort);
      void this.exited.then((status) => {
        if (matches()) finish(null);
        else finish(new TargetError(`VM ${this.name} stopped (${status}) before its serial console reached ${pattern}${tail()}`));
      });
      if (signal?.aborted) onAbort();
      else check();
    });
  }

  /**
   * The guest answers when it sends at least one byte within timeoutMs. User-mode networking
   * accepts the host side of a forward before the guest does, so an open connection alone proves
   * nothing. Services that wait for the client (HTTP) get a blank line after a quiet first half.
   */
  async probeTcp(port: number, timeoutMs: number): Promise<boolean> {
    const hostPort = this.hostForward(port).port;
    if (!this.running) return false;
    return new Promise<boolean>((resolve) => {
      const socket = net.createConnection({ host: '127.0.0.1', port: hostPort });
      let nudge: NodeJS.Timeout | undefined;
      const done = (answered: boolean): void => {
        clearTimeout(deadline);
        clearTimeout(nudge);
        socket.destroy();
        resolve(answered);
      };
      const deadline = setTimeout(() => done(false), timeoutMs);
      socket.once('connect', () => {
        nudge = setTimeout(() => socket.write('\r\n'), Math.min(2_000, timeoutMs / 2));
      });
      socket.once('data', () => done(true));
      socket.once('error', () => done(false));
      socket.once('close', () => done(false));
    });
  }

  async screenshot(pngPath: string): Promise<void> {
    const target = path.resolve(pngPath);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    if (!this.running) throw new TargetError(`VM ${this.name} is not running: no screenshot`);
    await this.qmp.execute('screendump', { filename: target, format: 'png' });
    if (!fs.existsSync(target)) throw new TargetError(`VM ${this.name}: qemu wrote no screenshot to ${target}`);
  }

  async stop(options: { graceful: boolean; timeoutMs?: number }): Promise<void> {
    if (!this.running) {
      await this.exited;
      return;
    }
    if (options.graceful) {
      await this.qmp.execute('system_powerdown').catch(() => undefined);
      if (await this.exitsWithin(options.timeoutMs ?? 60_000)) return;
    }
    await Promise.race([this.qmp.execute('quit').catch(() => undefined), delay(2_000)]);
    if (await this.exitsWithin(3_000)) return;
    if (this.running) this.child.kill('SIGKILL');
    await this.exited;
  }

  private async exitsWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const gone = await Promise.race([
      this.exited.then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), ms);
      }),
    ]);
    clearTimeout(timer);
    return gone;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

async function qemuVersion(binary: string): Promise<{ version: string } | { error: string }> {
  return new Promise((resolve) => {
    execFile(binary, ['--version'], { timeout: 10_000 }, (err, stdout) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') resolve({ error: `${binary} not found (${INSTALL_HINT})` });
        else if (code === 'EACCES') resolve({ error: `${binary} is not executable` });
        else resolve({ error: `${binary} --version failed: ${err.message.split('\n')[0]}` });
        return;
      }
      const m = /version (\d+\.\d+(?:\.\d+)?)/.exec(stdout);
      if (!m) resolve({ error: `${binary} does not look like qemu (--version said: ${stdout.trim().split('\n')[0] ?? ''})` });
      else resolve({ version: m[1] });
    });
  });
}

/** Null when KVM works: /dev/kvm opens read-write and qemu sets up a KVM vCPU; else why not. */
async function kvmUnusable(binary: string): Promise<string | null> {
  try {
    fs.closeSync(fs.openSync('/dev/kvm', 'r+'));
  } catch (err) {
    return `/dev/kvm is not usable: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
  }
  return new Promise((resolve) => {
    // A real (paused) PC with the CPU model boot() uses: on some nested hosts KVM opens but the
    // vCPU cannot be set up ("failed to set MSR"), which '-machine none' would not reveal.
    const args = ['-machine', 'pc', '-accel', 'kvm', '-cpu', 'host', '-m', '16', '-nodefaults', '-display', 'none', '-S', '-qmp', 'stdio'];
    const child = spawn(binary, args, {
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.on('error', (err) => resolve(`qemu with KVM did not start: ${err.message}`));
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(code === 0 ? null : `qemu cannot use KVM: ${stderr.trim().split('\n')[0].replace(/^\S*qemu-system-\S*: (error: )?/, '') || (signal ? `killed by ${signal}` : `exit status ${code}`)}`);
    });
    child.stdin?.on('error', () => undefined);
    child.stdin?.end('{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n');
  });
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** The pid in a pid file when that process is alive and is the qemu that wrote it (its command line names the file). */
function livePid(pidFile: string): number | null {
  const pid = Number.parseInt(readText(pidFile).trim(), 10);
  if (!Number.isInteger(pid) || pid <= 0) return null;
  const cmdline = readText(`/proc/${pid}/cmdline`).split('\0');
  const i = cmdline.indexOf('-pidfile');
  return i >= 0 && cmdline[i + 1] === pidFile ? pid : null;
}

async function waitGone(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (fs.existsSync(`/proc/${pid}`) && Date.now() < deadline) {
    const stat = readText(`/proc/${pid}/stat`);
    // A zombie (state Z) is gone for our purposes: its parent reaps it.
    if (/^\d+ \(.*\) Z/.test(stat)) return;
    await delay(50);
  }
}
