import * as fs from 'fs';
import { decodeFrame } from '../proto/frames';
import { ErrorCode, ProtocolError } from '../proto/errors';
import { ChangeBatch, VolumeSpec } from '../proto/types';
import { validateChangeSet } from '../proto/validate';
import { ApplyGroup, rollBack } from './apply/apply-batch';
import { DataLayout } from './layout';
import { BlockSums, blocksOf, blockSumsOf, SUM_BLOCK, UNKNOWN_SUM } from './storage/block-sums';
import { Checkpoint } from './storage/checkpoint';
import { StorageDamage } from './storage/damage';
import { UndoJournal, undoRecordsNewestFirst } from './storage/journal';
import { Replica } from './storage/replica';
import { Spool, SPOOL_RECORD_OVERHEAD, SpoolCursor, SpoolLost } from './storage/spool';
import { flock, seekData, seekHole } from '../native/addon';
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

/** Seqs apply had to skip because the spool records that held them are damaged. */
export interface LostSeqs {
  fromSeq: number;
  toSeq: number;
  stretches: SpoolLost[];
}

export interface AppliedStep {
  firstSeq: number;
  lastSeq: number;
  /** Crash-consistent points to record: one per second of write-ordered stream. */
  autoPoints: AutoPoint[];
  /** Replica blocks found damaged while their old data was read. */
  damage: StorageDamage[];
  lost: LostSeqs[];
}

/** Recovery-relevant facts found when a volume is opened. */
export interface OpenReport {
  checkpointSeq: number;
  durableSeq: number;
  rolledBackRecords: number;
  /** Torn tails dropped (spool + journal): appends a crash cut short, never acknowledged. */
  tornBytes: number;
  /** Damage found in the spool, the journal or the checkpoint while opening. */
  damage: StorageDamage[];
  /** Both checkpoint slots were damaged: the applied seq was recovered from journal and spool. */
  checkpointRecovered?: { seq: number };
  /** Block sums were built from the replica (a data directory from before they existed). */
  sumsBuilt: boolean;
}

/** An apply step cannot go on past a gap in the stream that no damage explains. */
export class ApplyGapError extends Error {}

/**
 * One replicated volume: spool (durable intake), replica with its block sums, undo journal and
 * checkpoint. Opening it finishes whatever a crash interrupted: an apply that had journaled
 * records past the checkpoint is rolled back, and the spool is applied again from the
 * checkpoint on.
 *
 * Ingest and apply fail independently: a failed spool append or fsync breaks ingest until
 * `recoverIngest` (what was not fsync'd is dropped and never acknowledged); a failed apply
 * step breaks apply until `recoverApply` rolls the replica back to the checkpoint, as a crash
 * would. The seqs the store reports advance only once the bytes behind them are durable.
 */
export class VolumeStore {
  private applied: number;
  private cursor: SpoolCursor;
  private lastAutoPointUs: number;
  private accepted: number;
  /** Capture time of the first record of each spooled, unapplied change set. */
  private unapplied: Array<{ lastSeq: number; firstCaptureUs: number; bytes: number }> = [];
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
  private applyBroken: Error | undefined;
  private journal: UndoJournal;
  appliedCaptureUs = 0;
  readonly openReport: OpenReport;

  private constructor(
    readonly spec: VolumeSpec,
    private readonly layout: DataLayout,
    private readonly spool: Spool,
    journal: UndoJournal,
    private readonly checkpoint: Checkpoint,
    private readonly replica: Replica,
    private readonly sums: BlockSums,
    private readonly segmentBytes: number,
    lastAutoPointUs: number,
    report: Omit<OpenReport, 'durableSeq' | 'checkpointSeq'>,
  ) {
    this.journal = journal;
    this.applied = checkpoint.seq;
    this.accepted = Math.max(spool.durableSeq, checkpoint.seq);
    this.cursor = spool.cursor(this.applied);
    this.lastAutoPointUs = lastAutoPointUs;
    this.openReport = { ...report, checkpointSeq: checkpoint.seq, durableSeq: this.accepted };
    this.indexUnapplied();
  }

  static open(layout: DataLayout, spec: VolumeSpec, lastAutoPointUs: number, segmentBytes = 64 * 1024 * 1024): VolumeStore {
    const id = spec.volumeId;
    fs.mkdirSync(layout.volumeDir(id), { recursive: true, mode: 0o700 });
    const opened: Array<{ close(): void }> = [];
    try {
      const replica = Replica.open(layout.replicaFile(id), spec.sizeBytes);
      opened.push(replica);
      const sumsExisted = fs.existsSync(layout.sumsFile(id));
      const sums = BlockSums.open(layout.sumsFile(id), spec.sizeBytes);
      opened.push(sums);
      if (!sumsExisted) buildSums(replica, sums);
      const checkpoint = Checkpoint.open(layout.checkpointFile(id));
      opened.push(checkpoint);
      const journal = UndoJournal.open(layout.journalDir(id), segmentBytes);
      opened.push(journal);
      const spool = Spool.open(layout.spoolDir(id), segmentBytes);
      opened.push(spool);
      const damage: StorageDamage[] = [...spool.damageFound, ...journal.damageFound];
      let checkpointRecovered: { seq: number } | undefined;
      if (checkpoint.lost) {
        const seq = recoveryTarget(journal, spool);
        damage.push({ kind: 'checkpoint', file: layout.checkpointFile(id), offset: 0, length: 1024, detail: `both checkpoint slots are damaged; the applied seq was recovered from the undo journal and the spool as ${seq}` });
        checkpointRecovered = { seq };
      }
      const target = checkpointRecovered?.seq ?? checkpoint.seq;
      let rolledBack = 0;
      if (journal.newestSeq > target || checkpointRecovered) {
        const lostOld: StorageDamage[] = [];
        withVolumeLock(layout, id, 'exclusive', true, () => {
          rolledBack = rollBack(undoRecordsNewestFirst(layout.journalDir(id), target, (d) => lostOld.push(d)), replica, sums);
          // Ranges whose old data is lost hold an unknown mix now; the spool writes them again,
          // and their sums say "unknown" so that no older point is rebuilt from them.
          for (const d of lostOld) poisonSums(sums, d.volumeOffset ?? 0, d.volumeLength ?? 0);
          replica.sync();
          sums.sync();
          journal.truncateAfter(target);
        });
        damage.push(...lostOld.map((d) => ({ ...d, detail: `${d.detail}; its range was rewritten from the spool, older points of it are lost` })));
      }
      if (checkpointRecovered) checkpoint.save(checkpointRecovered.seq);
      return new VolumeStore(spec, layout, spool, journal, checkpoint, replica, sums, segmentBytes, lastAutoPointUs, {
        rolledBackRecords: rolledBack,
        tornBytes: spool.tornBytesDropped + journal.tornBytesDropped,
        damage,
        checkpointRecovered,
        sumsBuilt: !sumsExisted,
      });
    } catch (err) {
      for (const f of opened.reverse()) {
        try {
          f.close();
        } catch {
          // the open failure is what matters
        }
      }
      throw err;
    }
  }

  private indexUnapplied(): void {
    this.unapplied = [];
    this.unappliedBytesTotal = 0;
    const cursor = this.spool.cursor(this.applied);
    try {
      for (let rec = cursor.next(); rec; rec = cursor.next()) {
        if (rec.lostOnly) continue;
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

  /** Highest seq stored in the spool (durable at the next flush). */
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

  /** Why ingest is stopped (a failed append or fsync), until `recoverIngest`. */
  get ingestFailure(): Error | undefined {
    return this.spool.failure;
  }

  /** Why apply is stopped (a failed step), until `recoverApply`. */
  get applyFailure(): Error | undefined {
    return this.applyBroken;
  }

  /**
   * Spools a validated change set. Resolves when it is durable. A change set entirely at or
   * below what was already accepted is a replay: nothing is written, it is acknowledged again.
   * The accepted seq moves only once the write succeeded; a write or fsync that fails rejects
   * and nothing of it is ever acknowledged.
   * Only `frame` is kept, never `batch.data`: the caller may reuse that memory once this returns.
   * A write that fails throws at once (so the next frame of the session never sees a seq that
   * was not stored); a failed fsync rejects the promise.
   */
  ingest(frame: Buffer, batch: ChangeBatch): Promise<'stored' | 'duplicate'> {
    if (batch.lastSeq <= this.accepted) {
      if (this.durableSeq < batch.lastSeq) this.spool.flush();
      return Promise.resolve('duplicate');
    }
    const expected = this.accepted + 1;
    if (batch.firstSeq > expected) {
      const why = this.accepted === 0 ? `a new volume's stream starts at seq 1, not ${batch.firstSeq}` : `records ${expected}..${batch.firstSeq - 1} are missing`;
      throw new ProtocolError(ErrorCode.SEQ_GAP, `volume ${this.spec.volumeId}: change set starts at seq ${batch.firstSeq}, expected ${expected} (${why})`);
    }
    const durable = this.spool.append(frame, batch.firstSeq, batch.lastSeq);
    // The write is in the file now (its fsync is under way): account for it.
    this.accepted = batch.lastSeq;
    if (this.recentBytes + frame.length <= RECENT_CACHE_BYTES) {
      this.recent.set(batch.firstSeq, { frame, lastSeq: batch.lastSeq });
      this.recentBytes += frame.length;
    }
    // What the record takes in the spool, as a scan at open counts it.
    const bytes = frame.length + SPOOL_RECORD_OVERHEAD;
    this.unapplied.push({ lastSeq: batch.lastSeq, firstCaptureUs: batch.extents[0]?.captureTimeUs ?? 0, bytes });
    this.unappliedBytesTotal += bytes;
    return durable.then(() => 'stored' as const);
  }

  /**
   * Makes ingest work again after a failed append or fsync: the spool drops what it had not
   * made durable (never acknowledged), and the accepted seq goes back to the durable one, so
   * the agent's resend of those records is stored, not taken for a duplicate.
   */
  recoverIngest(): void {
    this.spool.recover();
    this.accepted = this.durableSeq;
    for (const [first, held] of this.recent) {
      if (held.lastSeq > this.accepted) {
        this.recent.delete(first);
        this.recentBytes -= held.frame.length;
      }
    }
    while (this.unapplied.length > 0 && this.unapplied[this.unapplied.length - 1].lastSeq > this.accepted) {
      this.unappliedBytesTotal -= (this.unapplied.pop() as { bytes: number }).bytes;
    }
  }

  hasWork(): boolean {
    return !this.applyBroken && this.applied < this.spool.durableSeq;
  }

  /**
   * Applies durable change sets in seq order, as many as fit in `maxBytes` of spooled frames
   * (at least one), so that consecutive change sets share journal fsyncs. Nothing the step did
   * counts (applied seq, auto points) unless all of it succeeded; a failure leaves apply broken
   * until `recoverApply`.
   */
  applyNext(maxBytes = APPLY_STEP_BYTES): AppliedStep | undefined {
    if (!this.hasWork()) return undefined;
    try {
      return this.applyStep(maxBytes);
    } catch (err) {
      this.applyBroken = err as Error;
      throw err;
    }
  }

  private applyStep(maxBytes: number): AppliedStep | undefined {
    this.arena.reset();
    const group = new ApplyGroup(this.replica, this.journal, this.sums, this.arena);
    const firstAfter = this.applied;
    let through = this.applied;
    let autoAfterUs = this.lastAutoPointUs;
    let capturedUs = this.appliedCaptureUs;
    const autoPoints: AutoPoint[] = [];
    const lost: LostSeqs[] = [];
    let bytes = 0;
    const taken: Array<{ first: number; frame: Buffer }> = [];
    while (through < this.spool.durableSeq && bytes < maxBytes) {
      const rec = this.cursor.next(this.arena, (first, last) => this.recent.get(first)?.lastSeq === last);
      if (!rec) break;
      if (rec.lostOnly) {
        if (rec.lastSeq > through) lost.push({ fromSeq: through + 1, toSeq: rec.lastSeq, stretches: rec.lostBefore ?? [] });
        through = Math.max(through, rec.lastSeq);
        continue;
      }
      if (rec.firstSeq > through + 1) {
        if (!rec.lostBefore?.length) {
          throw new ApplyGapError(`volume ${this.spec.volumeId}: the spool jumps from seq ${through} to ${rec.firstSeq} with no damage to explain it`);
        }
        lost.push({ fromSeq: through + 1, toSeq: rec.firstSeq - 1, stretches: rec.lostBefore });
        through = rec.firstSeq - 1;
      }
      bytes += rec.bytes;
      const held = this.recent.get(rec.firstSeq);
      const frame = held && held.lastSeq === rec.lastSeq ? held.frame : rec.frame;
      if (held && held.lastSeq === rec.lastSeq) taken.push({ first: rec.firstSeq, frame: held.frame });
      const batch = this.decodeSpooled(frame, rec.firstSeq, rec.lastSeq);
      group.add(batch, through);
      for (const ext of batch.extents) {
        if (ext.seq <= through) continue;
        capturedUs = ext.captureTimeUs;
        if (batch.accuracy === 'exact' && ext.captureTimeUs >= autoAfterUs + AUTO_POINT_INTERVAL_US) {
          autoPoints.push({ seq: ext.seq, timeUs: ext.captureTimeUs });
          autoAfterUs = ext.captureTimeUs;
        }
      }
      through = Math.max(through, batch.lastSeq);
    }
    group.finish();
    // Everything of the step is durable in the journal and written: now it counts.
    for (const t of taken) {
      if (this.recent.delete(t.first)) this.recentBytes -= t.frame.length;
    }
    if (through === firstAfter) return undefined;
    this.applied = through;
    this.lastAutoPointUs = autoAfterUs;
    this.appliedCaptureUs = capturedUs;
    while (this.unapplied.length > 0 && this.unapplied[0].lastSeq <= this.applied) {
      this.unappliedBytesTotal -= (this.unapplied.shift() as { bytes: number }).bytes;
    }
    return { firstSeq: firstAfter + 1, lastSeq: this.applied, autoPoints, damage: group.damage, lost };
  }

  /** The change set of a spooled frame, its data decompressed into the step's arena. */
  private decodeSpooled(raw: Buffer, firstSeq: number, lastSeq: number): ChangeBatch {
    const frame = decodeFrame(raw);
    if (!frame.changeSet) throw new Error(`spool record ${firstSeq}..${lastSeq} holds no change set`);
    // Skip the payload's CRC: the spool record's own CRC has just covered these bytes, or (a
    // frame held since ingest) the payload's was checked then.
    return validateChangeSet(frame.changeSet, this.spec.sizeBytes, false, (size) => this.arena.take(size));
  }

  /**
   * Makes apply work again after a failed step: like opening after a crash, the journal is read
   * again from the disk, every record past the checkpoint is rolled back, and apply starts over
   * from the checkpoint. Throws when the disk still fails; call again later.
   */
  recoverApply(): number {
    if (this.journal.failure) this.journal.discardUnsynced();
    this.journal.close();
    this.journal = UndoJournal.open(this.layout.journalDir(this.spec.volumeId), this.segmentBytes);
    const id = this.spec.volumeId;
    let rolledBack = 0;
    if (this.journal.newestSeq > this.checkpoint.seq) {
      withVolumeLock(this.layout, id, 'exclusive', true, () => {
        rolledBack = rollBack(undoRecordsNewestFirst(this.layout.journalDir(id), this.checkpoint.seq), this.replica, this.sums);
        this.replica.sync();
        this.sums.sync();
        this.journal.truncateAfter(this.checkpoint.seq);
      });
    }
    this.applied = this.checkpoint.seq;
    this.cursor.close();
    this.cursor = this.spool.cursor(this.applied);
    this.indexUnapplied();
    this.applyBroken = undefined;
    return rolledBack;
  }

  /** Hashes of `count` blocks of the replica as applied now (see common/block-hash). */
  replicaHashes(offset: number, blockSize: number, count: number): Buffer {
    const end = Math.min(this.spec.sizeBytes, offset + count * blockSize);
    return blockHashes(this.replica.read(offset, end - offset), blockSize);
  }

  /** Makes the applied state durable, then frees spool segments it no longer needs. */
  saveCheckpoint(): void {
    this.lastCheckpointMs = Date.now();
    if (this.applyBroken || this.checkpoint.seq === this.applied) return;
    try {
      this.replica.sync();
      this.sums.sync();
      this.checkpoint.save(this.applied);
    } catch (err) {
      // The replica may not hold what the checkpoint would say: start over from the last one.
      this.applyBroken = err as Error;
      throw err;
    }
    this.spool.pruneThrough(this.applied);
  }

  checkpointDue(intervalMs: number): boolean {
    return !this.applyBroken && this.checkpoint.seq !== this.applied && Date.now() - this.lastCheckpointMs >= intervalMs;
  }

  /** Frees undo journal segments no retained point needs. Skipped while an export reads them. */
  pruneJournalThrough(seq: number): number {
    return withVolumeLock(this.layout, this.spec.volumeId, 'exclusive', false, () => this.journal.pruneThrough(seq)) ?? 0;
  }

  get journalSegments(): number {
    return this.journal.segmentCount;
  }

  /** Closes the files; a clean close saves a last checkpoint when apply is healthy. */
  close(): void {
    try {
      if (!this.applyBroken) this.saveCheckpoint();
    } finally {
      this.cursor.close();
      this.spool.close(!this.spool.failure);
      this.journal.close();
      this.checkpoint.close();
      this.replica.close();
      this.sums.close();
    }
  }

  /** Closes the files without saving anything (the volume failed; reopening recovers it). */
  abandon(): void {
    const closers = [() => this.cursor.close(), () => this.spool.close(false), () => this.journal.close(), () => this.checkpoint.close(), () => this.replica.close(), () => this.sums.close()];
    for (const c of closers) {
      try {
        c();
      } catch {
        // closing what failed may fail too
      }
    }
  }
}

/**
 * The seq to roll back to when both checkpoint slots are lost. The journal holds undo records
 * for every write applied from its oldest segment on, and the spool holds every change set
 * after the (lost) checkpoint: rolling back to the later of their starts leaves a state both
 * can carry forward. Seqs before the journal's oldest record had no undo record to keep: none
 * was applied past the checkpoint that pruned it.
 */
export function recoveryTarget(journal: UndoJournal, spool: Spool): number {
  const journalFrom = journal.oldestSegmentSeq > 0 ? journal.oldestSegmentSeq - 1 : journal.newestSeq;
  const spoolFrom = spool.firstSeqHeld > 0 ? spool.firstSeqHeld - 1 : spool.durableSeq;
  return Math.max(journalFrom, spoolFrom);
}

/** Makes blocks of a range say "content unknown", so nothing rebuilds an older image of them. */
function poisonSums(sums: BlockSums, offset: number, length: number): void {
  const { first, end } = blocksOf(offset, length);
  sums.write(first, new Uint32Array(end - first).fill(UNKNOWN_SUM));
}

/** Computes the sums of a replica that has none yet (a data directory from before sums). */
function buildSums(replica: Replica, sums: BlockSums): void {
  const chunk = 4 * 1024 * 1024;
  let pos = 0;
  while (pos < replica.sizeBytes) {
    const dataStart = seekData(replica.fd, pos);
    if (dataStart < 0 || dataStart >= replica.sizeBytes) break;
    const start = Math.floor(dataStart / SUM_BLOCK) * SUM_BLOCK;
    const dataEnd = Math.min(replica.sizeBytes, Math.max(seekHole(replica.fd, dataStart), dataStart + 1));
    for (let off = start; off < dataEnd; off += chunk) {
      const len = Math.min(chunk, replica.sizeBytes - off);
      sums.write(off / SUM_BLOCK, blockSumsOf(replica.read(off, len)));
    }
    pos = Math.ceil(dataEnd / SUM_BLOCK) * SUM_BLOCK;
  }
  sums.sync();
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
