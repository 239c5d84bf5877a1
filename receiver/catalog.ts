import * as fs from 'fs';
import Database from 'better-sqlite3';
import { AccuracyName } from '../proto/types';

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
}

export interface VolumeRow {
  id: string;
  agentId: string;
  sizeBytes: number;
  blockSize: number;
  createdUs: number;
}

export interface AgentRow {
  id: string;
  name: string;
  credential: Buffer;
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
}

function toPoint(r: RawPoint): PointRow {
  return {
    id: r.id,
    volumeId: r.volume_id,
    seq: r.seq,
    timeUs: r.time_us,
    kind: r.kind,
    accuracy: r.accuracy,
    origin: r.origin,
    groupId: r.group_id,
    name: r.name,
  };
}

/**
 * Agents, volumes and recovery points, in SQLite (WAL, synchronous=FULL: a committed
 * insert survives a crash). The receiver writes; `ferry points`/`export` read concurrently.
 */
export class Catalog {
  private constructor(private readonly db: Database.Database) {}

  static open(file: string, options: { readonly?: boolean } = {}): Catalog {
    // Agent credentials live here: create it private (SQLite gives -wal/-shm the same mode).
    if (!options.readonly && !fs.existsSync(file)) fs.writeFileSync(file, '', { mode: 0o600 });
    const db = new Database(file, { readonly: options.readonly ?? false, fileMustExist: options.readonly ?? false });
    db.pragma('busy_timeout = 5000');
    if (!options.readonly) {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.exec(SCHEMA);
    }
    return new Catalog(db);
  }

  addAgent(agent: AgentRow): void {
    this.db
      .prepare('INSERT INTO agents (id, name, credential, created_us) VALUES (?, ?, ?, ?)')
      .run(agent.id, agent.name, agent.credential, agent.createdUs);
  }

  agent(id: string): AgentRow | undefined {
    const r = this.db.prepare('SELECT id, name, credential, created_us FROM agents WHERE id = ?').get(id) as
      | { id: string; name: string; credential: Buffer; created_us: number }
      | undefined;
    return r && { id: r.id, name: r.name, credential: r.credential, createdUs: r.created_us };
  }

  addVolume(v: VolumeRow): void {
    this.db
      .prepare('INSERT INTO volumes (id, agent_id, size_bytes, block_size, created_us) VALUES (?, ?, ?, ?, ?)')
      .run(v.id, v.agentId, v.sizeBytes, v.blockSize, v.createdUs);
  }

  volume(id: string): VolumeRow | undefined {
    const r = this.db.prepare('SELECT id, agent_id, size_bytes, block_size, created_us FROM volumes WHERE id = ?').get(id) as
      | { id: string; agent_id: string; size_bytes: number; block_size: number; created_us: number }
      | undefined;
    return r && { id: r.id, agentId: r.agent_id, sizeBytes: r.size_bytes, blockSize: r.block_size, createdUs: r.created_us };
  }

  volumes(): VolumeRow[] {
    const rows = this.db.prepare('SELECT id, agent_id, size_bytes, block_size, created_us FROM volumes ORDER BY id').all() as Array<{
      id: string;
      agent_id: string;
      size_bytes: number;
      block_size: number;
      created_us: number;
    }>;
    return rows.map((r) => ({ id: r.id, agentId: r.agent_id, sizeBytes: r.size_bytes, blockSize: r.block_size, createdUs: r.created_us }));
  }

  addPoint(p: Omit<PointRow, 'id'>): number {
    const info = this.db
      .prepare('INSERT INTO points (volume_id, seq, time_us, kind, accuracy, origin, group_id, name) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(p.volumeId, p.seq, p.timeUs, p.kind, p.accuracy, p.origin, p.groupId, p.name);
    return Number(info.lastInsertRowid);
  }

  /** Adds several points in one transaction (one fsync): a multi-volume tag is all or nothing. */
  addPoints(points: Array<Omit<PointRow, 'id'>>): number[] {
    return this.db.transaction(() => points.map((p) => this.addPoint(p)))();
  }

  points(volumeId?: string): PointRow[] {
    const rows = (
      volumeId === undefined
        ? this.db.prepare('SELECT * FROM points ORDER BY volume_id, seq, id').all()
        : this.db.prepare('SELECT * FROM points WHERE volume_id = ? ORDER BY seq, id').all(volumeId)
    ) as RawPoint[];
    return rows.map(toPoint);
  }

  point(id: number): PointRow | undefined {
    const r = this.db.prepare('SELECT * FROM points WHERE id = ?').get(id) as RawPoint | undefined;
    return r && toPoint(r);
  }

  lastPoint(volumeId: string, origin?: PointOrigin): PointRow | undefined {
    const r = (
      origin === undefined
        ? this.db.prepare('SELECT * FROM points WHERE volume_id = ? ORDER BY seq DESC, id DESC LIMIT 1').get(volumeId)
        : this.db.prepare('SELECT * FROM points WHERE volume_id = ? AND origin = ? ORDER BY seq DESC, id DESC LIMIT 1').get(volumeId, origin)
    ) as RawPoint | undefined;
    return r && toPoint(r);
  }

  oldestPointSeq(volumeId: string): number | undefined {
    const r = this.db.prepare('SELECT MIN(seq) AS seq FROM points WHERE volume_id = ?').get(volumeId) as { seq: number | null };
    return r.seq ?? undefined;
  }

  /** Deletes points of a volume with a source time before `timeUs`; returns how many. */
  prunePointsBefore(volumeId: string, timeUs: number): number {
    return this.db.prepare('DELETE FROM points WHERE volume_id = ? AND time_us < ?').run(volumeId, timeUs).changes;
  }

  close(): void {
    this.db.close();
  }
}
