import * as fs from 'fs';
import Database from 'better-sqlite3';
import { crc32 } from 'zlib';
import { ExitCode, FerryError } from '../common/errors';
import { AccuracyName } from '../proto/types';
import type { DamageKind, StorageDamage } from './storage/damage';

export type PointKind = 'crash' | 'app';
export type PointOrigin = 'tag' | 'auto';

export interface PointRow {
  id: number;
  volumeId: string;
  seq: number;
  timeUs: number;
  kind: PointKind;
  accuracy: AccuracyName;
  origin: PointOrigin;
  groupId: string;
  name: string;
  /** The group round the point answers (control/rounds.ts); 0: not a group point. */
  groupRound: number;
  /** Set when the row fails its checksum: the point's seq or time cannot be trusted. */
  damaged?: string;
}

/** A point to record: the round is optional (0: not a group point). */
export type NewPoint = Omit<PointRow, 'id' | 'damaged' | 'groupRound'> & { groupRound?: number };

export interface AgentSummary {
  id: string;
  name: string;
  createdUs: number;
}

export interface VolumeRow {
  id: string;
  agentId: string;
  sizeBytes: number;
  blockSize: number;
  createdUs: number;
  damaged?: string;
}

export interface AgentRow {
  id: string;
  name: string;
  credential: Buffer;
  createdUs: number;
}

export interface DamageRow extends StorageDamage {
  id: number;
  volumeId: string;
  detectedUs: number;
  /** open: not healed yet; resolved: a repair made the volume whole again from `resolvedThroughSeq`. */
  state: 'open' | 'resolved';
  resolvedThroughSeq?: number;
  repairId?: number;
}

export interface RepairRow {
  id: number;
  volumeId: string;
  reason: string;
  /** Byte ranges of the volume to compare; empty: all of it. */
  ranges: Array<{ offset: number; length: number }>;
  state: 'pending' | 'done';
  throughSeq?: number;
  createdUs: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS agents (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, credential BLOB NOT NULL, created_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS volumes (
  id TEXT PRIMARY KEY, agent_id TEXT NOT NULL REFERENCES agents(id),
  size_bytes INTEGER NOT NULL, block_size INTEGER NOT NULL, created_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS points (
  id INTEGER PRIMARY KEY AUTOINCREMENT, volume_id TEXT NOT NULL REFERENCES volumes(id),
  seq INTEGER NOT NULL, time_us INTEGER NOT NULL, kind TEXT NOT NULL, accuracy TEXT NOT NULL,
  origin TEXT NOT NULL, group_id TEXT NOT NULL, name TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS points_by_volume ON points (volume_id, seq);
CREATE TABLE IF NOT EXISTS damage (
  id INTEGER PRIMARY KEY AUTOINCREMENT, volume_id TEXT NOT NULL, kind TEXT NOT NULL,
  file TEXT NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
  seq_from INTEGER, seq_to INTEGER, vol_offset INTEGER, vol_length INTEGER,
  detail TEXT NOT NULL, detected_us INTEGER NOT NULL, state TEXT NOT NULL,
  resolved_through_seq INTEGER, repair_id INTEGER);
CREATE TABLE IF NOT EXISTS repairs (
  id INTEGER PRIMARY KEY AUTOINCREMENT, volume_id TEXT NOT NULL, reason TEXT NOT NULL,
  ranges TEXT NOT NULL, state TEXT NOT NULL, through_seq INTEGER, created_us INTEGER NOT NULL,
  done_us INTEGER);
`;

interface RawPoint {
  id: number;
  volume_id: string;
  seq: number;
  time_us: number;
  kind: PointKind;
  accuracy: AccuracyName;
  origin: PointOrigin;
  group_id: string;
  name: string;
  group_round: number;
  crc: number | null;
}

interface RawVolume {
  id: string;
  agent_id: string;
  size_bytes: number;
  block_size: number;
  created_us: number;
  crc: number | null;
}

interface RawDamage {
  id: number;
  volume_id: string;
  kind: DamageKind;
  file: string;
  offset: number;
  length: number;
  seq_from: number | null;
  seq_to: number | null;
  vol_offset: number | null;
  vol_length: number | null;
  detail: string;
  detected_us: number;
  state: 'open' | 'resolved';
  resolved_through_seq: number | null;
  repair_id: number | null;
}

interface RawRepair {
  id: number;
  volume_id: string;
  reason: string;
  ranges: string;
  state: 'pending' | 'done';
  through_seq: number | null;
  created_us: number;
}

/** Row checksums: a flipped bit in what recovery relies on (a point's seq, a volume's size) shows. */
function pointCrc(p: Omit<RawPoint, 'id' | 'crc' | 'group_round'> & { group_round?: number }): number {
  // The round is covered when there is one; rows from before rounds keep their checksum.
  const round = p.group_round ? `|round ${p.group_round}` : '';
  return crc32(`${p.volume_id}|${p.seq}|${p.time_us}|${p.kind}|${p.accuracy}|${p.origin}|${p.group_id}|${p.name}${round}`);
}

function volumeCrc(v: Omit<RawVolume, 'crc'>): number {
  return crc32(`${v.id}|${v.agent_id}|${v.size_bytes}|${v.block_size}|${v.created_us}`);
}

function toPoint(r: RawPoint): PointRow {
  const row: PointRow = {
    id: r.id,
    volumeId: r.volume_id,
    seq: r.seq,
    timeUs: r.time_us,
    kind: r.kind,
    accuracy: r.accuracy,
    origin: r.origin,
    groupId: r.group_id,
    name: r.name,
    groupRound: r.group_round ?? 0,
  };
  if (r.crc !== pointCrc(r)) row.damaged = `catalog row of point ${r.id} fails its checksum`;
  return row;
}

function toVolume(r: RawVolume): VolumeRow {
  const row: VolumeRow = { id: r.id, agentId: r.agent_id, sizeBytes: r.size_bytes, blockSize: r.block_size, createdUs: r.created_us };
  if (r.crc !== volumeCrc(r)) row.damaged = `catalog row of volume ${r.id} fails its checksum`;
  return row;
}

function toDamage(r: RawDamage): DamageRow {
  const row: DamageRow = {
    id: r.id,
    volumeId: r.volume_id,
    kind: r.kind,
    file: r.file,
    offset: r.offset,
    length: r.length,
    detail: r.detail,
    detectedUs: r.detected_us,
    state: r.state,
  };
  if (r.seq_from !== null) row.seqFrom = r.seq_from;
  if (r.seq_to !== null) row.seqTo = r.seq_to;
  if (r.vol_offset !== null) row.volumeOffset = r.vol_offset;
  if (r.vol_length !== null) row.volumeLength = r.vol_length;
  if (r.resolved_through_seq !== null) row.resolvedThroughSeq = r.resolved_through_seq;
  if (r.repair_id !== null) row.repairId = r.repair_id;
  return row;
}

function toRepair(r: RawRepair): RepairRow {
  let ranges: Array<{ offset: number; length: number }> = [];
  try {
    ranges = JSON.parse(r.ranges) as Array<{ offset: number; length: number }>;
  } catch {
    ranges = [];
  }
  return { id: r.id, volumeId: r.volume_id, reason: r.reason, ranges, state: r.state, throughSeq: r.through_seq ?? undefined, createdUs: r.created_us };
}

/** The catalog file is not a readable SQLite database any more. */
function catalogFailure(file: string, err: unknown): FerryError {
  return new FerryError(
    `the catalog ${file} cannot be read (${(err as Error).message}): it is damaged; run \`ferry receiver verify\` and restore it from a backup`,
    ExitCode.failure,
  );
}

/**
 * Agents, volumes, recovery points, damage found and repairs asked, in SQLite (WAL,
 * synchronous=FULL: a committed insert survives a crash). The receiver writes; `ferry points`,
 * `export` and `verify` read concurrently. Point and volume rows carry a checksum.
 */
export class Catalog {
  private constructor(
    private readonly db: Database.Database,
    readonly file: string,
  ) {}

  static open(file: string, options: { readonly?: boolean } = {}): Catalog {
    // Agent credentials live here: create it private (SQLite gives -wal/-shm the same mode).
    if (!options.readonly && !fs.existsSync(file)) fs.writeFileSync(file, '', { mode: 0o600 });
    let db: Database.Database | undefined;
    try {
      db = new Database(file, { readonly: options.readonly ?? false, fileMustExist: options.readonly ?? false });
      db.pragma('busy_timeout = 5000');
      if (!options.readonly) {
        db.pragma('journal_mode = WAL');
        db.pragma('synchronous = FULL');
        db.exec(SCHEMA);
        migrate(db);
      }
      return new Catalog(db, file);
    } catch (err) {
      db?.close();
      if (err instanceof FerryError) throw err;
      throw catalogFailure(file, err);
    }
  }

  /** Runs a query; a damaged database becomes one clear error naming the file. */
  private run<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB') throw catalogFailure(this.file, err);
      throw err;
    }
  }

  addAgent(agent: AgentRow): void {
    this.run(() =>
      this.db.prepare('INSERT INTO agents (id, name, credential, created_us) VALUES (?, ?, ?, ?)').run(agent.id, agent.name, agent.credential, agent.createdUs),
    );
  }

  /** Every registered agent, without its credential. */
  agents(): AgentSummary[] {
    const rows = this.run(() => this.db.prepare('SELECT id, name, created_us FROM agents ORDER BY created_us, id').all()) as Array<{ id: string; name: string; created_us: number }>;
    return rows.map((r) => ({ id: r.id, name: r.name, createdUs: r.created_us }));
  }

  agent(id: string): AgentRow | undefined {
    const r = this.run(() => this.db.prepare('SELECT id, name, credential, created_us FROM agents WHERE id = ?').get(id)) as
      | { id: string; name: string; credential: Buffer; created_us: number }
      | undefined;
    return r && { id: r.id, name: r.name, credential: r.credential, createdUs: r.created_us };
  }

  addVolume(v: Omit<VolumeRow, 'damaged'>): void {
    const raw = { id: v.id, agent_id: v.agentId, size_bytes: v.sizeBytes, block_size: v.blockSize, created_us: v.createdUs };
    this.run(() =>
      this.db
        .prepare('INSERT INTO volumes (id, agent_id, size_bytes, block_size, created_us, crc) VALUES (?, ?, ?, ?, ?, ?)')
        .run(raw.id, raw.agent_id, raw.size_bytes, raw.block_size, raw.created_us, volumeCrc(raw)),
    );
  }

  volume(id: string): VolumeRow | undefined {
    const r = this.run(() => this.db.prepare('SELECT id, agent_id, size_bytes, block_size, created_us, crc FROM volumes WHERE id = ?').get(id)) as RawVolume | undefined;
    return r && toVolume(r);
  }

  volumes(): VolumeRow[] {
    const rows = this.run(() => this.db.prepare('SELECT id, agent_id, size_bytes, block_size, created_us, crc FROM volumes ORDER BY id').all()) as RawVolume[];
    return rows.map(toVolume);
  }

  addPoint(p: NewPoint): number {
    const raw = {
      volume_id: p.volumeId,
      seq: p.seq,
      time_us: p.timeUs,
      kind: p.kind,
      accuracy: p.accuracy,
      origin: p.origin,
      group_id: p.groupId,
      name: p.name,
      group_round: p.groupRound ?? 0,
    };
    const info = this.run(() =>
      this.db
        .prepare('INSERT INTO points (volume_id, seq, time_us, kind, accuracy, origin, group_id, name, group_round, crc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)')
        .run(raw.volume_id, raw.seq, raw.time_us, raw.kind, raw.accuracy, raw.origin, raw.group_id, raw.name, raw.group_round, pointCrc(raw)),
    );
    return Number(info.lastInsertRowid);
  }

  /** Adds several points in one transaction (one fsync): a multi-volume tag is all or nothing. */
  addPoints(points: NewPoint[]): number[] {
    return this.run(() => this.db.transaction(() => points.map((p) => this.addPoint(p)))());
  }

  points(volumeId?: string): PointRow[] {
    const rows = this.run(() =>
      volumeId === undefined
        ? this.db.prepare('SELECT * FROM points ORDER BY volume_id, seq, id').all()
        : this.db.prepare('SELECT * FROM points WHERE volume_id = ? ORDER BY seq, id').all(volumeId),
    ) as RawPoint[];
    return rows.map(toPoint);
  }

  /** The newest `limit` points of one volume, newest first (by seq: capture order). */
  recentPoints(volumeId: string, limit: number): PointRow[] {
    const rows = this.run(() => this.db.prepare('SELECT * FROM points WHERE volume_id = ? ORDER BY seq DESC, id DESC LIMIT ?').all(volumeId, limit)) as RawPoint[];
    return rows.map(toPoint);
  }

  /** The points of group rounds, by round (rounds without points are absent). */
  pointsOfRounds(rounds: readonly number[]): Map<number, PointRow[]> {
    const byRound = new Map<number, PointRow[]>();
    if (rounds.length === 0) return byRound;
    this.run(() => {
      const stmt = this.db.prepare('SELECT * FROM points WHERE group_round = ? ORDER BY volume_id, id');
      for (const round of rounds) {
        const rows = (stmt.all(round) as RawPoint[]).map(toPoint);
        if (rows.length > 0) byRound.set(round, rows);
      }
    });
    return byRound;
  }

  /** Capture time of a volume's oldest point (retention shortfall), or undefined. */
  oldestPointTimeUs(volumeId: string): number | undefined {
    const r = this.run(() => this.db.prepare('SELECT MIN(time_us) AS t FROM points WHERE volume_id = ?').get(volumeId)) as { t: number | null };
    return r.t ?? undefined;
  }

  point(id: number): PointRow | undefined {
    const r = this.run(() => this.db.prepare('SELECT * FROM points WHERE id = ?').get(id)) as RawPoint | undefined;
    return r && toPoint(r);
  }

  /** The newest point of a volume whose row is intact. */
  lastPoint(volumeId: string, origin?: PointOrigin): PointRow | undefined {
    const rows = this.run(() =>
      origin === undefined
        ? this.db.prepare('SELECT * FROM points WHERE volume_id = ? ORDER BY seq DESC, id DESC LIMIT 16').all(volumeId)
        : this.db.prepare('SELECT * FROM points WHERE volume_id = ? AND origin = ? ORDER BY seq DESC, id DESC LIMIT 16').all(volumeId, origin),
    ) as RawPoint[];
    return rows.map(toPoint).find((p) => !p.damaged);
  }

  /** Whether the volume has any point an export may use (accuracy other than none): its initial copy is done. */
  hasUsablePoint(volumeId: string): boolean {
    return this.run(() => this.db.prepare("SELECT 1 FROM points WHERE volume_id = ? AND accuracy != 'none' LIMIT 1").get(volumeId)) !== undefined;
  }

  oldestPointSeq(volumeId: string): number | undefined {
    const r = this.run(() => this.db.prepare('SELECT MIN(seq) AS seq FROM points WHERE volume_id = ?').get(volumeId)) as { seq: number | null };
    return r.seq ?? undefined;
  }

  /** Deletes every point of a volume but `keep` (a committed failover drops the others); returns how many. */
  deletePointsExcept(volumeId: string, keep: readonly number[]): number {
    return this.run(() => {
      const all = this.db.prepare('SELECT id FROM points WHERE volume_id = ?').all(volumeId) as Array<{ id: number }>;
      const del = this.db.prepare('DELETE FROM points WHERE id = ?');
      let n = 0;
      for (const { id } of all) if (!keep.includes(id)) n += del.run(id).changes;
      return n;
    });
  }

  /** Deletes the points of a volume cut before `seq` (aged out of a redo journal); returns how many. */
  prunePointsBeforeSeq(volumeId: string, seq: number): number {
    return this.run(() => this.db.prepare('DELETE FROM points WHERE volume_id = ? AND seq < ?').run(volumeId, seq).changes);
  }

  /** Deletes points of a volume with a source time before `timeUs`; returns how many. */
  prunePointsBefore(volumeId: string, timeUs: number): number {
    return this.run(() => this.db.prepare('DELETE FROM points WHERE volume_id = ? AND time_us < ?').run(volumeId, timeUs).changes);
  }

  // ---- damage and repairs -------------------------------------------------------------------

  /**
   * Records damage found in a volume's files; the same place (kind, file, offset) is recorded
   * once while it is open. A spool place is recorded once for good: spool files are never
   * rewritten (their names are seqs, which only grow), so damage resolved there (repaired, or
   * found harmless) is the same damage when a restart reads the segment again. Returns the new
   * row, or undefined when it was known already.
   */
  addDamage(volumeId: string, d: StorageDamage, detectedUs: number): DamageRow | undefined {
    return this.run(() =>
      this.db.transaction(() => {
        const known = this.db
          .prepare(`SELECT id FROM damage WHERE volume_id = ? AND kind = ? AND file = ? AND offset = ?${d.kind === 'spool' ? '' : " AND state = 'open'"}`)
          .get(volumeId, d.kind, d.file, d.offset);
        if (known) return undefined;
        const info = this.db
          .prepare(
            'INSERT INTO damage (volume_id, kind, file, offset, length, seq_from, seq_to, vol_offset, vol_length, detail, detected_us, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
          )
          .run(volumeId, d.kind, d.file, d.offset, d.length, d.seqFrom ?? null, d.seqTo ?? null, d.volumeOffset ?? null, d.volumeLength ?? null, d.detail, detectedUs, 'open');
        return toDamage(this.db.prepare('SELECT * FROM damage WHERE id = ?').get(Number(info.lastInsertRowid)) as RawDamage);
      })(),
    );
  }

  damage(volumeId?: string): DamageRow[] {
    const rows = this.run(() =>
      volumeId === undefined ? this.db.prepare('SELECT * FROM damage ORDER BY id').all() : this.db.prepare('SELECT * FROM damage WHERE volume_id = ? ORDER BY id').all(volumeId),
    ) as RawDamage[];
    return rows.map(toDamage);
  }

  /** Links open damage rows to the repair asked for them. */
  linkDamage(ids: number[], repairId: number): void {
    this.run(() => {
      const stmt = this.db.prepare('UPDATE damage SET repair_id = ? WHERE id = ?');
      this.db.transaction(() => ids.forEach((id) => stmt.run(repairId, id)))();
    });
  }

  addRepair(volumeId: string, reason: string, ranges: Array<{ offset: number; length: number }>, createdUs: number): RepairRow {
    return this.run(() => {
      const info = this.db
        .prepare("INSERT INTO repairs (volume_id, reason, ranges, state, created_us) VALUES (?, ?, ?, 'pending', ?)")
        .run(volumeId, reason, JSON.stringify(ranges), createdUs);
      return toRepair(this.db.prepare('SELECT * FROM repairs WHERE id = ?').get(Number(info.lastInsertRowid)) as RawRepair);
    });
  }

  repairs(volumeId?: string, state?: RepairRow['state']): RepairRow[] {
    const rows = this.run(() => this.db.prepare('SELECT * FROM repairs ORDER BY id').all()) as RawRepair[];
    return rows.map(toRepair).filter((r) => (volumeId === undefined || r.volumeId === volumeId) && (state === undefined || r.state === state));
  }

  /**
   * A repair is in the replica: it and the damage it was asked for are resolved from
   * `throughSeq` on (points at or after it no longer depend on the damaged data).
   */
  completeRepair(repairId: number, throughSeq: number, doneUs: number): void {
    this.run(() =>
      this.db.transaction(() => {
        this.db.prepare("UPDATE repairs SET state = 'done', through_seq = ?, done_us = ? WHERE id = ?").run(throughSeq, doneUs, repairId);
        this.db.prepare("UPDATE damage SET state = 'resolved', resolved_through_seq = ? WHERE repair_id = ? AND state = 'open'").run(throughSeq, repairId);
      })(),
    );
  }

  /**
   * Open spool damage at these places is resolved without a repair: the seqs went on after it
   * with no gap, so it held nothing the replica needs. Returns how many rows it resolved.
   */
  resolveSpoolDamage(volumeId: string, places: ReadonlyArray<{ file: string; offset: number }>, throughSeq: number): number {
    return this.run(() =>
      this.db.transaction(() => {
        const stmt = this.db.prepare("UPDATE damage SET state = 'resolved', resolved_through_seq = ? WHERE volume_id = ? AND kind = 'spool' AND file = ? AND offset = ? AND state = 'open'");
        let n = 0;
        for (const p of places) n += stmt.run(throughSeq, volumeId, p.file, p.offset).changes;
        return n;
      })(),
    );
  }

  /** SQLite's own check of the file (`PRAGMA quick_check`): 'ok' or what is wrong. */
  integrityCheck(): string[] {
    const rows = this.run(() => this.db.pragma('quick_check')) as Array<{ quick_check: string }>;
    return rows.map((r) => r.quick_check);
  }

  close(): void {
    this.db.close();
  }
}

/**
 * Adds what later versions keep: row checksums (rows written before them get theirs now) and
 * the group round of a point (0 for older rows, whose checksum does not cover it).
 */
function migrate(db: Database.Database): void {
  const has = (table: string, column: string): boolean => (db.pragma(`table_info(${table})`) as Array<{ name: string }>).some((c) => c.name === column);
  db.transaction(() => {
    if (!has('points', 'group_round')) {
      db.exec('ALTER TABLE points ADD COLUMN group_round INTEGER NOT NULL DEFAULT 0');
    }
    db.exec('CREATE INDEX IF NOT EXISTS points_by_round ON points (group_round) WHERE group_round > 0');
    if (!has('points', 'crc')) {
      db.exec('ALTER TABLE points ADD COLUMN crc INTEGER');
      const update = db.prepare('UPDATE points SET crc = ? WHERE id = ?');
      for (const r of db.prepare('SELECT * FROM points').all() as RawPoint[]) update.run(pointCrc(r), r.id);
    }
    if (!has('volumes', 'crc')) {
      db.exec('ALTER TABLE volumes ADD COLUMN crc INTEGER');
      const update = db.prepare('UPDATE volumes SET crc = ? WHERE id = ?');
      for (const r of db.prepare('SELECT * FROM volumes').all() as RawVolume[]) update.run(volumeCrc(r), r.id);
    }
  })();
}
