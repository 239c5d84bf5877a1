import type { Job, JobKind, JobState, Plan, PlanInput, PointSpec, ProtectionState } from './model';

/**
 * What recovery offers its callers (the management API, the CLI through it, the console, tests):
 * the recovery service implements it (recovery/service.ts). Refusals throw ControlError
 * (control/contract.ts): invalid (400, with the field), not-found (404), conflict (409), and
 * unavailable (503: no recovery target here, e.g. qemu missing).
 */

export interface JobFilter {
  planId?: string;
  kind?: JobKind;
  state?: JobState;
  limit?: number;
}

export interface MachineProtection {
  machineId: string;
  state: ProtectionState;
  /** Where the machine runs now when failed over ("qemu:web-1"), and the job that put it there. */
  runsOn: string;
  jobId: number | null;
  sinceMs: number;
}

export interface RecoveryApi {
  plans(): Plan[];
  plan(id: string): Plan;
  /** The plan's id is its name (a safe identifier). Every machine must exist; a machine appears once. */
  createPlan(input: PlanInput): Plan;
  /** Replaces the plan; refused (conflict) when `revision` is not the plan's current one. */
  updatePlan(id: string, input: PlanInput, revision: number): Plan;
  /** Refused (conflict) while a job of the plan runs or its test failover is not cleaned up. */
  deletePlan(id: string): void;

  jobs(filter?: JobFilter): Job[];
  job(id: number): Job;
  /** Resumes a job waiting at a manual step. */
  resumeJob(id: number): Job;
  /** Stops a running job: its VMs and overlays are cleaned up, the job ends cancelled. */
  cancelJob(id: number): Job;
  /** Every job change (steps, machines, state), as it happens; returns the unsubscribe. */
  subscribeJobs(listener: (job: Job) => void): () => void;

  /** Starts a test failover (returns the running job at once). Conflict while the plan has one not cleaned up. */
  testFailover(planId: string, point?: PointSpec): Job;
  /** Stops the test VMs and deletes their overlays. */
  cleanupTestFailover(planId: string): Job;
  /** Unplanned (planned: false) or planned (the agents quiesce, a final app point, every write applied) failover to persistent disks. */
  failover(planId: string, options: { point?: PointSpec; planned: boolean }): Job;
  /** After a failover: drop the machines' other recovery points (as the model does). */
  commitFailover(planId: string): Job;
  /**
   * After a failover: the original machines may connect with `ferry agent failback` and pull
   * what differs from the recovered disks (hash-compare, repeated while the recovered machines
   * run). The job ends when every machine's first pass is done.
   */
  failbackPrepare(planId: string): Job;
  /**
   * Planned failover back: stops the recovered machines, waits for the final pass (the original
   * disks then equal the recovered ones), and protects the machines again in the original
   * direction (a hash-compare repair: only differences travel).
   */
  failback(planId: string): Job;

  protection(machineId: string): MachineProtection;
}

/** Parses the CLI's and the API's point words: latest, latest-app, a point id, round:N, or an ISO time. */
export function parsePointSpec(text: string): PointSpec | undefined {
  const t = text.trim();
  if (t === 'latest') return { kind: 'latest' };
  if (t === 'latest-app') return { kind: 'latest-app' };
  if (/^[1-9][0-9]{0,15}$/.test(t)) return { kind: 'point', pointId: Number(t) };
  const round = /^round:([1-9][0-9]{0,15})$/.exec(t);
  if (round) return { kind: 'round', roundId: Number(round[1]) };
  if (/^\d{4}-\d{2}-\d{2}T/.test(t)) {
    const ms = Date.parse(t);
    if (Number.isFinite(ms)) return { kind: 'time', timeMs: ms };
  }
  return undefined;
}

export function pointSpecText(p: PointSpec): string {
  switch (p.kind) {
    case 'latest':
    case 'latest-app':
      return p.kind;
    case 'point':
      return String(p.pointId);
    case 'round':
      return `round:${p.roundId}`;
    case 'time':
      return new Date(p.timeMs).toISOString();
  }
}
