import * as fs from 'fs';
import Database from 'better-sqlite3';
import { ExitCode, FerryError } from '../common/errors';
import type { EventFilter } from './contract';
import { ControlEvent, DEFAULT_POLICY, EventSeverity, EventSubjectKind, GroupPolicy, GroupRound, RecoveryProperties, RoundState, Webhook, WebhookDelivery } from './model';
import { severityRank } from './severity';

/**
 * The configuration server's tables, in the receiver's catalog file (catalog.db) but on a
 * connection of their own: the data plane's Catalog keeps agents, volumes and points, this
 * store keeps machines, groups, rounds, events, webhooks and deliveries. One SQLite file means
 * one backup and one `ferry receiver verify`; two connections keep each module owning its own
 * schema and migrations (WAL lets readers and the other writer wait at most busy_timeout, and
 * in the receiver both connections run on one thread, so they never wait on each other).
 */

const SCHEMA = `
CREATE TABLE IF NOT EXISTS control_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS machines (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, os TEXT NOT NULL, agent_version TEXT NOT NULL,
  last_seen_ms INTEGER NOT NULL, recovery TEXT NOT NULL, group_id TEXT,
  policy_revision INTEGER NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS groups (
  id TEXT PRIMARY KEY, policy TEXT NOT NULL, revision INTEGER NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
  id INTEGER PRIMARY KEY AUTOINCREMENT, group_id TEXT NOT NULL, app INTEGER NOT NULL,
  state TEXT NOT NULL, started_ms INTEGER NOT NULL, finished_ms INTEGER, hold_ms REAL,
  members TEXT NOT NULL, reason TEXT NOT NULL, point_ids TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rounds_by_group ON rounds (group_id, id);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, time_ms INTEGER NOT NULL, severity TEXT NOT NULL,
  kind TEXT NOT NULL, subject_kind TEXT NOT NULL, subject_id TEXT NOT NULL, text TEXT NOT NULL,
  acknowledged INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS events_by_time ON events (time_ms);
CREATE TABLE IF NOT EXISTS webhooks (
  id INTEGER PRIMARY KEY AUTOINCREMENT, url TEXT NOT NULL, min_severity TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
  webhook_id INTEGER NOT NULL, event_id INTEGER NOT NULL, state TEXT NOT NULL,
  attempts INTEGER NOT NULL, last_error TEXT NOT NULL, next_attempt_ms INTEGER,
  PRIMARY KEY (webhook_id, event_id));
`;

/** A machine as stored: what the control plane adds to a registered agent. */
export interface MachineRow {
  id: string;
  name: string;
  os: string;
  agentVersion: string;
  lastSeenMs: number;
  recovery: RecoveryProperties;
  groupId: string | null;
  /** The revision of the no-group policy this machine was last given (members use their group's). */
  policyRevision: number;
  createdMs: number;
}

export interface GroupRow {
  id: string;
  policy: GroupPolicy;
  revision: number;
  createdMs: number;
}

export type NewEvent = Omit<ControlEvent, 'id' | 'acknowledged'>;

interface RawMachine {
  id: string;
  name: string;
  os: string;
  agent_version: string;
  last_seen_ms: number;
  recovery: string;
  group_id: string | null;
  policy_revision: number;
  created_ms: number;
}

interface RawRound {
  id: number;
  group_id: string;
  app: number;
  state: RoundState;
  started_ms: number;
  finished_ms: number | null;
  hold_ms: number | null;
  members: string;
  reason: string;
  point_ids: string;
}

interface RawEvent {
  id: number;
  time_ms: number;
  severity: EventSeverity;
  kind: string;
  subject_kind: EventSubjectKind;
  subject_id: string;
  text: string;
  acknowledged: number;
}

interface RawDelivery {
  webhook_id: number;
  event_id: number;
  state: WebhookDelivery['state'];
  attempts: number;
  last_error: string;
  next_attempt_ms: number | null;
}

function parseJson<T>(text: string, fallback: T): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    return fallback;
  }
}

function toMachine(r: RawMachine): MachineRow {
  return {
    id: r.id,
    name: r.name,
    os: r.os,
    agentVersion: r.agent_version,
    lastSeenMs: r.last_seen_ms,
    recovery: parseJson<RecoveryProperties>(r.recovery, { recoveredName: r.name, vcpus: 1, memoryMiB: 1024, network: '', bootOrder: 0 }),
    groupId: r.group_id,
    policyRevision: r.policy_revision,
    createdMs: r.created_ms,
  };
}

function toRound(r: RawRound): GroupRound {
  return {
    id: r.id,
    groupId: r.group_id,
    app: r.app !== 0,
    state: r.state,
    startedMs: r.started_ms,
    finishedMs: r.finished_ms,
    holdMs: r.hold_ms,
    members: parseJson<string[]>(r.members, []),
    reason: r.reason,
    pointIds: parseJson<number[]>(r.point_ids, []),
  };
}

function toEvent(r: RawEvent): ControlEvent {
  return {
    id: r.id,
    timeMs: r.time_ms,
    severity: r.severity,
    kind: r.kind,
    subjectKind: r.subject_kind,
    subjectId: r.subject_id,
    text: r.text,
    acknowledged: r.acknowledged !== 0,
  };
}

function toDelivery(r: RawDelivery): WebhookDelivery {
  return { webhookId: r.webhook_id, eventId: r.event_id, state: r.state, attempts: r.attempts, lastError: r.last_error, nextAttemptMs: r.next_attempt_ms };
}

export class ControlStore {
  private constructor(private readonly db: Database.Database) {}

  static open(file: string, options: { readonly?: boolean } = {}): ControlStore {
    const readonly = options.readonly ?? false;
    if (!readonly && !fs.existsSync(file)) fs.writeFileSync(file, '', { mode: 0o600 });
    let db: Database.Database | undefined;
    try {
      db = new Database(file, { readonly, fileMustExist: readonly });
      db.pragma('busy_timeout = 5000');
      if (!readonly) {
        db.pragma('journal_mode = WAL');
        db.pragma('synchronous = FULL');
        db.exec(SCHEMA);
      }
      return new ControlStore(db);
    } catch (err) {
      db?.close();
      throw new FerryError(`the control tables of ${file} cannot be read (${(err as Error).message}); run \`ferry receiver verify\``, ExitCode.failure);
    }
  }

  /** True when the file has the control tables (a data directory of an older receiver has not). */
  get hasTables(): boolean {
    return this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rounds'").get() !== undefined;
  }

  close(): void {
    this.db.close();
  }

  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  /**
   * The next policy revision: one counter for every group and the no-group policy, so that a
   * machine moving between groups always gets a higher revision than any it saw before.
   */
  nextRevision(): number {
    const row = this.db.prepare("SELECT value FROM control_meta WHERE key = 'revision'").get() as { value: number } | undefined;
    const next = (row?.value ?? 0) + 1;
    this.db.prepare("INSERT INTO control_meta (key, value) VALUES ('revision', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value").run(next);
    return next;
  }

  // ---- machines ------------------------------------------------------------------------------

  addMachine(m: MachineRow): void {
    this.db
      .prepare('INSERT INTO machines (id, name, os, agent_version, last_seen_ms, recovery, group_id, policy_revision, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)')
      .run(m.id, m.name, m.os, m.agentVersion, m.lastSeenMs, JSON.stringify(m.recovery), m.groupId, m.policyRevision, m.createdMs);
  }

  machine(id: string): MachineRow | undefined {
    const r = this.db.prepare('SELECT * FROM machines WHERE id = ?').get(id) as RawMachine | undefined;
    return r && toMachine(r);
  }

  machines(): MachineRow[] {
    return (this.db.prepare('SELECT * FROM machines ORDER BY name, id').all() as RawMachine[]).map(toMachine);
  }

  /** A login: what the agent says of itself now, and when. Empty values keep what was known. */
  noteLogin(id: string, lastSeenMs: number, agentVersion: string, os: string): void {
    this.db
      .prepare("UPDATE machines SET last_seen_ms = ?, agent_version = CASE WHEN ? = '' THEN agent_version ELSE ? END, os = CASE WHEN ? = '' THEN os ELSE ? END WHERE id = ?")
      .run(lastSeenMs, agentVersion, agentVersion, os, os, id);
  }

  noteSeen(id: string, lastSeenMs: number): void {
    this.db.prepare('UPDATE machines SET last_seen_ms = ? WHERE id = ?').run(lastSeenMs, id);
  }

  setRecovery(id: string, recovery: RecoveryProperties): void {
    this.db.prepare('UPDATE machines SET recovery = ? WHERE id = ?').run(JSON.stringify(recovery), id);
  }

  setMachineGroup(id: string, groupId: string | null, policyRevision: number): void {
    this.db.prepare('UPDATE machines SET group_id = ?, policy_revision = ? WHERE id = ?').run(groupId, policyRevision, id);
  }

  // ---- groups --------------------------------------------------------------------------------

  addGroup(g: GroupRow): void {
    this.db.prepare('INSERT INTO groups (id, policy, revision, created_ms) VALUES (?, ?, ?, ?)').run(g.id, JSON.stringify(g.policy), g.revision, g.createdMs);
  }

  group(id: string): GroupRow | undefined {
    const r = this.db.prepare('SELECT * FROM groups WHERE id = ?').get(id) as { id: string; policy: string; revision: number; created_ms: number } | undefined;
    return r && { id: r.id, policy: { ...DEFAULT_POLICY, ...parseJson<Partial<GroupPolicy>>(r.policy, {}) }, revision: r.revision, createdMs: r.created_ms };
  }

  groups(): GroupRow[] {
    const ids = this.db.prepare('SELECT id FROM groups ORDER BY id').all() as Array<{ id: string }>;
    return ids.map((r) => this.group(r.id) as GroupRow);
  }

  setGroup(id: string, policy: GroupPolicy, revision: number): void {
    this.db.prepare('UPDATE groups SET policy = ?, revision = ? WHERE id = ?').run(JSON.stringify(policy), revision, id);
  }

  deleteGroup(id: string): void {
    this.db.prepare('DELETE FROM groups WHERE id = ?').run(id);
  }

  memberIds(groupId: string): string[] {
    return (this.db.prepare('SELECT id FROM machines WHERE group_id = ? ORDER BY name, id').all(groupId) as Array<{ id: string }>).map((r) => r.id);
  }

  // ---- rounds --------------------------------------------------------------------------------

  addRound(groupId: string, app: boolean, members: readonly string[], startedMs: number): number {
    const info = this.db
      .prepare("INSERT INTO rounds (group_id, app, state, started_ms, members, reason, point_ids) VALUES (?, ?, 'preparing', ?, ?, '', '[]')")
      .run(groupId, app ? 1 : 0, startedMs, JSON.stringify(members));
    return Number(info.lastInsertRowid);
  }

  setRoundState(id: number, state: RoundState): void {
    this.db.prepare('UPDATE rounds SET state = ? WHERE id = ?').run(state, id);
  }

  finishRound(id: number, end: { state: 'done' | 'aborted'; finishedMs: number; holdMs: number | null; reason: string; pointIds: readonly number[] }): void {
    this.db
      .prepare('UPDATE rounds SET state = ?, finished_ms = ?, hold_ms = ?, reason = ?, point_ids = ? WHERE id = ?')
      .run(end.state, end.finishedMs, end.holdMs, end.reason, JSON.stringify(end.pointIds), id);
  }

  round(id: number): GroupRound | undefined {
    const r = this.db.prepare('SELECT * FROM rounds WHERE id = ?').get(id) as RawRound | undefined;
    return r && toRound(r);
  }

  /** A group's rounds, newest first. */
  rounds(groupId: string, limit: number, state?: RoundState): GroupRound[] {
    const rows = (
      state === undefined
        ? this.db.prepare('SELECT * FROM rounds WHERE group_id = ? ORDER BY id DESC LIMIT ?').all(groupId, limit)
        : this.db.prepare('SELECT * FROM rounds WHERE group_id = ? AND state = ? ORDER BY id DESC LIMIT ?').all(groupId, state, limit)
    ) as RawRound[];
    return rows.map(toRound);
  }

  /** Rounds a receiver stopped in the middle of: aborted, with why. Returns how many. */
  abortUnfinished(reason: string, finishedMs: number): number {
    return this.db.prepare("UPDATE rounds SET state = 'aborted', reason = ?, finished_ms = ? WHERE state IN ('preparing', 'committing')").run(reason, finishedMs).changes;
  }

  /** Drops a group's rounds that started before `beforeMs` (their points age out the same way). */
  pruneRounds(groupId: string, beforeMs: number): number {
    return this.db.prepare('DELETE FROM rounds WHERE group_id = ? AND started_ms < ?').run(groupId, beforeMs).changes;
  }

  // ---- events --------------------------------------------------------------------------------

  addEvent(e: NewEvent): ControlEvent {
    const info = this.db
      .prepare('INSERT INTO events (time_ms, severity, kind, subject_kind, subject_id, text) VALUES (?, ?, ?, ?, ?, ?)')
      .run(e.timeMs, e.severity, e.kind, e.subjectKind, e.subjectId, e.text);
    return { ...e, id: Number(info.lastInsertRowid), acknowledged: false };
  }

  event(id: number): ControlEvent | undefined {
    const r = this.db.prepare('SELECT * FROM events WHERE id = ?').get(id) as RawEvent | undefined;
    return r && toEvent(r);
  }

  /** Events matching `filter`, oldest first; `limit` keeps the newest ones. Severity: at or above. */
  events(filter: EventFilter = {}): ControlEvent[] {
    const where: string[] = [];
    const args: Array<string | number> = [];
    if (filter.sinceMs !== undefined) {
      where.push('time_ms >= ?');
      args.push(filter.sinceMs);
    }
    if (filter.severity !== undefined) {
      const levels = (['info', 'warning', 'error'] as const).filter((s) => severityRank(s) >= severityRank(filter.severity as EventSeverity));
      where.push(`severity IN (${levels.map(() => '?').join(', ')})`);
      args.push(...levels);
    }
    if (filter.subjectId !== undefined) {
      where.push('subject_id = ?');
      args.push(filter.subjectId);
    }
    if (filter.kind !== undefined) {
      where.push('kind = ?');
      args.push(filter.kind);
    }
    const sql = `SELECT * FROM events ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`;
    const rows = this.db.prepare(sql).all(...args, filter.limit ?? 1000) as RawEvent[];
    return rows.reverse().map(toEvent);
  }

  /** Drops events older than `beforeMs` and their deliveries; returns how many events. */
  pruneEvents(beforeMs: number): number {
    return this.transaction(() => {
      this.db.prepare('DELETE FROM deliveries WHERE event_id IN (SELECT id FROM events WHERE time_ms < ?)').run(beforeMs);
      return this.db.prepare('DELETE FROM events WHERE time_ms < ?').run(beforeMs).changes;
    });
  }

  acknowledgeEvent(id: number): void {
    this.db.prepare('UPDATE events SET acknowledged = 1 WHERE id = ?').run(id);
  }

  eventCounts(): Array<{ severity: EventSeverity; count: number }> {
    return this.db.prepare('SELECT severity, COUNT(*) AS count FROM events GROUP BY severity').all() as Array<{ severity: EventSeverity; count: number }>;
  }

  // ---- webhooks and deliveries ---------------------------------------------------------------

  addWebhook(url: string, minSeverity: EventSeverity, createdMs: number): Webhook {
    const info = this.db.prepare('INSERT INTO webhooks (url, min_severity, created_ms) VALUES (?, ?, ?)').run(url, minSeverity, createdMs);
    return { id: Number(info.lastInsertRowid), url, minSeverity, createdMs };
  }

  webhooks(): Webhook[] {
    const rows = this.db.prepare('SELECT * FROM webhooks ORDER BY id').all() as Array<{ id: number; url: string; min_severity: EventSeverity; created_ms: number }>;
    return rows.map((r) => ({ id: r.id, url: r.url, minSeverity: r.min_severity, createdMs: r.created_ms }));
  }

  /** Removes a webhook and its deliveries; false when there was none. */
  deleteWebhook(id: number): boolean {
    return this.transaction(() => {
      this.db.prepare('DELETE FROM deliveries WHERE webhook_id = ?').run(id);
      return this.db.prepare('DELETE FROM webhooks WHERE id = ?').run(id).changes > 0;
    });
  }

  putDelivery(d: WebhookDelivery): void {
    this.db
      .prepare(
        'INSERT INTO deliveries (webhook_id, event_id, state, attempts, last_error, next_attempt_ms) VALUES (?, ?, ?, ?, ?, ?) ' +
          'ON CONFLICT (webhook_id, event_id) DO UPDATE SET state = excluded.state, attempts = excluded.attempts, last_error = excluded.last_error, next_attempt_ms = excluded.next_attempt_ms',
      )
      .run(d.webhookId, d.eventId, d.state, d.attempts, d.lastError, d.nextAttemptMs);
  }

  /** Deliveries, oldest event first; `limit` keeps the newest ones. */
  deliveries(filter: { webhookId?: number; state?: WebhookDelivery['state']; limit?: number } = {}): WebhookDelivery[] {
    const where: string[] = [];
    const args: Array<string | number> = [];
    if (filter.webhookId !== undefined) {
      where.push('webhook_id = ?');
      args.push(filter.webhookId);
    }
    if (filter.state !== undefined) {
      where.push('state = ?');
      args.push(filter.state);
    }
    const sql = `SELECT * FROM deliveries ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY event_id DESC, webhook_id DESC LIMIT ?`;
    return (this.db.prepare(sql).all(...args, filter.limit ?? 1000) as RawDelivery[]).reverse().map(toDelivery);
  }
}
