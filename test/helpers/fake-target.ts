/**
 * A recovery target for unit tests of the recovery service's job logic (recovery/service.ts):
 * it keeps the RecoveryTarget contract (recovery/targets/target.ts) without starting VMs. A VM
 * "boots" by writing its serial log: a login prompt (or nothing, for a disk that does not boot).
 * The real targets are tested in test/recovery/qemu-target.test.ts and libvirt-target.test.ts,
 * and the whole path in test/vm/recovery.test.ts.
 */
import * as fs from 'node:fs';
import type { RecoveryTarget, RunningVm, TargetCheck, VmSpec } from '../../recovery/targets/target';
import { TargetError } from '../../recovery/targets/target';

/** A 1x1 PNG: enough for the job to record a screenshot. */
const PNG_1X1 = Buffer.from('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360f8cf00000301010018dd8db40000000049454e44ae426082', 'hex');

export class FakeVm implements RunningVm {
  readonly runsOn: string;
  readonly exited: Promise<string>;
  stoppedGraceful: boolean | undefined;
  private exit!: (text: string) => void;
  private running = true;

  constructor(
    readonly spec: VmSpec,
    boots: boolean,
  ) {
    this.name = spec.name;
    this.runsOn = `fake:${spec.name}`;
    this.exited = new Promise((r) => (this.exit = r));
    fs.writeFileSync(spec.serialLog, `booting ${spec.name} from ${spec.disks.map((d) => d.path).join(',')}\n`);
    if (boots) setImmediate(() => this.running && fs.appendFileSync(spec.serialLog, `${spec.name} login: `));
  }

  readonly name: string;

  async waitSerial(pattern: RegExp, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (pattern.test(fs.readFileSync(this.spec.serialLog, 'utf8'))) return;
      if (signal?.aborted) throw new TargetError('aborted');
      if (!this.running) throw new TargetError(`${this.name} exited before its console matched ${pattern}`);
      if (Date.now() > deadline) throw new TargetError(`${this.name}: the console did not match ${pattern} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  async probeTcp(): Promise<boolean> {
    return this.running;
  }

  async screenshot(pngPath: string): Promise<void> {
    fs.writeFileSync(pngPath, PNG_1X1);
  }

  async stop(options: { graceful: boolean }): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.stoppedGraceful = options.graceful;
    this.exit(options.graceful ? 'powered off' : 'killed');
  }

  get isRunning(): boolean {
    return this.running;
  }
}

export class FakeTarget implements RecoveryTarget {
  readonly kind = 'qemu' as const;
  readonly vms: FakeVm[] = [];
  /** VM names (or name suffixes) whose disk does not boot. */
  readonly broken = new Set<string>();
  available = true;

  async check(): Promise<TargetCheck> {
    return this.available ? { ok: true, detail: 'fake target', accel: 'tcg' } : { ok: false, detail: 'qemu-system-x86_64 not found' };
  }

  async boot(spec: VmSpec): Promise<RunningVm> {
    for (const d of spec.disks) if (!fs.existsSync(d.path)) throw new TargetError(`no disk ${d.path}`);
    const vm = new FakeVm(spec, ![...this.broken].some((b) => spec.name.endsWith(b)));
    this.vms.push(vm);
    return vm;
  }

  async sweep(): Promise<string[]> {
    return [];
  }

  running(): FakeVm[] {
    return this.vms.filter((v) => v.isRunning);
  }
}
