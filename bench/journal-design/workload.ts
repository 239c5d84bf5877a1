// The workload both journal designs run: change sets of fixed-size writes at aligned random
// offsets, a share of them to a small hot set (a database's tables and log see most writes),
// built into wire frames exactly as the agent sends them (lz4 payload, protobuf frame).

import * as fs from 'fs';
import { buildChangeSet, ChangeRecord } from '../../agent/transport/change-set';
import { encodeFrame } from '../../proto/frames';
import { MiB, seededRandom } from '../common';

export const VOLUME_ID = 'bench-vol';
/** Granularity of the data pool: each such block is either incompressible or text-like. */
const POOL_BLOCK = 64 * 1024;

export interface WorkloadSpec {
  volumeBytes: number;
  churnBytes: number;
  writeBytes: number;
  /** Share of writes that land in the hot set. */
  hotFraction: number;
  hotBytes: number;
}

/**
 * Data like a used disk's: per 64 KiB, either incompressible or text-like (lz4 about halves
 * it), as in bench/pipeline. Generated once, before anything is timed.
 */
export class MixedPool {
  private readonly data: Buffer;

  constructor(bytes = 64 * MiB) {
    const random = seededRandom(1);
    this.data = Buffer.alloc(bytes);
    const words = ['replica', 'journal', 'volume ', 'seq ', 'agent ', 'ferry ', '\n', 'spool '];
    for (let start = 0; start < bytes; start += POOL_BLOCK) {
      if ((start / POOL_BLOCK) % 2 === 0) {
        for (let i = start; i < start + POOL_BLOCK; i += 4) this.data.writeUInt32LE((random() * 2 ** 32) >>> 0, i);
        continue;
      }
      for (let i = start; i < start + POOL_BLOCK; ) {
        const w = `${words[Math.floor(random() * words.length)]}${Math.floor(random() * 1000)} `;
        i += this.data.write(w, i, Math.min(w.length, start + POOL_BLOCK - i), 'latin1');
      }
    }
  }

  /** `length` bytes starting at a 4 KiB-aligned place picked by `index`. */
  slice(index: number, length: number): Buffer {
    const slots = (this.data.length - length) / 4096;
    const start = ((index * 2_654_435_761) % slots) * 4096;
    return this.data.subarray(start, start + length);
  }
}

/** Fills a new replica file with pool data (not sparse) and fsyncs it. */
export function fillReplica(file: string, volumeBytes: number, pool: MixedPool): void {
  const fd = fs.openSync(file, 'w', 0o600);
  try {
    for (let offset = 0, i = 1_000_000; offset < volumeBytes; offset += MiB, i++) {
      const chunk = pool.slice(i, Math.min(MiB, volumeBytes - offset));
      fs.writeSync(fd, chunk, 0, chunk.length, offset);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes per change set: change sets of about 1 MiB, like a busy agent's batches. */
export function writesPerSet(spec: WorkloadSpec): number {
  return Math.max(1, Math.floor(MiB / spec.writeBytes));
}

export function totalWrites(spec: WorkloadSpec): number {
  return Math.floor(spec.churnBytes / spec.writeBytes);
}

/** The seq of the last write of the change set that holds write number `write` (1-based seqs). */
export function setEndSeq(spec: WorkloadSpec, write: number): number {
  const per = writesPerSet(spec);
  return Math.min(totalWrites(spec), Math.ceil(write / per) * per);
}

export interface SpooledFrame {
  firstSeq: number;
  lastSeq: number;
  frame: Buffer;
}

/** The change sets of the workload as wire frames; deterministic, so both designs see the same bytes. */
export function* workloadFrames(spec: WorkloadSpec, pool: MixedPool): Generator<SpooledFrame> {
  const random = seededRandom(42);
  const hotSlots = Math.max(1, Math.floor(spec.hotBytes / spec.writeBytes));
  const allSlots = Math.floor(spec.volumeBytes / spec.writeBytes);
  const per = writesPerSet(spec);
  const total = totalWrites(spec);
  for (let seq = 1; seq <= total; seq += per) {
    const records: ChangeRecord[] = [];
    for (let i = 0; i < per && seq + i <= total; i++) {
      const hot = random() < spec.hotFraction;
      const slot = Math.floor(random() * (hot ? hotSlots : allSlots));
      const data = pool.slice(seq + i, spec.writeBytes);
      records.push({ kind: 'write', offset: slot * spec.writeBytes, length: data.length, captureTimeUs: Date.now() * 1000, data });
    }
    const frame = encodeFrame({ changeSet: buildChangeSet(VOLUME_ID, seq, records, 'exact') });
    yield { firstSeq: seq, lastSeq: seq + records.length - 1, frame };
  }
}
