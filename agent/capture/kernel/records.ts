import { RecordFlag, type ChangeRecord } from '../../../native/addon/ferry-abi';

/** Largest write a read-back or payload becomes in the stream (the wire caps a write at 64 MiB). */
export const PIECE_BYTES = 16 * 1024 * 1024;

/** How one kernel record appears in a volume's stream. */
export type RecordPlan =
  /** Bookkeeping only (tag, mode, start, a bitmap cut, an empty write): no stream record. */
  | { kind: 'skip' }
  /** Writes carrying the record's own payload (DATA mode), then a flush marker for FUA. */
  | { kind: 'write'; fua: boolean }
  /** Writes of data read back from the volume now (METADATA mode, a failed or short capture). */
  | { kind: 'read'; fua: boolean }
  /** A resync mark: the data the walker read after placing it, or a read-back. */
  | { kind: 'mark' }
  | { kind: 'discard' }
  | { kind: 'flush' };

export function planRecord(rec: ChangeRecord): RecordPlan {
  const fua = (rec.flags & RecordFlag.FUA) !== 0;
  switch (rec.kind) {
    case 'write':
      if (rec.length === 0) return fua ? { kind: 'flush' } : { kind: 'skip' };
      return rec.data.length === rec.length ? { kind: 'write', fua } : { kind: 'read', fua };
    case 'dirty':
      return rec.length === 0 ? { kind: 'skip' } : { kind: 'read', fua: false };
    case 'resync-mark':
      return (rec.flags & RecordFlag.BITMAP_CUT) !== 0 || rec.length === 0 ? { kind: 'skip' } : { kind: 'mark' };
    case 'discard':
      return rec.length === 0 ? { kind: 'skip' } : { kind: 'discard' };
    case 'flush':
      return { kind: 'flush' };
    default:
      return { kind: 'skip' };
  }
}

export function pieceCount(length: number): number {
  return Math.ceil(length / PIECE_BYTES);
}

/**
 * Stream seqs a kernel record takes. It depends only on the record's kind, flags and length,
 * never on what is read back, so a redelivered record always takes the same seqs.
 */
export function streamWidth(rec: ChangeRecord, plan: RecordPlan = planRecord(rec)): number {
  switch (plan.kind) {
    case 'skip':
      return 0;
    case 'write':
    case 'read':
      return pieceCount(rec.length) + (plan.fua ? 1 : 0);
    case 'mark':
      return pieceCount(rec.length);
    case 'discard':
    case 'flush':
      return 1;
  }
}

/** [offset, offset + length) cut into pieces of at most PIECE_BYTES. */
export function piecesOf(offset: number, length: number): Array<{ offset: number; length: number }> {
  const out: Array<{ offset: number; length: number }> = [];
  for (let done = 0; done < length; done += PIECE_BYTES) out.push({ offset: offset + done, length: Math.min(PIECE_BYTES, length - done) });
  return out;
}
