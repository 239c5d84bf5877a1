// One sorted write pass of a redo advance, as it goes to the thread that writes it: the pass's
// versions packed run by run (a run: contiguous volume bytes) in one buffer that moves to that
// thread without a copy. The writing thread also sums the blocks each run covers whole, so that
// neither the replica writes nor their CRCs hold the ingest thread (RedoEngine hands the volume
// an apply thread's writer; without one the pass is written where the advance runs).

import * as fs from 'fs';
import { writeFully } from '../../common/fsutil';
import { blockSumsOf, SUM_BLOCK } from '../storage/block-sums';

export interface WritePass {
  /** The replica's descriptor (threads of one process share descriptors). */
  fd: number;
  /** Sorted by offset; run i's bytes are data[start, end). */
  runs: Array<{ offset: number; start: number; end: number }>;
  data: Uint8Array;
  /** fdatasync the file once the runs are written (the advance's last step before its base moves). */
  datasync?: boolean;
}

/** New sums of the blocks a pass covers whole: per run, its first whole block and their sums. */
export interface PassSums {
  runs: Array<{ first: number; sums: Uint32Array }>;
  /** The pass's buffer, handed back for the next pass (fresh 64 MiB costs more than the copy into it). */
  data: Uint8Array;
}

/** A pass submitted: `result` or `error` are set once it is written; `done` then resolves (never rejects). */
export interface PassTicket {
  result?: PassSums;
  error?: Error;
  readonly done: Promise<void>;
}

export interface PassWriter {
  submit(pass: WritePass): PassTicket;
  /** The pass's sums, waiting on this thread if it is still being written; throws its error. */
  wait(ticket: PassTicket): PassSums;
}

/** Writes a pass and sums its whole blocks (on whichever thread holds it). */
export function writePass(pass: WritePass): PassSums {
  const data = Buffer.from(pass.data.buffer, pass.data.byteOffset, pass.data.byteLength);
  const sums = {
    runs: pass.runs.map((r) => {
      const bytes = data.subarray(r.start, r.end);
      writeFully(pass.fd, bytes, r.offset);
      const first = Math.ceil(r.offset / SUM_BLOCK);
      const end = Math.floor((r.offset + bytes.length) / SUM_BLOCK);
      return { first, sums: end > first ? blockSumsOf(bytes.subarray(first * SUM_BLOCK - r.offset, end * SUM_BLOCK - r.offset)) : new Uint32Array(0) };
    }),
  };
  if (pass.datasync) fs.fdatasyncSync(pass.fd);
  return { ...sums, data: pass.data };
}

/** Blocks a run covers in part (summed from the replica once every pass is written). */
export function partlyCoveredBlocks(runs: WritePass['runs']): number[] {
  const blocks: number[] = [];
  for (const r of runs) {
    const end = r.offset + r.end - r.start;
    if (r.offset % SUM_BLOCK !== 0) blocks.push(Math.floor(r.offset / SUM_BLOCK));
    if (end % SUM_BLOCK !== 0) blocks.push(Math.floor(end / SUM_BLOCK));
  }
  return blocks;
}

/**
 * Packs versions (volume offset, bytes; not overlapping) into one pass, sorted, contiguous ones
 * in one run. The copy frees the payloads they are slices of.
 */
export function packPass(fd: number, versions: Array<{ offset: number; data: Buffer }>, spare?: Uint8Array): WritePass {
  versions.sort((a, b) => a.offset - b.offset);
  const total = versions.reduce((n, v) => n + v.data.length, 0);
  const room = spare && spare.buffer.byteLength >= total ? spare.buffer : new ArrayBuffer(Math.ceil(total * 1.25));
  const data = new Uint8Array(room, 0, total);
  const runs: WritePass['runs'] = [];
  let pos = 0;
  for (const v of versions) {
    const last = runs[runs.length - 1];
    if (last && last.offset + (last.end - last.start) === v.offset) last.end += v.data.length;
    else runs.push({ offset: v.offset, start: pos, end: pos + v.data.length });
    data.set(v.data, pos);
    pos += v.data.length;
  }
  return { fd, runs, data };
}

/** Writes each pass at once, on this thread. */
export const localPassWriter: PassWriter = {
  submit(pass: WritePass): PassTicket {
    try {
      return { result: writePass(pass), done: Promise.resolve() };
    } catch (err) {
      return { error: err as Error, done: Promise.resolve() };
    }
  },
  wait(ticket: PassTicket): PassSums {
    if (ticket.error) throw ticket.error;
    return ticket.result as PassSums;
  },
};
