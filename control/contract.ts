import type { HistoryWindow, MachineHistory } from './history';
import type { ControlEvent, EventSeverity, Group, GroupPolicy, GroupRound, Machine, MachineState, PlaneOverview, RecoveryProperties, Webhook, WebhookDelivery } from './model';
import type { PointRow } from '../receiver/catalog';

/**
 * What the configuration-server role offers its callers (the management API, the console
 * through it, and tests): the control plane implements it (control/plane.ts). Every change is
 * validated here too (the API's schemas are the first check, this is the last): a refused call
 * throws ControlError and changes nothing.
 */

export type ControlErrorKind = 'invalid' | 'not-found' | 'conflict' | 'unavailable';

export class ControlError extends Error {
  constructor(
    readonly kind: ControlErrorKind,
    message: string,
    /** The request field at fault, for a 400's body. */
    readonly field?: string,
  ) {
    super(message);
    this.name = 'ControlError';
  }
}

export interface MachineFilter {
  state?: MachineState;
  groupId?: string;
}

export interface EventFilter {
  sinceMs?: number;
  severity?: EventSeverity;
  subjectId?: string;
  kind?: string;
  limit?: number;
}

export interface RoundResult {
  round: GroupRound;
}

export interface ControlPlaneApi {
  machines(filter?: MachineFilter): Machine[];
  machine(id: string): Machine;
  /** Partial update of a machine's recovery properties. */
  setRecovery(id: string, patch: Partial<RecoveryProperties>): Machine;
  /** Worst RPO and ingest throughput over the last hour or day (kept in memory). */
  machineHistory(id: string, window: HistoryWindow): MachineHistory;
  /** A machine's recovery points over all its volumes, newest first. */
  machinePoints(id: string, limit?: number): PointRow[];
  point(id: number): PointRow;
  /** Machines, groups, open alerts, the receiver's disks and backlog, worst RPO: one read. */
  overview(): PlaneOverview;

  groups(): Group[];
  group(id: string): Group;
  /** A group's id is its name (a safe identifier). Missing policy fields take the defaults. */
  createGroup(name: string, policy?: Partial<GroupPolicy>): Group;
  /** Changes the policy; the members' agents get the new Policy at once. */
  setPolicy(id: string, patch: Partial<GroupPolicy>): Group;
  /** Refused (conflict) while the group has members. */
  deleteGroup(id: string): void;
  /** A machine joins at most one group (conflict if it is in another). */
  addMember(groupId: string, machineId: string): Group;
  /** The machine's points stay in the catalog (group points keep their round); it gets the no-group policy. */
  removeMember(groupId: string, machineId: string): Group;

  /**
   * Runs one group round now (multi-machine consistency on), resolving when it is done or
   * aborted. `final`: a planned failover's last point (the members' post-hooks do not run).
   */
  runRound(groupId: string, options?: { app?: boolean; final?: boolean }): Promise<GroupRound>;
  rounds(groupId: string, limit?: number): GroupRound[];
  /** Group points: every member volume's point of done rounds, newest round first. */
  groupPoints(groupId: string): Array<{ round: GroupRound; points: PointRow[] }>;

  events(filter?: EventFilter): ControlEvent[];
  acknowledgeEvent(id: number): ControlEvent;
  /** Every new event, as it is stored; returns the unsubscribe. */
  subscribe(listener: (event: ControlEvent) => void): () => void;

  webhooks(): Webhook[];
  addWebhook(url: string, minSeverity?: EventSeverity): Webhook;
  deleteWebhook(id: number): void;
  deliveries(webhookId?: number): WebhookDelivery[];

  /** Prometheus text exposition (ferry_rpo_seconds, ferry_rpo_threshold_seconds, state gauges...). */
  metrics(): string;
}
