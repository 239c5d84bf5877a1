// The pure decisions of a failback pass: how a volume is walked, which blocks differ, how the
// differing blocks become change sets. No I/O here (failback-sender.ts does it).
import { BLOCK_HASH_BYTES } from '../common/block-hash';

/** A run of `count` compare blocks starting at byte `offset`. */
export interface Chunk {
  offset: number;
  count: number;
}

export interface ByteRange {
  offset: number;
  length: number;
}

/** The chunks of one pass over a volume: every block once, in order, at most `maxBlocks` a chunk. */
export function planChunks(sizeBytes: number, blockSize: number, maxBlocks: number): Chunk[] {
  if (sizeBytes <= 0 || blockSize <= 0 || maxBlocks < 1) throw new Error(`cannot walk a volume of ${sizeBytes} bytes in ${blockSize}-byte blocks, ${maxBlocks} a chunk`);
  const blocks = Math.ceil(sizeBytes / blockSize);
  const chunks: Chunk[] = [];
  for (let first = 0; first < blocks; first += maxBlocks) chunks.push({ offset: first * blockSize, count: Math.min(maxBlocks, blocks - first) });
  return chunks;
}

/** Compare blocks per chunk: at most `maxChunkBytes` of data and the protocol's `maxHashBlocks`. */
export function chunkBlocks(blockSize: number, maxChunkBytes: number, maxHashBlocks: number): number {
  return Math.max(1, Math.min(maxHashBlocks, Math.floor(maxChunkBytes / blockSize)));
}

/** Indexes of the blocks whose 16-byte hashes differ between two lists of `count` hashes. */
export function differingBlocks(ours: Buffer, theirs: Buffer, count: number): number[] {
  const bytes = count * BLOCK_HASH_BYTES;
  if (ours.length !== bytes || theirs.length !== bytes) {
    throw new Error(`hash lists of ${ours.length} and ${theirs.length} bytes for ${count} blocks (expected ${bytes} each)`);
  }
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const at = i * BLOCK_HASH_BYTES;
    if (ours.compare(theirs, at, at + BLOCK_HASH_BYTES, at, at + BLOCK_HASH_BYTES) !== 0) out.push(i);
  }
  return out;
}

/**
 * The byte ranges of a chunk's differing blocks (indexes ascending): neighbours merged, the
 * volume's short last block clipped, no range longer than `maxLength`.
 */
export function differingRanges(chunk: Chunk, blockSize: number, sizeBytes: number, indexes: readonly number[], maxLength: number): ByteRange[] {
  const ranges: ByteRange[] = [];
  let current: ByteRange | undefined;
  for (const i of indexes) {
    const offset = chunk.offset + i * blockSize;
    const length = Math.min(blockSize, sizeBytes - offset);
    if (current && current.offset + current.length === offset && current.length + length <= maxLength) {
      current.length += length;
    } else {
      current = { offset, length };
      ranges.push(current);
    }
  }
  return ranges;
}

/** Ranges in order, grouped so that each group's bytes fit `maxBytes` (a range larger than it stands alone). */
export function batchRanges(ranges: readonly ByteRange[], maxBytes: number): ByteRange[][] {
  const batches: ByteRange[][] = [];
  let batch: ByteRange[] = [];
  let bytes = 0;
  for (const range of ranges) {
    if (batch.length > 0 && bytes + range.length > maxBytes) {
      batches.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(range);
    bytes += range.length;
  }
  if (batch.length > 0) batches.push(batch);
  return batches;
}

/**
 * What follows a pass. A pass that began after the recovered machine stopped saw a disk that no
 * longer changes: when it ends, the disks are equal. Any other pass is followed by another one.
 */
export function afterPass(finalPass: boolean): 'done' | 'next-pass' {
  return finalPass ? 'done' : 'next-pass';
}
