import { BLOCK_HASH_BYTES, blockHash } from '../../../common/block-hash';
import { errnoCode } from '../../../common/errors';
import { log } from '../../../common/log';
import { dirtyRanges, readDirect, type ByteRange, type DeviceInfo, type FerryControl } from '../../../native/addon';
import { BlockSet } from './block-set';
import type { KernelVolume, Walk, WalkWindow } from './volume';

/** Marks are placed, and bits cleared, window by window (a window never splits a bitmap bit). */
const WINDOW_BYTES = 4 * 1024 * 1024;
/** Blocks per HashRequest (the receiver accepts up to 16384). */
const HASH_BLOCKS_PER_REQUEST = 4096;
const IDLE_CHECK_MS = 2000;
const RETRY_MS = 200;
/** Marks placed and not yet committed, at most: they hold ring slots that writes need... */
const MAX_OUTSTANDING_MARKS = 256;
/** ...and their data is in memory until handed out. */
const MAX_OUTSTANDING_MARK_BYTES = 32 * 1024 * 1024;

export interface WalkerContext {
  control: FerryControl;
  blockSize: number;
  isClosed(): boolean;
}

/**
 * Runs one volume's walks: the resync the agent asked for, repairs of some ranges, and drains
 * of dirty bits whenever the device reports them. For every block it places a RESYNC_MARK at the
 * current point of the kernel stream and reads the block right after; the converter puts the
 * data (or a NOOP, when the receiver already holds it) at the mark's place in the stream. A write
 * completing after the mark has a later seq, so it is applied after the data: the replica
 * converges even while the volume is written. Bits are cleared once the data covering them is
 * committed, with the epoch read before the marks (a stale epoch means the device overflowed
 * again: drain again).
 */
export class VolumeWalker {
  private readonly zeroHashes = new Map<number, Buffer>();

  constructor(
    private readonly ctx: WalkerContext,
    private readonly v: KernelVolume,
  ) {}

  run(): Promise<void> {
    return Promise.all([this.walkLoop(), this.clearLoop()]).then(() => undefined);
  }

  private get stopped(): boolean {
    return this.ctx.isClosed();
  }

  private async walkLoop(): Promise<void> {
    while (!this.stopped) {
      const w = this.takeRequest();
      if (w) {
        await this.walk(w);
        continue;
      }
      await this.v.changed.wait(IDLE_CHECK_MS);
      if (!this.stopped && !this.v.resyncRequest && !this.v.drainRequested && !this.v.walk) await this.checkBits();
    }
  }

  private takeRequest(): Walk | undefined {
    const v = this.v;
    const size = v.spec.sizeBytes;
    const req = v.resyncRequest;
    if (req?.ready) {
      v.resyncRequest = undefined;
      const whole = req.kind !== 'delta';
      const cursor = whole ? Math.min(req.cursor, size) : 0;
      const progress = { kind: req.kind, doneBytes: cursor, totalBytes: whole ? size : 0, sentBytes: 0, startedMs: Date.now() };
      v.lastResync = progress;
      return this.newWalk('resync', req.kind, whole ? [{ offset: cursor, length: size - cursor }] : [], whole, req.remote, progress);
    }
    // A pending resync covers every block: repairs wait for it.
    const repair = req ? undefined : v.repairs.shift();
    if (repair) {
      v.tracker.resyncStarted();
      v.lastRepair = repair.progress;
      // One progress object: the converter counts into it, the status shows it.
      const progress = Object.assign(repair.progress, { kind: 'hash-compare' as const, startedMs: Date.now() });
      const w = this.newWalk('repair', 'hash-compare', repair.ranges, false, repair.remote, progress);
      w.repair = repair;
      return w;
    }
    // A drain waits for earlier walks to clear their bits, else it would read them again.
    if (v.drainRequested && v.clearing.length === 0) {
      v.drainRequested = false;
      return this.newWalk('drain', 'delta', [], false, undefined, { kind: 'delta', doneBytes: 0, totalBytes: 0, sentBytes: 0, startedMs: Date.now() });
    }
    return undefined;
  }

  private newWalk(purpose: Walk['purpose'], kind: Walk['kind'], ranges: ByteRange[], wholeDevice: boolean, remote: Walk['remote'], progress: Walk['progress']): Walk {
    return {
      purpose,
      kind,
      ranges,
      wholeDevice,
      baseline: 'none',
      remote,
      covers: 0,
      progress,
      windows: [],
      marksPlaced: 0,
      marksConverted: 0,
      placedAll: false,
      readDone: false,
      lastStream: 0,
      cancelled: false,
    };
  }

  /** The device has dirty bits nobody is draining (an overflow, or leftovers of a walk). */
  private async checkBits(): Promise<void> {
    const info = await this.deviceInfo();
    if (!info) return;
    this.v.mode = info.modeName;
    if (info.dirtyBits > 0 && info.modeName !== 'bitmap' && this.v.clearing.length === 0) {
      log.info('the device has dirty regions to drain', { volume: this.v.id, dirtyBits: info.dirtyBits, mode: info.modeName });
      this.v.drainRequested = true;
    }
  }

  private async walk(w: Walk): Promise<void> {
    const v = this.v;
    v.walk = w;
    try {
      if (w.purpose === 'drain') w.covers = v.tracker.episodes;
      if (w.purpose === 'repair') {
        // Like a hash-compare resync of these blocks: once every record handed out before is
        // durable, the receiver's hashes describe them; blocks written since are sent (touched).
        w.baseline = 'remote';
        v.touched = new BlockSet(this.ctx.blockSize, v.spec.sizeBytes);
        const sinceSeq = v.nextStream - 1;
        // Where the repair stands in the stream if it places no mark.
        w.lastStream = sinceSeq;
        await this.until(() => v.committedStream >= sinceSeq, w);
      } else if (w.wholeDevice) {
        // A replica that never received anything is all zeroes; otherwise ask the receiver.
        w.baseline = v.receiverDurable === 0 && v.nextStream === 1 ? 'zero' : w.remote ? 'remote' : 'none';
        if (w.baseline !== 'none') v.touched = new BlockSet(this.ctx.blockSize, v.spec.sizeBytes);
        const sinceSeq = v.nextStream - 1;
        if (w.baseline === 'remote') await this.until(() => v.committedStream >= sinceSeq, w);
      } else {
        const ranges = await this.bitmapRanges(w);
        if (!ranges) return;
        w.ranges = ranges;
        w.progress.totalBytes = ranges.reduce((n, r) => n + r.length, 0);
      }
      const started = { resync: 'resync started', repair: 'repair started', drain: 'draining dirty regions' }[w.purpose];
      log.info(started, { volume: v.id, kind: w.kind, bytes: w.ranges.reduce((n, r) => n + r.length, 0), compare: w.baseline, reason: w.repair?.progress.reason });
      v.clearing.push(w);
      const info = await this.usableDevice(w);
      if (!info) return;
      const windowBytes = Math.max(WINDOW_BYTES, info.granularity);
      for (const range of w.ranges) {
        const end = range.offset + range.length;
        for (let start = range.offset; start < end && !w.cancelled && !this.stopped; ) {
          const windowEnd = Math.min(end, (Math.floor(start / windowBytes) + 1) * windowBytes);
          if (!(await this.placeWindow(w, start, windowEnd))) return;
          start = windowEnd;
        }
      }
      if (w.cancelled || this.stopped) return;
      w.placedAll = true;
      if (w.marksConverted === w.marksPlaced) v.walkReadDone(w, await this.nextKseq());
      await this.until(() => w.readDone, w);
      const read = { resync: 'resync read every block', repair: 'repair read every block', drain: 'dirty regions read' }[w.purpose];
      if (w.readDone) log.info(read, { volume: v.id, kind: w.kind, sentBytes: w.progress.sentBytes });
    } catch (err) {
      if (!this.stopped) log.error('walk failed; it starts again', { volume: v.id, kind: w.kind, error: (err as Error).message });
      // It never completes: out of the clearing list with it, or no drain could start again.
      const cancelled = w.cancelled;
      w.cancelled = true;
      if (!this.stopped && !cancelled) {
        if (w.purpose === 'resync') v.resyncRequest ??= { kind: w.kind, remote: w.remote, cursor: v.log.resync.cursor, ready: true };
        else if (w.purpose === 'drain') v.drainRequested = true;
        await v.changed.wait(1000);
      }
    } finally {
      if (v.walk === w) v.walk = undefined;
      if (v.touched && !w.readDone) v.touched = undefined;
      // A repair that did not read every block runs again (after a device reload, an error).
      if (!w.readDone) this.retryRepair(w);
    }
  }

  /** The walk of a repair stopped before its data was durable: run it again, or fail it when stopping. */
  private retryRepair(w: Walk): void {
    const job = w.repair;
    if (!job) return;
    w.repair = undefined;
    if (this.stopped) {
      job.reject(new Error('the agent is stopping'));
      return;
    }
    job.progress.doneBytes = 0;
    job.progress.sentBytes = 0;
    this.v.repairs.unshift(job);
    this.v.changed.notify();
  }

  /** Places the marks of [start, end); false when the walk stopped. */
  private async placeWindow(w: Walk, start: number, end: number): Promise<boolean> {
    const v = this.v;
    const info = await this.usableDevice(w);
    if (!info) return false;
    const window: WalkWindow = { epoch: info.bitmapEpoch, start, end, lastKseq: 0, marksPlaced: 0, marksConverted: 0, complete: false };
    const expect = await this.expectedHashes(w, start, end);
    if (w.cancelled || this.stopped) return false;
    w.windows.push(window);
    const bs = this.ctx.blockSize;
    const limit = Math.max(4, Math.min(MAX_OUTSTANDING_MARKS, Math.floor(info.ringCapacity / 8), Math.floor(MAX_OUTSTANDING_MARK_BYTES / bs)));
    for (let off = start, i = 0; off < end; off += bs, i++) {
      await this.until(() => v.outstandingMarks < limit, w);
      if (w.cancelled || this.stopped) return false;
      const len = Math.min(bs, end - off);
      if (!(await this.placeMark(w, window, off, len, expect?.[i]))) return false;
    }
    window.complete = true;
    v.changed.notify();
    return true;
  }

  private async placeMark(w: Walk, window: WalkWindow, offset: number, length: number, expect: Buffer | undefined): Promise<boolean> {
    const v = this.v;
    for (;;) {
      if (w.cancelled || this.stopped) return false;
      // From the ioctl to the registration, the converter may meet the mark: it waits for this.
      let registered = (): void => undefined;
      v.markPlacing = new Promise<void>((resolve) => (registered = resolve));
      try {
        let kseq: number;
        try {
          kseq = await this.ctx.control.resyncMark(v.devIndex, offset, length);
        } catch (err) {
          const code = errnoCode(err);
          // Ring full of control records, or the table is suspended: retry after commits / resume.
          if (code !== 'ENOSPC' && code !== 'EAGAIN' && code !== 'ENODEV') throw err;
          kseq = -1;
        }
        if (kseq >= 0) {
          const data = readDirect(v.spec.path, offset, length);
          data.catch(() => undefined); // the converter awaits it and reports a failure
          v.marks.set(kseq, { walk: w, window, block: Math.floor(offset / this.ctx.blockSize), data, expect });
          v.outstandingMarks++;
          w.marksPlaced++;
          window.marksPlaced++;
          window.lastKseq = kseq;
          return true;
        }
      } finally {
        v.markPlacing = undefined;
        registered();
      }
      await v.changed.wait(RETRY_MS);
    }
  }

  /** What the replica holds for each block of [start, end) before the marks, when known. */
  private async expectedHashes(w: Walk, start: number, end: number): Promise<Buffer[] | undefined> {
    const bs = this.ctx.blockSize;
    if (w.baseline === 'none') return undefined;
    const out: Buffer[] = [];
    if (w.baseline === 'zero') {
      for (let off = start; off < end; off += bs) out.push(this.zeroHash(Math.min(bs, end - off)));
      return out;
    }
    const remote = w.remote as NonNullable<Walk['remote']>;
    const blocks = Math.ceil((end - start) / bs);
    for (let first = 0; first < blocks; first += HASH_BLOCKS_PER_REQUEST) {
      const count = Math.min(HASH_BLOCKS_PER_REQUEST, blocks - first);
      const hashes = await remote(this.v.id, start + first * bs, bs, count);
      for (let i = 0; i < count; i++) {
        const h = hashes.subarray(i * BLOCK_HASH_BYTES, (i + 1) * BLOCK_HASH_BYTES);
        out.push(h.length === BLOCK_HASH_BYTES ? Buffer.from(h) : Buffer.alloc(0));
      }
    }
    return out;
  }

  private zeroHash(length: number): Buffer {
    let h = this.zeroHashes.get(length);
    if (!h) {
      h = blockHash(Buffer.alloc(length));
      this.zeroHashes.set(length, h);
    }
    return h;
  }

  /** The dirty regions of the device, read once it is out of BITMAP mode; undefined if stopped. */
  private async bitmapRanges(w: Walk): Promise<ByteRange[] | undefined> {
    const v = this.v;
    for (;;) {
      if (w.cancelled || this.stopped) return undefined;
      try {
        const bitmap = await this.ctx.control.readBitmap(v.devIndex);
        return dirtyRanges(bitmap.data, bitmap.nbits, bitmap.granularity, v.spec.sizeBytes);
      } catch (err) {
        const code = errnoCode(err);
        if (code !== 'EBUSY' && code !== 'ESTALE' && code !== 'EAGAIN' && code !== 'ENODEV') throw err;
        await v.changed.wait(RETRY_MS);
      }
    }
  }

  /** The device's info once it takes marks (not in BITMAP mode, not suspended). */
  private async usableDevice(w: Walk): Promise<DeviceInfo | undefined> {
    for (;;) {
      if (w.cancelled || this.stopped) return undefined;
      const info = await this.deviceInfo();
      if (info && info.modeName !== 'bitmap' && !info.suspended) return info;
      await this.v.changed.wait(RETRY_MS);
    }
  }

  private async deviceInfo(): Promise<DeviceInfo | undefined> {
    try {
      return (await this.ctx.control.stats(this.v.devIndex)).device ?? undefined;
    } catch (err) {
      if (errnoCode(err) === 'ENODEV') return undefined;
      throw err;
    }
  }

  private async nextKseq(): Promise<number> {
    return (await this.deviceInfo())?.nextSeq ?? Number.MAX_SAFE_INTEGER;
  }

  private async until(done: () => boolean, w: Walk): Promise<void> {
    while (!done() && !w.cancelled && !this.stopped) await this.v.changed.wait(1000);
  }

  // ---- clearing bits once the data is committed ---------------------------------------------

  private async clearLoop(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.clearCommitted();
      } catch (err) {
        if (!this.stopped) log.warn('cannot clear dirty bits', { volume: this.v.id, error: (err as Error).message });
      }
      await this.v.changed.wait(1000);
    }
  }

  private async clearCommitted(): Promise<void> {
    const v = this.v;
    for (const w of [...v.clearing]) {
      if (w.cancelled) {
        v.clearing.splice(v.clearing.indexOf(w), 1);
        this.retryRepair(w);
        continue;
      }
      while (w.windows.length > 0) {
        const win = w.windows[0];
        if (!win.complete || win.marksConverted < win.marksPlaced || win.streamSeq === undefined || win.streamSeq > v.committedStream) break;
        w.windows.shift();
        await this.clearWindow(win);
        if (w.purpose === 'resync' && w.wholeDevice) v.log.saveResync({ kind: w.kind, cursor: win.end }, v.committedStream);
      }
      if (w.placedAll && w.readDone && w.windows.length === 0 && v.committedStream >= w.lastStream) {
        v.clearing.splice(v.clearing.indexOf(w), 1);
        if (w.purpose === 'resync' && w.progress.finishedMs === undefined) {
          w.progress.finishedMs = Date.now();
          if (!v.resyncRequest) v.log.saveResync({ kind: 'none', cursor: 0 }, v.committedStream);
          log.info('resync complete: the receiver holds all of it', { volume: v.id, kind: w.kind, sentBytes: w.progress.sentBytes, seconds: (w.progress.finishedMs - w.progress.startedMs) / 1000 });
        }
        const job = w.repair;
        if (job) {
          w.repair = undefined;
          job.progress.finishedMs = Date.now();
          log.info('repair complete: the receiver holds all of it', { volume: v.id, reason: job.progress.reason, sentBytes: w.progress.sentBytes, throughSeq: w.lastStream });
          job.resolve({ throughSeq: w.lastStream, sentBytes: w.progress.sentBytes });
        }
        v.changed.notify();
      }
    }
  }

  private async clearWindow(win: WalkWindow): Promise<void> {
    const v = this.v;
    const info = await this.deviceInfo();
    if (!info) return;
    const g = info.granularity;
    const first = Math.ceil(win.start / g);
    const end = win.end >= v.spec.sizeBytes ? info.bitmapBits : Math.floor(win.end / g);
    if (end <= first) return;
    try {
      await this.ctx.control.clearBitmap(v.devIndex, win.epoch, first, end - first);
    } catch (err) {
      const code = errnoCode(err);
      // The device overflowed (new epoch) or is suspended: the bits stay and are drained later.
      if (code !== 'ESTALE' && code !== 'EBUSY' && code !== 'EAGAIN' && code !== 'ENODEV') throw err;
      log.debug('dirty bits kept for a later drain', { volume: v.id, code, start: win.start, end: win.end });
    }
  }
}
