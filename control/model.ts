import type { EventSeverity } from '../proto/validate-control';

/**
 * The configuration-server model: machines (registered agents), protection groups and their
 * policies, recovery properties, group rounds and events. Plain data: the control plane owns
 * the state (control/plane.ts), the API and the CLI speak these shapes as JSON.
 */

export type { EventSeverity };

/** resyncing: a volume is being copied; degraded: a volume is throttled, repairing or not exact where it could be. */
export type MachineState = 'resyncing' | 'protected' | 'degraded' | 'disconnected' | 'failed';

export interface RecoveryProperties {
  /** The recovered VM's name (default: the machine's name). */
  recoveredName: string;
  vcpus: number;
  memoryMiB: number;
  /** A network name of the recovery site ('' : the plan's isolated default). */
  network: string;
  /** Lower boots earlier within a plan's group (a hint for plans). */
  bootOrder: number;
}

export interface MachineVolume {
  volumeId: string;
  sizeBytes: number;
  /** How the agent reports it (protected, resyncing...), or the receiver's failure. */
  state: string;
  mode: string;
  rpoSeconds: number;
  resyncPercent: number;
  /** Received here and not yet applied to the replica. */
  backlogBytes: number;
  /** Ingest throughput over the last few seconds. */
  bytesPerSecond: number;
  /** Age of the oldest change not yet applied to the replica. */
  applyLagSeconds: number;
}

export interface Machine {
  id: string;
  name: string;
  os: string;
  agentVersion: string;
  volumes: MachineVolume[];
  /** ms since the epoch; 0: never logged in since registration. */
  lastSeenMs: number;
  state: MachineState;
  /** Why the state is what it is (empty when protected). */
  stateReasons?: string[];
  connected: boolean;
  groupId: string | null;
  recovery: RecoveryProperties;
  /** Worst RPO over its volumes, seconds. */
  rpoSeconds: number;
}

/** Durations are ms in the API; the CLI accepts 30s / 1h / off. */
export interface GroupPolicy {
  rpoThresholdMs: number;
  /** Recovery-point retention window of the group's volumes. */
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
  /** Increases with every policy or membership change; sent to the agents as Policy.revision. */
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
  /** From the first GroupPrepare sent to the last GroupHeld: how long the first member held. */
  holdMs: number | null;
  members: string[];
  /** Why it aborted. */
  reason: string;
  /** Point ids of every member volume's cut (done rounds). */
  pointIds: number[];
}

export type EventSubjectKind = 'receiver' | 'group' | 'machine' | 'volume';

export interface ControlEvent {
  id: number;
  timeMs: number;
  severity: EventSeverity;
  /** Stable key: rpo-exceeded, rpo-recovered, machine-disconnected, machine-reconnected, resync-started, resync-finished, app-point-failed, round-aborted, disk-low, retention-shortfall... */
  kind: string;
  subjectKind: EventSubjectKind;
  subjectId: string;
  text: string;
  acknowledged: boolean;
}

export interface Webhook {
  id: number;
  url: string;
  /** Events at or above this severity are delivered. */
  minSeverity: EventSeverity;
  createdMs: number;
}

export interface WebhookDelivery {
  webhookId: number;
  eventId: number;
  state: 'pending' | 'delivered' | 'failed';
  attempts: number;
  lastError: string;
  nextAttemptMs: number | null;
}

export const DEFAULT_POLICY: GroupPolicy = {
  rpoThresholdMs: 30_000,
  retentionMs: 24 * 3600 * 1000,
  crashConsistentIntervalMs: 1000,
  appConsistentIntervalMs: 3600 * 1000,
  multiMachineConsistency: false,
};

export function defaultRecovery(machineName: string): RecoveryProperties {
  return { recoveredName: machineName, vcpus: 1, memoryMiB: 1024, network: '', bootOrder: 0 };
}

/** The receiver's side of the overview: its disks and what its spools and journals hold. */
export interface ReceiverOverview {
  storage: Array<{ path: string; freeBytes: number; totalBytes: number; low: boolean }>;
  /** Bytes on disk in every volume's spool. */
  spoolBytes: number;
  /** Bytes on disk in every volume's retention journal. */
  journalBytes: number;
  /** Received and not yet applied, over every volume. */
  unappliedBytes: number;
  alerts: Array<{ severity: 'warning' | 'error'; subject: string; message: string }>;
}

/** What the console's overview shows at a glance (GET /api/v1/overview). */
export interface PlaneOverview {
  machines: Machine[];
  groups: Group[];
  /** Unacknowledged warnings and errors, newest first. */
  openAlerts: ControlEvent[];
  receiver: ReceiverOverview;
  worstRpoSeconds: number;
}
