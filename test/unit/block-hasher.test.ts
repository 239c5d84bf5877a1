import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BlockHasher, sharedBuffer } from '../../agent/capture/block-hasher';
import { blockHashes } from '../../common/block-hash';

// The compiled worker (npm run build): from TypeScript sources the hasher has none.
const WORKER = path.join(__dirname, '..', '..', 'dist', 'agent', 'capture', 'hash-worker.js');
const BLOCK = 64 * 1024;

function chunk(seed: number): Buffer {
  const buf = sharedBuffer(16 * BLOCK);
  for (let i = 0; i < buf.length; i += 4) buf.writeUInt32LE(((i + 1) * 2654435761 + seed) >>> 0, i);
  buf.fill(0, 3 * BLOCK, 5 * BLOCK);
  return buf;
}

describe('BlockHasher', () => {
  it('starts its worker for a chunk, stops it when idle, and starts it again for the next chunk', async () => {
    const hasher = new BlockHasher(WORKER, 100);
    try {
      expect(hasher.workerRunning).toBe(false);
      const first = chunk(1);
      expect(await hasher.hash(first, BLOCK)).toEqual(blockHashes(first, BLOCK));
      expect(hasher.workerRunning).toBe(true);
      await new Promise((r) => setTimeout(r, 300));
      expect(hasher.workerRunning).toBe(false);
      const second = chunk(2);
      expect(await hasher.hash(second, BLOCK)).toEqual(blockHashes(second, BLOCK));
      expect(hasher.workerRunning).toBe(true);
    } finally {
      await hasher.close();
    }
    expect(hasher.workerRunning).toBe(false);
  });

  it('hashes on this thread alone without a worker script, and after close', async () => {
    const hasher = new BlockHasher(path.join(__dirname, 'no-such-worker.js'));
    const data = chunk(3);
    expect(await hasher.hash(data, BLOCK)).toEqual(blockHashes(data, BLOCK));
    expect(hasher.workerRunning).toBe(false);
    const closed = new BlockHasher(WORKER);
    await closed.close();
    expect(await closed.hash(data, BLOCK)).toEqual(blockHashes(data, BLOCK));
    expect(closed.workerRunning).toBe(false);
  });
});
