import type { ByteRange } from './types';

/** A range a scoped pass reads back: block aligned, at most one read's worth of bytes. */
export interface ScopedRead {
  offset: number;
  length: number;
  /** Earliest moment the data of the range may have changed (µs since the epoch). */
  sinceUs: number;
  /** Blocks of the range known only from a dirty bitmap (the tracker's ring had overflowed). */
  bitmapBlocks: number;
}

/**
 * Where the passes of a volume look when they need not read all of it: the ranges a write
 * tracker reported written (the ebpf source). Without a scope, scan passes read everything.
 */
export interface PassScope {
  /** Ranges are waiting to be read back. */
  readonly hasWork: boolean;
  /**
   * Hands every waiting range to a pass, sorted, in reads of at most `maxRead` bytes clipped
   * to `sizeBytes`; they count as unsent until the pass calls `done` (or `giveBack`).
   */
  take(maxRead: number): ScopedRead[];
  /** The pass read this range back: its changes are queued as records. */
  done(read: ScopedRead): void;
  /** The pass stopped before reading these: they are owed again. */
  giveBack(reads: readonly ScopedRead[]): void;
  /** Earliest moment a change not read back yet may have happened (0: none). */
  unsentSinceUs(): number;
}

/** Splits block-aligned ranges into reads of at most `maxRead` bytes (a scoped resync's reads). */
export function splitReads(ranges: readonly ByteRange[], maxRead: number, sinceUs: number): ScopedRead[] {
  const reads: ScopedRead[] = [];
  for (const r of ranges) {
    for (let offset = r.offset; offset < r.offset + r.length; offset += maxRead) {
      reads.push({ offset, length: Math.min(maxRead, r.offset + r.length - offset), sinceUs, bitmapBlocks: 0 });
    }
  }
  return reads;
}
