import * as fs from 'fs';
import { decodeFrame } from '../../proto/frames';
import { validateChangeSet } from '../../proto/validate';
import { BufferArena } from '../../common/arena';
import { blockHashes } from '../../common/block-hash';
import { flock, seekData, seekHole } from '../../native/addon';
import { closeOpened } from '../storage/close-opened';
import { DataLayout } from '../layout';
import { BlockSums, blocksOf, blockSumsOf, SUM_BLOCK, UNKNOWN_SUM } from '../storage/block-sums';
import { StorageDamage } from '../storage/damage';
import { UndoJournal, undoRecordsNewestFirst } from '../storage/journal';
import { Replica } from '../storage/replica';
import { ApplyGroup, rollBack } from './apply-batch';
import { collectAutoPoints } from './auto-points';

/** Decompressed data and old data of one step; a step that needs more gets buffers of its own. */
const ENGINE_ARENA_BYTES = 64 * 1024 * 1024;

/** Where a volume's apply-side files are and how they are cut. */
export interface EngineFiles {
  root: string;
  volumeId: string;
  sizeBytes: number;
  segmentBytes: number;
}

/** What opening the apply side found (the undo journal's extent and what a crash left). */
export interface EngineOpened {
  journalNewestSeq: number;
  journalOldestSegmentSeq: number;
  damage: StorageDamage[];
  tornBytes: number;
  sumsBuilt: boolean;
}

export interface AutoPoint {
  seq: number;
  timeUs: number;
}

/** One spooled change set of a step: its frame and the seq apply had reached before it. */
export interface StepRecord {
  firstSeq: number;
  lastSeq: number;
  afterSeq: number;
  frame: Buffer;
  /** Where the record is in the spool (the redo index points there). */
  segment: number;
  recordOffset: number;
}

export interface StepInput {
  records: StepRecord[];
  /** Capture time of the last automatic point, and of the last applied record. */
  autoAfterUs: number;
  capturedUs: number;
}

export interface StepOutput {
  /** Crash-consistent points to record: one per second of write-ordered stream. */
  autoPoints: AutoPoint[];
  autoAfterUs: number;
  capturedUs: number;
  /** Replica blocks found damaged while their old data was read. */
  damage: StorageDamage[];
}

export interface RolledBack {
  records: number;
  /** Undo records that could not be read: their ranges were poisoned (see `rollBackTo`). */
  lostOld: StorageDamage[];
}

/**
 * The apply side of one volume: replica, block sums and undo journal, and the only writer of
 * them while the volume is open. Every method is synchronous; a VolumeStore drives it through
 * an apply thread (apply-thread.ts) so that its I/O and CPU leave the ingest thread free.
 */
export class ApplyEngine {
  private readonly arena = new BufferArena(ENGINE_ARENA_BYTES);

  private constructor(
    private readonly files: EngineFiles,
    private readonly layout: DataLayout,
    private readonly replica: Replica,
    private readonly sums: BlockSums,
    private journal: UndoJournal,
    readonly opened: EngineOpened,
  ) {}

  static open(files: EngineFiles): ApplyEngine {
    const layout = new DataLayout(files.root);
    const id = files.volumeId;
    const opened: Array<{ close(): void }> = [];
    try {
      const replica = Replica.open(layout.replicaFile(id), files.sizeBytes);
      opened.push(replica);
      const sumsExisted = fs.existsSync(layout.sumsFile(id));
      const sums = BlockSums.open(layout.sumsFile(id), files.sizeBytes);
      opened.push(sums);
      if (!sumsExisted) buildSums(replica, sums);
      const journal = UndoJournal.open(layout.journalDir(id), files.segmentBytes);
      return new ApplyEngine(files, layout, replica, sums, journal, {
        journalNewestSeq: journal.newestSeq,
        journalOldestSegmentSeq: journal.oldestSegmentSeq,
        damage: journal.damageFound,
        tornBytes: journal.tornBytesDropped,
        sumsBuilt: !sumsExisted,
      });
    } catch (err) {
      closeOpened(opened);
      throw err;
    }
  }

  get journalNewestSeq(): number {
    return this.journal.newestSeq;
  }

  get journalSegments(): number {
    return this.journal.segmentCount;
  }

  /**
   * Rolls the replica back to `seq` from the undo journal, as opening after a crash does. With
   * `tolerateLost`, undo records that cannot be read are skipped and reported: their ranges hold
   * an unknown mix now, so their sums say "unknown" and no older point is rebuilt from them
   * (the spool writes them again).
   */
  rollBackTo(seq: number, tolerateLost: boolean): RolledBack {
    const id = this.files.volumeId;
    const lostOld: StorageDamage[] = [];
    let records = 0;
    withLockFile(this.layout.lockFile(id), 'exclusive', true, () => {
      records = rollBack(undoRecordsNewestFirst(this.layout.journalDir(id), seq, tolerateLost ? (d) => lostOld.push(d) : undefined), this.replica, this.sums);
      for (const d of lostOld) poisonSums(this.sums, d.volumeOffset ?? 0, d.volumeLength ?? 0);
      this.replica.sync();
      this.sums.sync();
      this.journal.truncateAfter(seq);
    });
    return { records, lostOld };
  }

  /**
   * After a failed step: like opening after a crash, the journal is read again from the disk
   * and every record past `checkpointSeq` is rolled back. Throws when the disk still fails.
   */
  recover(checkpointSeq: number): number {
    if (this.journal.failure) this.journal.discardUnsynced();
    this.journal.close();
    this.journal = UndoJournal.open(this.layout.journalDir(this.files.volumeId), this.files.segmentBytes);
    if (this.journal.newestSeq <= checkpointSeq) return 0;
    return this.rollBackTo(checkpointSeq, false).records;
  }

  /** Applies the step's change sets (see ApplyGroup): journaled durably, then written. */
  step(input: StepInput): StepOutput {
    this.arena.reset();
    const group = new ApplyGroup(this.replica, this.journal, this.sums, this.arena);
    const clock = { autoAfterUs: input.autoAfterUs, capturedUs: input.capturedUs };
    const autoPoints: AutoPoint[] = [];
    for (const rec of input.records) {
      const frame = decodeFrame(rec.frame);
      if (!frame.changeSet) throw new Error(`spool record ${rec.firstSeq}..${rec.lastSeq} holds no change set`);
      // Skip the payload's CRC: the spool record's own CRC has just covered these bytes, or (a
      // frame held since ingest) the payload's was checked then.
      const batch = validateChangeSet(frame.changeSet, this.files.sizeBytes, false, (size) => this.arena.take(size));
      group.add(batch, rec.afterSeq);
      collectAutoPoints(batch.extents, batch.accuracy === 'exact', rec.afterSeq, clock, autoPoints);
    }
    group.finish();
    return { autoPoints, autoAfterUs: clock.autoAfterUs, capturedUs: clock.capturedUs, damage: group.damage };
  }

  /** Makes everything applied so far durable in the replica and its sums. */
  sync(): void {
    this.replica.sync();
    this.sums.sync();
  }

  /** Frees undo journal segments no retained point needs. Skipped while an export reads them. */
  pruneThrough(seq: number): number {
    return withLockFile(this.layout.lockFile(this.files.volumeId), 'exclusive', false, () => this.journal.pruneThrough(seq)) ?? 0;
  }

  /** Hashes of `count` blocks of the replica as applied now (see common/block-hash). */
  hashes(offset: number, blockSize: number, count: number): Buffer {
    const end = Math.min(this.files.sizeBytes, offset + count * blockSize);
    return blockHashes(this.replica.read(offset, end - offset), blockSize);
  }

  close(): void {
    const closers = [() => this.journal.close(), () => this.replica.close(), () => this.sums.close()];
    let first: unknown;
    for (const c of closers) {
      try {
        c();
      } catch (err) {
        first ??= err;
      }
    }
    if (first) throw first;
  }
}

/** Makes blocks of a range say "content unknown", so nothing rebuilds an older image of them. */
function poisonSums(sums: BlockSums, offset: number, length: number): void {
  const { first, end } = blocksOf(offset, length);
  sums.write(first, new Uint32Array(end - first).fill(UNKNOWN_SUM));
}

/** Computes the sums of a replica that has none yet (a data directory from before sums). */
export function buildSums(replica: Replica, sums: BlockSums): void {
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

/** `withLockFile` for work that spans event-loop turns: the lock is held until `fn`'s promise settles. */
export async function withLockFileAsync<T>(file: string, mode: 'shared' | 'exclusive', fn: () => Promise<T>): Promise<T | undefined> {
  const fd = fs.openSync(file, 'a', 0o600);
  try {
    if (!flock(fd, mode, false)) return undefined;
    return await fn();
  } finally {
    fs.closeSync(fd);
  }
}

/** Runs `fn` under a lock file; returns undefined when `wait` is false and it is busy. */
export function withLockFile<T>(file: string, mode: 'shared' | 'exclusive', wait: boolean, fn: () => T): T | undefined {
  const fd = fs.openSync(file, 'a', 0o600);
  try {
    if (!flock(fd, mode, wait)) return undefined;
    return fn();
  } finally {
    fs.closeSync(fd);
  }
}
