import { ChangeBatch } from '../../proto/types';
import { UndoJournal, UndoRecord, UNDO_PIECE_BYTES } from '../storage/journal';
import { isAllZero, Replica } from '../storage/replica';
import { IntervalSet } from './interval-set';

/** Old and new data held in memory before a journal fsync; bounds apply memory. */
const MAX_PENDING_BYTES = 16 * 1024 * 1024;

interface Piece {
  seq: number;
  offset: number;
  length: number;
  /** New data, or undefined for a discard. */
  data: Buffer | undefined;
}

function* piecesOf(batch: ChangeBatch, afterSeq: number): Generator<Piece> {
  for (const ext of batch.extents) {
    if (ext.seq <= afterSeq || ext.kind === 'flush') continue;
    for (let done = 0; done < ext.length; done += UNDO_PIECE_BYTES) {
      const length = Math.min(UNDO_PIECE_BYTES, ext.length - done);
      const data = ext.kind === 'write' ? batch.data.subarray(ext.dataOffset + done, ext.dataOffset + done + length) : undefined;
      yield { seq: ext.seq, offset: ext.offset + done, length, data };
    }
  }
}

/**
 * Applies the records of `batch` with seq > `afterSeq` to the replica in seq order.
 * For every piece, the old data is journaled and fsync'd before the replica is overwritten.
 * Pieces are grouped so one fsync covers many, but a group never holds two overlapping
 * pieces: the old data of the second must be read after the first is written.
 */
export function applyBatch(batch: ChangeBatch, afterSeq: number, replica: Replica, journal: UndoJournal): void {
  const touched = new IntervalSet();
  let undo: UndoRecord[] = [];
  let writes: Piece[] = [];
  let pendingBytes = 0;

  const commitGroup = (): void => {
    journal.append(undo);
    for (const piece of writes) {
      if (piece.data) replica.write(piece.offset, piece.data);
      else replica.zero(piece.offset, piece.length);
    }
    undo = [];
    writes = [];
    pendingBytes = 0;
    touched.clear();
  };

  for (const piece of piecesOf(batch, afterSeq)) {
    const end = piece.offset + piece.length;
    if (touched.overlaps(piece.offset, end) || pendingBytes >= MAX_PENDING_BYTES) commitGroup();
    const old = replica.read(piece.offset, piece.length);
    const zero = isAllZero(old);
    undo.push({ seq: piece.seq, offset: piece.offset, length: piece.length, zero, data: zero ? Buffer.alloc(0) : old });
    writes.push(piece);
    touched.add(piece.offset, end);
    pendingBytes += (zero ? 0 : piece.length) + (piece.data ? piece.length : 0);
  }
  if (writes.length > 0) commitGroup();
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
