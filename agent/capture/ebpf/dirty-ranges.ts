import { olderCapture } from '../../../common/capture-time';
import type { PassScope, ScopedRead } from '../pass-scope';
import type { ByteRange } from '../types';

/**
 * The blocks of one volume written since they were last read back, each with the earliest
 * moment it was written: what the tracker reported, waiting for a pass of the ebpf source.
 * Blocks handed to a pass stay counted (for the RPO) until the pass has read them.
 */
export class DirtyRanges implements PassScope {
  /** Block -> earliest write time not read back yet (µs). */
  private readonly waiting = new Map<number, number>();
  private readonly fromBitmap = new Set<number>();
  private waitingSinceUs = 0;
  private readonly inPass = new Set<ScopedRead>();
  private bitmapOwed = 0;

  constructor(
    readonly sizeBytes: number,
    readonly blockSize: number,
  ) {}

  /** Marks [offset, offset + length) of the volume written at `atUs`. */
  add(offset: number, length: number, atUs: number, bitmap = false): void {
    const end = Math.min(this.sizeBytes, offset + length);
    if (length <= 0 || offset >= end || offset < 0) return;
    for (let b = Math.floor(offset / this.blockSize); b * this.blockSize < end; b++) {
      const was = this.waiting.get(b);
      if (was === undefined || atUs < was) this.waiting.set(b, atUs);
      if (bitmap && !this.fromBitmap.has(b)) {
        this.fromBitmap.add(b);
        this.bitmapOwed++;
      }
    }
    this.waitingSinceUs = olderCapture(this.waitingSinceUs, atUs);
  }

  addRanges(ranges: readonly ByteRange[], atUs: number): void {
    for (const r of ranges) this.add(r.offset, r.length, atUs);
  }

  get hasWork(): boolean {
    return this.waiting.size > 0;
  }

  /** Blocks known only from a dirty bitmap are still waiting or being read (mode bitmap-draining). */
  get drainingBitmap(): boolean {
    return this.bitmapOwed > 0;
  }

  take(maxRead: number): ScopedRead[] {
    const blocks = [...this.waiting.keys()].sort((a, b) => a - b);
    const reads: ScopedRead[] = [];
    let cur: ScopedRead | undefined;
    for (const b of blocks) {
      const offset = b * this.blockSize;
      const length = Math.min(this.blockSize, this.sizeBytes - offset);
      const since = this.waiting.get(b) as number;
      const bitmapBlocks = this.fromBitmap.delete(b) ? 1 : 0;
      if (cur && cur.offset + cur.length === offset && cur.length + length <= maxRead) {
        cur.length += length;
        cur.sinceUs = Math.min(cur.sinceUs, since);
        cur.bitmapBlocks += bitmapBlocks;
      } else {
        cur = { offset, length, sinceUs: since, bitmapBlocks };
        reads.push(cur);
      }
    }
    this.waiting.clear();
    this.waitingSinceUs = 0;
    for (const r of reads) this.inPass.add(r);
    return reads;
  }

  done(read: ScopedRead): void {
    if (this.inPass.delete(read)) this.bitmapOwed -= read.bitmapBlocks;
  }

  giveBack(reads: readonly ScopedRead[]): void {
    for (const r of reads) {
      if (!this.inPass.delete(r)) continue;
      this.bitmapOwed -= r.bitmapBlocks;
      this.add(r.offset, r.length, r.sinceUs, r.bitmapBlocks > 0);
    }
  }

  unsentSinceUs(): number {
    let oldest = this.waitingSinceUs;
    for (const r of this.inPass) oldest = olderCapture(oldest, r.sinceUs);
    return oldest;
  }

  /** Everything not read back yet: waiting, or handed to a pass that has not read it. */
  unsent(): ByteRange[] {
    const ranges: ByteRange[] = [...this.inPass].map((r) => ({ offset: r.offset, length: r.length }));
    for (const b of this.waiting.keys()) ranges.push({ offset: b * this.blockSize, length: Math.min(this.blockSize, this.sizeBytes - b * this.blockSize) });
    return ranges;
  }
}
