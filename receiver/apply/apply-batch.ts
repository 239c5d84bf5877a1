import { ChangeBatch } from '../../proto/types';
import { UndoJournal, UndoRecord, UNDO_PIECE_BYTES } from '../storage/journal';
import { isAllZero, Replica } from '../storage/replica';
import { IntervalSet } from './interval-set';
import { BufferArena } from '../../common/arena';

/** Old and new data held in memory before a journal fsync; bounds apply memory. */
const MAX_PENDING_BYTES = 32 * 1024 * 1024;

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
  private undo: UndoRecord[] = [];
  private writes: Piece[] = [];
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
      const old = this.replica.read(piece.offset, piece.length, this.arena?.take(piece.length));
      const zero = isAllZero(old);
      this.undo.push({ seq: piece.seq, offset: piece.offset, length: piece.length, zero, data: zero ? Buffer.alloc(0) : old });
      this.writes.push(piece);
      this.touched.add(piece.offset, end);
      this.pendingBytes += (zero ? 0 : piece.length) + (piece.data ? piece.length : 0);
    }
  }

  /** Journals (durably) and then writes every queued piece. */
  finish(): void {
    if (this.writes.length > 0) this.commit();
  }

  private commit(): void {
    this.journal.append(this.undo);
    for (const piece of this.writes) {
      if (piece.data) this.replica.write(piece.offset, piece.data);
      else this.replica.zero(piece.offset, piece.length);
    }
    this.undo = [];
    this.writes = [];
    this.pendingBytes = 0;
    this.touched.clear();
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
