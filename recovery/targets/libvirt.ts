import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { type Accel, bridgeName, domainXml, isFerryXml, networkXml, type PortForward, specProblem } from './libvirt-xml';
import { isPng, isPpm, ppmToPng } from './png';
import { type RecoveryTarget, type RunningVm, type TargetCheck, TargetError, type VmSpec } from './target';
import { NOT_FOUND, NOT_RUNNING, Virsh, type VirshError } from './virsh';

/**
 * The libvirt recovery target: domains defined and started through the `virsh` CLI (run
 * directly, never through a shell) on a libvirt URI such as qemu:///system. A sandbox network
 * is an isolated libvirt network of the job's own, defined with its first VM and removed with
 * its last; a site network is an existing libvirt network used by name.
 */

export interface LibvirtTargetOptions {
  /** libvirt connection URI, e.g. qemu:///system. */
  uri: string;
  /** The virsh binary (default: virsh on PATH). */
  virsh?: string;
  /** 'auto' (default): kvm when libvirt offers it and it starts, else tcg. */
  accel?: 'auto' | Accel;
  /** Who qemu runs as: see DomainXmlOptions.qemuUser (default 'root'). */
  qemuUser?: 'root' | 'libvirt';
  /** Bound on one virsh call (default 60 s). */
  commandTimeoutMs?: number;
}

const STATE_POLL_MS = 500;
const SERIAL_POLL_MS = 100;

function tail(text: string, lines = 20): string {
  return text.split('\n').slice(-lines).join('\n').slice(-2000);
}

/** A free TCP port on 127.0.0.1 (the kernel picks it; qemu binds it moments later). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error('no free port'))));
    });
  });
}

/** One lock per key: a sandbox network is created, joined and removed under its lock. */
class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const chained = before.then(() => mine);
    this.tails.set(key, chained);
    await before;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === chained) this.tails.delete(key);
    }
  }
}

export class LibvirtTarget implements RecoveryTarget {
  readonly kind = 'libvirt' as const;
  private readonly uri: string;
  private readonly virsh: Virsh;
  private readonly accelOption: 'auto' | Accel;
  private readonly qemuUser: 'root' | 'libvirt';
  /** Set when a kvm domain failed to start in 'auto' mode: later boots use tcg. */
  private kvmFailure: string | null = null;
  private readonly networkLock = new KeyedLock();
  /** VMs of this target per sandbox network that are booting or not yet stopped. */
  private readonly networkUsers = new Map<string, number>();

  constructor(options: LibvirtTargetOptions) {
    if (!options.uri) throw new TargetError('libvirt target: a connection URI is needed (e.g. qemu:///system)');
    this.uri = options.uri;
    this.virsh = new Virsh(options.uri, options.virsh ?? 'virsh', options.commandTimeoutMs ?? 60_000);
    this.accelOption = options.accel ?? 'auto';
    this.qemuUser = options.qemuUser ?? 'root';
  }

  async check(): Promise<TargetCheck> {
    let version: string;
    try {
      version = await this.virsh.run(['version'], 20_000);
    } catch (err) {
      const e = err as VirshError;
      if (e.notInstalled) return { ok: false, detail: e.message };
      return { ok: false, detail: `libvirt at ${this.uri} is not reachable (is libvirtd running?): ${e.message}` };
    }
    const lib = /Using library: libvirt ([\d.]+)/.exec(version)?.[1] ?? '?';
    const hv = /Running hypervisor: (\S+ [\d.]+)/.exec(version)?.[1];
    if (!hv) return { ok: false, detail: `libvirt ${lib} at ${this.uri} runs no hypervisor driver (install libvirt-daemon-driver-qemu)` };
    const accel = await this.chooseAccel();
    const why = accel.reason ? `: ${accel.reason}` : '';
    return { ok: true, detail: `libvirt ${lib} at ${this.uri}, ${hv} (${accel.accel.toUpperCase()}${why})`, accel: accel.accel };
  }

  private async chooseAccel(): Promise<{ accel: Accel; reason?: string }> {
    if (this.accelOption !== 'auto') return { accel: this.accelOption, reason: 'configured' };
    if (this.kvmFailure) return { accel: 'tcg', reason: `KVM did not start: ${this.kvmFailure}` };
    try {
      await this.virsh.run(['domcapabilities', '--virttype', 'kvm'], 20_000);
      return { accel: 'kvm' };
    } catch {
      return { accel: 'tcg', reason: 'libvirt offers no KVM here' };
    }
  }

  async boot(spec: VmSpec): Promise<RunningVm> {
    const problem = specProblem(spec);
    if (problem) throw new TargetError(problem);
    try {
      return await this.bootChecked(spec);
    } catch (err) {
      throw err instanceof TargetError ? err : new TargetError(`${spec.name}: ${(err as Error).message}`);
    }
  }

  private async bootChecked(spec: VmSpec): Promise<RunningVm> {
    if (await this.domainExists(spec.name)) {
      throw new TargetError(`a domain named ${spec.name} already exists on ${this.uri} (left from an earlier run? sweep it first)`);
    }
    const forwards: PortForward[] = [];
    for (const guestPort of spec.probePorts) forwards.push({ hostPort: await freePort(), guestPort });
    const netName = spec.network.name;
    this.networkUsers.set(netName, (this.networkUsers.get(netName) ?? 0) + 1);
    try {
      await this.networkLock.run(netName, async () => {
        await this.ensureNetwork(spec);
        await this.defineAndStart(spec, forwards);
      });
    } catch (err) {
      await this.releaseNetwork(spec).catch(() => undefined);
      throw err;
    }
    return new LibvirtVm(this.virsh, spec, forwards, () => this.releaseNetwork(spec));
  }

  private async defineAndStart(spec: VmSpec, forwards: PortForward[]): Promise<void> {
    let { accel } = await this.chooseAccel();
    for (;;) {
      const xmlFile = path.join(spec.workDir, `${spec.name}.domain.xml`);
      fs.writeFileSync(xmlFile, domainXml(spec, { accel, qemuUser: this.qemuUser, probeForwards: forwards }));
      await this.virsh.run(['define', xmlFile]);
      try {
        await this.virsh.run(['start', spec.name]);
        return;
      } catch (err) {
        const message = (err as Error).message;
        await this.virsh.run(['undefine', spec.name]).catch(() => undefined);
        // Seen here: libvirt offers KVM, qemu (as root) aborts at start on a nested host
        // ("failed to set MSR ... kvm_buf_set_msrs"), or cannot open /dev/kvm as its own user.
        if (accel === 'kvm' && this.accelOption === 'auto' && /kvm/i.test(message)) {
          this.kvmFailure = message;
          accel = 'tcg';
          continue;
        }
        throw new TargetError(`libvirt could not start ${spec.name}: ${message}`);
      }
    }
  }

  /** Sandbox: defines and starts the job's isolated network unless there; site: checks it is there and active. */
  private async ensureNetwork(spec: VmSpec): Promise<void> {
    const name = spec.network.name;
    let info: string | null = null;
    try {
      info = await this.virsh.run(['net-info', name]);
    } catch (err) {
      if (!NOT_FOUND.test((err as Error).message)) throw err;
    }
    const active = info !== null && /^Active:\s+yes/m.test(info);
    if (spec.network.kind === 'site') {
      if (info === null) throw new TargetError(`site network ${name} is not defined on ${this.uri}`);
      if (!active) throw new TargetError(`site network ${name} on ${this.uri} is not active (virsh net-start ${name})`);
      return;
    }
    if (info === null) {
      const file = path.join(spec.workDir, `${name}.network.xml`);
      fs.writeFileSync(file, networkXml(name, bridgeName(name)));
      await this.virsh.run(['net-define', file]);
    } else if (!isFerryXml(await this.virsh.run(['net-dumpxml', name]))) {
      throw new TargetError(`network ${name} on ${this.uri} was not made by Ferry: a sandbox needs a network of its own`);
    }
    if (!active) await this.virsh.run(['net-start', name]);
  }

  /** Called when one of this target's VMs is gone: removes its sandbox network when no VM uses it any more. */
  private async releaseNetwork(spec: VmSpec): Promise<void> {
    const name = spec.network.name;
    const left = (this.networkUsers.get(name) ?? 1) - 1;
    if (left > 0) this.networkUsers.set(name, left);
    else this.networkUsers.delete(name);
    if (spec.network.kind !== 'sandbox') return;
    await this.networkLock.run(name, async () => {
      if ((this.networkUsers.get(name) ?? 0) > 0) return;
      let ports: string;
      try {
        ports = await this.virsh.run(['net-port-list', name, '--uuid']);
      } catch (err) {
        if (NOT_FOUND.test((err as Error).message) || NOT_RUNNING.test((err as Error).message)) ports = '';
        else throw err;
      }
      // Another process's domain still on it (e.g. a second receiver): leave it for its owner or a sweep.
      if (ports.trim() !== '') return;
      await this.removeNetwork(name);
    });
  }

  private async removeNetwork(name: string): Promise<void> {
    await this.virsh.tolerate(['net-destroy', name], NOT_FOUND, NOT_RUNNING);
    await this.virsh.tolerate(['net-undefine', name], NOT_FOUND);
  }

  /** Whether a domain of that name is defined on the URI (running or not). */
  domainExists(name: string): Promise<boolean> {
    return this.virsh.domainExists(name);
  }

  async sweep(prefix: string): Promise<string[]> {
    if (!prefix) throw new TargetError('sweep needs a non-empty name prefix');
    const swept: string[] = [];
    const domains = (await this.virsh.run(['list', '--all', '--name'])).split('\n').map((s) => s.trim());
    for (const name of domains.filter((n) => n.startsWith(prefix))) {
      const xml = await this.virsh.run(['dumpxml', name]).catch(() => '');
      if (!isFerryXml(xml)) continue;
      await this.virsh.tolerate(['destroy', name], NOT_FOUND, NOT_RUNNING);
      await this.virsh.tolerate(['undefine', name], NOT_FOUND);
      swept.push(name);
    }
    const networks = (await this.virsh.run(['net-list', '--all', '--name'])).split('\n').map((s) => s.trim());
    for (const name of networks.filter((n) => n.startsWith(prefix))) {
      const xml = await this.virsh.run(['net-dumpxml', name]).catch(() => '');
      if (!isFerryXml(xml)) continue;
      await this.networkLock.run(name, () => this.removeNetwork(name));
      swept.push(`network:${name}`);
    }
    return swept;
  }
}

/** Whether `virsh domstate --reason` text means the domain's qemu is gone. */
export function domainStopped(state: string): boolean {
  return /^(shut off|crashed)/.test(state.trim());
}

class LibvirtVm implements RunningVm {
  readonly name: string;
  readonly runsOn: string;
  readonly exited: Promise<string>;
  private exitStatus: string | null = null;
  private resolveExited!: (status: string) => void;
  private pollTimer: NodeJS.Timeout | null = null;
  private polling: Promise<void> | null = null;
  private stopping: Promise<void> | null = null;
  private serialText = '';
  private serialOffset = 0;

  constructor(
    private readonly virsh: Virsh,
    private readonly spec: VmSpec,
    private readonly forwards: PortForward[],
    /** Called once the domain is undefined: lets the target remove a sandbox network nobody uses. */
    private readonly release: () => Promise<void>,
  ) {
    this.name = spec.name;
    this.runsOn = `libvirt:${spec.name}`;
    this.exited = new Promise((resolve) => (this.resolveExited = resolve));
    this.schedulePoll();
  }

  private schedulePoll(): void {
    if (this.exitStatus !== null) return;
    this.pollTimer = setTimeout(() => void this.pollState(), STATE_POLL_MS);
    this.pollTimer.unref();
  }

  /** One look at the domain's state; resolves `exited` when qemu is gone. */
  private pollState(): Promise<void> {
    if (this.polling) return this.polling;
    if (this.pollTimer) clearTimeout(this.pollTimer);
    this.polling = (async () => {
      try {
        const state = (await this.virsh.run(['domstate', this.name, '--reason'], 20_000)).trim();
        if (domainStopped(state)) this.markExited(state);
      } catch (err) {
        if (NOT_FOUND.test((err as Error).message)) this.markExited('domain is gone');
      } finally {
        this.polling = null;
        this.schedulePoll();
      }
    })();
    return this.polling;
  }

  private markExited(status: string): void {
    if (this.exitStatus !== null) return;
    this.exitStatus = status;
    if (this.pollTimer) clearTimeout(this.pollTimer);
    this.resolveExited(status);
  }

  private readSerial(): string {
    let fd: number;
    try {
      fd = fs.openSync(this.spec.serialLog, 'r');
    } catch {
      return this.serialText; // not created yet
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size < this.serialOffset) {
        this.serialOffset = 0;
        this.serialText = '';
      }
      if (size > this.serialOffset) {
        const buf = Buffer.alloc(size - this.serialOffset);
        const n = fs.readSync(fd, buf, 0, buf.length, this.serialOffset);
        this.serialOffset += n;
        this.serialText += buf.subarray(0, n).toString('utf8');
      }
    } finally {
      fs.closeSync(fd);
    }
    return this.serialText;
  }

  waitSerial(pattern: RegExp, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const deadline = Date.now() + timeoutMs;
      let timer: NodeJS.Timeout | null = null;
      let done = false;
      const finish = (err?: Error) => {
        if (done) return;
        done = true;
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      const fail = (why: string) => finish(new TargetError(`${this.name}: ${why}; serial log ends:\n${tail(this.readSerial())}`));
      const onAbort = () => fail(`waiting for ${pattern} was aborted`);
      const look = () => {
        if (done) return;
        if (pattern.test(this.readSerial())) return finish();
        if (this.exitStatus !== null) return fail(`the VM stopped (${this.exitStatus}) before its serial console matched ${pattern}`);
        if (Date.now() >= deadline) return fail(`serial console did not match ${pattern} within ${timeoutMs} ms`);
        timer = setTimeout(look, SERIAL_POLL_MS);
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      void this.exited.then(() => setImmediate(look));
      look();
    });
  }

  /**
   * Connects to the probe NIC's forward of `port` on 127.0.0.1. qemu's slirp accepts the host
   * side before the guest does, so the guest must answer (send a byte) or keep the connection
   * open for a moment for it to count.
   */
  probeTcp(port: number, timeoutMs: number): Promise<boolean> {
    const forward = this.forwards.find((f) => f.guestPort === port);
    if (!forward) return Promise.reject(new TargetError(`${this.name}: port ${port} is not one of its probe ports (${this.spec.probePorts.join(', ') || 'none'})`));
    return new Promise((resolve) => {
      const openFor = Math.min(1500, Math.max(100, timeoutMs / 2));
      const socket = net.connect({ host: '127.0.0.1', port: forward.hostPort });
      let settled = false;
      let holdTimer: NodeJS.Timeout | null = null;
      const settle = (ok: boolean) => {
        if (settled) return;
        settled = true;
        clearTimeout(overall);
        if (holdTimer) clearTimeout(holdTimer);
        socket.destroy();
        resolve(ok);
      };
      const overall = setTimeout(() => settle(false), timeoutMs);
      socket.once('connect', () => {
        holdTimer = setTimeout(() => settle(true), openFor);
      });
      socket.once('data', () => settle(true));
      socket.once('error', () => settle(false));
      socket.once('close', () => settle(false));
    });
  }

  async screenshot(pngPath: string): Promise<void> {
    const raw = `${pngPath}.screen`;
    try {
      await this.virsh.run(['screenshot', this.name, raw, '--screen', '0']);
      const data = fs.readFileSync(raw);
      if (isPng(data)) fs.writeFileSync(pngPath, data);
      else if (isPpm(data)) fs.writeFileSync(pngPath, ppmToPng(data));
      else throw new Error(`virsh wrote neither PNG nor PPM (${data.length} bytes)`);
    } catch (err) {
      throw new TargetError(`${this.name}: screenshot failed: ${(err as Error).message}`);
    } finally {
      fs.rmSync(raw, { force: true });
    }
  }

  stop(options: { graceful: boolean; timeoutMs?: number }): Promise<void> {
    if (this.stopping) {
      if (!options.graceful && this.exitStatus === null) void this.destroy().catch(() => undefined);
      return this.stopping;
    }
    // A failed stop (e.g. libvirtd unreachable) may be retried.
    this.stopping = this.stopOnce(options.graceful, options.timeoutMs ?? 30_000).catch((err: unknown) => {
      this.stopping = null;
      throw err;
    });
    return this.stopping;
  }

  private async stopOnce(graceful: boolean, timeoutMs: number): Promise<void> {
    if (graceful && this.exitStatus === null) {
      await this.virsh.tolerate(['shutdown', this.name, '--mode', 'acpi'], NOT_FOUND, NOT_RUNNING);
      await this.exitedWithin(timeoutMs);
    }
    if (this.exitStatus === null) {
      await this.destroy();
      await this.exitedWithin(30_000);
    }
    await this.virsh.tolerate(['undefine', this.name], NOT_FOUND);
    if (this.exitStatus === null) this.markExited('undefined');
    await this.release();
  }

  private async destroy(): Promise<void> {
    await this.virsh.tolerate(['destroy', this.name], NOT_FOUND, NOT_RUNNING);
    await this.pollState();
  }

  /** Waits for `exited` with a deadline, looking at the state at once rather than at the next poll. */
  private async exitedWithin(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    await this.pollState();
    await Promise.race([this.exited, deadline]);
    clearTimeout(timer);
  }
}
