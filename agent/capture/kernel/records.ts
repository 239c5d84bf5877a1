import { RecordFlag, type KernelRecord } from '../../../native/addon/ferry-abi';

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

export function planRecord(rec: KernelRecord): RecordPlan {
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
export function streamWidth(rec: KernelRecord, plan: RecordPlan = planRecord(rec)): number {
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

/** [start, end) of one device's bytes, and whether its last change in the batch was a read-back. */
interface Span {
  start: number;
  end: number;
  readBack: boolean;
}

/**
 * Byte ranges of one device, each with the kind of the last record of the kernel batch that
 * changed it (a read-back, or anything else that changes data). Disjoint and sorted.
 */
class LastChange {
  private spans: Span[] = [];

  /** True if every byte of [start, end) was last changed by a read-back. */
  readBackOver(start: number, end: number): boolean {
    let at = start;
    for (let i = this.first(start); i < this.spans.length && at < end; i++) {
      const s = this.spans[i];
      if (s.start > at || !s.readBack) return false;
      at = s.end;
    }
    return at >= end;
  }

  set(start: number, end: number, readBack: boolean): void {
    const i = this.first(start);
    let j = i;
    while (j < this.spans.length && this.spans[j].start < end) j++;
    const keep: Span[] = [];
    const head = this.spans[i];
    if (head && head.start < start) keep.push({ start: head.start, end: start, readBack: head.readBack });
    keep.push({ start, end, readBack });
    const tail = this.spans[j - 1];
    if (j > i && tail.end > end) keep.push({ start: end, end: tail.end, readBack: tail.readBack });
    this.spans.splice(i, j - i, ...keep);
  }

  /** Index of the first span that ends after `offset`. */
  private first(offset: number): number {
    let lo = 0;
    let hi = this.spans.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.spans[mid].end <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/**
 * Read-back records of one kernel batch whose data an earlier read-back of the same batch
 * already carries: every byte of the range was last changed, earlier in the batch, by a
 * read-back. Read-backs run after the batch was taken, so after every write of the batch had
 * completed: the earlier one read this record's data (or newer), and nothing in between changed
 * the range. Such a record keeps its stream seqs as NOOPs instead of reading and sending the
 * range again: a sequential writer that wraps a small volume many times in METADATA mode fills
 * the ring with DIRTY records of the same ranges. Returns indexes into `records`.
 */
export function coveredReadBacks(records: readonly KernelRecord[]): Set<number> {
  const covered = new Set<number>();
  const devices = new Map<number, LastChange>();
  records.forEach((rec, i) => {
    if (rec.kind === 'start') {
      devices.delete(rec.devIndex); // a new load of the table: nothing before it counts
      return;
    }
    const plan = planRecord(rec);
    if (plan.kind !== 'write' && plan.kind !== 'read' && plan.kind !== 'mark' && plan.kind !== 'discard') return;
    if (rec.length === 0) return;
    let last = devices.get(rec.devIndex);
    if (!last) {
      last = new LastChange();
      devices.set(rec.devIndex, last);
    }
    const end = rec.offset + rec.length;
    if (plan.kind === 'read' && last.readBackOver(rec.offset, end)) covered.add(i);
    // A resync mark's data is read when the mark is placed, maybe before later writes of the
    // batch; a redelivered record's data may be at the receiver already, read before them.
    last.set(rec.offset, end, plan.kind === 'read' && (rec.flags & RecordFlag.REDELIVERED) === 0);
  });
  return covered;
}
