import type { AccuracyName } from '../../../proto/types';

/**
 * What a recovery point cut right after a kernel record of one device is worth, tracked in
 * stream order:
 * - none while a resync has not read all of its blocks, or a bitmap episode (writes known only
 *   as dirty bits) has not been drained;
 * - approximate for records below the device's next kernel seq as seen just after data was
 *   read back (DIRTY ranges, resync or drain marks): that data may hold writes that the stream
 *   orders after those records;
 * - exact otherwise: every write is in the stream with its own data, in completion order.
 */
export class AccuracyTracker {
  private resyncing = false;
  private episodesSeen = 0;
  private episodesClosed = 0;
  private approxBelow = 0;

  /** A resync is due or running: nothing is usable until it has read every block. */
  resyncStarted(): void {
    this.resyncing = true;
  }

  /** The resync read all of its blocks; `nextKseq` is the device's next seq after the last read. */
  resyncRead(nextKseq: number): void {
    this.resyncing = false;
    this.readBack(nextKseq);
  }

  /** The device entered BITMAP mode. */
  bitmapEntered(): void {
    this.episodesSeen++;
  }

  /** Episodes seen so far: a drain that starts now covers these. */
  get episodes(): number {
    return this.episodesSeen;
  }

  /** A drain that covered `covers` episodes read all of its regions. */
  drainRead(covers: number, nextKseq: number): void {
    this.episodesClosed = Math.max(this.episodesClosed, covers);
    this.readBack(nextKseq);
  }

  /** Data was read back from the device; `nextKseq` is the device's next seq after the read. */
  readBack(nextKseq: number): void {
    this.approxBelow = Math.max(this.approxBelow, nextKseq);
  }

  at(kseq: number): AccuracyName {
    if (this.resyncing || this.episodesSeen > this.episodesClosed) return 'none';
    return kseq < this.approxBelow ? 'approximate' : 'exact';
  }
}
