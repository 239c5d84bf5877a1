import { createHash } from 'crypto';

/** Bytes of one block hash: the first half of SHA-256 (SHA-NI makes it the fastest 128-bit choice). */
export const BLOCK_HASH_BYTES = 16;

// Free space is mostly zeros: a zero check (memcmp) runs several times faster than SHA-256,
// and on a block with data it stops at the first non-zero byte.
let zeroBlock = Buffer.alloc(0);
const zeroHashes = new Map<number, Buffer>();

function sha(block: Uint8Array): Buffer {
  return createHash('sha256').update(block).digest().subarray(0, BLOCK_HASH_BYTES);
}

function isZero(block: Uint8Array): boolean {
  if (zeroBlock.length < block.length) zeroBlock = Buffer.alloc(Math.max(block.length, 64 * 1024));
  return Buffer.compare(block, zeroBlock.subarray(0, block.length)) === 0;
}

/** The hash of `length` zero bytes (shared: callers must not change it). */
export function zeroBlockHash(length: number): Buffer {
  let h = zeroHashes.get(length);
  if (!h) {
    h = sha(Buffer.alloc(length));
    if (zeroHashes.size < 8) zeroHashes.set(length, h);
  }
  return h;
}

/** The hash of one block (callers must not change the returned buffer: zero blocks share one). */
export function blockHash(block: Uint8Array): Buffer {
  return isZero(block) ? zeroBlockHash(block.length) : sha(block);
}

/** Hashes consecutive `blockSize` blocks of `data` (the last may be short) into one buffer. */
export function blockHashes(data: Buffer, blockSize: number): Buffer {
  const count = Math.ceil(data.length / blockSize);
  const out = Buffer.allocUnsafe(count * BLOCK_HASH_BYTES);
  for (let i = 0; i < count; i++) {
    blockHash(data.subarray(i * blockSize, Math.min(data.length, (i + 1) * blockSize))).copy(out, i * BLOCK_HASH_BYTES);
  }
  return out;
}
