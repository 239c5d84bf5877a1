import * as fs from 'fs';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { BLOCK_HASH_BYTES, blockHashes } from '../../common/block-hash';
import { log } from '../../common/log';
import type { HashJob } from './hash-worker';

const WORKER_SCRIPT = path.join(__dirname, 'hash-worker.js');
/** The worker (a whole V8 isolate, about 12 MiB resident) stops after this long without a job. */
const IDLE_STOP_MS = 10_000;

/** A buffer the hash worker can read without a copy. */
export function sharedBuffer(bytes: number): Buffer {
  return Buffer.from(new SharedArrayBuffer(bytes));
}

/**
 * Hashes the blocks of a chunk (common/block-hash) on two threads: this one takes the first
 * half, a worker the second. A scan pass is mostly hashing, so this about halves it on an
 * otherwise idle second core. The worker starts with the first chunk to hash and stops when
 * none came for a while (an agent between passes, or with kernel capture, holds none).
 * Without the compiled worker script (running from TypeScript sources), after a worker
 * failure, or while the worker hashes for another volume, this thread does it all.
 */
export class BlockHasher {
  private worker: Worker | undefined;
  private job: { resolve: (hashes: Uint8Array) => void; reject: (err: Error) => void } | undefined;
  private readonly usable: boolean;
  private failed = false;
  private closed = false;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly script = WORKER_SCRIPT,
    private readonly idleStopMs = IDLE_STOP_MS,
  ) {
    this.usable = fs.existsSync(script);
  }

  /** Whether a worker thread is running now. */
  get workerRunning(): boolean {
    return this.worker !== undefined;
  }

  async hash(chunk: Buffer, blockSize: number): Promise<Buffer> {
    const blocks = Math.ceil(chunk.length / blockSize);
    if (this.job || blocks < 2 || !(chunk.buffer instanceof SharedArrayBuffer)) return blockHashes(chunk, blockSize);
    const worker = this.startWorker();
    if (!worker) return blockHashes(chunk, blockSize);
    clearTimeout(this.idleTimer);
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
      this.stopWhenIdle();
    }
  }

  private startWorker(): Worker | undefined {
    if (this.worker || !this.usable || this.failed || this.closed) return this.worker;
    const worker = new Worker(this.script);
    worker.unref();
    worker.on('message', (hashes: Uint8Array) => this.job?.resolve(hashes));
    worker.on('error', (err) => {
      log.warn('hash worker failed: hashing on the main thread only', { error: err.message });
      this.failed = true;
      if (this.worker === worker) this.worker = undefined;
      this.job?.reject(err);
    });
    this.worker = worker;
    return worker;
  }

  private stopWhenIdle(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      const worker = this.worker;
      if (!worker || this.job) return;
      this.worker = undefined;
      void worker.terminate();
    }, this.idleStopMs);
    this.idleTimer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.idleTimer);
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
  }
}
