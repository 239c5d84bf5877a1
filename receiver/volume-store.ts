import * as fs from 'fs';
import * as path from 'path';
import { decodeFrame } from '../proto/frames';
import { ErrorCode, ProtocolError } from '../proto/errors';
import { ChangeBatch, VolumeSpec } from '../proto/types';
import { EngineOpened, StepInput, StepOutput, withLockFile } from './apply/apply-engine';
import { VolumeEngine } from './apply/apply-thread';
import { migrateUndoVolume, needsMigration } from './redo/migrate';
import { ApplySide, RedoEngine } from './redo/redo-engine';
import { closeOpened } from './storage/close-opened';
import { DataLayout } from './layout';
import { Checkpoint } from './storage/checkpoint';
import { StorageDamage } from './storage/damage';
import { Spool, SPOOL_RECORD_OVERHEAD, SpoolCursor, SpoolLost } from './storage/spool';
import { BufferArena } from '../common/arena';

/** Spooled bytes one apply step may take: big enough to share fsyncs, small enough to keep ingest responsive. */
const APPLY_STEP_BYTES = 16 * 1024 * 1024;
/** Ingested change-set frames held in memory for apply (see VolumeStore.recent). */
const RECENT_CACHE_BYTES = 64 * 1024 * 1024;
/** One step's frames read from the spool (a little over APPLY_STEP_BYTES); more get buffers of their own. */
const APPLY_ARENA_BYTES = 24 * 1024 * 1024;

export type { AutoPoint } from './apply/apply-engine';
import type { AutoPoint } from './apply/apply-engine';

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
  /**
   * Damaged spool stretches crossed with no gap in the seqs after them: they held nothing the
   * replica needs (bytes of an append that was never acknowledged, sent again by the agent).
   */
  harmless: SpoolLost[];
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

/** The retention journal a volume keeps: redo (receiver/redo/, the default) or undo (FERRY_JOURNAL=undo). */
export type JournalKind = 'undo' | 'redo';

/**
 * A volume that already has a redo base stays redo. Otherwise new volumes are redo and undo
 * volumes (a data directory from before redo) are migrated when they open (see
 * redo/migrate.ts); FERRY_JOURNAL=undo keeps the undo journal for new and undo volumes (the
 * journal-design comparison and the undo fault tests use it).
 */
function chooseJournal(layout: DataLayout, spec: VolumeSpec, openUndo: () => VolumeStore): JournalKind {
  if (fs.existsSync(redoBaseFile(layout, spec.volumeId))) return 'redo';
  if (process.env.FERRY_JOURNAL === 'undo') return 'undo';
  if (needsMigration(layout, spec.volumeId)) migrateUndoVolume(layout, spec, openUndo);
  return 'redo';
}

/** The redo base file of a volume: its presence says the volume keeps a redo journal. */
export function redoBaseFile(layout: DataLayout, volumeId: string): string {
  return path.join(layout.volumeDir(volumeId), 'base');
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
  /** Spool frames of one apply step (see APPLY_ARENA_BYTES). */
  private readonly arena = new BufferArena(APPLY_ARENA_BYTES);
  private applyBroken: Error | undefined;
  /** A step is on the apply thread (see applyNextAsync). */
  private busy = false;
  /** Bumped when apply starts over (recover, close): a step still running then no longer counts. */
  private generation = 0;
  appliedCaptureUs = 0;
  readonly openReport: OpenReport;

  private constructor(
    readonly spec: VolumeSpec,
    private readonly spool: Spool,
    private readonly engine: ApplySide,
    /** Which retention journal the volume keeps. */
    readonly journal: JournalKind,
    private readonly checkpoint: Checkpoint,
    lastAutoPointUs: number,
    report: Omit<OpenReport, 'durableSeq' | 'checkpointSeq'>,
  ) {
    this.applied = checkpoint.seq;
    this.accepted = Math.max(spool.durableSeq, checkpoint.seq);
    this.cursor = spool.cursor(this.applied);
    this.lastAutoPointUs = lastAutoPointUs;
    this.openReport = { ...report, checkpointSeq: checkpoint.seq, durableSeq: this.accepted };
    this.indexUnapplied();
  }

  /**
   * Opens a volume's files: the apply side (replica, sums, undo journal) on an apply thread,
   * the spool and the checkpoint here. Whatever a crash left past the checkpoint is rolled back.
   */
  static open(layout: DataLayout, spec: VolumeSpec, lastAutoPointUs: number, segmentBytes = 64 * 1024 * 1024, journal?: JournalKind): VolumeStore {
    const id = spec.volumeId;
    fs.mkdirSync(layout.volumeDir(id), { recursive: true, mode: 0o700 });
    const kind = journal ?? chooseJournal(layout, spec, () => VolumeStore.open(layout, spec, lastAutoPointUs, segmentBytes, 'undo'));
    const opened: Array<{ close(): void }> = [];
    try {
      const checkpoint = Checkpoint.open(layout.checkpointFile(id));
      opened.push(checkpoint);
      // What is applied is read again by exports only (which check what they read): its record
      // bodies are checked after the volume opens (see Spool.open, `scrub`).
      const spool = Spool.open(layout.spoolDir(id), segmentBytes, checkpoint.lost ? 0 : checkpoint.seq);
      opened.push(spool);
      const redo = kind === 'redo' ? RedoEngine.open(layout, id, spec.sizeBytes, spool) : undefined;
      const { engine, opened: engineOpened } = redo ?? VolumeEngine.open({ root: layout.root, volumeId: id, sizeBytes: spec.sizeBytes, segmentBytes });
      opened.push(engine);
      const damage: StorageDamage[] = [...spool.damageFound, ...engineOpened.damage];
      let checkpointRecovered: { seq: number } | undefined;
      if (checkpoint.lost) {
        const seq = redo ? redo.engine.indexedThrough : recoveryTarget(engineOpened, spool);
        damage.push({ kind: 'checkpoint', file: layout.checkpointFile(id), offset: 0, length: 1024, detail: `both checkpoint slots are damaged; the applied seq was recovered from the undo journal and the spool as ${seq}` });
        checkpointRecovered = { seq };
      }
      const target = checkpointRecovered?.seq ?? checkpoint.seq;
      let rolledBack = 0;
      if (engineOpened.journalNewestSeq > target || checkpointRecovered) {
        const result = engine.rollBackTo(target, true);
        rolledBack = result.records;
        damage.push(...result.lostOld.map((d) => ({ ...d, detail: `${d.detail}; its range was rewritten from the spool, older points of it are lost` })));
      }
      if (checkpointRecovered) {
        // Both slots: a volume with nothing left to apply saves no other checkpoint soon.
        checkpoint.save(checkpointRecovered.seq);
        checkpoint.save(checkpointRecovered.seq);
      }
      return new VolumeStore(spec, spool, engine, kind, checkpoint, lastAutoPointUs, {
        rolledBackRecords: rolledBack,
        tornBytes: spool.tornBytesDropped + engineOpened.tornBytes,
        damage,
        checkpointRecovered,
        sumsBuilt: engineOpened.sumsBuilt,
      });
    } catch (err) {
      closeOpened(opened);
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

  /** Applied spool records whose bodies `open` left to check later (see Spool.open). */
  get scrubPending(): boolean {
    return this.spool.scrubPending;
  }

  /** Checks the bodies of those records for about `budgetMs`; returns the damage found. */
  scrubSpool(budgetMs: number): StorageDamage[] {
    return this.spool.scrubPending ? this.spool.scrub(budgetMs) : [];
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

  /** A step is running on the apply thread. */
  get stepping(): boolean {
    return this.busy;
  }

  /**
   * Applies durable change sets in seq order, as many as fit in `maxBytes` of spooled frames
   * (at least one), so that consecutive change sets share journal fsyncs, waiting here for the
   * apply thread. Nothing the step did counts (applied seq, auto points) unless all of it
   * succeeded; a failure leaves apply broken until `recoverApply`.
   */
  applyNext(maxBytes = APPLY_STEP_BYTES): AppliedStep | undefined {
    if (!this.hasWork() || this.busy) return undefined;
    try {
      const gathered = this.gather(maxBytes);
      const out = gathered.input.records.length > 0 ? this.engine.stepSync(gathered.input) : this.nothingApplied();
      return this.commit(gathered, out);
    } catch (err) {
      this.applyBroken = err as Error;
      throw err;
    }
  }

  /**
   * `applyNext` with the step on the apply thread while this thread goes on (ingest keeps
   * moving); one step at a time. Saves a checkpoint after the step when nothing is left to
   * apply and no change set is being spooled, or one is due after `checkpointEveryMs`.
   */
  async applyNextAsync(checkpointEveryMs: number): Promise<AppliedStep | undefined> {
    if (!this.hasWork() || this.busy) return undefined;
    const generation = this.generation;
    this.busy = true;
    try {
      const gathered = this.gather(APPLY_STEP_BYTES);
      const out = gathered.input.records.length > 0 ? await this.engine.step(gathered.input) : this.nothingApplied();
      if (generation !== this.generation) return undefined;
      const step = this.commit(gathered, out);
      // Caught up with nothing more arriving: checkpoint now, so that what is reported applied can
      // be exported at once. Not while change sets keep coming (its syncs would run per change
      // set on the thread that ingests and acknowledges): then when one is due.
      const idle = !this.hasWork() && !this.spool.syncPending;
      if (step && (idle || Date.now() - this.lastCheckpointMs >= checkpointEveryMs)) await this.checkpointAfterStep(generation);
      return generation === this.generation ? step : undefined;
    } catch (err) {
      if (generation === this.generation) this.applyBroken = err as Error;
      throw err;
    } finally {
      if (generation === this.generation) this.busy = false;
    }
  }

  private nothingApplied(): StepOutput {
    return { autoPoints: [], autoAfterUs: this.lastAutoPointUs, capturedUs: this.appliedCaptureUs, damage: [] };
  }

  /** The durable change sets of the next step, read here; the apply thread decodes and applies them. */
  private gather(maxBytes: number): Gathered {
    this.arena.reset();
    const firstAfter = this.applied;
    let through = this.applied;
    const lost: LostSeqs[] = [];
    const harmless: SpoolLost[] = [];
    let bytes = 0;
    const taken: Array<{ first: number; frame: Buffer }> = [];
    const input: StepInput = { records: [], autoAfterUs: this.lastAutoPointUs, capturedUs: this.appliedCaptureUs };
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
      } else if (rec.lostBefore) {
        harmless.push(...rec.lostBefore);
      }
      bytes += rec.bytes;
      const held = this.recent.get(rec.firstSeq);
      const fromCache = held !== undefined && held.lastSeq === rec.lastSeq;
      if (fromCache) taken.push({ first: rec.firstSeq, frame: held.frame });
      input.records.push({ firstSeq: rec.firstSeq, lastSeq: rec.lastSeq, afterSeq: through, segment: rec.segment, recordOffset: rec.recordOffset, frame: fromCache ? held.frame : rec.frame });
      through = Math.max(through, rec.lastSeq);
    }
    return { input, lost, harmless, taken, firstAfter, through };
  }

  /** Everything of the step is durable in the journal and written: now it counts. */
  private commit(gathered: Gathered, out: StepOutput): AppliedStep | undefined {
    for (const t of gathered.taken) {
      if (this.recent.delete(t.first)) this.recentBytes -= t.frame.length;
    }
    if (gathered.through === gathered.firstAfter) return undefined;
    this.applied = gathered.through;
    this.lastAutoPointUs = out.autoAfterUs;
    this.appliedCaptureUs = out.capturedUs;
    while (this.unapplied.length > 0 && this.unapplied[0].lastSeq <= this.applied) {
      this.unappliedBytesTotal -= (this.unapplied.shift() as { bytes: number }).bytes;
    }
    return { firstSeq: gathered.firstAfter + 1, lastSeq: this.applied, autoPoints: out.autoPoints, damage: out.damage, lost: gathered.lost, harmless: gathered.harmless };
  }

  /**
   * Makes apply work again after a failed step: like opening after a crash, the journal is read
   * again from the disk, every record past the checkpoint is rolled back, and apply starts over
   * from the checkpoint. Throws when the disk still fails; call again later.
   */
  recoverApply(): number {
    this.startOver();
    const rolledBack = this.engine.recover(this.checkpoint.seq);
    this.applied = this.checkpoint.seq;
    this.cursor.close();
    this.cursor = this.spool.cursor(this.applied);
    this.indexUnapplied();
    this.applyBroken = undefined;
    return rolledBack;
  }

  /** A step still running no longer counts. */
  private startOver(): void {
    this.generation++;
    this.busy = false;
  }

  /**
   * Hashes of `count` blocks of the replica (see common/block-hash), answered by the apply thread
   * after the step it is running, without blocking ingest meanwhile: the replica then holds at
   * least everything applied now.
   */
  replicaHashesAsync(offset: number, blockSize: number, count: number): Promise<Buffer> {
    return this.engine.hashesAsync(offset, blockSize, count);
  }

  /** Makes the applied state durable, then frees spool segments it no longer needs. */
  saveCheckpoint(): void {
    this.lastCheckpointMs = Date.now();
    if (this.applyBroken || this.checkpoint.seq === this.applied) return;
    const seq = this.applied;
    try {
      this.engine.syncData();
      this.checkpoint.save(seq);
    } catch (err) {
      // The replica may not hold what the checkpoint would say: start over from the last one.
      this.applyBroken = err as Error;
      throw err;
    }
    this.spool.pruneThrough(this.engine.spoolNeededAfter(seq));
  }

  private async checkpointAfterStep(generation: number): Promise<void> {
    this.lastCheckpointMs = Date.now();
    const seq = this.applied;
    if (this.checkpoint.seq === seq) return;
    await this.engine.syncDataAsync();
    if (generation !== this.generation) return;
    this.checkpoint.save(seq);
    this.spool.pruneThrough(this.engine.spoolNeededAfter(seq));
  }

  /** A checkpoint is owed (the timer's; a running step saves its own when due). */
  checkpointDue(intervalMs: number): boolean {
    return !this.applyBroken && !this.busy && this.checkpoint.seq !== this.applied && Date.now() - this.lastCheckpointMs >= intervalMs;
  }

  /**
   * Ages out history no retained point needs: undo journal segments, or (redo) advances the
   * replica to `seq` and frees the spool segments it no longer needs. Skipped while an export
   * holds the volume.
   */
  pruneJournalThrough(seq: number): number {
    const pruned = this.engine.pruneThrough(seq);
    this.spool.pruneThrough(this.engine.spoolNeededAfter(this.checkpoint.seq));
    return pruned;
  }

  /**
   * `pruneJournalThrough` without holding this thread for the whole advance (redo: in slices;
   * ingest and apply go on between them). Resolves 0 when it was skipped or the store closed.
   */
  async pruneJournalThroughAsync(seq: number): Promise<number> {
    const generation = this.generation;
    const pruned = await this.engine.pruneThroughAsync(seq);
    if (generation !== this.generation) return 0;
    this.spool.pruneThrough(this.engine.spoolNeededAfter(this.checkpoint.seq));
    return pruned;
  }

  get journalSegments(): number {
    return this.engine.journalSegments;
  }

  /** The applied spool is the retention (redo): an early age-out is what frees spool space. */
  get retainsSpool(): boolean {
    return this.engine.retainsSpool;
  }

  /** Points before this seq cannot be exported (redo's base); 0 when the journal sets no such bound. */
  get oldestRetainedSeq(): number {
    return this.engine.oldestRetainedSeq;
  }

  /** Spool bytes pruned and still being deleted: free space the file system does not show yet. */
  get spoolBytesBeingFreed(): number {
    return this.spool.bytesBeingFreed;
  }

  /** The spool's segments, oldest first, with their bytes (see redo/early-age-out.ts). */
  spoolSegments(): Array<{ firstSeq: number; bytes: number }> {
    return this.spool.heldSegments();
  }

  /**
   * Saves a checkpoint now if one is owed and no step is running (an early age-out can free
   * spool segments only up to the checkpoint). False when apply is broken or a step runs.
   */
  checkpointNow(): boolean {
    if (this.applyBroken || this.busy) return false;
    if (this.checkpoint.seq !== this.applied) this.saveCheckpoint();
    return true;
  }

  /** Closes the files; a clean close saves a last checkpoint when apply is healthy. */
  close(): void {
    try {
      if (!this.applyBroken) this.saveCheckpoint();
    } finally {
      this.startOver();
      this.cursor.close();
      this.spool.close(!this.spool.failure);
      this.checkpoint.close();
      this.engine.close();
    }
  }

  /** Closes the files without saving anything (the volume failed; reopening recovers it). */
  abandon(): void {
    this.startOver();
    const closers = [() => this.cursor.close(), () => this.spool.close(false), () => this.checkpoint.close(), () => this.engine.close()];
    for (const c of closers) {
      try {
        c();
      } catch {
        // closing what failed may fail too
      }
    }
  }
}

interface Gathered {
  input: StepInput;
  lost: LostSeqs[];
  harmless: SpoolLost[];
  taken: Array<{ first: number; frame: Buffer }>;
  firstAfter: number;
  through: number;
}

/**
 * The seq to roll back to when both checkpoint slots are lost. The journal holds undo records
 * for every write applied from its oldest segment on, and the spool holds every change set
 * after the (lost) checkpoint: rolling back to the later of their starts leaves a state both
 * can carry forward. Seqs before the journal's oldest record had no undo record to keep: none
 * was applied past the checkpoint that pruned it.
 */
export function recoveryTarget(journal: Pick<EngineOpened, 'journalNewestSeq' | 'journalOldestSegmentSeq'>, spool: Spool): number {
  const journalFrom = journal.journalOldestSegmentSeq > 0 ? journal.journalOldestSegmentSeq - 1 : journal.journalNewestSeq;
  const spoolFrom = spool.firstSeqHeld > 0 ? spool.firstSeqHeld - 1 : spool.durableSeq;
  return Math.max(journalFrom, spoolFrom);
}

/** Runs `fn` under the volume's lock file; returns undefined when `wait` is false and it is busy. */
export function withVolumeLock<T>(layout: DataLayout, volumeId: string, mode: 'shared' | 'exclusive', wait: boolean, fn: () => T): T | undefined {
  return withLockFile(layout.lockFile(volumeId), mode, wait, fn);
}
