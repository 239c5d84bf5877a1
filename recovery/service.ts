import { createHash } from 'crypto';
import { EventEmitter } from 'events';
import * as fs from 'fs';
import * as path from 'path';
import { log } from '../common/log';
import { ControlError, type ControlPlaneApi } from '../control/contract';
import type { Machine } from '../control/model';
import type { PointRow } from '../receiver/catalog';
import type { FailbackAccess, FailbackProgress } from '../receiver/failback-sender';
import type { JobFilter, MachineProtection, RecoveryApi } from './contract';
import { pointSpecText } from './contract';
import { createOverlay, createPersistentDisk, removeDisk } from './disks';
import type { PointExporter } from './exporter';
import { JobRecord } from './job-record';
import type { BootGroup, Job, JobKind, Plan, PlanAction, PlanInput, PointSpec } from './model';
import { choosePoints } from './point-choice';
import { planMachineIds, validatePlanInput } from './plan-validate';
import { runScript } from './script-runner';
import type { RecoveryStore } from './store';
import type { RecoveryTarget, RunningVm, VmDisk, VmNetwork } from './targets/target';

/**
 * The recovery service: recovery plans, and the jobs that turn recovery points into running
 * machines (test failover in a sandbox, failover, cleanup, commit). It owns the running jobs and
 * their VMs; plans, jobs and each machine's protection state are kept in the RecoveryStore.
 */

export interface RecoveryServiceOptions {
  /** The receiver's data directory: jobs keep their disks and evidence under recovery/jobs/<id>. */
  dataDir: string;
  store: RecoveryStore;
  plane: ControlPlaneApi;
  /** A volume's points (the receiver's catalog). */
  points(volumeId: string): PointRow[];
  exportPoint: PointExporter;
  /** Where recovered machines run; undefined: this receiver cannot run them (jobs are refused, 503). */
  target: RecoveryTarget | undefined;
  /** A committed failover drops a volume's other points. */
  deletePointsExcept(volumeId: string, keep: readonly number[]): number;
  /** Re-protection after a failback: the agent compares the whole volume and sends what differs. */
  requestWholeVolumeCompare(volumeId: string, reason: string): void;
  /**
   * The highest seq a volume's replica holds for good (applied and checkpointed): points up to
   * it can be exported. Apply may be ahead of it by a checkpoint interval while change sets arrive.
   */
  exportableSeq(volumeId: string): number;
  /** Ends the machine's live replication sessions (it failed over: its stream is refused from now on). */
  endStreams(machineId: string, reason: string): void;
}



/** A job that runs in this process. */
interface Run {
  record: JobRecord;
  abort: AbortController;
  vms: Map<string, RunningVm>;
  dir: string;
  resume?: () => void;
}

/**
 * Recovered VM names on the target: test VMs ferry-test-<job>-<name> (swept when the receiver
 * starts: a test never outlives its receiver), failed-over machines ferry-<name> (they keep
 * running: they are the production machines now).
 */
const TEST_PREFIX = 'ferry-test-';
const SANDBOX_NET = '10.77.0';

export class RecoveryService implements RecoveryApi {
  private readonly running = new Map<number, Run>();
  /** Plans whose test failover has VMs up (not cleaned up yet): the job id. */
  private readonly testRuns = new Map<string, number>();
  private readonly emitter = new EventEmitter();
  /** Machines failing back: each volume's progress as their failback sessions report it. */
  private readonly failbacks = new Map<string, Map<string, FailbackProgress>>();
  /** Failing-back machines whose recovered VM is stopped: the next pass is the final one. */
  private readonly stoppedSources = new Set<string>();

  constructor(private readonly o: RecoveryServiceOptions) {
    this.emitter.setMaxListeners(0);
  }

  /** Jobs left running by a previous process end failed; VMs it left behind are stopped. */
  async start(): Promise<void> {
    const ended = this.o.store.markUnfinished('the receiver restarted while the job ran', Date.now());
    if (ended.length > 0) log.warn('jobs left running by the last receiver process were marked failed', { jobs: ended.map((j) => j.id) });
    if (this.o.target) {
      const swept = await this.o.target.sweep(TEST_PREFIX).catch((err: Error) => {
        log.warn('cannot sweep recovered VMs left behind', { error: err.message });
        return [];
      });
      if (swept.length > 0) log.warn('stopped recovered VMs left behind', { vms: swept });
    }
  }

  /**
   * Ends the running jobs. Test VMs stop with them; failed-over machines keep running (they are
   * the production machines now: qemu runs them detached from the receiver).
   */
  async stop(): Promise<void> {
    const all = [...this.running.values()];
    for (const run of all) if (!run.record.finished) run.abort.abort();
    await Promise.all(all.filter((run) => run.record.snapshot().kind === 'test-failover').map((run) => this.stopVms(run, false)));
    this.o.store.close();
  }

  // ---- plans ---------------------------------------------------------------------------------

  plans(): Plan[] {
    return this.o.store.plans();
  }

  plan(id: string): Plan {
    const p = this.o.store.plan(id);
    if (!p) throw new ControlError('not-found', `no recovery plan ${id}`, 'id');
    return p;
  }

  createPlan(input: PlanInput): Plan {
    const plan = validatePlanInput(input, this.machineIds());
    if (this.o.store.plan(plan.name)) throw new ControlError('conflict', `a recovery plan named ${plan.name} exists`, 'name');
    return this.o.store.addPlan({ ...plan, id: plan.name }, Date.now());
  }

  updatePlan(id: string, input: PlanInput, revision: number): Plan {
    this.plan(id);
    if (input.name !== undefined && input.name !== id) throw new ControlError('invalid', `a plan cannot be renamed (${id} -> ${input.name}): create a new one`, 'name');
    const plan = validatePlanInput({ ...input, name: id }, this.machineIds());
    return this.o.store.replacePlan(id, plan, revision, Date.now());
  }

  deletePlan(id: string): void {
    this.plan(id);
    if (this.testRuns.has(id)) throw new ControlError('conflict', `plan ${id} has a test failover running: clean it up first (ferry failover cleanup --plan ${id})`);
    if ([...this.running.values()].some((r) => r.record.snapshot().planId === id)) throw new ControlError('conflict', `a job of plan ${id} is running`);
    this.o.store.deletePlan(id);
  }

  // ---- jobs ----------------------------------------------------------------------------------

  jobs(filter?: JobFilter): Job[] {
    return this.o.store.jobs(filter ?? {});
  }

  job(id: number): Job {
    const run = this.running.get(id);
    if (run) return run.record.snapshot();
    const j = this.o.store.job(id);
    if (!j) throw new ControlError('not-found', `no job ${id}`, 'id');
    return j;
  }

  resumeJob(id: number): Job {
    const run = this.running.get(id);
    if (!run?.resume) throw new ControlError('conflict', `job ${id} is not waiting at a manual step`);
    run.resume();
    return run.record.snapshot();
  }

  cancelJob(id: number): Job {
    const run = this.running.get(id);
    if (!run) throw new ControlError('conflict', `job ${id} is not running`);
    run.abort.abort();
    return run.record.snapshot();
  }

  subscribeJobs(listener: (job: Job) => void): () => void {
    this.emitter.on('job', listener);
    return () => this.emitter.off('job', listener);
  }

  protection(machineId: string): MachineProtection {
    this.o.plane.machine(machineId);
    return this.o.store.protection(machineId) ?? { machineId, state: 'protected', runsOn: '', jobId: null, sinceMs: 0 };
  }

  /** Why the receiver refuses this agent's stream now (it is failed over), or undefined. */
  streamRefusal(machineId: string): string | undefined {
    const p = this.o.store.protection(machineId);
    if (!p || p.state === 'protected') return undefined;
    return `machine ${machineId} is ${p.state.replace('-', ' ')} (it runs on ${p.runsOn || 'the recovery site'} since job ${p.jobId ?? '?'}): the receiver refuses its old stream; fail back to protect it again`;
  }

  // ---- test failover, failover, cleanup, commit ----------------------------------------------

  testFailover(planId: string, point?: PointSpec): Job {
    const plan = this.plan(planId);
    this.requireTarget();
    const open = this.testRuns.get(planId);
    if (open !== undefined) throw new ControlError('conflict', `plan ${planId} has a test failover (job ${open}) not cleaned up: ferry failover cleanup --plan ${planId}`);
    const spec = point ?? plan.defaultPoint;
    this.chooseOrRefuse(plan, spec);
    const run = this.newRun('test-failover', plan, spec);
    this.testRuns.set(planId, run.record.id);
    void this.recover(run, plan, { sandbox: true });
    return run.record.snapshot();
  }

  cleanupTestFailover(planId: string): Job {
    const plan = this.plan(planId);
    const jobId = this.testRuns.get(planId);
    if (jobId === undefined) throw new ControlError('conflict', `plan ${planId} has no test failover to clean up`);
    const test = this.running.get(jobId);
    // A test still booting or waiting at a manual step ends cancelled; its VMs are stopped below.
    if (test && !test.record.finished) test.abort.abort();
    const run = this.newRun('cleanup', plan, { kind: 'latest' });
    void (async () => {
      const step = run.record.addStep(`stop the VMs and delete the disks of job ${jobId}`);
      run.record.startStep(step);
      try {
        if (test) {
          await this.stopVms(test, true);
          this.running.delete(jobId);
        }
        fs.rmSync(path.join(this.jobDir(jobId), 'disks'), { recursive: true, force: true });
        this.testRuns.delete(planId);
        run.record.finishStep(step, true, 'the test VMs are stopped and their overlays deleted; the evidence is kept');
        run.record.succeed();
      } catch (err) {
        run.record.finishStep(step, false, (err as Error).message);
        run.record.fail((err as Error).message);
      }
      this.finishRun(run);
    })();
    return run.record.snapshot();
  }

  failover(planId: string, options: { point?: PointSpec; planned: boolean }): Job {
    const plan = this.plan(planId);
    this.requireTarget();
    for (const id of planMachineIds(plan)) {
      const p = this.o.store.protection(id);
      if (p && p.state !== 'protected') throw new ControlError('conflict', `machine ${id} is already ${p.state} (job ${p.jobId})`);
    }
    if (options.planned) {
      if (options.point) throw new ControlError('invalid', 'a planned failover makes its own final point: give no --point', 'point');
      const groupId = this.plannedGroup(plan);
      const run = this.newRun('failover', plan, { kind: 'latest-app' });
      void (async () => {
        try {
          const round = await this.step(run, `final application-consistent point of group ${groupId} (the applications stay stopped)`, async () => {
            const r = await this.o.plane.runRound(groupId, { app: true, final: true });
            if (r.state !== 'done') throw new Error(`the final round ${r.id} ${r.state}: ${r.reason}`);
            if (!r.app) throw new Error(`the final round ${r.id} is not application-consistent`);
            return { value: r, detail: `round ${r.id}` };
          });
          await this.step(run, 'wait until every write up to it is applied', async () => ({ value: undefined, detail: await this.waitApplied(run, round.pointIds) }));
          run.record.setPoint({ kind: 'round', roundId: round.id });
        } catch (err) {
          run.record.fail((err as Error).message);
          this.finishRun(run);
          return;
        }
        await this.recover(run, plan, { sandbox: false });
      })();
      return run.record.snapshot();
    }
    const spec = options.point ?? plan.defaultPoint;
    this.chooseOrRefuse(plan, spec);
    const run = this.newRun('failover', plan, spec);
    void this.recover(run, plan, { sandbox: false });
    return run.record.snapshot();
  }

  /** A point spec that names no usable point is the caller's mistake: refused before a job starts. */
  private chooseOrRefuse(plan: Plan, spec: PointSpec): void {
    const r = this.choose(plan, spec);
    if (!r.ok) throw new ControlError('invalid', r.reason, 'point');
  }

  commitFailover(planId: string): Job {
    const plan = this.plan(planId);
    const machines = planMachineIds(plan);
    const failed = machines.map((id) => this.o.store.protection(id));
    if (failed.some((p) => !p || p.state !== 'failed-over')) throw new ControlError('conflict', `plan ${planId}'s machines are not all failed over`);
    const run = this.newRun('commit', plan, { kind: 'latest' });
    const step = run.record.addStep("drop the machines' other recovery points");
    run.record.startStep(step);
    let dropped = 0;
    for (const p of failed) {
      const job = p?.jobId != null ? this.o.store.job(p.jobId) : undefined;
      const jm = job?.machines.find((m) => m.machineId === p?.machineId);
      for (const [volumeId, pointId] of Object.entries(jm?.points ?? {})) dropped += this.o.deletePointsExcept(volumeId, [pointId]);
    }
    run.record.finishStep(step, true, `the failover is committed: ${dropped} other point(s) dropped; fail back to protect the machines again`);
    run.record.succeed();
    this.finishRun(run);
    return run.record.snapshot();
  }

  /** The one group with multi-machine consistency that holds every machine of the plan (a planned failover cuts its last point as a round). */
  private plannedGroup(plan: Plan): string {
    const machines = planMachineIds(plan).map((id) => this.o.plane.machine(id));
    const groupId = machines[0]?.groupId;
    const group = groupId ? this.o.plane.group(groupId) : undefined;
    if (!group || !group.policy.multiMachineConsistency || machines.some((m) => m.groupId !== groupId)) {
      throw new ControlError('invalid', `a planned failover needs the plan's machines in one protection group with multi-machine consistency on (it cuts their last point as one round); otherwise stop the applications and run an unplanned failover to latest-app`, 'planned');
    }
    const offline = machines.filter((m) => !m.connected);
    if (offline.length > 0) throw new ControlError('conflict', `${offline.map((m) => m.name).join(', ')} not connected: a planned failover needs every agent to quiesce its machine (or shut them down and run an unplanned failover)`);
    return group.id;
  }

  /** Resolves once every volume has applied through its point's seq. */
  private async waitApplied(run: Run, pointIds: readonly number[]): Promise<string> {
    const wanted = new Map<string, number>();
    for (const m of planMachineIds(this.plan(run.record.snapshot().planId)).map((id) => this.o.plane.machine(id))) {
      for (const v of m.volumes) {
        const p = this.o.points(v.volumeId).find((x) => pointIds.includes(x.id));
        if (!p) throw new Error(`the final round has no point of volume ${v.volumeId}`);
        wanted.set(v.volumeId, p.seq);
      }
    }
    await this.waitExportable(run, wanted);
    return `${wanted.size} volume(s) applied through their final point`;
  }

  /** Resolves once every volume's replica holds its seq for good (see `exportableSeq`). */
  private async waitExportable(run: Run, wanted: ReadonlyMap<string, number>): Promise<void> {
    const deadline = Date.now() + 30 * 60_000;
    for (;;) {
      const behind = [...wanted].filter(([v, seq]) => this.o.exportableSeq(v) < seq);
      if (behind.length === 0) return;
      if (run.abort.signal.aborted) throw new Error('cancelled');
      if (Date.now() > deadline) throw new Error(`not applied within 30 min: ${behind.map(([v, seq]) => `${v} at ${this.o.exportableSeq(v)} of ${seq}`).join(', ')}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  // ---- failback --------------------------------------------------------------------------------

  failbackPrepare(planId: string): Job {
    const plan = this.plan(planId);
    const machines = planMachineIds(plan);
    for (const id of machines) {
      const p = this.o.store.protection(id);
      if (!p || p.state !== 'failed-over') throw new ControlError('conflict', `machine ${id} is ${p?.state ?? 'protected'}: only failed-over machines fail back`);
    }
    const run = this.newRun('failback-prepare', plan, { kind: 'latest' });
    for (const id of machines) {
      const p = this.o.store.protection(id) as MachineProtection;
      this.o.store.setProtection({ ...p, state: 'failing-back' });
      this.failbacks.set(id, new Map());
      const m = this.o.plane.machine(id);
      run.record.setMachine(id, { vmName: m.recovery.recoveredName, runsOn: p.runsOn, points: {}, state: 'pending', address: '', serialLog: '', screenshot: '', bootMs: null, detail: 'waiting for `ferry agent failback` on the original machine' });
    }
    this.runSteps(run, async () => {
      for (const id of machines) {
        const m = this.o.plane.machine(id);
        await this.step(run, `first pass of ${m.name} (the original disks pull what differs)`, async () => {
          const done = await this.waitFailback(run, id, (v) => v.state === 'in-sync' || v.state === 'done');
          return { value: undefined, detail: done };
        });
      }
    });
    return run.record.snapshot();
  }

  failback(planId: string): Job {
    const plan = this.plan(planId);
    const machines = planMachineIds(plan);
    for (const id of machines) {
      const p = this.o.store.protection(id);
      if (!p || p.state !== 'failing-back') throw new ControlError('conflict', `machine ${id} is ${p?.state ?? 'protected'}: run ferry failback prepare --plan ${planId} first`);
      // After a receiver restart the failback sessions report anew (progress lives in memory).
      if (!this.failbacks.has(id)) this.failbacks.set(id, new Map());
    }
    const run = this.newRun('failback', plan, { kind: 'latest' });
    this.runSteps(run, async () => {
      for (const id of machines) {
        const m = this.o.plane.machine(id);
        await this.step(run, `stop the recovered ${m.name}`, async () => {
          const detail = await this.stopRecovered(id);
          this.stoppedSources.add(id);
          return { value: undefined, detail };
        });
      }
      for (const id of machines) {
        const m = this.o.plane.machine(id);
        await this.step(run, `final pass of ${m.name}`, async () => ({ value: undefined, detail: await this.waitFailback(run, id, (v) => v.state === 'done') }));
      }
      await this.step(run, 'protect the machines again in the original direction', async () => {
        for (const id of machines) {
          for (const v of this.o.plane.machine(id).volumes) this.o.requestWholeVolumeCompare(v.volumeId, 'failback: the disk was rewritten from the recovered machine');
          this.o.store.setProtection({ machineId: id, state: 'protected', runsOn: '', jobId: run.record.id, sinceMs: Date.now() });
          this.failbacks.delete(id);
          this.stoppedSources.delete(id);
        }
        return { value: undefined, detail: 'their agents may connect again; each compares its whole volume with the replica and sends only what differs' };
      });
    });
    return run.record.snapshot();
  }

  /** What the receiver's failback sessions ask and report (receiver/failback-sender.ts). */
  failbackAccess(): FailbackAccess {
    return {
      disk: (agentId, volumeId) => this.failbackDisk(agentId, volumeId),
      sourceStopped: (agentId) => this.failbackSourceStopped(agentId),
      report: (agentId, volumeId, progress) => this.noteFailbackProgress(agentId, volumeId, progress),
    };
  }

  /** The recovered disk of a failing-back machine's volume (what its original disk pulls). */
  failbackDisk(machineId: string, volumeId: string): { ok: true; path: string; sizeBytes: number } | { ok: false; reason: string } {
    const p = this.o.store.protection(machineId);
    if (!p || p.state !== 'failing-back') return { ok: false, reason: `machine ${machineId} is ${p?.state ?? 'protected'}: a failback needs \`ferry failback prepare\` after a failover` };
    const disk = this.persistentDisk(machineId, volumeId);
    if (!fs.existsSync(disk)) return { ok: false, reason: `no recovered disk of volume ${volumeId} for machine ${machineId}` };
    return { ok: true, path: disk, sizeBytes: fs.statSync(disk).size };
  }

  failbackSourceStopped(machineId: string): boolean {
    return this.stoppedSources.has(machineId);
  }

  noteFailbackProgress(machineId: string, volumeId: string, progress: FailbackProgress): void {
    const volumes = this.failbacks.get(machineId);
    if (!volumes) return;
    volumes.set(volumeId, progress);
    this.emitter.emit('failback');
  }

  private waitFailback(run: Run, machineId: string, done: (v: FailbackProgress) => boolean): Promise<string> {
    const volumes = this.o.plane.machine(machineId).volumes.map((v) => v.volumeId);
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const progress = this.failbacks.get(machineId);
        const states = volumes.map((v) => progress?.get(v));
        const failed = states.find((s) => s?.state === 'failed');
        const summary = volumes.map((v, i) => `${v}: ${states[i] ? `pass ${states[i]?.pass}, ${states[i]?.sentBytes} of ${states[i]?.sizeBytes} bytes sent` : 'not connected'}`).join('; ');
        run.record.setMachine(machineId, { detail: summary, state: states.every((s) => s && done(s)) ? 'healthy' : 'booting' });
        if (failed) return finish(new Error(`failback of ${machineId} failed: ${failed.detail}`));
        if (states.every((s) => s && done(s))) finish(undefined, summary);
      };
      const finish = (err: Error | undefined, text = ''): void => {
        this.emitter.off('failback', check);
        run.abort.signal.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve(text);
      };
      const onAbort = (): void => finish(new Error('cancelled'));
      run.abort.signal.addEventListener('abort', onAbort, { once: true });
      this.emitter.on('failback', check);
      check();
    });
  }

  /**
   * Stops a failed-over machine's VM: gracefully through the run that booted it; after a receiver
   * restart (no handle) through the target's registry, a hard stop, so that the final pass never
   * runs while the machine still writes.
   */
  private async stopRecovered(machineId: string): Promise<string> {
    for (const run of this.running.values()) {
      const vm = run.vms.get(machineId);
      if (!vm) continue;
      await vm.stop({ graceful: true, timeoutMs: 120_000 });
      run.vms.delete(machineId);
      if (run.vms.size === 0) this.running.delete(run.record.id);
      return 'shut down: its disk no longer changes';
    }
    const name = `ferry-${this.o.plane.machine(machineId).recovery.recoveredName}`;
    const swept = (await this.o.target?.sweep(name)) ?? [];
    return swept.length > 0 ? `${swept.join(', ')} stopped hard (this receiver restarted since it booted them)` : 'not running';
  }

  private persistentDisk(machineId: string, volumeId: string): string {
    return path.join(this.o.dataDir, 'recovery', 'machines', machineId, `${volumeId}.raw`);
  }

  // ---- the recovery itself -------------------------------------------------------------------

  private async recover(run: Run, plan: Plan, how: { sandbox: boolean }): Promise<boolean> {
    const { record, abort } = run;
    const started = Date.now();
    try {
      const chosen = await this.step(run, 'choose the recovery point', async () => {
        const r = this.choose(plan, record.snapshot().point);
        if (!r.ok) throw new Error(r.reason);
        return { value: r, detail: r.description };
      });
      await this.step(run, 'check the recovery target', async () => {
        const c = await (this.o.target as RecoveryTarget).check();
        if (!c.ok) throw new Error(c.detail);
        return { value: undefined, detail: c.detail };
      });
      const machines = planMachineIds(plan).map((id) => this.o.plane.machine(id));
      const disks = new Map<string, VmDisk[]>();
      machines.forEach((m, i) => {
        record.setMachine(m.id, {
          vmName: m.recovery.recoveredName,
          runsOn: '',
          points: chosen.points[m.id] ?? {},
          state: 'pending',
          address: how.sandbox ? `${SANDBOX_NET}.${11 + i}` : '',
          serialLog: path.join(run.dir, 'evidence', `${m.recovery.recoveredName}.serial.log`),
          screenshot: path.join(run.dir, 'evidence', `${m.recovery.recoveredName}.png`),
          bootMs: null,
          detail: '',
        });
      });
      fs.mkdirSync(path.join(run.dir, 'evidence'), { recursive: true });
      for (const m of machines) {
        const points = chosen.points[m.id] ?? {};
        record.setMachine(m.id, { state: 'exporting' });
        disks.set(m.id, await this.step(run, `export ${m.name} at ${describePoints(points)}`, async () => ({ value: await this.exportDisks(run, m, points, how.sandbox), detail: how.sandbox ? 'copy-on-write overlays over the exported images' : 'persistent disks' })));
      }
      const network = `ferry-job-${record.id}`;
      for (const [gi, group] of plan.bootGroups.entries()) {
        const g = gi + 1;
        await this.actions(run, plan, group, g, 'before');
        await this.step(run, `boot group ${g} (${group.machines.map((id) => this.o.plane.machine(id).name).join(', ')})`, async () => {
          const results = await Promise.allSettled(group.machines.map((id) => this.bootMachine(run, plan, this.o.plane.machine(id), disks.get(id) ?? [], { kind: how.sandbox ? 'sandbox' : 'site', name: how.sandbox ? network : '' })));
          const bad = results.flatMap((r, i) => (r.status === 'rejected' ? [`${this.o.plane.machine(group.machines[i]).name}: ${(r.reason as Error).message}`] : []));
          if (bad.length > 0) throw new Error(bad.join('; '));
          return { value: undefined, detail: 'every machine is healthy' };
        });
        await this.actions(run, plan, group, g, 'after');
      }
      record.setRto(Date.now() - started);
      if (!how.sandbox) {
        for (const m of machines) {
          const runsOn = record.snapshot().machines.find((x) => x.machineId === m.id)?.runsOn ?? '';
          this.o.store.setProtection({ machineId: m.id, state: 'failed-over', runsOn, jobId: record.id, sinceMs: Date.now() });
          this.o.endStreams(m.id, this.streamRefusal(m.id) ?? 'failed over');
        }
      }
      record.succeed();
      // Test VMs and failed-over machines keep running: cleanup (or failback) stops them.
      this.finishRun(run, { keepRunning: true });
      return true;
    } catch (err) {
      const reason = abort.signal.aborted ? 'cancelled by an operator' : (err as Error).message;
      for (const [id, vm] of run.vms) {
        await vm.screenshot(record.snapshot().machines.find((m) => m.machineId === id)?.screenshot ?? path.join(run.dir, 'evidence', `${id}.png`)).catch(() => undefined);
      }
      await this.stopVms(run, true);
      fs.rmSync(path.join(run.dir, 'disks'), { recursive: true, force: true });
      if (how.sandbox) this.testRuns.delete(plan.id);
      if (abort.signal.aborted) record.cancel(reason);
      else record.fail(reason);
      this.finishRun(run);
      return false;
    }
  }

  private async bootMachine(run: Run, plan: Plan, m: Machine, disks: VmDisk[], net: { kind: 'sandbox' | 'site'; name: string }): Promise<void> {
    const { record } = run;
    const jm = record.snapshot().machines.find((x) => x.machineId === m.id);
    if (!jm) throw new Error(`machine ${m.id} is not part of the job`);
    const workDir = path.join(run.dir, 'vms', jm.vmName);
    fs.mkdirSync(workDir, { recursive: true });
    const network: VmNetwork = { kind: net.kind, name: net.name, address: jm.address, mac: macOf(m.id) };
    const started = Date.now();
    record.setMachine(m.id, { state: 'booting' });
    const vm = await (this.o.target as RecoveryTarget).boot({
      name: net.kind === 'sandbox' ? `${TEST_PREFIX}${record.id}-${jm.vmName}` : `ferry-${jm.vmName}`,
      vcpus: m.recovery.vcpus,
      memoryMiB: m.recovery.memoryMiB,
      disks,
      network,
      serialLog: jm.serialLog,
      workDir,
      probePorts: plan.health.tcpPort > 0 ? [plan.health.tcpPort] : [],
    });
    run.vms.set(m.id, vm);
    record.setMachine(m.id, { runsOn: vm.runsOn });
    try {
      await this.waitHealthy(vm, plan, run.abort.signal);
      record.setMachine(m.id, { state: 'healthy', bootMs: Date.now() - started, detail: healthText(plan) });
    } catch (err) {
      record.setMachine(m.id, { state: 'unhealthy', detail: (err as Error).message });
      throw err;
    } finally {
      await vm.screenshot(jm.screenshot).catch((e: Error) => log.warn('no screenshot of a recovered VM', { vm: vm.name, error: e.message }));
    }
  }

  private async waitHealthy(vm: RunningVm, plan: Plan, signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + plan.health.timeoutMs;
    if (plan.health.serialPattern !== '') await vm.waitSerial(new RegExp(plan.health.serialPattern, 'm'), plan.health.timeoutMs, signal);
    if (plan.health.tcpPort > 0) {
      for (;;) {
        if (signal.aborted) throw new Error('cancelled');
        if (await vm.probeTcp(plan.health.tcpPort, 2000)) return;
        if (Date.now() > deadline) throw new Error(`TCP port ${plan.health.tcpPort} did not answer within ${Math.round(plan.health.timeoutMs / 1000)} s`);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  private async exportDisks(run: Run, m: Machine, points: Record<string, number>, overlay: boolean): Promise<VmDisk[]> {
    const dir = path.join(run.dir, 'disks', m.recovery.recoveredName);
    fs.mkdirSync(dir, { recursive: true });
    const out: VmDisk[] = [];
    for (const v of m.volumes) {
      const pointId = points[v.volumeId];
      if (pointId === undefined) throw new Error(`no point chosen for volume ${v.volumeId}`);
      const image = path.join(dir, `${v.volumeId}.raw`);
      // A point is recorded once durable; its export needs it applied and checkpointed.
      const point = this.o.points(v.volumeId).find((p) => p.id === pointId);
      if (point) await this.waitExportable(run, new Map([[v.volumeId, point.seq]]));
      await this.o.exportPoint({ dataDir: this.o.dataDir, volumeId: v.volumeId, pointId, out: image, signal: run.abort.signal });
      if (overlay) {
        const qcow = path.join(dir, `${v.volumeId}.qcow2`);
        await createOverlay(image, 'raw', qcow);
        out.push({ path: qcow, format: 'qcow2' });
      } else {
        const disk = this.persistentDisk(m.id, v.volumeId);
        fs.mkdirSync(path.dirname(disk), { recursive: true });
        await createPersistentDisk(image, disk);
        await removeDisk(image);
        out.push({ path: disk, format: 'raw' });
      }
    }
    return out;
  }

  private async actions(run: Run, plan: Plan, group: BootGroup, g: number, when: 'before' | 'after'): Promise<void> {
    for (const a of when === 'before' ? group.before : group.after) {
      if (a.kind === 'script') await this.script(run, plan, g, a);
      else await this.manual(run, g, when, a);
    }
  }

  private async script(run: Run, plan: Plan, g: number, a: Extract<PlanAction, { kind: 'script' }>): Promise<void> {
    await this.step(run, `script ${a.name} (group ${g})`, async () => {
      const machines = run.record.snapshot().machines;
      const env: Record<string, string> = {
        FERRY_PLAN: plan.id,
        FERRY_JOB: String(run.record.id),
        FERRY_JOB_KIND: run.record.snapshot().kind,
        FERRY_BOOT_GROUP: String(g),
        FERRY_MACHINES: machines.map((m) => `${m.vmName}=${m.address}`).join(','),
      };
      for (const m of machines) env[`FERRY_MACHINE_${m.vmName.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_ADDRESS`] = m.address;
      const logFile = path.join(run.dir, 'evidence', `script-${g}-${a.name}.log`);
      const r = await runScript(a.command, { env, timeoutMs: a.timeoutMs, logFile, cwd: run.dir, signal: run.abort.signal });
      if (!r.ok) throw new Error(`script ${a.name}: ${r.detail} (log: ${logFile})`);
      return { value: undefined, detail: `${r.detail} (log: ${logFile})` };
    });
  }

  private async manual(run: Run, g: number, when: string, a: Extract<PlanAction, { kind: 'manual' }>): Promise<void> {
    const { record } = run;
    const step = record.addStep(`manual ${a.name} (${when} group ${g})`);
    record.waitStep(step, `${a.instructions} — resume with: ferry job resume ${record.id}`);
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => reject(new Error('cancelled'));
      run.abort.signal.addEventListener('abort', onAbort, { once: true });
      run.resume = () => {
        run.abort.signal.removeEventListener('abort', onAbort);
        run.resume = undefined;
        resolve();
      };
    }).catch((err: Error) => {
      record.finishStep(step, false, err.message);
      throw err;
    });
    record.finishStep(step, true, 'resumed by an operator');
  }

  /** Runs a job's steps in the background: it succeeds when they all did, else fails (or ends cancelled). */
  private runSteps(run: Run, steps: () => Promise<void>): void {
    void (async () => {
      try {
        await steps();
        run.record.succeed();
      } catch (err) {
        if (run.abort.signal.aborted) run.record.cancel('cancelled by an operator');
        else run.record.fail((err as Error).message);
      }
      this.finishRun(run);
    })();
  }

  /** One step: its outcome or its error is recorded; an error ends the job. */
  private async step<T>(run: Run, name: string, body: () => Promise<{ value: T; detail: string }>): Promise<T> {
    const id = run.record.addStep(name);
    run.record.startStep(id);
    try {
      if (run.abort.signal.aborted) throw new Error('cancelled');
      const r = await body();
      run.record.finishStep(id, true, r.detail);
      return r.value;
    } catch (err) {
      run.record.finishStep(id, false, (err as Error).message);
      throw err;
    }
  }

  private choose(plan: Plan, spec: PointSpec): ReturnType<typeof choosePoints> {
    const machines = planMachineIds(plan).map((id) => this.o.plane.machine(id));
    const groupIds = new Set(machines.map((m) => m.groupId));
    const groupId = groupIds.size === 1 ? [...groupIds][0] : null;
    const group = groupId ? this.o.plane.group(groupId) : undefined;
    const points = machines.flatMap((m) => m.volumes.flatMap((v) => this.o.points(v.volumeId)));
    return choosePoints(
      {
        machines: machines.map((m) => ({ machineId: m.id, volumes: m.volumes.map((v) => v.volumeId) })),
        multiMachineConsistency: group?.policy.multiMachineConsistency === true && group.members.length > 0 && machines.every((m) => group.members.includes(m.id)),
        groupRounds: group ? this.o.plane.rounds(group.id, 1000).filter((r) => r.state === 'done') : [],
        points,
      },
      spec,
    );
  }

  private newRun(kind: JobKind, plan: Plan, point: PointSpec): Run {
    const job = this.o.store.addJob({ kind, planId: plan.id, state: 'running', point, startedMs: Date.now(), finishedMs: null, rtoMs: null, steps: [], machines: [], reason: '' });
    const id = job.id;
    const record = new JobRecord({ id, kind, planId: plan.id, point, startedMs: job.startedMs });
    const run: Run = { record, abort: new AbortController(), vms: new Map(), dir: this.jobDir(id) };
    fs.mkdirSync(run.dir, { recursive: true });
    record.on('changed', (job: Job) => {
      try {
        this.o.store.saveJob(job);
      } catch (err) {
        log.error('cannot save a job', { job: job.id, error: (err as Error).message });
      }
      this.emitter.emit('job', job);
    });
    this.running.set(id, run);
    log.info('recovery job started', { job: id, kind, plan: plan.id, point: pointSpecText(point) });
    return run;
  }

  private finishRun(run: Run, options: { keepRunning?: boolean } = {}): void {
    const job = run.record.snapshot();
    log.info('recovery job ended', { job: job.id, kind: job.kind, plan: job.planId, state: job.state, reason: job.reason || undefined, rtoMs: job.rtoMs ?? undefined });
    // A test failover's VMs stay up until cleanup: its run stays known to stop them then.
    if (!options.keepRunning) this.running.delete(job.id);
  }

  private async stopVms(run: Run, graceful: boolean): Promise<void> {
    await Promise.all([...run.vms.values()].map((vm) => vm.stop({ graceful, timeoutMs: 30_000 }).catch((err: Error) => log.warn('cannot stop a recovered VM', { vm: vm.name, error: err.message }))));
    run.vms.clear();
  }

  private jobDir(id: number): string {
    return path.join(this.o.dataDir, 'recovery', 'jobs', String(id));
  }

  private machineIds(): Set<string> {
    return new Set(this.o.plane.machines().map((m) => m.id));
  }

  private requireTarget(): void {
    if (!this.o.target) throw new ControlError('unavailable', 'this receiver has no recovery target: install qemu (qemu-system-x86 and qemu-utils) or configure libvirt');
  }
}

function describePoints(points: Record<string, number>): string {
  const ids = [...new Set(Object.values(points))];
  return ids.length === 1 ? `point ${ids[0]}` : `points ${ids.join(', ')}`;
}

function healthText(plan: Plan): string {
  const parts: string[] = [];
  if (plan.health.serialPattern !== '') parts.push(`console reached /${plan.health.serialPattern}/`);
  if (plan.health.tcpPort > 0) parts.push(`TCP ${plan.health.tcpPort} answered`);
  return parts.join(', ') || 'booted';
}

/** A stable locally administered MAC per machine. */
export function macOf(machineId: string): string {
  const h = createHash('sha256').update(machineId).digest();
  return ['52', '54', '00', h[0], h[1], h[2]].map((b) => (typeof b === 'number' ? b.toString(16).padStart(2, '0') : b)).join(':');
}
