// The pure core of the redo read path: which retained version of each byte a point sees.
// Extents are byte ranges (the agent sends 512-byte sectors), taken newest first; each byte
// belongs to the first extent that covers it, and bytes no extent covers come from the replica.

/** A retained version of a byte range (a write, or a discard: `dataOffset` < 0 reads as zeroes). */
export interface RetainedExtent {
  seq: number;
  offset: number;
  length: number;
  /** Which spool record holds it: its segment (first seq) and the record's offset there. */
  segment: number;
  recordOffset: number;
  /** Offset of the extent's data in the record's uncompressed payload; -1: a discard. */
  dataOffset: number;
}

/** A stretch of the volume whose bytes come from one extent, `skip` bytes into it. */
export interface VisiblePiece {
  offset: number;
  length: number;
  extent: RetainedExtent;
  skip: number;
}

/**
 * The pieces of [from, to) that `newestFirst` covers, each from the newest extent that covers
 * it, sorted by offset. Extents must come newest first (seq descending); stretches none covers
 * are left out (the replica holds them).
 */
export function visiblePieces(newestFirst: Iterable<RetainedExtent>, from: number, to: number): VisiblePiece[] {
  const covered = new CoveredSet();
  const pieces: VisiblePiece[] = [];
  let lastSeq = Infinity;
  for (const ext of newestFirst) {
    if (ext.seq > lastSeq) throw new Error(`visiblePieces: extent of seq ${ext.seq} came after seq ${lastSeq} (must be newest first)`);
    lastSeq = ext.seq;
    const start = Math.max(from, ext.offset);
    const end = Math.min(to, ext.offset + ext.length);
    if (start >= end) continue;
    for (const gap of covered.takeGaps(start, end)) pieces.push({ offset: gap.start, length: gap.end - gap.start, extent: ext, skip: gap.start - ext.offset });
    if (covered.covers(from, to)) break;
  }
  return pieces.sort((a, b) => a.offset - b.offset);
}

interface Span {
  start: number;
  end: number;
}

/** Disjoint, sorted, merged byte ranges. */
class CoveredSet {
  private readonly spans: Span[] = [];

  /** The parts of [start, end) not covered yet; marks all of [start, end) covered. */
  takeGaps(start: number, end: number): Span[] {
    const gaps: Span[] = [];
    let i = this.firstEndingAfter(start);
    let pos = start;
    let j = i;
    while (j < this.spans.length && this.spans[j].start < end) {
      if (this.spans[j].start > pos) gaps.push({ start: pos, end: this.spans[j].start });
      pos = Math.max(pos, this.spans[j].end);
      j++;
    }
    if (pos < end) gaps.push({ start: pos, end });
    // Merge [start, end) with the spans it touches (i..j-1, and neighbours that abut it).
    if (i > 0 && this.spans[i - 1].end === start) i--;
    if (j < this.spans.length && this.spans[j].start === end) j++;
    const mergedStart = Math.min(start, i < j ? this.spans[i].start : start);
    const mergedEnd = Math.max(end, i < j ? this.spans[j - 1].end : end);
    this.spans.splice(i, j - i, { start: mergedStart, end: mergedEnd });
    return gaps;
  }

  covers(start: number, end: number): boolean {
    const i = this.firstEndingAfter(start);
    return i < this.spans.length && this.spans[i].start <= start && this.spans[i].end >= end;
  }

  /** Index of the first span whose end is after `pos`. */
  private firstEndingAfter(pos: number): number {
    let lo = 0;
    let hi = this.spans.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.spans[mid].end <= pos) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
