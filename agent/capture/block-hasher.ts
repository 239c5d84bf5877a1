import * as fs from 'fs';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { BLOCK_HASH_BYTES, blockHashes } from '../../common/block-hash';
import { log } from '../../common/log';
import type { HashJob } from './hash-worker';

const WORKER_SCRIPT = path.join(__dirname, 'hash-worker.js');

/** A buffer the hash worker can read without a copy. */
export function sharedBuffer(bytes: number): Buffer {
  return Buffer.from(new SharedArrayBuffer(bytes));
}

/**
 * Hashes the blocks of a chunk (common/block-hash) on two threads: this one takes the first
 * half, a worker the second. A scan pass is mostly hashing, so this about halves it on an
 * otherwise idle second core. Without the compiled worker script (running from TypeScript
 * sources), after a worker failure, or while the worker hashes for another volume, this thread
 * does it all.
 */
export class BlockHasher {
  private worker: Worker | undefined;
  private job: { resolve: (hashes: Uint8Array) => void; reject: (err: Error) => void } | undefined;

  constructor() {
    if (!fs.existsSync(WORKER_SCRIPT)) return;
    const worker = new Worker(WORKER_SCRIPT);
    worker.unref();
    worker.on('message', (hashes: Uint8Array) => this.job?.resolve(hashes));
    worker.on('error', (err) => {
      log.warn('hash worker failed: hashing on the main thread only', { error: err.message });
      this.worker = undefined;
      this.job?.reject(err);
    });
    this.worker = worker;
  }

  async hash(chunk: Buffer, blockSize: number): Promise<Buffer> {
    const blocks = Math.ceil(chunk.length / blockSize);
    const worker = this.worker;
    if (!worker || this.job || blocks < 2 || !(chunk.buffer instanceof SharedArrayBuffer)) return blockHashes(chunk, blockSize);
    const split = Math.floor(blocks / 2) * blockSize;
    const job: HashJob = { buffer: chunk.buffer, offset: chunk.byteOffset + split, length: chunk.length - split, blockSize };
    const theirs = new Promise<Uint8Array>((resolve, reject) => (this.job = { resolve, reject }));
    worker.postMessage(job);
    try {
      const mine = blockHashes(chunk.subarray(0, split), blockSize);
      const rest = await theirs;
      return Buffer.concat([mine, Buffer.from(rest.buffer, rest.byteOffset, (blocks - split / blockSize) * BLOCK_HASH_BYTES)]);
    } finally {
      this.job = undefined;
    }
  }

  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
  }
}
