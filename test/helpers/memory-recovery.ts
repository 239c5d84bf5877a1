/**
 * An in-memory-jobs RecoveryApi for tests of the management API's recovery routes and the CLI
 * that speaks to them. Plans are real (recovery/plan-validate.ts and recovery/store.ts on a
 * catalog file), point choice is real (recovery/point-choice.ts over the points the test gives),
 * jobs are real JobRecords; only the work is synthetic: no VM boots, each machine turns healthy
 * at once with a small PNG and serial log as evidence. A plan's manual steps make the job wait
 * for resumeJob, as the real service does. The real service is tested in test/recovery/ and the
 * VM tests.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ControlError } from '../../control/contract';
import type { JobFilter, MachineProtection, RecoveryApi } from '../../recovery/contract';
import { JobRecord } from '../../recovery/job-record';
import type { Job, JobKind, Plan, PlanAction, PlanInput, PointSpec } from '../../recovery/model';
import { choosePoints, type ChoicePoint } from '../../recovery/point-choice';
import { planMachineIds, validatePlanInput } from '../../recovery/plan-validate';
import { RecoveryStore } from '../../recovery/store';

/** The smallest valid PNG (1x1, grey). */
export const TINY_PNG = Buffer.from('89504e470d0a1a0a0000000d4948445200000001000000010800000000c0a4d1a40000000a49444154789c636860000000820081dd436af40000000049454e44ae426082', 'hex');

export interface MemoryRecoveryOptions {
  /** The catalog file the plans live in. */
  catalogFile: string;
  /** Where jobs write their evidence. */
  evidenceDir: string;
  /** The machines that exist, with their volumes. */
  machines: () => Array<{ id: string; volumes: string[] }>;
  /** The recovery points of those volumes. */
  points?: ChoicePoint[];
}

export class MemoryRecovery implements RecoveryApi {
  private readonly store: RecoveryStore;
  private readonly running = new Map<number, { record: JobRecord; resume?: () => void; cancelled: boolean }>();
  private readonly listeners = new Set<(job: Job) => void>();
  /** Plans whose test failover is up (not cleaned up). */
  private readonly testUp = new Set<string>();
  private readonly protections = new Map<string, MachineProtection>();

  constructor(private readonly options: MemoryRecoveryOptions) {
    this.store = RecoveryStore.open(options.catalogFile);
  }

  close(): void {
    this.store.close();
  }

  plans(): Plan[] {
    return this.store.plans();
  }

  plan(id: string): Plan {
    const p = this.store.plan(id);
    if (!p) throw new ControlError('not-found', `no plan ${id}`);
    return p;
  }

  createPlan(input: PlanInput): Plan {
    const valid = validatePlanInput(input, this.machineIds());
    return this.store.addPlan({ ...valid, id: valid.name }, Date.now());
  }

  updatePlan(id: string, input: PlanInput, revision: number): Plan {
    this.plan(id);
    const valid = validatePlanInput(input, this.machineIds());
    if (valid.name !== id) throw new ControlError('invalid', `a plan keeps its name: ${id}, not ${valid.name}`, 'name');
    return this.store.replacePlan(id, valid, revision, Date.now());
  }

  deletePlan(id: string): void {
    this.plan(id);
    if (this.testUp.has(id)) throw new ControlError('conflict', `plan ${id} has a test failover up: ferry failover cleanup --plan ${id} first`);
    if ([...this.running.values()].some((r) => r.record.snapshot().planId === id)) throw new ControlError('conflict', `a job of plan ${id} is running`);
    this.store.deletePlan(id);
  }

  jobs(filter?: JobFilter): Job[] {
    return this.store.jobs(filter);
  }

  job(id: number): Job {
    const j = this.store.job(id);
    if (!j) throw new ControlError('not-found', `no job ${id}`);
    return j;
  }

  resumeJob(id: number): Job {
    const job = this.job(id);
    const run = this.running.get(id);
    if (job.state !== 'waiting' || !run?.resume) throw new ControlError('conflict', `job ${id} is ${job.state}, not waiting at a manual step`);
    run.resume();
    return this.job(id);
  }

  cancelJob(id: number): Job {
    const job = this.job(id);
    const run = this.running.get(id);
    if (!run) throw new ControlError('conflict', `job ${id} has ended (${job.state}): nothing to cancel`);
    run.cancelled = true;
    run.record.cancel('cancelled by an operator');
    this.testUp.delete(job.planId);
    run.resume?.();
    return this.job(id);
  }

  subscribeJobs(listener: (job: Job) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  testFailover(planId: string, point?: PointSpec): Job {
    const plan = this.plan(planId);
    if (this.testUp.has(planId)) throw new ControlError('conflict', `plan ${planId} has a test failover up: clean it up first`);
    const chosen = this.choose(plan, point ?? plan.defaultPoint);
    this.testUp.add(planId);
    return this.start('test-failover', plan, point ?? plan.defaultPoint, chosen, 'sandbox');
  }

  cleanupTestFailover(planId: string): Job {
    const plan = this.plan(planId);
    if (!this.testUp.has(planId)) throw new ControlError('conflict', `plan ${planId} has no test failover to clean up`);
    this.testUp.delete(planId);
    return this.start('cleanup', plan, plan.defaultPoint, {}, 'none');
  }

  failover(planId: string, options: { point?: PointSpec; planned: boolean }): Job {
    const plan = this.plan(planId);
    const spec = options.point ?? plan.defaultPoint;
    const chosen = this.choose(plan, spec);
    return this.start('failover', plan, spec, chosen, 'failover');
  }

  commitFailover(planId: string): Job {
    const plan = this.plan(planId);
    const ids = planMachineIds(plan);
    if (!ids.every((m) => this.protections.get(m)?.state === 'failed-over')) throw new ControlError('conflict', `plan ${planId} has not failed over: nothing to commit`);
    return this.start('commit', plan, plan.defaultPoint, {}, 'none');
  }

  failbackPrepare(planId: string): Job {
    const plan = this.plan(planId);
    const ids = planMachineIds(plan);
    if (!ids.every((m) => this.protections.get(m)?.state === 'failed-over')) throw new ControlError('conflict', `plan ${planId} has not failed over: nothing to fail back`);
    for (const m of ids) this.protections.set(m, { ...(this.protections.get(m) as MachineProtection), state: 'failing-back' });
    return this.start('failback-prepare', plan, plan.defaultPoint, {}, 'none');
  }

  failback(planId: string): Job {
    const plan = this.plan(planId);
    const ids = planMachineIds(plan);
    if (!ids.every((m) => this.protections.get(m)?.state === 'failing-back')) throw new ControlError('conflict', `plan ${planId} is not failing back: run failback prepare first`);
    for (const m of ids) this.protections.delete(m);
    return this.start('failback', plan, plan.defaultPoint, {}, 'none');
  }

  protection(machineId: string): MachineProtection {
    if (!this.machineIds().includes(machineId)) throw new ControlError('not-found', `no machine ${machineId}`);
    return this.protections.get(machineId) ?? { machineId, state: 'protected', runsOn: '', jobId: null, sinceMs: 0 };
  }

  private machineIds(): string[] {
    return this.options.machines().map((m) => m.id);
  }

  private choose(plan: Plan, spec: PointSpec): Record<string, Record<string, number>> {
    const machines = this.options.machines();
    const ids = planMachineIds(plan);
    const choice = choosePoints(
      {
        machines: ids.map((id) => ({ machineId: id, volumes: machines.find((m) => m.id === id)?.volumes ?? [] })),
        multiMachineConsistency: false,
        groupRounds: [],
        points: this.options.points ?? [],
      },
      spec,
    );
    if (!choice.ok) throw new ControlError('invalid', choice.reason, 'point');
    return choice.points;
  }

  private start(kind: JobKind, plan: Plan, spec: PointSpec, points: Record<string, Record<string, number>>, mode: 'sandbox' | 'failover' | 'none'): Job {
    const stored = this.store.addJob({ kind, planId: plan.id, state: 'running', point: spec, startedMs: Date.now(), finishedMs: null, rtoMs: null, steps: [], machines: [], reason: '' });
    const record = new JobRecord({ id: stored.id, kind, planId: plan.id, point: spec, startedMs: stored.startedMs });
    record.on('changed', (job) => {
      this.store.saveJob(job);
      for (const l of this.listeners) l(job);
    });
    const run: { record: JobRecord; resume?: () => void; cancelled: boolean } = { record, cancelled: false };
    this.running.set(stored.id, run);
    void this.work(run, plan, points, mode)
      .catch((err: Error) => {
        if (!record.finished) record.fail(err.message);
      })
      .finally(() => this.running.delete(stored.id));
    return record.snapshot();
  }

  private async work(run: { record: JobRecord; resume?: () => void; cancelled: boolean }, plan: Plan, points: Record<string, Record<string, number>>, mode: 'sandbox' | 'failover' | 'none'): Promise<void> {
    const { record } = run;
    const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
    const action = async (a: PlanAction, group: number): Promise<void> => {
      const step = record.addStep(`${a.kind} ${a.name} (group ${group})`);
      if (a.kind === 'script') {
        record.startStep(step);
        await tick();
        if (!run.cancelled) record.finishStep(step, true, 'exit 0');
        return;
      }
      await new Promise<void>((resolve) => {
        run.resume = resolve;
        record.waitStep(step, a.instructions);
      });
      run.resume = undefined;
      if (!run.cancelled) record.finishStep(step, true, 'resumed by an operator');
    };
    if (mode === 'none') {
      const step = record.addStep(plan.id);
      record.startStep(step);
      await tick();
      if (run.cancelled) return;
      record.finishStep(step, true, 'done');
      record.succeed();
      return;
    }
    const dir = path.join(this.options.evidenceDir, `job-${record.id}`);
    fs.mkdirSync(dir, { recursive: true });
    for (const [gi, group] of plan.bootGroups.entries()) {
      for (const a of group.before) if (!run.cancelled) await action(a, gi + 1);
      if (run.cancelled) return;
      const boot = record.addStep(`boot group ${gi + 1}`);
      record.startStep(boot);
      for (const [mi, machineId] of group.machines.entries()) {
        const serialLog = path.join(dir, `${machineId}.serial.log`);
        const screenshot = path.join(dir, `${machineId}.png`);
        fs.writeFileSync(serialLog, `Debian GNU/Linux 12 ${machineId} ttyS0\n\n${machineId} login: `);
        fs.writeFileSync(screenshot, TINY_PNG);
        record.setMachine(machineId, {
          vmName: `${plan.id}-${machineId}`,
          runsOn: `qemu:${plan.id}-${machineId}`,
          points: points[machineId] ?? {},
          state: 'healthy',
          address: mode === 'sandbox' ? `10.77.0.${10 + mi + gi * 10}` : '',
          serialLog,
          screenshot,
          bootMs: 1500,
          detail: 'serial console reached the login prompt',
        });
        if (mode === 'failover') this.protections.set(machineId, { machineId, state: 'failed-over', runsOn: `qemu:${plan.id}-${machineId}`, jobId: record.id, sinceMs: Date.now() });
      }
      await tick();
      if (run.cancelled) return;
      record.finishStep(boot, true, `${group.machines.length} machine(s) healthy`);
      for (const a of group.after) if (!run.cancelled) await action(a, gi + 1);
    }
    if (run.cancelled) return;
    record.setRto(Date.now() - record.snapshot().startedMs);
    record.succeed();
  }
}
