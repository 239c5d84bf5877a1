// Worker thread of BlockHasher: hashes a range of a shared chunk buffer.
import { parentPort } from 'worker_threads';
import { blockHashes } from '../../common/block-hash';

export interface HashJob {
  buffer: SharedArrayBuffer;
  offset: number;
  length: number;
  blockSize: number;
}

parentPort?.on('message', (job: HashJob) => {
  parentPort?.postMessage(blockHashes(Buffer.from(job.buffer, job.offset, job.length), job.blockSize));
});
