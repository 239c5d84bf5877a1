import { describe, expect, it } from 'vitest';
import { failbackTargets } from '../../agent/failback';
import { blockHashes } from '../../common/block-hash';
import { afterPass, batchRanges, chunkBlocks, differingBlocks, differingRanges, planChunks } from '../../receiver/failback-plan';

const KiB = 1024;

describe('failback pass planning', () => {
  it('walks every block once, in order, the last chunk and the last block short', () => {
    expect(planChunks(10 * 64 * KiB, 64 * KiB, 4)).toEqual([
      { offset: 0, count: 4 },
      { offset: 4 * 64 * KiB, count: 4 },
      { offset: 8 * 64 * KiB, count: 2 },
    ]);
    // 1 MiB + 4 KiB in 64 KiB blocks: 17 blocks, the last one 4 KiB.
    const chunks = planChunks(1024 * KiB + 4 * KiB, 64 * KiB, 16);
    expect(chunks).toEqual([{ offset: 0, count: 16 }, { offset: 1024 * KiB, count: 1 }]);
    expect(() => planChunks(0, 64 * KiB, 16)).toThrow(/cannot walk/);
  });

  it('sizes a chunk by data and by the protocol cap', () => {
    expect(chunkBlocks(64 * KiB, 16 * 1024 * KiB, 16384)).toBe(256);
    expect(chunkBlocks(512, 1024 * 1024 * KiB, 16384)).toBe(16384);
    expect(chunkBlocks(1024 * KiB, 64 * KiB, 16384)).toBe(1);
  });

  it('a pass is the last one only when the recovered machine was stopped before it began', () => {
    expect(afterPass(true)).toBe('done');
    expect(afterPass(false)).toBe('next-pass');
  });
});

describe('diff of two hash lists', () => {
  it('names exactly the blocks whose hashes differ', () => {
    const a = Buffer.alloc(8 * 4096, 1);
    const b = Buffer.from(a);
    b[0] = 9;
    b[3 * 4096 + 17] = 9;
    b[8 * 4096 - 1] = 9;
    expect(differingBlocks(blockHashes(a, 4096), blockHashes(b, 4096), 8)).toEqual([0, 3, 7]);
    expect(differingBlocks(blockHashes(a, 4096), blockHashes(a, 4096), 8)).toEqual([]);
  });

  it('refuses lists of the wrong length', () => {
    expect(() => differingBlocks(Buffer.alloc(32), Buffer.alloc(16), 2)).toThrow(/expected 32 each/);
  });

  it('merges neighbours into ranges, clips the short last block, splits at the cap', () => {
    const chunk = { offset: 1024 * KiB, count: 8 };
    // Blocks 0,1,2 and 5 of the chunk; the volume ends 1 KiB into block 7.
    expect(differingRanges(chunk, 64 * KiB, 1024 * KiB + 7 * 64 * KiB + KiB, [0, 1, 2, 5, 7], 1024 * KiB)).toEqual([
      { offset: 1024 * KiB, length: 192 * KiB },
      { offset: 1024 * KiB + 5 * 64 * KiB, length: 64 * KiB },
      { offset: 1024 * KiB + 7 * 64 * KiB, length: KiB },
    ]);
    expect(differingRanges({ offset: 0, count: 4 }, 64 * KiB, 1 << 30, [0, 1, 2, 3], 128 * KiB)).toEqual([
      { offset: 0, length: 128 * KiB },
      { offset: 128 * KiB, length: 128 * KiB },
    ]);
  });

  it('groups ranges into change sets of at most the cap', () => {
    const r = (offset: number, length: number): { offset: number; length: number } => ({ offset, length });
    expect(batchRanges([r(0, 3), r(10, 3), r(20, 3), r(30, 5)], 6)).toEqual([[r(0, 3), r(10, 3)], [r(20, 3)], [r(30, 5)]]);
    expect(batchRanges([], 6)).toEqual([]);
  });
});

describe('failback targets', () => {
  const volumes = [
    { id: 'root', path: '/dev/mapper/ferry-root' },
    { id: 'data', path: '/dev/vdb' },
  ];

  it('writes the configured path unless --volume names the plain device', () => {
    expect(failbackTargets(volumes, new Map([['root', '/dev/vda']]))).toEqual([
      { id: 'root', path: '/dev/vda' },
      { id: 'data', path: '/dev/vdb' },
    ]);
  });

  it('refuses a device for a volume the config does not list', () => {
    expect(() => failbackTargets(volumes, new Map([['rooot', '/dev/vda']]))).toThrow(/the config lists no volume rooot \(it has root, data\)/);
  });
});
