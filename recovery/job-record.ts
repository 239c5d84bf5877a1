import { EventEmitter } from 'events';
import type { Job, JobKind, JobMachine, JobState, JobStep, PointSpec } from './model';

/**
 * The one owner of a running job's state: every change is a method here, and each one emits
 * 'changed' with a snapshot (the service stores it, the API streams it). A transition that does
 * not fit the job's state (finishing a step twice, changing an ended job) is a programming error
 * and throws.
 */

export interface JobRecordEvents {
  changed: [job: Job];
}

export type MachinePatch = Partial<Omit<JobMachine, 'machineId'>>;

const FINAL: readonly JobState[] = ['succeeded', 'failed', 'cancelled'];

export class JobRecord extends EventEmitter<JobRecordEvents> {
  private readonly job: Job;
  private nextStepId: number;

  constructor(
    init: { id: number; kind: JobKind; planId: string; point: PointSpec; startedMs?: number; machines?: JobMachine[] },
    private readonly now: () => number = Date.now,
  ) {
    super();
    this.job = {
      id: init.id,
      kind: init.kind,
      planId: init.planId,
      state: 'running',
      point: structuredClone(init.point),
      startedMs: init.startedMs ?? now(),
      finishedMs: null,
      rtoMs: null,
      steps: [],
      machines: structuredClone(init.machines ?? []),
      reason: '',
    };
    this.nextStepId = 1;
  }

  get id(): number {
    return this.job.id;
  }

  get state(): JobState {
    return this.job.state;
  }

  get finished(): boolean {
    return FINAL.includes(this.job.state);
  }

  snapshot(): Job {
    return structuredClone(this.job);
  }

  /** A pending step; returns its id. */
  addStep(name: string): number {
    this.open();
    const id = this.nextStepId++;
    this.job.steps.push({ id, name, state: 'pending', startedMs: null, finishedMs: null, detail: '' });
    this.changed();
    return id;
  }

  startStep(id: number, detail = ''): void {
    const step = this.step(id, ['pending']);
    step.state = 'running';
    step.startedMs = this.now();
    step.detail = detail;
    this.changed();
  }

  /** Ends a running or waiting step; a job waiting on it runs again. */
  finishStep(id: number, ok: boolean, detail: string): void {
    const step = this.step(id, ['running', 'waiting']);
    step.state = ok ? 'succeeded' : 'failed';
    step.finishedMs = this.now();
    step.detail = detail;
    if (this.job.state === 'waiting' && !this.job.steps.some((s) => s.state === 'waiting')) this.job.state = 'running';
    this.changed();
  }

  /** A manual step: the job waits for an operator (finishStep when resumed). */
  waitStep(id: number, detail: string): void {
    const step = this.step(id, ['pending', 'running']);
    step.startedMs ??= this.now();
    step.state = 'waiting';
    step.detail = detail;
    this.job.state = 'waiting';
    this.changed();
  }

  skipStep(id: number, detail: string): void {
    const step = this.step(id, ['pending']);
    step.state = 'skipped';
    step.detail = detail;
    this.changed();
  }

  /** Changes a machine of the job, adding it (pending, nothing known yet) when new. */
  setMachine(machineId: string, patch: MachinePatch): void {
    this.open();
    let m = this.job.machines.find((x) => x.machineId === machineId);
    if (!m) {
      m = { machineId, vmName: '', runsOn: '', points: {}, state: 'pending', address: '', serialLog: '', screenshot: '', bootMs: null, detail: '' };
      this.job.machines.push(m);
    }
    Object.assign(m, structuredClone(patch), { machineId });
    this.changed();
  }

  /** The point the run settled on (a planned failover makes its own). */
  setPoint(point: PointSpec): void {
    this.open();
    this.job.point = structuredClone(point);
    this.changed();
  }

  setRto(ms: number): void {
    this.open();
    this.job.rtoMs = ms;
    this.changed();
  }

  succeed(): void {
    this.end('succeeded', '');
  }

  fail(reason: string): void {
    this.end('failed', reason);
  }

  cancel(reason: string): void {
    this.end('cancelled', reason);
  }

  private end(state: JobState, reason: string): void {
    this.open();
    const now = this.now();
    for (const s of this.job.steps) {
      if (s.state === 'pending') {
        s.state = 'skipped';
        if (state !== 'succeeded') s.detail = `not run: the job ${state === 'failed' ? 'failed' : 'was cancelled'}`;
      } else if (s.state === 'running' || s.state === 'waiting') {
        s.state = 'failed';
        s.finishedMs = now;
        s.detail = s.detail === '' ? reason || 'interrupted' : `${s.detail}; ${reason || 'interrupted'}`;
      }
    }
    this.job.state = state;
    this.job.reason = reason;
    this.job.finishedMs = now;
    this.changed();
  }

  private open(): void {
    if (this.finished) throw new Error(`job ${this.job.id} has ended (${this.job.state}): it cannot change`);
  }

  private step(id: number, from: JobStep['state'][]): JobStep {
    this.open();
    const step = this.job.steps.find((s) => s.id === id);
    if (!step) throw new Error(`job ${this.job.id} has no step ${id}`);
    if (!from.includes(step.state)) throw new Error(`job ${this.job.id} step ${id} (${step.name}) is ${step.state}, not ${from.join(' or ')}`);
    return step;
  }

  private changed(): void {
    this.emit('changed', this.snapshot());
  }
}
