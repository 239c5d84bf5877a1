import * as fs from 'fs';
import { decodeFrame } from '../proto/frames';
import { ErrorCode, ProtocolError } from '../proto/errors';
import { ChangeBatch, VolumeSpec } from '../proto/types';
import { validateChangeSet } from '../proto/validate';
import { ApplyGroup, rollBack } from './apply/apply-batch';
import { DataLayout } from './layout';
import { Checkpoint } from './storage/checkpoint';
import { UndoJournal, undoRecordsNewestFirst } from './storage/journal';
import { Replica } from './storage/replica';
import { Spool, SpoolCursor } from './storage/spool';
import { flock } from '../native/addon';
import { BufferArena } from '../common/arena';
import { blockHashes } from '../common/block-hash';

const AUTO_POINT_INTERVAL_US = 1_000_000;
/** Spooled bytes one apply step may take: big enough to share fsyncs, small enough to keep ingest responsive. */
const APPLY_STEP_BYTES = 16 * 1024 * 1024;
/** Ingested change-set frames held in memory for apply (see VolumeStore.recent). */
const RECENT_CACHE_BYTES = 64 * 1024 * 1024;
/**
 * One step's frames read from the spool (a little over APPLY_STEP_BYTES), their decompressed
 * data and the old data of its journal groups; a step that needs more gets buffers of its own.
 */
const APPLY_ARENA_BYTES = 64 * 1024 * 1024;

export interface AutoPoint {
  seq: number;
  timeUs: number;
}

export interface AppliedStep {
  firstSeq: number;
  lastSeq: number;
  /** Crash-consistent points to record: one per second of write-ordered stream. */
  autoPoints: AutoPoint[];
}

/** Recovery-relevant facts found when a volume is opened. */
export interface OpenReport {
  checkpointSeq: number;
  durableSeq: number;
  rolledBackRecords: number;
}

/**
 * One replicated volume: spool (durable intake), replica, undo journal and checkpoint.
 * Opening it finishes whatever a crash interrupted: an apply that had journaled records past
 * the checkpoint is rolled back, and the spool is applied again from the checkpoint on.
 */
export class VolumeStore {
  private applied: number;
  private cursor: SpoolCursor;
  private lastAutoPointUs: number;
  private accepted: number;
  /** Capture time of the first record of each spooled, unapplied change set. */
  private readonly unapplied: Array<{ lastSeq: number; firstCaptureUs: number; bytes: number }> = [];
  private unappliedBytesTotal = 0;
  private lastCheckpointMs = Date.now();
  /**
   * Frames of change sets validated at ingest and not yet applied, by first seq: apply takes
   * them from here instead of reading the spool again. Bounded; the spool stays the truth.
   */
  private readonly recent = new Map<number, { frame: Buffer; lastSeq: number }>();
  private recentBytes = 0;
  /** Spool frames, decompressed data and old data of one apply step (see APPLY_ARENA_BYTES). */
  private readonly arena = new BufferArena(APPLY_ARENA_BYTES);
  appliedCaptureUs = 0;
  readonly openReport: OpenReport;

  private constructor(
    readonly spec: VolumeSpec,
    private readonly layout: DataLayout,
    private readonly spool: Spool,
    private readonly journal: UndoJournal,
    private readonly checkpoint: Checkpoint,
    private readonly replica: Replica,
    lastAutoPointUs: number,
    rolledBackRecords: number,
  ) {
    this.applied = checkpoint.seq;
    this.accepted = Math.max(spool.durableSeq, checkpoint.seq);
    this.cursor = spool.cursor(this.applied);
    this.lastAutoPointUs = lastAutoPointUs;
    this.openReport = { checkpointSeq: checkpoint.seq, durableSeq: this.accepted, rolledBackRecords };
    this.indexUnapplied();
  }

  static open(layout: DataLayout, spec: VolumeSpec, lastAutoPointUs: number, segmentBytes = 64 * 1024 * 1024): VolumeStore {
    const id = spec.volumeId;
    fs.mkdirSync(layout.volumeDir(id), { recursive: true, mode: 0o700 });
    const replica = Replica.open(layout.replicaFile(id), spec.sizeBytes);
    const checkpoint = Checkpoint.open(layout.checkpointFile(id));
    const journal = UndoJournal.open(layout.journalDir(id), segmentBytes);
    let rolledBack = 0;
    if (journal.newestSeq > checkpoint.seq) {
      withVolumeLock(layout, id, 'exclusive', true, () => {
        rolledBack = rollBack(undoRecordsNewestFirst(layout.journalDir(id), checkpoint.seq), replica);
        replica.sync();
        journal.truncateAfter(checkpoint.seq);
      });
    }
    const spool = Spool.open(layout.spoolDir(id), segmentBytes);
    return new VolumeStore(spec, layout, spool, journal, checkpoint, replica, lastAutoPointUs, rolledBack);
  }

  private indexUnapplied(): void {
    const cursor = this.spool.cursor(this.applied);
    try {
      for (let rec = cursor.next(); rec; rec = cursor.next()) {
        const frame = decodeFrame(rec.frame);
        const firstCaptureUs = frame.changeSet?.extents?.[0]?.captureTimeUs ?? 0;
        this.unapplied.push({ lastSeq: rec.lastSeq, firstCaptureUs, bytes: rec.bytes });
        this.unappliedBytesTotal += rec.bytes;
      }
    } finally {
      cursor.close();
    }
  }

  get durableSeq(): number {
    return Math.max(this.spool.durableSeq, this.checkpoint.seq);
  }

  /** Highest seq accepted into the spool (durable at the next flush). */
  get acceptedSeq(): number {
    return this.accepted;
  }

  /** Makes everything accepted so far durable (group commit normally does this a tick later). */
  flushSpool(): void {
    if (this.spool.durableSeq < this.accepted) this.spool.flush();
  }

  get appliedSeq(): number {
    return this.applied;
  }

  get checkpointSeq(): number {
    return this.checkpoint.seq;
  }

  get unappliedBytes(): number {
    return this.unappliedBytesTotal;
  }

  /** Capture time of the oldest spooled change not yet applied (0: none). */
  get oldestUnappliedCaptureUs(): number {
    return this.unapplied[0]?.firstCaptureUs ?? 0;
  }

  /**
   * Spools a validated change set. Resolves when it is durable. A change set entirely at or
   * below what was already accepted is a replay: nothing is written, it is acknowledged again.
   * Only `frame` is kept, never `batch.data`: the caller may reuse that memory once this returns.
   */
  async ingest(frame: Buffer, batch: ChangeBatch): Promise<'stored' | 'duplicate'> {
    if (batch.lastSeq <= this.accepted) {
      if (this.durableSeq < batch.lastSeq) this.spool.flush();
      return 'duplicate';
    }
    const isFirstEver = this.accepted === 0;
    if (!isFirstEver && batch.firstSeq > this.accepted + 1) {
      throw new ProtocolError(ErrorCode.SEQ_GAP, `volume ${this.spec.volumeId}: change set starts at seq ${batch.firstSeq}, expected ${this.accepted + 1} (records ${this.accepted + 1}..${batch.firstSeq - 1} are missing)`);
    }
    this.accepted = batch.lastSeq;
    if (this.recentBytes + frame.length <= RECENT_CACHE_BYTES) {
      this.recent.set(batch.firstSeq, { frame, lastSeq: batch.lastSeq });
      this.recentBytes += frame.length;
    }
    const bytes = frame.length + 40;
    this.unapplied.push({ lastSeq: batch.lastSeq, firstCaptureUs: batch.extents[0]?.captureTimeUs ?? 0, bytes });
    this.unappliedBytesTotal += bytes;
    await this.spool.append(frame, batch.firstSeq, batch.lastSeq);
    return 'stored';
  }

  hasWork(): boolean {
    return this.applied < this.spool.durableSeq;
  }

  /**
   * Applies durable change sets in seq order, as many as fit in `maxBytes` of spooled frames
   * (at least one), so that consecutive change sets share journal fsyncs.
   */
  applyNext(maxBytes = APPLY_STEP_BYTES): AppliedStep | undefined {
    if (!this.hasWork()) return undefined;
    this.arena.reset();
    const group = new ApplyGroup(this.replica, this.journal, this.arena);
    const firstAfter = this.applied;
    const autoPoints: AutoPoint[] = [];
    let bytes = 0;
    while (this.applied < this.spool.durableSeq && bytes < maxBytes) {
      const rec = this.cursor.next(this.arena, (first, last) => this.recent.get(first)?.lastSeq === last);
      if (!rec) break;
      bytes += rec.bytes;
      const batch = this.decodeSpooled(this.takeRecent(rec.firstSeq, rec.lastSeq) ?? rec.frame, rec.firstSeq, rec.lastSeq);
      const after = this.applied;
      group.add(batch, after);
      this.applied = batch.lastSeq;
      this.noteAutoPoints(batch, after, autoPoints);
    }
    group.finish();
    if (this.applied === firstAfter) return undefined;
    while (this.unapplied.length > 0 && this.unapplied[0].lastSeq <= this.applied) {
      this.unappliedBytesTotal -= (this.unapplied.shift() as { bytes: number }).bytes;
    }
    return { firstSeq: firstAfter + 1, lastSeq: this.applied, autoPoints };
  }

  /** The frame as validated at ingest, if it is still held in memory (it saves a spool read). */
  private takeRecent(firstSeq: number, lastSeq: number): Buffer | undefined {
    const held = this.recent.get(firstSeq);
    if (!held || held.lastSeq !== lastSeq) return undefined;
    this.recent.delete(firstSeq);
    this.recentBytes -= held.frame.length;
    return held.frame;
  }

  /** The change set of a spooled frame, its data decompressed into the step's arena. */
  private decodeSpooled(raw: Buffer, firstSeq: number, lastSeq: number): ChangeBatch {
    const frame = decodeFrame(raw);
    if (!frame.changeSet) throw new Error(`spool record ${firstSeq}..${lastSeq} holds no change set`);
    // Skip the payload's CRC: the spool record's own CRC has just covered these bytes, or (a
    // frame held since ingest) the payload's was checked then.
    return validateChangeSet(frame.changeSet, this.spec.sizeBytes, false, (size) => this.arena.take(size));
  }

  /** One crash-consistent point per second of capture time, for write-ordered streams only. */
  private noteAutoPoints(batch: ChangeBatch, after: number, out: AutoPoint[]): void {
    for (const ext of batch.extents) {
      if (ext.seq <= after) continue;
      this.appliedCaptureUs = ext.captureTimeUs;
      if (batch.accuracy === 'exact' && ext.captureTimeUs >= this.lastAutoPointUs + AUTO_POINT_INTERVAL_US) {
        out.push({ seq: ext.seq, timeUs: ext.captureTimeUs });
        this.lastAutoPointUs = ext.captureTimeUs;
      }
    }
  }

  /** Hashes of `count` blocks of the replica as applied now (see common/block-hash). */
  replicaHashes(offset: number, blockSize: number, count: number): Buffer {
    const end = Math.min(this.spec.sizeBytes, offset + count * blockSize);
    return blockHashes(this.replica.read(offset, end - offset), blockSize);
  }

  /** Makes the applied state durable, then frees spool segments it no longer needs. */
  saveCheckpoint(): void {
    this.lastCheckpointMs = Date.now();
    if (this.checkpoint.seq === this.applied) return;
    this.replica.sync();
    this.checkpoint.save(this.applied);
    this.spool.pruneThrough(this.applied);
  }

  checkpointDue(intervalMs: number): boolean {
    return this.checkpoint.seq !== this.applied && Date.now() - this.lastCheckpointMs >= intervalMs;
  }

  /** Frees undo journal segments no retained point needs. Skipped while an export reads them. */
  pruneJournalThrough(seq: number): number {
    return withVolumeLock(this.layout, this.spec.volumeId, 'exclusive', false, () => this.journal.pruneThrough(seq)) ?? 0;
  }

  get journalSegments(): number {
    return this.journal.segmentCount;
  }

  close(): void {
    this.saveCheckpoint();
    this.cursor.close();
    this.spool.close();
    this.journal.close();
    this.checkpoint.close();
    this.replica.close();
  }
}

/** Runs `fn` under the volume's lock file; returns undefined when `wait` is false and it is busy. */
export function withVolumeLock<T>(layout: DataLayout, volumeId: string, mode: 'shared' | 'exclusive', wait: boolean, fn: () => T): T | undefined {
  const fd = fs.openSync(layout.lockFile(volumeId), 'a', 0o600);
  try {
    if (!flock(fd, mode, wait)) return undefined;
    return fn();
  } finally {
    fs.closeSync(fd);
  }
}
