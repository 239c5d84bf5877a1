/**
 * A small in-memory ControlPlaneApi for unit tests of the management API's HTTP layer (routes,
 * auth, validation, error mapping, SSE, the CLI's client). It keeps the contract's rules that
 * the API must surface (ids, one group per machine, no delete with members, policy bounds) and
 * nothing of the real plane's work (agents, rounds, alerts): test/control/api.test.ts switches to
 * the receiver's real plane once it is merged.
 */
import { ControlError, type ControlPlaneApi, type EventFilter, type MachineFilter } from '../../control/contract';
import {
  DEFAULT_POLICY,
  defaultRecovery,
  type ControlEvent,
  type EventSeverity,
  type Group,
  type GroupPolicy,
  type GroupRound,
  type Machine,
  type PlaneOverview,
  type RecoveryProperties,
  type Webhook,
  type WebhookDelivery,
} from '../../control/model';
import type { PointRow } from '../../receiver/catalog';
import type { HistoryWindow, MachineHistory } from '../../control/history';
import { openAlerts } from '../../control/open-alerts';
import { PolicyBounds } from '../../proto/validate-control';
import { isSafeId } from '../../proto/ids';

const SEVERITY_RANK: Record<EventSeverity, number> = { info: 0, warning: 1, error: 2 };

export class MemoryPlane implements ControlPlaneApi {
  private readonly machineMap = new Map<string, Machine>();
  private readonly groupMap = new Map<string, Group>();
  private readonly roundList: GroupRound[] = [];
  private readonly eventList: ControlEvent[] = [];
  private readonly hooks: Webhook[] = [];
  private readonly listeners = new Set<(event: ControlEvent) => void>();
  private readonly pointList: PointRow[] = [];
  private nextId = 1;

  /** Test setup: a registered machine. */
  addMachine(id: string, name = id, patch: Partial<Machine> = {}): Machine {
    const m: Machine = {
      id,
      name,
      os: 'linux',
      agentVersion: '0.1.0',
      volumes: [{ volumeId: `${id}-root`, sizeBytes: 1 << 30, state: 'protected', mode: 'data', rpoSeconds: 0.5, resyncPercent: 100, backlogBytes: 0, bytesPerSecond: 0, applyLagSeconds: 0 }],
      lastSeenMs: Date.now(),
      state: 'protected',
      connected: true,
      groupId: null,
      recovery: defaultRecovery(name),
      rpoSeconds: 0.5,
      ...patch,
    };
    this.machineMap.set(id, m);
    return structuredClone(m);
  }

  /** Test setup: a machine's state changes (as the real plane derives it from the agent's reports). */
  setState(id: string, state: Machine['state']): void {
    this.getMachine(id).state = state;
  }

  /** Test setup: an event, stored and published as the real plane does. */
  emit(severity: EventSeverity, kind: string, subjectId: string, text: string): ControlEvent {
    const event: ControlEvent = { id: this.nextId++, timeMs: Date.now(), severity, kind, subjectKind: 'machine', subjectId, text, acknowledged: false };
    this.eventList.push(event);
    for (const l of this.listeners) l(structuredClone(event));
    return structuredClone(event);
  }

  machines(filter: MachineFilter = {}): Machine[] {
    return [...this.machineMap.values()]
      .filter((m) => (filter.state === undefined || m.state === filter.state) && (filter.groupId === undefined || m.groupId === filter.groupId))
      .map((m) => structuredClone(m));
  }

  machine(id: string): Machine {
    return structuredClone(this.getMachine(id));
  }

  setRecovery(id: string, patch: Partial<RecoveryProperties>): Machine {
    const m = this.getMachine(id);
    if (patch.vcpus !== undefined && (!Number.isInteger(patch.vcpus) || patch.vcpus < 1)) throw new ControlError('invalid', 'vcpus must be at least 1', 'vcpus');
    m.recovery = { ...m.recovery, ...patch };
    return structuredClone(m);
  }

  groups(): Group[] {
    return [...this.groupMap.values()].map((g) => structuredClone(g));
  }

  group(id: string): Group {
    return structuredClone(this.getGroup(id));
  }

  createGroup(name: string, policy: Partial<GroupPolicy> = {}): Group {
    if (!isSafeId(name)) throw new ControlError('invalid', `group name ${JSON.stringify(name)} is not a safe identifier`, 'name');
    if (this.groupMap.has(name)) throw new ControlError('conflict', `group ${name} already exists`, 'name');
    const g: Group = { id: name, name, policy: checkPolicy({ ...DEFAULT_POLICY, ...policy }), revision: 1, members: [], createdMs: Date.now() };
    this.groupMap.set(name, g);
    return structuredClone(g);
  }

  setPolicy(id: string, patch: Partial<GroupPolicy>): Group {
    const g = this.getGroup(id);
    g.policy = checkPolicy({ ...g.policy, ...patch });
    g.revision++;
    return structuredClone(g);
  }

  deleteGroup(id: string): void {
    const g = this.getGroup(id);
    if (g.members.length > 0) throw new ControlError('conflict', `group ${id} still has ${g.members.length} member(s): remove them first`);
    this.groupMap.delete(id);
  }

  addMember(groupId: string, machineId: string): Group {
    const g = this.getGroup(groupId);
    const m = this.getMachine(machineId);
    if (m.groupId === groupId) return structuredClone(g);
    if (m.groupId !== null) throw new ControlError('conflict', `machine ${machineId} is in group ${m.groupId}: remove it there first`, 'machineId');
    m.groupId = groupId;
    g.members.push(machineId);
    g.revision++;
    return structuredClone(g);
  }

  removeMember(groupId: string, machineId: string): Group {
    const g = this.getGroup(groupId);
    const m = this.getMachine(machineId);
    if (m.groupId !== groupId) throw new ControlError('not-found', `machine ${machineId} is not in group ${groupId}`, 'machineId');
    m.groupId = null;
    g.members = g.members.filter((x) => x !== machineId);
    g.revision++;
    return structuredClone(g);
  }

  async runRound(groupId: string, options: { app?: boolean } = {}): Promise<GroupRound> {
    const g = this.getGroup(groupId);
    if (!g.policy.multiMachineConsistency) throw new ControlError('conflict', `group ${groupId} has multi-machine consistency off`, 'multiMachineConsistency');
    const now = Date.now();
    const round: GroupRound = {
      id: this.roundList.length + 1,
      groupId,
      app: options.app === true,
      state: 'done',
      startedMs: now,
      finishedMs: now,
      holdMs: 1,
      members: [...g.members],
      reason: '',
      pointIds: [],
    };
    this.roundList.push(round);
    return structuredClone(round);
  }

  rounds(groupId: string, limit = 100): GroupRound[] {
    this.getGroup(groupId);
    return this.roundList.filter((r) => r.groupId === groupId).reverse().slice(0, limit).map((r) => structuredClone(r));
  }

  groupPoints(groupId: string): Array<{ round: GroupRound; points: PointRow[] }> {
    return this.rounds(groupId).filter((r) => r.state === 'done').map((round) => ({ round, points: [] }));
  }

  events(filter: EventFilter = {}): ControlEvent[] {
    return this.eventList
      .filter(
        (e) =>
          (filter.sinceMs === undefined || e.timeMs >= filter.sinceMs) &&
          (filter.severity === undefined || SEVERITY_RANK[e.severity] >= SEVERITY_RANK[filter.severity]) &&
          (filter.subjectId === undefined || e.subjectId === filter.subjectId) &&
          (filter.kind === undefined || e.kind === filter.kind),
      )
      .reverse()
      .slice(0, filter.limit ?? 1000)
      .map((e) => structuredClone(e));
  }

  acknowledgeEvent(id: number): ControlEvent {
    const e = this.eventList.find((x) => x.id === id);
    if (!e) throw new ControlError('not-found', `no event ${id}`, 'id');
    e.acknowledged = true;
    return structuredClone(e);
  }

  subscribe(listener: (event: ControlEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  webhooks(): Webhook[] {
    return this.hooks.map((h) => structuredClone(h));
  }

  addWebhook(url: string, minSeverity: EventSeverity = 'warning'): Webhook {
    const hook: Webhook = { id: this.hooks.length + 1, url, minSeverity, createdMs: Date.now() };
    this.hooks.push(hook);
    return structuredClone(hook);
  }

  deleteWebhook(id: number): void {
    const i = this.hooks.findIndex((h) => h.id === id);
    if (i < 0) throw new ControlError('not-found', `no webhook ${id}`, 'id');
    this.hooks.splice(i, 1);
  }

  deliveries(): WebhookDelivery[] {
    return [];
  }

  metrics(): string {
    const lines = ['# TYPE ferry_rpo_seconds gauge'];
    for (const m of this.machineMap.values()) for (const v of m.volumes) lines.push(`ferry_rpo_seconds{machine="${m.id}",volume="${v.volumeId}"} ${v.rpoSeconds}`);
    return `${lines.join('\n')}\n`;
  }

  machineHistory(id: string, window: HistoryWindow): MachineHistory {
    const m = this.getMachine(id);
    const stepMs = window === 'hour' ? 5_000 : 300_000;
    return { window, stepMs, samples: [{ timeMs: Date.now(), rpoSeconds: m.rpoSeconds, bytesPerSecond: 0 }] };
  }

  machinePoints(id: string, limit = 100): PointRow[] {
    this.getMachine(id);
    return this.pointList.filter((p) => p.volumeId.startsWith(`${id}-`)).slice(0, limit);
  }

  point(id: number): PointRow {
    const p = this.pointList.find((x) => x.id === id);
    if (!p) throw new ControlError('not-found', `no point ${id}`, 'id');
    return structuredClone(p);
  }

  /** Test setup: recovery points the machine routes answer with. */
  addPoints(points: PointRow[]): void {
    this.pointList.push(...points);
  }

  overview(): PlaneOverview {
    const machines = this.machines();
    return {
      machines,
      groups: this.groups(),
      openAlerts: openAlerts(this.eventList),
      receiver: { storage: [], spoolBytes: 0, journalBytes: 0, unappliedBytes: 0, alerts: [] },
      worstRpoSeconds: machines.reduce((w, m) => Math.max(w, m.rpoSeconds), 0),
    };
  }

  private getMachine(id: string): Machine {
    const m = this.machineMap.get(id);
    if (!m) throw new ControlError('not-found', `no machine ${id}`, 'machineId');
    return m;
  }

  private getGroup(id: string): Group {
    const g = this.groupMap.get(id);
    if (!g) throw new ControlError('not-found', `no group ${id}`, 'groupId');
    return g;
  }
}

function checkPolicy(p: GroupPolicy): GroupPolicy {
  if (p.rpoThresholdMs < PolicyBounds.minRpoThresholdMs) throw new ControlError('invalid', 'rpoThresholdMs is too small', 'rpoThresholdMs');
  return p;
}
