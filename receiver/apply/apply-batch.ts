import { ChangeBatch } from '../../proto/types';
import { UndoJournal, UndoRecord, UNDO_PIECE_BYTES } from '../storage/journal';
import { isAllZero, Replica } from '../storage/replica';
import { IntervalSet } from './interval-set';
import { BufferArena } from '../../common/arena';

/** Old and new data held in memory before a journal fsync; bounds apply memory. */
const MAX_PENDING_BYTES = 32 * 1024 * 1024;
/** Longest contiguous range read or written with one system call. */
const MAX_RUN_BYTES = 8 * 1024 * 1024;

interface Piece {
  seq: number;
  offset: number;
  length: number;
  /** New data, or undefined for a discard. */
  data: Buffer | undefined;
}

function* piecesOf(batch: ChangeBatch, afterSeq: number): Generator<Piece> {
  for (const ext of batch.extents) {
    if (ext.seq <= afterSeq || ext.kind === 'flush' || ext.kind === 'noop') continue;
    for (let done = 0; done < ext.length; done += UNDO_PIECE_BYTES) {
      const length = Math.min(UNDO_PIECE_BYTES, ext.length - done);
      const data = ext.kind === 'write' ? batch.data.subarray(ext.dataOffset + done, ext.dataOffset + done + length) : undefined;
      yield { seq: ext.seq, offset: ext.offset + done, length, data };
    }
  }
}

/**
 * Applies change sets to the replica in seq order. For every piece, the old data is journaled
 * and fsync'd before the replica is overwritten. Pieces of consecutive change sets share one
 * journal fsync, but a group never holds two overlapping pieces: the old data of the second
 * must be read after the first is written, so that each undo record holds the true old data.
 * Call `finish` after the last batch: until then the tail of the group is not yet applied.
 */
export class ApplyGroup {
  private readonly touched = new IntervalSet();
  private pieces: Piece[] = [];
  private pendingBytes = 0;

  /** Old data is read into `arena`, which must not be reset before `finish` returns. */
  constructor(
    private readonly replica: Replica,
    private readonly journal: UndoJournal,
    private readonly arena?: BufferArena,
  ) {}

  /** Queues the records of `batch` with seq > `afterSeq`; commits groups as they fill. */
  add(batch: ChangeBatch, afterSeq: number): void {
    for (const piece of piecesOf(batch, afterSeq)) {
      const end = piece.offset + piece.length;
      if (this.touched.overlaps(piece.offset, end) || this.pendingBytes >= MAX_PENDING_BYTES) this.commit();
      this.pieces.push(piece);
      this.touched.add(piece.offset, end);
      this.pendingBytes += piece.length + (piece.data ? piece.length : 0);
    }
  }

  /** Journals (durably) and then writes every queued piece. */
  finish(): void {
    if (this.pieces.length > 0) this.commit();
  }

  private commit(): void {
    const old = this.readOldData();
    this.journal.append(
      this.pieces.map((piece, i) => {
        const data = old[i];
        const zero = data === undefined || isAllZero(data);
        return { seq: piece.seq, offset: piece.offset, length: piece.length, zero, data: zero ? Buffer.alloc(0) : (data as Buffer) };
      }),
    );
    this.writeNewData();
    this.pieces = [];
    this.pendingBytes = 0;
    this.touched.clear();
  }

  /** Runs of pieces that are contiguous on the volume, each at most MAX_RUN_BYTES long. */
  private runs(include: (piece: Piece) => boolean): Piece[][] {
    const runs: Piece[][] = [];
    let run: Piece[] = [];
    let runEnd = -1;
    let runBytes = 0;
    for (const piece of this.pieces) {
      if (!include(piece)) continue;
      if (run.length > 0 && (piece.offset !== runEnd || runBytes + piece.length > MAX_RUN_BYTES)) {
        runs.push(run);
        run = [];
        runBytes = 0;
      }
      run.push(piece);
      runEnd = piece.offset + piece.length;
      runBytes += piece.length;
    }
    if (run.length > 0) runs.push(run);
    return runs;
  }

  /**
   * The old data of every piece (undefined: zeroes, a hole), read one contiguous run at a time
   * (pieces never overlap here).
   */
  private readOldData(): Array<Buffer | undefined> {
    const old = new Map<Piece, Buffer>();
    for (const run of this.runs(() => true)) {
      const start = run[0].offset;
      const length = run[run.length - 1].offset + run[run.length - 1].length - start;
      if (this.replica.isHole(start, length)) continue;
      const data = this.replica.read(start, length, this.arena?.take(length));
      for (const piece of run) old.set(piece, data.subarray(piece.offset - start, piece.offset - start + piece.length));
    }
    return this.pieces.map((p) => old.get(p));
  }

  private writeNewData(): void {
    for (const run of this.runs((p) => p.data !== undefined)) {
      this.replica.writev(run[0].offset, run.map((p) => p.data as Buffer));
    }
    for (const piece of this.pieces) if (!piece.data) this.replica.zero(piece.offset, piece.length);
  }
}

/** Applies the records of one change set with seq > `afterSeq` (see ApplyGroup). */
export function applyBatch(batch: ChangeBatch, afterSeq: number, replica: Replica, journal: UndoJournal): void {
  const group = new ApplyGroup(replica, journal);
  group.add(batch, afterSeq);
  group.finish();
}

/** Restores the old data of every journaled record with seq > `seq`, newest first. */
export function rollBack(records: Iterable<UndoRecord>, replica: Replica): number {
  let count = 0;
  for (const rec of records) {
    if (rec.zero) replica.zero(rec.offset, rec.length);
    else replica.write(rec.offset, rec.data);
    count++;
  }
  return count;
}
