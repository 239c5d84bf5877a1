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
  let i = 0;
  // Merge adjacent ranges into runs, then take the whole blocks inside each run.
  while (i < ranges.length) {
    const start = ranges[i].offset;
    let end = start + ranges[i].length;
    let j = i + 1;
    while (j < ranges.length && ranges[j].offset === end) end += ranges[j++].length;
    for (let b = Math.ceil(start / SUM_BLOCK); b < Math.floor(end / SUM_BLOCK); b++) covered.add(b);
    i = j;
  }
  const out: number[] = [];
  for (let b = firstBlock; b < endBlock; b++) if (!covered.has(b)) out.push(b);
  return out;
}

/** Blocks that `ranges` (sorted, disjoint) touch only in part, after merging adjacent ranges. */
export function partlyTouchedBlocks(ranges: readonly ByteRange[]): number[] {
  const out = new Set<number>();
  let i = 0;
  while (i < ranges.length) {
    const start = ranges[i].offset;
    let end = start + ranges[i].length;
    let j = i + 1;
    while (j < ranges.length && ranges[j].offset === end) end += ranges[j++].length;
    if (start % SUM_BLOCK !== 0) out.add(Math.floor(start / SUM_BLOCK));
    if (end % SUM_BLOCK !== 0) out.add(Math.floor(end / SUM_BLOCK));
    i = j;
  }
  // A block two runs both touch in part may still be whole between them: the caller reads it back.
  return [...out].sort((a, b) => a - b);
}
