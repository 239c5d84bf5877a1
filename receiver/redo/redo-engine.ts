// The apply side of a redo volume, as VolumeStore drives an apply side (see ApplySide): an apply
// step indexes the step's spool records (no volume data read or written), retention advances
// the replica, hash requests read `latest` through the index. It runs on the ingest thread: an
// index step is cheap; the advance is not, so retention runs it in slices (pruneThroughAsync),
// and ingest and index steps go on between them. Each slice gathers a write pass (index query,
// spool reads); an apply thread writes it to the replica and sums its blocks meanwhile.

import type { AutoPoint, EngineOpened, RolledBack, StepInput, StepOutput } from '../apply/apply-engine';
import { withLockFile, withLockFileAsync } from '../apply/apply-engine';
import { HostedPassWriter } from '../apply/apply-thread';
import { collectAutoPoints } from '../apply/auto-points';
import { log } from '../../common/log';
import { DataLayout } from '../layout';
import { Spool } from '../storage/spool';
import { RangePlan } from './range-plan';
import { AdvanceHooks, AdvanceWait, IndexedRecord, RedoVolume } from './redo-volume';
import { summaryOfFrame } from './retained-records';

/** Spool bytes indexed per transaction while an open replays the spool. */
const REPLAY_BATCH_BYTES = 64 * 1024 * 1024;

/** What VolumeStore needs of a volume's apply side; the undo VolumeEngine and RedoEngine both are one. */
export interface ApplySide {
  readonly journalSegments: number;
  rollBackTo(seq: number, tolerateLost: boolean): RolledBack;
  recover(checkpointSeq: number): number;
  step(input: StepInput): Promise<StepOutput>;
  stepSync(input: StepInput): StepOutput;
  syncData(): void;
  syncDataAsync(): Promise<void>;
  /** Ages out history older than `seq` (undo: journal segments; redo: advance the replica). */
  pruneThrough(seq: number): number;
  /** `pruneThrough` without holding this thread for its whole length (redo: in slices). */
  pruneThroughAsync(seq: number): Promise<number>;
  hashesAsync(offset: number, blockSize: number, count: number): Promise<Buffer>;
  /** Spool segments wholly at or below the returned seq are needed no more (given the checkpoint). */
  spoolNeededAfter(checkpointSeq: number): number;
  /** The applied spool segments are the retention (redo): space is freed only by aging points out. */
  readonly retainsSpool: boolean;
  /** Points before this seq are gone (redo: the base, or an unfinished advance's target); 0: no such bound. */
  readonly oldestRetainedSeq: number;
  close(): void;
}

/** Hooks of a sliced advance, for tests: `betweenSlices` runs (and is awaited) after each slice. */
export interface SlicedAdvanceHooks extends AdvanceHooks {
  betweenSlices?: () => Promise<void>;
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** How much of the volume one slice of a hash request reads and hashes. */
const HASH_SLICE_BYTES = 16 * 1024 * 1024;

export class RedoEngine implements ApplySide {
  /** A sliced advance is running (one at a time; a sync prune meanwhile does nothing). */
  private advancing = false;
  /** The slices of the advance running, while it runs (close finishes it). */
  private slices: Generator<AdvanceWait, number> | undefined;
  private closed = false;
  /** Test hooks for sliced advances. */
  sliceHooks: SlicedAdvanceHooks = {};

  private constructor(
    private readonly volume: RedoVolume,
    /** The apply thread that writes and sums the advance's passes. */
    private readonly passes: HostedPassWriter,
    private readonly lockFile: string,
  ) {}

  /**
   * Opens the redo store of a volume whose spool is open: indexes the durable spool after the
   * index's checkpoint, then finishes an advance a crash interrupted (it needs those rows).
   */
  static open(layout: DataLayout, volumeId: string, sizeBytes: number, spool: Spool): { engine: RedoEngine; opened: EngineOpened } {
    const volume = RedoVolume.open({ dir: layout.volumeDir(volumeId), spoolDir: layout.spoolDir(volumeId), sizeBytes });
    const passes = new HostedPassWriter();
    volume.hostPasses(passes);
    try {
      spool.checkBodiesAfter(volume.replayAfter);
      replaySpool(volume, spool);
      // An export in another process may hold the volume: the replica is written only without it.
      if (volume.advancingTo !== undefined) withLockFile(layout.lockFile(volumeId), 'exclusive', true, () => volume.finishAdvance());
    } catch (err) {
      passes.release();
      volume.close();
      throw err;
    }
    const opened: EngineOpened = { journalNewestSeq: 0, journalOldestSegmentSeq: 0, damage: [], tornBytes: 0, sumsBuilt: false };
    return { engine: new RedoEngine(volume, passes, layout.lockFile(volumeId)), opened };
  }

  get journalSegments(): number {
    return 0;
  }

  get baseSeq(): number {
    return this.volume.baseSeq;
  }

  /** Where the index stands: with a lost checkpoint file, apply resumes from here. */
  get indexedThrough(): number {
    return this.volume.replayAfter;
  }

  /** Nothing to roll back: apply wrote no volume data; the index skips what it already holds. */
  rollBackTo(): RolledBack {
    return { records: 0, lostOld: [] };
  }

  recover(): number {
    return 0;
  }

  stepSync(input: StepInput): StepOutput {
    const clock = { autoAfterUs: input.autoAfterUs, capturedUs: input.capturedUs };
    const autoPoints: AutoPoint[] = [];
    const records: IndexedRecord[] = [];
    for (const rec of input.records) {
      const { extents, exact } = summaryOfFrame(rec.frame);
      collectAutoPoints(extents, exact, rec.afterSeq, clock, autoPoints);
      records.push({ segment: rec.segment, recordOffset: rec.recordOffset, lastSeq: rec.lastSeq, frame: rec.frame });
    }
    this.volume.indexRecords(records);
    return { autoPoints, autoAfterUs: clock.autoAfterUs, capturedUs: clock.capturedUs, damage: [] };
  }

  async step(input: StepInput): Promise<StepOutput> {
    return this.stepSync(input);
  }

  syncData(): void {
    this.volume.syncIndex();
  }

  async syncDataAsync(): Promise<void> {
    this.volume.syncIndex();
  }

  /** Advances the replica to `seq` (bounded by what is indexed); skipped while an export holds the volume. */
  pruneThrough(seq: number): number {
    const to = this.advanceTarget(seq);
    if (to === undefined || this.advancing) return 0;
    return withLockFile(this.lockFile, 'exclusive', false, () => (this.volume.advance(to) > 0 ? 1 : 0)) ?? 0;
  }

  /**
   * The advance in slices (one sorted write pass each, see RedoVolume.advanceSlices), this
   * thread free between them: ingest, index steps and hash requests go on. Holds the volume's
   * lock throughout (an export in another process waits, or makes this skip). Resolves 1 when
   * the replica advanced, 0 when skipped (busy, nothing to do) or stopped by `close` (the
   * advance is left unfinished, as a crash leaves it: the next open or advance redoes it).
   */
  async pruneThroughAsync(seq: number): Promise<number> {
    const to = this.advanceTarget(seq);
    if (to === undefined || this.advancing) return 0;
    this.advancing = true;
    try {
      const done = await withLockFileAsync(this.lockFile, 'exclusive', async () => {
        const slices = this.volume.advanceSlices(to, this.sliceHooks);
        this.slices = slices;
        for (;;) {
          const r = slices.next();
          if (r.done) return true;
          await (r.value ?? this.sliceHooks.betweenSlices?.() ?? nextTurn());
          if (this.closed) return false;
        }
      });
      return done ? 1 : 0;
    } finally {
      this.advancing = false;
      this.slices = undefined;
    }
  }

  /** Where an advance for `seq` goes (bounded by what is indexed; never short of an unfinished one), or undefined. */
  private advanceTarget(seq: number): number | undefined {
    const to = Math.max(Math.min(seq, this.volume.indexedThrough), this.volume.advancingTo ?? 0);
    return to <= this.volume.baseSeq ? undefined : to;
  }

  /**
   * Hashes of `latest` as indexed when the request came, a slice of at most HASH_SLICE_BYTES
   * at a time with other work let run between slices (a request may cover 256 MiB: read and
   * hashed at once it held the thread that acknowledges for a second and took a buffer as large).
   * Records indexed meanwhile are not seen; should an age-out pass the request's seq meanwhile,
   * the rest is read at the new oldest point, which is newer.
   */
  async hashesAsync(offset: number, blockSize: number, count: number): Promise<Buffer> {
    const atSeq = this.volume.indexedThrough;
    const perSlice = Math.max(1, Math.floor(HASH_SLICE_BYTES / blockSize));
    const end = Math.min(this.volume.sizeBytes, offset + count * blockSize);
    const parts: Buffer[] = [];
    // One plan for the request (each record read once), made again if the base or the index
    // moved between slices.
    let plan: RangePlan | undefined;
    for (let first = 0; first < count; first += perSlice) {
      if (first > 0) await nextTurn();
      const seq = Math.max(atSeq, this.oldestRetainedSeq);
      const from = offset + first * blockSize;
      const blocks = Math.min(perSlice, count - first);
      if (from < end && (!plan || !this.volume.planCurrent(plan))) plan = this.volume.planRange(from, end, seq);
      parts.push(this.volume.hashes(from, blockSize, blocks, seq, from < end ? plan : undefined));
    }
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  spoolNeededAfter(checkpointSeq: number): number {
    return Math.min(checkpointSeq, this.volume.baseSeq);
  }

  get retainsSpool(): boolean {
    return true;
  }

  get oldestRetainedSeq(): number {
    return this.volume.advancingTo ?? this.volume.baseSeq;
  }

  /**
   * Closes the store. An advance running in slices is finished first, here (a clean stop leaves
   * no unfinished advance, whose replica blocks could not be checked against their sums); if
   * that fails, it is left unfinished, as a crash leaves it, and the next open redoes it.
   */
  close(): void {
    const slices = this.slices;
    this.closed = true;
    try {
      if (slices) for (let r = slices.next(); !r.done; r = slices.next());
    } catch (err) {
      log.warn('an advance could not be finished at close; the next open finishes it', { error: (err as Error).message });
    } finally {
      this.passes.release();
      this.volume.close();
    }
  }
}

/** Indexes every durable spool record after the index's checkpoint (damaged ones are the spool's to report). */
function replaySpool(volume: RedoVolume, spool: Spool): void {
  const cursor = spool.cursor(volume.replayAfter);
  try {
    let batch: IndexedRecord[] = [];
    let bytes = 0;
    for (let rec = cursor.next(); rec; rec = cursor.next()) {
      if (rec.lostOnly) continue;
      batch.push({ segment: rec.segment, recordOffset: rec.recordOffset, lastSeq: rec.lastSeq, frame: rec.frame });
      bytes += rec.bytes;
      if (bytes >= REPLAY_BATCH_BYTES) {
        volume.indexRecords(batch);
        batch = [];
        bytes = 0;
      }
    }
    volume.indexRecords(batch);
  } finally {
    cursor.close();
  }
}
