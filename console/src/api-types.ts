/**
 * The management API's JSON shapes, copied from the server's models (control/model.ts,
 * recovery/model.ts, recovery/contract.ts, receiver/catalog.ts, control/operators.ts) plus the
 * session and overview routes. The console never imports server code: keep these in step by hand.
 */

// ---- control/model.ts ----

export type MachineState = 'resyncing' | 'protected' | 'degraded' | 'disconnected' | 'failed';
export type EventSeverity = 'info' | 'warning' | 'error';

export interface RecoveryProperties {
  recoveredName: string;
  vcpus: number;
  memoryMiB: number;
  /** '' : the plan's isolated default network. */
  network: string;
  bootOrder: number;
}

export interface MachineVolume {
  volumeId: string;
  sizeBytes: number;
  state: string;
  /** Capture mode: exact | approximate | bitmap-draining | starting. */
  mode: string;
  rpoSeconds: number;
  resyncPercent: number;
  /** Received but not yet applied to the replica. */
  backlogBytes: number;
  /** Ingest throughput over the last few seconds. */
  bytesPerSecond: number;
  applyLagSeconds: number;
}

export interface Machine {
  id: string;
  name: string;
  os: string;
  agentVersion: string;
  volumes: MachineVolume[];
  /** ms since the epoch; 0: never seen. */
  lastSeenMs: number;
  state: MachineState;
  stateReasons?: string[];
  connected: boolean;
  groupId: string | null;
  recovery: RecoveryProperties;
  rpoSeconds: number;
}

/** Durations in ms. */
export interface GroupPolicy {
  rpoThresholdMs: number;
  retentionMs: number;
  crashConsistentIntervalMs: number;
  /** 0: no scheduled app-consistent points. */
  appConsistentIntervalMs: number;
  multiMachineConsistency: boolean;
}

export interface Group {
  id: string;
  name: string;
  policy: GroupPolicy;
  revision: number;
  members: string[];
  createdMs: number;
}

export type RoundState = 'preparing' | 'committing' | 'done' | 'aborted';

export interface GroupRound {
  id: number;
  groupId: string;
  app: boolean;
  state: RoundState;
  startedMs: number;
  finishedMs: number | null;
  holdMs: number | null;
  members: string[];
  reason: string;
  pointIds: number[];
}

export type EventSubjectKind = 'receiver' | 'group' | 'machine' | 'volume';

export interface ControlEvent {
  id: number;
  timeMs: number;
  severity: EventSeverity;
  kind: string;
  subjectKind: EventSubjectKind;
  subjectId: string;
  text: string;
  acknowledged: boolean;
}

// ---- receiver/catalog.ts ----

export type PointKind = 'crash' | 'app';
export type Accuracy = 'exact' | 'approximate' | 'none';

export interface PointRow {
  id: number;
  volumeId: string;
  seq: number;
  /** µs since the epoch. */
  timeUs: number;
  kind: PointKind;
  accuracy: Accuracy;
  origin: 'tag' | 'auto';
  groupId: string;
  name: string;
  /** 0: not a group point. */
  groupRound: number;
  damaged?: string;
}

export interface GroupPoints {
  round: GroupRound;
  points: PointRow[];
}

export interface ExportResult {
  file: string;
  sizeBytes: number;
  format: 'raw' | 'vhd';
  pointId: number;
  volumeId: string;
}

// ---- recovery/model.ts ----

export type PointSpec =
  | { kind: 'latest' }
  | { kind: 'latest-app' }
  | { kind: 'point'; pointId: number }
  | { kind: 'round'; roundId: number }
  | { kind: 'time'; timeMs: number };

export type PlanAction =
  | { kind: 'script'; name: string; command: string; timeoutMs: number }
  | { kind: 'manual'; name: string; instructions: string };

export interface HealthCheck {
  serialPattern: string;
  /** 0: none. */
  tcpPort: number;
  timeoutMs: number;
}

export interface BootGroup {
  machines: string[];
  before: PlanAction[];
  after: PlanAction[];
}

export interface Plan {
  id: string;
  name: string;
  bootGroups: BootGroup[];
  health: HealthCheck;
  defaultPoint: PointSpec;
  revision: number;
  createdMs: number;
  updatedMs: number;
}

export interface PlanInput {
  name: string;
  bootGroups: Array<{ machines: string[]; before?: PlanAction[]; after?: PlanAction[] }>;
  health?: Partial<HealthCheck>;
  defaultPoint?: PointSpec;
}

export type JobKind = 'test-failover' | 'cleanup' | 'failover' | 'commit' | 'failback-prepare' | 'failback';
export type JobState = 'running' | 'waiting' | 'succeeded' | 'failed' | 'cancelled';
export type StepState = 'pending' | 'running' | 'waiting' | 'succeeded' | 'failed' | 'skipped';
export type MachineRunState = 'pending' | 'exporting' | 'booting' | 'healthy' | 'unhealthy' | 'stopped';

export interface JobStep {
  id: number;
  name: string;
  state: StepState;
  startedMs: number | null;
  finishedMs: number | null;
  detail: string;
}

export interface JobMachine {
  machineId: string;
  vmName: string;
  runsOn: string;
  /** Point id per volume id. */
  points: Record<string, number>;
  state: MachineRunState;
  address: string;
  /** Paths on the receiver ('' : none yet); fetched through the evidence routes. */
  serialLog: string;
  screenshot: string;
  bootMs: number | null;
  detail: string;
}

export interface Job {
  id: number;
  kind: JobKind;
  planId: string;
  state: JobState;
  point: PointSpec;
  startedMs: number;
  finishedMs: number | null;
  rtoMs: number | null;
  steps: JobStep[];
  machines: JobMachine[];
  reason: string;
}

export type ProtectionState = 'protected' | 'failed-over' | 'failing-back';

/** recovery/contract.ts */
export interface MachineProtection {
  machineId: string;
  state: ProtectionState;
  runsOn: string;
  jobId: number | null;
  sinceMs: number;
}

// ---- control/operators.ts and the session routes ----

export interface Operator {
  name: string;
  createdMs: number;
}

export interface Session {
  operator: string;
  expiresMs: number;
  csrfToken: string;
}

// ---- overview and history ----

export interface StorageFree {
  path: string;
  freeBytes: number;
  totalBytes: number;
  low: boolean;
}

export interface ReceiverAlert {
  severity: EventSeverity;
  subject: string;
  message: string;
}

export interface ReceiverSummary {
  storage: StorageFree[];
  spoolBytes: number;
  journalBytes: number;
  unappliedBytes: number;
  alerts: ReceiverAlert[];
}

export interface Overview {
  machines: Machine[];
  groups: Group[];
  /** Unacknowledged warnings and errors, newest first. */
  openAlerts: ControlEvent[];
  receiver: ReceiverSummary;
  worstRpoSeconds: number;
  protection: Record<string, ProtectionState>;
}

export type HistoryWindow = 'hour' | 'day';

export interface HistorySample {
  timeMs: number;
  rpoSeconds: number;
  bytesPerSecond: number;
}

export interface MachineHistory {
  window: HistoryWindow;
  stepMs: number;
  /** Oldest first. */
  samples: HistorySample[];
}

// ---- errors ----

export interface ErrorBody {
  error: string;
  message: string;
  field?: string;
}
