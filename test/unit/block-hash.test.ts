import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BLOCK_HASH_BYTES, blockHash, blockHashes, zeroBlockHash } from '../../common/block-hash';

describe('blockHashes', () => {
  it('gives every block, zero or not, full or short, the hash blockHash gives it alone', () => {
    const bs = 4096;
    const data = Buffer.concat([
      Buffer.alloc(bs), // zeros
      randomBytes(bs),
      Buffer.concat([Buffer.alloc(bs - 1), Buffer.from([1])]), // zero but for the last byte
      Buffer.alloc(bs),
      Buffer.alloc(1000), // a short zero tail
    ]);
    const hashes = blockHashes(data, bs);
    expect(hashes.length).toBe(5 * BLOCK_HASH_BYTES);
    for (let i = 0; i < 5; i++) {
      const block = data.subarray(i * bs, Math.min(data.length, (i + 1) * bs));
      expect(hashes.subarray(i * BLOCK_HASH_BYTES, (i + 1) * BLOCK_HASH_BYTES).equals(blockHash(block)), `block ${i}`).toBe(true);
    }
    // zeroBlockHash is the hash of zeros of that length, full or short
    expect(zeroBlockHash(bs).equals(hashes.subarray(0, 16))).toBe(true);
    expect(zeroBlockHash(1000).equals(hashes.subarray(64, 80))).toBe(true);
    // the zero blocks share a hash, the nearly-zero one does not
    expect(hashes.subarray(0, 16).equals(hashes.subarray(48, 64))).toBe(true);
    expect(hashes.subarray(0, 16).equals(hashes.subarray(32, 48))).toBe(false);
    // a larger block size after a smaller one
    const big = Buffer.alloc(3 * 65536);
    big[65536 + 5] = 7;
    const h2 = blockHashes(big, 65536);
    for (let i = 0; i < 3; i++) expect(h2.subarray(i * 16, i * 16 + 16).equals(blockHash(big.subarray(i * 65536, (i + 1) * 65536))), `64 KiB block ${i}`).toBe(true);
  });
});
