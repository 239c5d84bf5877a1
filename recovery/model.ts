/**
 * Recovery: plans, jobs and where recovered machines run. Plain data: the recovery service
 * (recovery/service.ts) owns the state; the API, the CLI and the console speak these shapes as JSON.
 */

/** How a plan run picks its recovery point. */
export type PointSpec =
  /** The latest point common to all machines: the latest group point with multi-machine consistency, else each machine's latest usable point at or before one time. */
  | { kind: 'latest' }
  /** The same, among application-consistent points only. */
  | { kind: 'latest-app' }
  /** A group round's points (every member volume's cut) or, for a one-machine plan, a point id. */
  | { kind: 'point'; pointId: number }
  /** A group round. */
  | { kind: 'round'; roundId: number }
  /** Each machine's latest usable point at or before this time (ms since the epoch). */
  | { kind: 'time'; timeMs: number };

/** A step before or after a boot group. */
export type PlanAction =
  /** Runs on the receiver's side, bounded by timeoutMs; env: FERRY_PLAN, FERRY_JOB, FERRY_BOOT_GROUP, FERRY_MACHINES (name=address,...), FERRY_MACHINE_<NAME>_ADDRESS. */
  | { kind: 'script'; name: string; command: string; timeoutMs: number }
  /** The job pauses until an operator resumes it (`ferry job resume ID`). */
  | { kind: 'manual'; name: string; instructions: string };

export interface HealthCheck {
  /** A regular expression the serial console must reach (default: a login prompt). '' : none. */
  serialPattern: string;
  /** A TCP port that must answer on the machine's sandbox address. 0: none. */
  tcpPort: number;
  /** Boot to healthy, at most (default 10 min: TCG is slow). */
  timeoutMs: number;
}

export interface BootGroup {
  /** Machine ids, booted together; machines boot in the group's order. */
  machines: string[];
  before: PlanAction[];
  after: PlanAction[];
}

export interface Plan {
  id: string;
  name: string;
  /** Ordered: group 1 boots (and turns healthy) before group 2 starts. */
  bootGroups: BootGroup[];
  health: HealthCheck;
  /** The point a run takes when it names none. */
  defaultPoint: PointSpec;
  /** Increases with every edit: an edit naming an older revision is refused (no silent overwrite). */
  revision: number;
  createdMs: number;
  updatedMs: number;
}

/** What an operator sends to create or replace a plan. */
export interface PlanInput {
  name: string;
  bootGroups: Array<{ machines: string[]; before?: PlanAction[]; after?: PlanAction[] }>;
  health?: Partial<HealthCheck>;
  defaultPoint?: PointSpec;
}

export type JobKind = 'test-failover' | 'cleanup' | 'failover' | 'commit' | 'failback-prepare' | 'failback';
export type JobState = 'running' | 'waiting' | 'succeeded' | 'failed' | 'cancelled';
export type StepState = 'pending' | 'running' | 'waiting' | 'succeeded' | 'failed' | 'skipped';

export interface JobStep {
  id: number;
  /** e.g. "export web-1 at point 42", "boot group 1", "script warm-cache", "manual check-dns". */
  name: string;
  state: StepState;
  startedMs: number | null;
  finishedMs: number | null;
  /** The outcome or the error, in words. */
  detail: string;
}

export type MachineRunState = 'pending' | 'exporting' | 'booting' | 'healthy' | 'unhealthy' | 'stopped';

/** One recovered machine of a job. */
export interface JobMachine {
  machineId: string;
  /** The recovered VM's name. */
  vmName: string;
  /** Where it runs: "qemu:<name>" or "libvirt:<domain>". */
  runsOn: string;
  /** Point id per volume id. */
  points: Record<string, number>;
  state: MachineRunState;
  /** Its address on the plan's network (sandbox: 10.77.0.x). */
  address: string;
  /** Evidence, paths under the job's directory: the serial log and a PNG of the console. */
  serialLog: string;
  screenshot: string;
  /** qemu start to healthy. */
  bootMs: number | null;
  detail: string;
}

export interface Job {
  id: number;
  kind: JobKind;
  planId: string;
  state: JobState;
  /** The point spec the run used, as given. */
  point: PointSpec;
  startedMs: number;
  finishedMs: number | null;
  /** Start to every machine healthy (test failover, failover). */
  rtoMs: number | null;
  steps: JobStep[];
  machines: JobMachine[];
  /** Why it failed or was cancelled. */
  reason: string;
}

/** What a machine's protection is now: replicating here, or failed over to a recovered VM. */
export type ProtectionState = 'protected' | 'failed-over' | 'failing-back';

export const DEFAULT_HEALTH: HealthCheck = { serialPattern: 'login:', tcpPort: 0, timeoutMs: 600_000 };
