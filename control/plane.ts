import { ExitCode, FerryError } from '../common/errors';
import { log } from '../common/log';
import { ErrorCode, ProtocolError } from '../proto/errors';
import { PolicyBounds, ValidAgentEvent, ValidVolumeReport, VolumeReportState } from '../proto/validate-control';
import type { AgentControl, AgentHello, AgentLink, SessionControl } from '../receiver/agent-link';
import type { PointRow } from '../receiver/catalog';
import type { ReceiverCore } from '../receiver/core';
import type { VolumeRuntimeStatus } from '../receiver/status';
import { AgentRegistry } from './agent-registry';
import { AlertMonitor } from './alert-monitor';
import { AlertEvent, resyncTransitions } from './alerts';
import { ControlError, ControlPlaneApi, EventFilter, MachineFilter } from './contract';
import { EventLog } from './events';
import { HistoryRecorder, HistoryWindow, MachineHistory, ThroughputMeter } from './history';
import { machineView, VolumeView, volumeViews } from './machine-view';
import { openAlerts } from './open-alerts';
import { renderMetrics } from './metrics';
import {
  ControlEvent,
  DEFAULT_POLICY,
  defaultRecovery,
  EventSeverity,
  Group,
  GroupPolicy,
  GroupRound,
  Machine,
  PlaneOverview,
  RecoveryProperties,
  Webhook,
  WebhookDelivery,
} from './model';
import { agentPolicy, checkGroupName, checkPolicyPatch, checkRecoveryPatch, policyFrame } from './policy';
import { RoundStats } from './round-stats';
import { DEFAULT_ROUND_OPTIONS, FinishedRound, RoundCoordinator, RoundOptions } from './rounds';
import { isSeverity } from './severity';
import { ControlStore, GroupRow, MachineRow } from './store';
import { checkWebhookUrl, DEFAULT_WEBHOOK_OPTIONS, WebhookDispatcher, WebhookOptions } from './webhooks';

export interface PlaneOptions {
  /** The receiver-wide retention window (--retention): the default of a machine in no group. */
  defaultRetentionMs: number;
  /** RPO threshold of volumes of machines in no group. */
  defaultRpoThresholdMs: number;
  /** A machine with no session for this long raises machine-disconnected. */
  disconnectAlertMs: number;
  /** How often alerts are evaluated from the core's status. */
  alertIntervalMs: number;
  rounds: RoundOptions;
  webhooks: WebhookOptions;
}

export const DEFAULT_PLANE_OPTIONS: PlaneOptions = {
  defaultRetentionMs: DEFAULT_POLICY.retentionMs,
  defaultRpoThresholdMs: DEFAULT_POLICY.rpoThresholdMs,
  disconnectAlertMs: 60_000,
  alertIntervalMs: 1000,
  rounds: DEFAULT_ROUND_OPTIONS,
  webhooks: DEFAULT_WEBHOOK_OPTIONS,
};

/** How often the round schedule is looked at (the shortest crash interval is 100 ms). */
const SCHEDULE_TICK_MS = 50;
/** Every this many alert ticks: retention shortfall and pruning of old rounds (they read the catalog). */
const SLOW_TICKS = 60;
/** Open alerts are read from this many recent events. */
const OVERVIEW_EVENTS = 2000;
/** Events (and their webhook deliveries) are kept this long. */
const EVENT_RETENTION_MS = 90 * 24 * 3600 * 1000;
/** Agent events the receiver derives itself from volume reports (dropped when an agent sends them too). */
const DERIVED_KINDS = new Set(['resync-started', 'resync-finished']);

interface Schedule {
  crashMs: number;
  appMs: number;
}

/** Which round a group's schedule asks for now, if any. Pure. */
export function dueRound(policy: GroupPolicy, last: Schedule, nowMs: number): 'app' | 'crash' | undefined {
  if (!policy.multiMachineConsistency) return undefined;
  if (policy.appConsistentIntervalMs > 0 && nowMs - last.appMs >= policy.appConsistentIntervalMs) return 'app';
  if (nowMs - last.crashMs >= policy.crashConsistentIntervalMs) return 'crash';
  return undefined;
}

/**
 * The configuration server inside the receiver: machines (registered agents), protection
 * groups and their policies (sent to the agents), group rounds, events and alerts, webhooks
 * and metrics. It reaches agents only through their sessions (AgentRegistry) and reads the
 * data plane through the core; the core asks it for each volume's retention window.
 */
export class ControlPlane implements ControlPlaneApi, SessionControl {
  private readonly registry = new AgentRegistry();
  private readonly eventLog: EventLog;
  private readonly webhookDispatcher: WebhookDispatcher;
  private readonly coordinator: RoundCoordinator;
  private readonly reports = new Map<string, Map<string, ValidVolumeReport>>();
  private readonly stats = new RoundStats();
  private readonly schedules = new Map<string, Schedule>();
  private readonly alerts: AlertMonitor;
  private readonly throughput = new ThroughputMeter();
  private readonly history = new HistoryRecorder();
  private timers: NodeJS.Timeout[] = [];
  private ticks = 0;

  constructor(
    private readonly core: ReceiverCore,
    private readonly store: ControlStore,
    private readonly options: PlaneOptions = DEFAULT_PLANE_OPTIONS,
    private readonly now: () => number = Date.now,
  ) {
    this.eventLog = new EventLog(store, now);
    this.alerts = new AlertMonitor(options.disconnectAlertMs, now());
    this.webhookDispatcher = new WebhookDispatcher(store, options.webhooks, now);
    this.eventLog.subscribe((event) => this.webhookDispatcher.onEvent(event));
    this.coordinator = new RoundCoordinator(
      store,
      { send: (id, frame) => this.registry.send(id, frame), isConnected: (id) => this.registry.isConnected(id) },
      options.rounds,
      (groupId) => store.memberIds(groupId),
      (finished) => this.roundFinished(finished),
      now,
    );
    // Before the core starts: its first retention run must already use the groups' windows.
    core.useRetentionWindows((volumeId) => this.retentionWindowUs(volumeId));
  }

  /** Opens the control tables in the core's catalog file; create it before core.start(). */
  static open(core: ReceiverCore, options: PlaneOptions = DEFAULT_PLANE_OPTIONS): ControlPlane {
    return new ControlPlane(core, ControlStore.open(core.catalog.file), options);
  }

  start(): void {
    const startedMs = this.now();
    const aborted = this.store.abortUnfinished('the receiver stopped during the round', startedMs);
    if (aborted > 0) log.warn('group rounds left unfinished by the last run marked aborted', { rounds: aborted });
    this.adoptAgents();
    for (const g of this.store.groups()) this.schedules.set(g.id, { crashMs: startedMs, appMs: startedMs });
    this.webhookDispatcher.start();
    this.timers.push(setInterval(() => this.tick(), this.options.alertIntervalMs));
    this.timers.push(
      setInterval(() => {
        try {
          this.scheduleRounds();
        } catch (err) {
          log.warn('group rounds not scheduled', { error: (err as Error).message });
        }
      }, SCHEDULE_TICK_MS),
    );
    for (const t of this.timers) t.unref();
  }

  stop(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.coordinator.stop();
    this.webhookDispatcher.stop();
    this.store.close();
  }

  /** Agents registered before the control plane existed become machines. */
  private adoptAgents(): void {
    for (const agent of this.core.catalog.agents()) {
      if (this.store.machine(agent.id)) continue;
      this.store.addMachine(this.newMachine(agent.id, agent.name, Math.floor(agent.createdUs / 1000), 0));
    }
  }

  private newMachine(id: string, name: string, createdMs: number, lastSeenMs: number, os = '', agentVersion = ''): MachineRow {
    return { id, name, os, agentVersion, lastSeenMs, recovery: defaultRecovery(name), groupId: null, policyRevision: this.store.nextRevision(), createdMs };
  }

  // ---- sessions ------------------------------------------------------------------------------

  loggedIn(link: AgentLink, hello: AgentHello): AgentControl {
    const id = link.agentId;
    const now = this.now();
    // The control tables share the catalog's disk: if they cannot be written, the agent still
    // replicates (the session goes on), only what the plane records of it is missing.
    try {
      if (!this.store.machine(id)) {
        const name = hello.name || this.core.catalog.agent(id)?.name || id;
        this.store.addMachine(this.newMachine(id, name, now, now, hello.os, hello.software));
      } else {
        this.store.noteLogin(id, now, hello.software, hello.os);
      }
    } catch (err) {
      log.error('machine login not recorded', { agent: id, error: (err as Error).message });
    }
    this.registry.attach(link);
    this.alerts.connected(id);
    try {
      this.sendPolicy(id);
    } catch (err) {
      log.error('policy not sent', { agent: id, error: (err as Error).message });
    }
    return {
      heartbeat: (reports) => this.noteReports(id, reports),
      agentEvent: (event) => this.noteAgentEvent(id, event),
      groupHeld: (held) => this.coordinator.held(id, held.roundId, held.ok, held.error),
      checkTagRound: (roundId) => {
        if (!this.coordinator.acceptsTag(id, roundId)) {
          throw new ProtocolError(ErrorCode.BAD_TAG, `the tag answers group round ${roundId}, which is not committing with this agent (finished, aborted, not its group's, or tagged already)`);
        }
      },
      tagRecorded: (roundId, pointIds) => this.coordinator.tagged(id, roundId, pointIds),
      closed: () => {
        if (!this.registry.detach(link)) return;
        const at = this.now();
        this.alerts.disconnected(id, at);
        // The last reports stay: a resync still running after a reconnect is not "started" again.
        try {
          this.store.noteSeen(id, at);
        } catch (err) {
          log.warn('last-seen time not stored', { agent: id, error: (err as Error).message });
        }
        this.coordinator.lost(id);
      },
    };
  }

  /** Only what an agent says of its own volumes counts (a report or event naming another's is dropped). */
  private owns(agentId: string, volumeId: string): boolean {
    return this.core.catalog.volume(volumeId)?.agentId === agentId;
  }

  private noteReports(agentId: string, all: ValidVolumeReport[]): void {
    const reports = all.filter((r) => this.owns(agentId, r.volumeId));
    const previous = this.reports.get(agentId) ?? new Map<string, ValidVolumeReport>();
    const before = new Map<string, VolumeReportState>([...previous.values()].map((r) => [r.volumeId, r.state]));
    const name = this.store.machine(agentId)?.name ?? agentId;
    for (const event of resyncTransitions(name, before, reports)) this.eventLog.add(event);
    this.reports.set(agentId, new Map(reports.map((r) => [r.volumeId, r])));
  }

  private noteAgentEvent(agentId: string, event: ValidAgentEvent): void {
    if (DERIVED_KINDS.has(event.kind)) return;
    if (event.volumeId && !this.owns(agentId, event.volumeId)) return;
    const name = this.store.machine(agentId)?.name ?? agentId;
    this.eventLog.add({
      severity: event.severity,
      kind: event.kind,
      subjectKind: event.volumeId ? 'volume' : 'machine',
      subjectId: event.volumeId || agentId,
      text: `${name}: ${event.text}`,
    });
  }

  // ---- policies ------------------------------------------------------------------------------

  /** The policy of a machine in no group: the receiver's defaults. */
  private noGroupPolicy(): GroupPolicy {
    return { ...DEFAULT_POLICY, retentionMs: this.options.defaultRetentionMs, rpoThresholdMs: this.options.defaultRpoThresholdMs, multiMachineConsistency: false };
  }

  private sendPolicy(machineId: string): void {
    const m = this.store.machine(machineId);
    if (!m) return;
    const group = m.groupId === null ? undefined : this.store.group(m.groupId);
    const policy = group ? agentPolicy(group.revision, group.id, group.policy) : agentPolicy(m.policyRevision, '', this.noGroupPolicy());
    this.registry.send(machineId, { policy: policyFrame(policy) });
  }

  /** The group's policy for a machine's volumes, or the receiver's defaults. */
  private policyOf(m: MachineRow | undefined): GroupPolicy {
    const group = m?.groupId ? this.store.group(m.groupId) : undefined;
    return group?.policy ?? this.noGroupPolicy();
  }

  /** The retention window of a volume whose machine is in a group (undefined: the receiver's). */
  private retentionWindowUs(volumeId: string): number | undefined {
    const agentId = this.core.catalog.volume(volumeId)?.agentId;
    const m = agentId === undefined ? undefined : this.store.machine(agentId);
    const group = m?.groupId ? this.store.group(m.groupId) : undefined;
    return group ? group.policy.retentionMs * 1000 : undefined;
  }

  // ---- machines ------------------------------------------------------------------------------

  /** `statuses`: the core's status when the caller has just read it (it reads damage from the catalog). */
  private volumeViews(statuses: VolumeRuntimeStatus[] = this.core.volumeStatus()): VolumeView[] {
    return volumeViews(
      this.core.catalog.volumes(),
      this.store.machines(),
      statuses,
      (agentId, volumeId) => this.reports.get(agentId)?.get(volumeId),
      (volumeId) => this.throughput.rate(volumeId),
      (volumeId) => this.core.catalog.hasUsablePoint(volumeId),
    );
  }

  private toMachine(m: MachineRow, views: readonly VolumeView[]): Machine {
    return machineView(m, views, this.registry.isConnected(m.id), this.now());
  }

  machines(filter: MachineFilter = {}, views: VolumeView[] = this.volumeViews()): Machine[] {
    return this.store
      .machines()
      .map((m) => this.toMachine(m, views))
      .filter((m) => (filter.state === undefined || m.state === filter.state) && (filter.groupId === undefined || m.groupId === filter.groupId));
  }

  machine(id: string): Machine {
    const m = this.store.machine(id);
    if (!m) throw new ControlError('not-found', `no machine ${id}`, 'id');
    return this.toMachine(m, this.volumeViews());
  }

  setRecovery(id: string, patch: Partial<RecoveryProperties>): Machine {
    const m = this.store.machine(id);
    if (!m) throw new ControlError('not-found', `no machine ${id}`, 'id');
    const checked = checkRecoveryPatch(patch);
    this.store.setRecovery(id, { ...m.recovery, ...checked });
    return this.machine(id);
  }

  // ---- groups --------------------------------------------------------------------------------

  private toGroup(g: GroupRow): Group {
    return { id: g.id, name: g.id, policy: g.policy, revision: g.revision, members: this.store.memberIds(g.id), createdMs: g.createdMs };
  }

  private groupRow(id: string): GroupRow {
    const g = this.store.group(id);
    if (!g) throw new ControlError('not-found', `no group ${id}`, 'id');
    return g;
  }

  groups(): Group[] {
    return this.store.groups().map((g) => this.toGroup(g));
  }

  group(id: string): Group {
    return this.toGroup(this.groupRow(id));
  }

  createGroup(name: string, policy: Partial<GroupPolicy> = {}): Group {
    checkGroupName(name);
    const checked = checkPolicyPatch(policy);
    if (this.store.group(name)) throw new ControlError('conflict', `group ${name} exists already`, 'name');
    const now = this.now();
    this.store.transaction(() => this.store.addGroup({ id: name, policy: { ...DEFAULT_POLICY, ...checked }, revision: this.store.nextRevision(), createdMs: now }));
    this.schedules.set(name, { crashMs: now, appMs: now });
    log.info('group created', { group: name });
    return this.group(name);
  }

  setPolicy(id: string, patch: Partial<GroupPolicy>): Group {
    const g = this.groupRow(id);
    const checked = checkPolicyPatch(patch);
    const policy = { ...g.policy, ...checked };
    this.store.transaction(() => this.store.setGroup(id, policy, this.store.nextRevision()));
    if (
      policy.crashConsistentIntervalMs !== g.policy.crashConsistentIntervalMs ||
      policy.appConsistentIntervalMs !== g.policy.appConsistentIntervalMs ||
      policy.multiMachineConsistency !== g.policy.multiMachineConsistency
    ) {
      this.schedules.set(id, { crashMs: this.now(), appMs: this.now() });
    }
    for (const member of this.store.memberIds(id)) this.sendPolicy(member);
    log.info('group policy changed', { group: id, policy });
    return this.group(id);
  }

  deleteGroup(id: string): void {
    this.groupRow(id);
    const members = this.store.memberIds(id);
    if (members.length > 0) throw new ControlError('conflict', `group ${id} still has ${members.length} member(s): remove them first`, 'id');
    this.store.deleteGroup(id);
    this.schedules.delete(id);
    this.stats.forget(id);
    log.info('group deleted', { group: id });
  }

  addMember(groupId: string, machineId: string): Group {
    const g = this.groupRow(groupId);
    const m = this.store.machine(machineId);
    if (!m) throw new ControlError('not-found', `no machine ${machineId}`, 'machine');
    if (m.groupId === groupId) return this.group(groupId);
    if (m.groupId !== null) throw new ControlError('conflict', `machine ${machineId} is in group ${m.groupId}: remove it from there first`, 'machine');
    this.store.transaction(() => {
      this.store.setGroup(groupId, g.policy, this.store.nextRevision());
      this.store.setMachineGroup(machineId, groupId, m.policyRevision);
    });
    for (const member of this.store.memberIds(groupId)) this.sendPolicy(member);
    log.info('machine added to group', { group: groupId, machine: machineId });
    return this.group(groupId);
  }

  removeMember(groupId: string, machineId: string): Group {
    const g = this.groupRow(groupId);
    const m = this.store.machine(machineId);
    if (!m || m.groupId !== groupId) throw new ControlError('not-found', `machine ${machineId} is not in group ${groupId}`, 'machine');
    this.store.transaction(() => {
      this.store.setGroup(groupId, g.policy, this.store.nextRevision());
      this.store.setMachineGroup(machineId, null, this.store.nextRevision());
    });
    this.sendPolicy(machineId);
    for (const member of this.store.memberIds(groupId)) this.sendPolicy(member);
    log.info('machine removed from group', { group: groupId, machine: machineId });
    return this.group(groupId);
  }

  // ---- rounds --------------------------------------------------------------------------------

  async runRound(groupId: string, options: { app?: boolean; final?: boolean } = {}): Promise<GroupRound> {
    const g = this.groupRow(groupId);
    if (!g.policy.multiMachineConsistency) throw new ControlError('conflict', `group ${groupId} has multi-machine consistency off`, 'multiMachineConsistency');
    if (this.store.memberIds(groupId).length === 0) throw new ControlError('conflict', `group ${groupId} has no members`, 'id');
    return this.coordinator.run(groupId, options.app ?? false, false, options.final ?? false);
  }

  rounds(groupId: string, limit = 100): GroupRound[] {
    this.groupRow(groupId);
    return this.store.rounds(groupId, Math.max(1, Math.min(10_000, limit)));
  }

  groupPoints(groupId: string): Array<{ round: GroupRound; points: PointRow[] }> {
    this.groupRow(groupId);
    return groupPointsOf(this.store, this.core.catalog, groupId);
  }

  /** Starts the rounds the groups' schedules ask for (a group whose member is away waits). */
  private scheduleRounds(): void {
    const now = this.now();
    for (const [groupId, last] of this.schedules) {
      if (this.coordinator.busy(groupId)) continue;
      const g = this.store.group(groupId);
      if (!g) continue;
      const due = dueRound(g.policy, last, now);
      if (!due) continue;
      const members = this.store.memberIds(groupId);
      if (members.length === 0 || !members.every((m) => this.registry.isConnected(m))) continue;
      last.crashMs = now;
      if (due === 'app') last.appMs = now;
      this.coordinator.run(groupId, due === 'app', true).catch((err: unknown) => log.warn('scheduled group round failed', { group: groupId, error: (err as Error).message }));
    }
  }

  private roundFinished(finished: FinishedRound): void {
    if (!this.stats.note(finished)) return;
    const { round, outcome } = finished;
    this.eventLog.add({
      severity: 'warning',
      kind: 'round-aborted',
      subjectKind: 'group',
      subjectId: round.groupId,
      text: `${round.app ? 'app-consistent' : 'crash-consistent'} round ${round.id} of group ${round.groupId} aborted: ${outcome.reason}`,
    });
  }

  // ---- events, alerts, webhooks --------------------------------------------------------------

  events(filter?: EventFilter): ControlEvent[] {
    return this.eventLog.list(filter);
  }

  acknowledgeEvent(id: number): ControlEvent {
    const e = this.eventLog.acknowledge(id);
    if (!e) throw new ControlError('not-found', `no event ${id}`, 'id');
    return e;
  }

  subscribe(listener: (event: ControlEvent) => void): () => void {
    return this.eventLog.subscribe(listener);
  }

  webhooks(): Webhook[] {
    return this.store.webhooks();
  }

  addWebhook(url: string, minSeverity: EventSeverity = 'info'): Webhook {
    const why = checkWebhookUrl(url);
    if (why) throw new ControlError('invalid', why, 'url');
    if (!isSeverity(minSeverity)) throw new ControlError('invalid', `minSeverity must be info, warning or error`, 'minSeverity');
    return this.store.addWebhook(url, minSeverity, this.now());
  }

  deleteWebhook(id: number): void {
    if (!this.store.deleteWebhook(id)) throw new ControlError('not-found', `no webhook ${id}`, 'id');
  }

  deliveries(webhookId?: number): WebhookDelivery[] {
    if (webhookId !== undefined && !this.store.webhooks().some((h) => h.id === webhookId)) throw new ControlError('not-found', `no webhook ${webhookId}`, 'id');
    return this.store.deliveries({ webhookId });
  }

  /** Evaluates the alerts from the core's status and samples throughput and history (every alertIntervalMs). */
  private tick(): void {
    try {
      this.evaluate();
    } catch (err) {
      log.warn('alerts not evaluated', { error: (err as Error).message });
    }
    try {
      this.sample();
    } catch (err) {
      log.warn('history not sampled', { error: (err as Error).message });
    }
  }

  private sample(): void {
    const now = this.now();
    const statuses = this.core.volumeStatus();
    for (const s of statuses) this.throughput.note(s.volumeId, now, s.receivedBytes);
    this.throughput.forget(new Set(statuses.map((s) => s.volumeId)));
    this.history.record(
      now,
      this.machines({}, this.volumeViews(statuses)).map((m) => ({ id: m.id, rpoSeconds: m.rpoSeconds, bytesPerSecond: m.volumes.reduce((sum, v) => sum + v.bytesPerSecond, 0) })),
    );
  }

  machineHistory(machineId: string, window: HistoryWindow): MachineHistory {
    if (!this.store.machine(machineId)) throw new ControlError('not-found', `no machine ${machineId}`, 'id');
    return this.history.history(machineId, window);
  }

  machinePoints(machineId: string, limit = 100): PointRow[] {
    if (!this.store.machine(machineId)) throw new ControlError('not-found', `no machine ${machineId}`, 'id');
    const n = Math.max(1, Math.min(10_000, limit));
    // Each volume's newest n (an index walk), then the newest n of those.
    return this.core.catalog
      .volumes()
      .filter((v) => v.agentId === machineId)
      .flatMap((v) => this.core.catalog.recentPoints(v.id, n))
      .sort((a, b) => b.timeUs - a.timeUs || b.id - a.id)
      .slice(0, n);
  }

  point(id: number): PointRow {
    const p = this.core.catalog.point(id);
    if (!p) throw new ControlError('not-found', `no point ${id}`, 'id');
    return p;
  }

  overview(): PlaneOverview {
    const statuses = this.core.volumeStatus();
    const machines = this.machines({}, this.volumeViews(statuses));
    return {
      machines,
      groups: this.groups(),
      openAlerts: openAlerts(this.eventLog.list({ limit: OVERVIEW_EVENTS })),
      receiver: {
        storage: this.core.storageSpaces(),
        ...this.core.diskUse(),
        unappliedBytes: statuses.reduce((sum, s) => sum + s.unappliedBytes, 0),
        alerts: this.core.alerts(statuses),
      },
      worstRpoSeconds: machines.reduce((worst, m) => Math.max(worst, m.rpoSeconds), 0),
    };
  }

  private evaluate(): void {
    const now = this.now();
    this.ticks++;
    const views = this.volumeViews();
    const machines = this.store.machines();
    const policies = new Map(machines.map((m) => [m.id, this.policyOf(m)]));
    const raise = (events: AlertEvent[]): void => {
      for (const e of events) this.eventLog.add(e);
    };
    raise(
      this.alerts.evaluate(
        now,
        views
          .filter((v) => v.status)
          .map((v) => ({
            volumeId: v.row.id,
            machineName: v.machine?.name ?? v.row.agentId,
            groupId: v.machine?.groupId ?? null,
            rpoSeconds: v.status?.rpoSeconds ?? 0,
            thresholdMs: (policies.get(v.row.agentId) ?? this.noGroupPolicy()).rpoThresholdMs,
          })),
        machines.map((m) => ({ id: m.id, name: m.name, connected: this.registry.isConnected(m.id), lastSeenMs: m.lastSeenMs })),
        this.core.storageSpaces(),
      ),
    );
    if (this.ticks % SLOW_TICKS !== 1) return;
    raise(
      this.alerts.evaluateRetention(
        now,
        views.map((v) => {
          const oldestUs = this.core.catalog.oldestPointTimeUs(v.row.id);
          return {
            volumeId: v.row.id,
            windowMs: this.core.retentionWindowUs(v.row.id) / 1000,
            protectedSinceMs: v.row.createdUs / 1000,
            oldestPointMs: oldestUs === undefined ? undefined : oldestUs / 1000,
          };
        }),
      ),
    );
    for (const g of this.store.groups()) this.store.pruneRounds(g.id, now - g.policy.retentionMs);
    this.store.pruneEvents(now - EVENT_RETENTION_MS);
  }

  metrics(): string {
    const views = this.volumeViews();
    return renderMetrics({
      volumes: views.map((v) => ({ machine: v.machine?.name ?? v.row.agentId, volume: v.row.id, group: v.machine?.groupId ?? '', rpoSeconds: v.status?.rpoSeconds ?? 0 })),
      groups: this.store.groups().map((g) => ({ group: g.id, rpoThresholdSeconds: g.policy.rpoThresholdMs / 1000 })),
      machines: this.store.machines().map((m) => ({ machine: m.name, state: this.toMachine(m, views).state })),
      ...this.stats.snapshot(),
      events: this.eventLog.totals(),
    });
  }
}

/** Done rounds of a group whose points the catalog still holds, newest first, with those points. */
export function groupPointsOf(store: ControlStore, catalog: { pointsOfRounds(rounds: readonly number[]): Map<number, PointRow[]> }, groupId: string, limit = 1000): Array<{ round: GroupRound; points: PointRow[] }> {
  const rounds = store.rounds(groupId, limit, 'done');
  const points = catalog.pointsOfRounds(rounds.map((r) => r.id));
  // A round whose points retention has begun to prune is no longer a whole group point.
  return rounds.filter((r) => (points.get(r.id)?.length ?? 0) >= r.pointIds.length && r.pointIds.length > 0).map((round) => ({ round, points: points.get(round.id) ?? [] }));
}

/** The control plane's bounds as receiver options (all optional: the defaults above). */
export interface ControlOptions {
  /** Hold bound of a crash-consistent group round, ms (default 1000, at most 5000). */
  roundHoldMs?: number;
  /** Hold bound of an app-consistent group round, ms (default 5000, at most 5000). */
  appRoundHoldMs?: number;
  /** How long members have to send their tags after a commit, ms (default 10 s). */
  roundTagTimeoutMs?: number;
  /** A machine without a session this long raises machine-disconnected, ms (default 60 s). */
  disconnectAlertMs?: number;
  /** RPO threshold of machines in no group, ms (default 30 s). */
  defaultRpoThresholdMs?: number;
  /** How often alerts are evaluated, ms (default 1 s). */
  alertIntervalMs?: number;
  /** The first webhook retry delay, ms (default 1 s; it doubles up to 5 min). */
  webhookRetryMs?: number;
}

/** The plane's options from the receiver's; a value out of its bounds is refused. */
export function planeOptions(o: ControlOptions & { retentionUs: number }): PlaneOptions {
  const d = DEFAULT_PLANE_OPTIONS;
  const check = (name: string, value: number | undefined, min: number, max: number): void => {
    if (value !== undefined && (!Number.isInteger(value) || value < min || value > max)) {
      throw new FerryError(`${name} ${value} ms is outside ${min}..${max} ms`, ExitCode.usage);
    }
  };
  check('the round hold bound', o.roundHoldMs, 1, PolicyBounds.maxRoundHoldMs);
  check('the app round hold bound', o.appRoundHoldMs, 1, PolicyBounds.maxRoundHoldMs);
  check('the round tag timeout', o.roundTagTimeoutMs, 1, 10 * 60_000);
  check('the disconnect alert bound', o.disconnectAlertMs, 0, 7 * 24 * 3600 * 1000);
  check('the default RPO threshold', o.defaultRpoThresholdMs, PolicyBounds.minRpoThresholdMs, PolicyBounds.maxRpoThresholdMs);
  check('the alert interval', o.alertIntervalMs, 10, 60_000);
  check('the webhook retry delay', o.webhookRetryMs, 1, 5 * 60_000);
  return {
    defaultRetentionMs: Math.floor(o.retentionUs / 1000),
    defaultRpoThresholdMs: o.defaultRpoThresholdMs ?? d.defaultRpoThresholdMs,
    disconnectAlertMs: o.disconnectAlertMs ?? d.disconnectAlertMs,
    alertIntervalMs: o.alertIntervalMs ?? d.alertIntervalMs,
    rounds: {
      holdMs: o.roundHoldMs ?? d.rounds.holdMs,
      appHoldMs: o.appRoundHoldMs ?? d.rounds.appHoldMs,
      tagTimeoutMs: o.roundTagTimeoutMs ?? d.rounds.tagTimeoutMs,
    },
    webhooks: { ...d.webhooks, baseDelayMs: o.webhookRetryMs ?? d.webhooks.baseDelayMs },
  };
}
