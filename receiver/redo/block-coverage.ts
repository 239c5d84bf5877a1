// Pure helpers: which 4 KiB sum blocks a set of byte ranges covers whole, and which it touches
// only in part (those need the replica's other bytes to know their new sum).

import { SUM_BLOCK } from '../storage/block-sums';

export interface ByteRange {
  offset: number;
  length: number;
}

/**
 * Blocks in [firstBlock, endBlock) that `ranges` (sorted by offset, disjoint) do not cover whole:
 * the replica's own bytes show through them, so its sums must be checked there.
 */
export function blocksNotCovered(ranges: readonly ByteRange[], firstBlock: number, endBlock: number): number[] {
  const covered = new Set<number>();
  for (const { start, end } of mergedRuns(ranges)) {
    for (let b = Math.ceil(start / SUM_BLOCK); b < Math.floor(end / SUM_BLOCK); b++) covered.add(b);
  }
  const out: number[] = [];
  for (let b = firstBlock; b < endBlock; b++) if (!covered.has(b)) out.push(b);
  return out;
}

/** Blocks that `ranges` (sorted, disjoint) touch only in part, after merging adjacent ranges. */
export function partlyTouchedBlocks(ranges: readonly ByteRange[]): number[] {
  const out = new Set<number>();
  for (const { start, end } of mergedRuns(ranges)) {
    if (start % SUM_BLOCK !== 0) out.add(Math.floor(start / SUM_BLOCK));
    if (end % SUM_BLOCK !== 0) out.add(Math.floor(end / SUM_BLOCK));
  }
  // A block two runs both touch in part may still be whole between them: the caller reads it back.
  return [...out].sort((a, b) => a - b);
}

/** `ranges` (sorted, disjoint) with adjacent ones merged into runs [start, end). */
function mergedRuns(ranges: readonly ByteRange[]): Array<{ start: number; end: number }> {
  const runs: Array<{ start: number; end: number }> = [];
  for (const r of ranges) {
    const last = runs[runs.length - 1];
    if (last && last.end === r.offset) last.end += r.length;
    else runs.push({ start: r.offset, end: r.offset + r.length });
  }
  return runs;
}
