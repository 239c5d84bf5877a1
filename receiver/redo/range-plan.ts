// One range of a redo volume read in slices, in offset order (a resync hash request: up to
// 256 MiB, answered 16 MiB at a time). The range's visible pieces are found once, and when a
// record is read for one slice, the bytes of its pieces that later slices need are put aside
// (within a budget) instead of the record being read, checked and decompressed again for each
// slice: a change set of scattered small writes touches every slice of the range.

import { VisiblePiece } from './visible-pieces';

/** The spool record a piece comes from (discards, which have none: one key per extent). */
export function recordKey(p: VisiblePiece): string {
  return p.extent.dataOffset < 0 ? `d${p.extent.seq}` : `${p.extent.segment}:${p.extent.recordOffset}`;
}

/** What a plan was made under: it is stale once the volume's base or index moved. */
export interface PlanEpoch {
  baseSeq: number;
  advancingTo: number | undefined;
  /** Times the index forgot records (a failed spool fsync). */
  forgets: number;
}

/** Receives a piece of a slice with its bytes (undefined: a discard, zeroes). */
export type TakePiece = (piece: VisiblePiece, bytes: Buffer | undefined) => void;

export class RangePlan {
  /** First piece that may still reach into the next slice. */
  private next = 0;
  /** Where the last slice ended: slices come in order, without overlap. */
  private readTo: number;
  /** Per record, the indexes of its pieces in the range. */
  private readonly byRecord = new Map<string, number[]>();
  /** Bytes of whole pieces (by index) put aside for later slices. */
  private readonly aside = new Map<number, Buffer>();
  private asideBytes = 0;
  /** The last slice's pieces (cut to it) -> the range's piece they were cut from. */
  private cutFrom = new Map<VisiblePiece, number>();

  constructor(
    readonly epoch: PlanEpoch,
    readonly from: number,
    readonly to: number,
    /** The visible pieces of [from, to), sorted by offset. */
    private readonly pieces: readonly VisiblePiece[],
    private readonly budgetBytes: number,
  ) {
    this.readTo = from;
    pieces.forEach((p, i) => {
      const key = recordKey(p);
      const list = this.byRecord.get(key);
      if (list) list.push(i);
      else this.byRecord.set(key, [i]);
    });
  }

  /** Bytes put aside for later slices (tests). */
  get heldBytes(): number {
    return this.asideBytes;
  }

  /** The pieces of the next slice [from, to), cut to it. */
  slice(from: number, to: number): VisiblePiece[] {
    if (from !== this.readTo || to > this.to) throw new Error(`range plan of [${this.from}, ${this.to}) read at [${from}, ${to}), expected from ${this.readTo}`);
    const out: VisiblePiece[] = [];
    this.cutFrom = new Map();
    for (let i = this.next; i < this.pieces.length && this.pieces[i].offset < to; i++) {
      const p = this.pieces[i];
      const start = Math.max(from, p.offset);
      const end = Math.min(to, p.offset + p.length);
      if (start >= end) continue;
      const cut = { offset: start, length: end - start, extent: p.extent, skip: p.skip + (start - p.offset) };
      out.push(cut);
      this.cutFrom.set(cut, i);
    }
    while (this.next < this.pieces.length && this.pieces[this.next].offset + this.pieces[this.next].length <= to) this.next++;
    this.readTo = to;
    return out;
  }

  /**
   * Hands each piece of `group` (pieces of the last slice, ending at `sliceEnd`, from one
   * record) to `take` with its bytes: from what an earlier slice put aside, else from the
   * payload `read` gives, putting aside the record's pieces that later slices need.
   */
  take(group: readonly VisiblePiece[], sliceEnd: number, read: () => Buffer | undefined, take: TakePiece): void {
    if (group[0].extent.dataOffset < 0) {
      for (const p of group) take(p, undefined);
      return;
    }
    const origins = group.map((p) => this.origin(p));
    const allAside = origins.every((i) => this.aside.has(i));
    const payload = allAside ? undefined : read();
    if (!allAside && !payload) throw new Error(`range plan: the record of seq ${group[0].extent.seq} gave no payload`);
    group.forEach((p, n) => {
      const i = origins[n];
      const whole = this.pieces[i];
      const held = this.aside.get(i);
      if (payload) {
        const at = p.extent.dataOffset + p.skip;
        take(p, payload.subarray(at, at + p.length));
      } else if (held) {
        const at = p.skip - whole.skip;
        take(p, held.subarray(at, at + p.length));
      }
      if (held && whole.offset + whole.length <= sliceEnd) {
        this.aside.delete(i);
        this.asideBytes -= held.length;
      }
    });
    if (payload) this.putAside(recordKey(group[0]), payload, sliceEnd);
  }

  private origin(p: VisiblePiece): number {
    const i = this.cutFrom.get(p);
    if (i === undefined) throw new Error('range plan: a piece that is not of its last slice');
    return i;
  }

  /** Copies out the record's pieces that reach past `sliceEnd`, while they fit the budget. */
  private putAside(key: string, payload: Buffer, sliceEnd: number): void {
    for (const i of this.byRecord.get(key) ?? []) {
      const p = this.pieces[i];
      if (p.offset + p.length <= sliceEnd || this.aside.has(i)) continue;
      if (this.asideBytes + p.length > this.budgetBytes) return;
      const at = p.extent.dataOffset + p.skip;
      this.aside.set(i, Buffer.from(payload.subarray(at, at + p.length)));
      this.asideBytes += p.length;
    }
  }
}
