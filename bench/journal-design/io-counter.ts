// Target I/O of a phase, from /proc/self/io: rchar/wchar are the bytes this process handed to
// read and write system calls (pread, pwritev...: what the code asks of the files, page cache
// or not), read_bytes/write_bytes what reached the block layer (page cache hides most reads).

import * as fs from 'fs';
import { timeSync } from '../common';

export interface IoCounts {
  /** Bytes passed to read system calls. */
  syscallRead: number;
  /** Bytes passed to write system calls. */
  syscallWritten: number;
  /** Bytes fetched from storage. */
  diskRead: number;
  /** Bytes sent to storage (counted when dirtied pages are accounted, so roughly). */
  diskWritten: number;
}

export interface Phase extends IoCounts {
  seconds: number;
}

function readIo(): IoCounts {
  const fields = new Map<string, number>();
  for (const line of fs.readFileSync('/proc/self/io', 'latin1').split('\n')) {
    const [key, value] = line.split(':');
    if (value !== undefined) fields.set(key.trim(), Number(value.trim()));
  }
  const get = (k: string): number => fields.get(k) ?? 0;
  return { syscallRead: get('rchar'), syscallWritten: get('wchar'), diskRead: get('read_bytes'), diskWritten: get('write_bytes') };
}

function delta(after: IoCounts, before: IoCounts): IoCounts {
  return {
    syscallRead: after.syscallRead - before.syscallRead,
    syscallWritten: after.syscallWritten - before.syscallWritten,
    diskRead: after.diskRead - before.diskRead,
    diskWritten: after.diskWritten - before.diskWritten,
  };
}

export function measure(fn: () => void): Phase {
  const before = readIo();
  const seconds = timeSync(fn);
  return { seconds, ...delta(readIo(), before) };
}

export async function measureAsync(fn: () => Promise<void>): Promise<Phase> {
  const before = readIo();
  const start = process.hrtime.bigint();
  await fn();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return { seconds, ...delta(readIo(), before) };
}

/** Sums phases (e.g. the index updates made across many ingest windows). */
export function addPhases(a: Phase, b: Phase): Phase {
  return {
    seconds: a.seconds + b.seconds,
    syscallRead: a.syscallRead + b.syscallRead,
    syscallWritten: a.syscallWritten + b.syscallWritten,
    diskRead: a.diskRead + b.diskRead,
    diskWritten: a.diskWritten + b.diskWritten,
  };
}

export const NO_PHASE: Phase = { seconds: 0, syscallRead: 0, syscallWritten: 0, diskRead: 0, diskWritten: 0 };
