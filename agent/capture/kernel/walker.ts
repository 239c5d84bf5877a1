import { BLOCK_HASH_BYTES, zeroBlockHash } from '../../../common/block-hash';
import { errnoCode } from '../../../common/errors';
import { log } from '../../../common/log';
import { dirtyRanges, type ByteRange, type DeviceInfo } from '../../../native/addon';
import type { ControlDevice, ReadVolume } from './control-device';
import { bitmapReadRetryable, clearKeepsBits, idleBitsNeedDrain, markLimit, markRetryable, walkBaseline } from './decisions';
import type { KernelVolume, TakenWalk, Walk, WalkWindow } from './volume';
import type { VolumeEvent } from './volume-events';

/** Marks are placed, and bits cleared, window by window (a window never splits a bitmap bit). */
const WINDOW_BYTES = 4 * 1024 * 1024;
/** Blocks per HashRequest (the receiver accepts up to 16384). */
const HASH_BLOCKS_PER_REQUEST = 4096;
/**
 * An idle volume looks at its device's dirty bits this often: the kernel keeps bits (a clear
 * refused after an overflow, leftovers of a reload) without a record that would tell the agent.
 */
const IDLE_CHECK_MS = 2000;
/** A suspended table resumes, and a vanished one comes back, without telling the agent: look again this often. */
const RETRY_MS = 200;
/** A failed walk runs again after this back-off (unless the agent stops). */
const WALK_RETRY_MS = 1000;
/** A failed bit clear is tried again after this long (or at the next commit). */
const CLEAR_RETRY_MS = 1000;
/** Marks placed and not yet committed, at most: they hold ring slots that writes need... */
const MAX_OUTSTANDING_MARKS = 256;
/** ...and their data is in memory until handed out. */
const MAX_OUTSTANDING_MARK_BYTES = 32 * 1024 * 1024;

export interface WalkerContext {
  control: ControlDevice;
  blockSize: number;
  /** Reads a block right after its mark was placed. */
  readVolume: ReadVolume;
}

/**
 * Runs one volume's walks: the resync the agent asked for, repairs of some ranges, and drains
 * of dirty bits whenever the device reports them. For every block it places a RESYNC_MARK at the
 * current point of the kernel stream and reads the block right after; the converter puts the
 * data (or a NOOP, when the receiver already holds it) at the mark's place in the stream. A write
 * completing after the mark has a later seq, so it is applied after the data: the replica
 * converges even while the volume is written. Bits are cleared once the data covering them is
 * committed, with the epoch read before the marks (a stale epoch means the device overflowed
 * again: drain again). The volume owns the requests and the marks; the walker asks it.
 */
export class VolumeWalker {

  constructor(
    private readonly ctx: WalkerContext,
    private readonly v: KernelVolume,
  ) {}

  run(): Promise<void> {
    return Promise.all([this.walkLoop(), this.clearLoop()]).then(() => undefined);
  }

  private get stopped(): boolean {
    return this.v.stopped;
  }

  private async walkLoop(): Promise<void> {
    const v = this.v;
    while (!this.stopped) {
      const since = v.events.stamp;
      const taken = v.takeWalk();
      if (taken) {
        await this.walk(this.newWalk(taken));
        continue;
      }
      await v.events.next(['request', 'cleared', 'mode', 'stopped'], { since, timeoutMs: IDLE_CHECK_MS });
      if (!this.stopped && !v.requestPending && !v.walking) await this.checkBits();
    }
  }

  private newWalk(t: TakenWalk): Walk {
    const size = this.v.spec.sizeBytes;
    const base = { baseline: 'none' as const, covers: 0, windows: [], marksPlaced: 0, marksConverted: 0, placedAll: false, readDone: false, lastStream: 0, cancelled: false };
    switch (t.purpose) {
      case 'resync': {
        const whole = t.kind !== 'delta';
        return { ...base, purpose: 'resync', kind: t.kind, ranges: whole ? [{ offset: t.cursor, length: size - t.cursor }] : [], wholeDevice: whole, remote: t.remote, progress: t.progress };
      }
      case 'repair': {
        // One progress object: the converter counts into it, the status shows it.
        const progress = Object.assign(t.job.progress, { kind: 'hash-compare' as const, startedMs: Date.now() });
        return { ...base, purpose: 'repair', kind: 'hash-compare', ranges: t.job.ranges, wholeDevice: false, remote: t.job.remote, progress, repair: t.job };
      }
      case 'drain':
        return { ...base, purpose: 'drain', kind: 'delta', ranges: [], wholeDevice: false, progress: { kind: 'delta', doneBytes: 0, totalBytes: 0, sentBytes: 0, startedMs: Date.now() } };
    }
  }

  /** The device has dirty bits nobody is draining (an overflow, or leftovers of a walk). */
  private async checkBits(): Promise<void> {
    const info = await this.deviceInfo();
    if (!info) return;
    this.v.refreshMode(info.modeName);
    if (idleBitsNeedDrain(info, this.v.clearingWalks.length).drain) {
      log.info('the device has dirty regions to drain', { volume: this.v.id, dirtyBits: info.dirtyBits, mode: info.modeName });
      this.v.requestDrain();
    }
  }

  private async walk(w: Walk): Promise<void> {
    const v = this.v;
    v.beginWalk(w);
    try {
      w.baseline = walkBaseline({ purpose: w.purpose, wholeDevice: w.wholeDevice, hasRemote: w.remote !== undefined }, v.receiverDurable, v.nextStream).baseline;
      if (w.purpose === 'repair') {
        // Like a hash-compare resync of these blocks: once every record handed out before is
        // durable, the receiver's hashes describe them; blocks written since are sent (touched).
        v.trackTouched(this.ctx.blockSize);
        const sinceSeq = v.nextStream - 1;
        // Where the repair stands in the stream if it places no mark.
        w.lastStream = sinceSeq;
        await this.until(() => v.committedStream >= sinceSeq, w, ['committed']);
      } else if (w.wholeDevice) {
        if (w.baseline !== 'none') v.trackTouched(this.ctx.blockSize);
        const sinceSeq = v.nextStream - 1;
        if (w.baseline === 'remote') await this.until(() => v.committedStream >= sinceSeq, w, ['committed']);
      } else {
        const ranges = await this.bitmapRanges(w);
        if (!ranges) return;
        w.ranges = ranges;
        w.progress.totalBytes = ranges.reduce((n, r) => n + r.length, 0);
      }
      const started = { resync: 'resync started', repair: 'repair started', drain: 'draining dirty regions' }[w.purpose];
      log.info(started, { volume: v.id, kind: w.kind, bytes: w.ranges.reduce((n, r) => n + r.length, 0), compare: w.baseline, reason: w.repair?.progress.reason });
      v.addClearing(w);
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
      await this.until(() => w.readDone, w, ['converted']);
      const read = { resync: 'resync read every block', repair: 'repair read every block', drain: 'dirty regions read' }[w.purpose];
      if (w.readDone) log.info(read, { volume: v.id, kind: w.kind, sentBytes: w.progress.sentBytes });
    } catch (err) {
      if (!this.stopped) log.error('walk failed; it starts again', { volume: v.id, kind: w.kind, error: (err as Error).message });
      // It never completes: out of the clearing list with it, or no drain could start again.
      const cancelled = w.cancelled;
      v.cancelWalk(w);
      if (!this.stopped && !cancelled) {
        if (w.purpose === 'resync') v.retryResync(w.kind, w.remote);
        else if (w.purpose === 'drain') v.requestDrain();
        await v.events.next(['stopped'], { timeoutMs: WALK_RETRY_MS });
      }
    } finally {
      v.endWalk(w);
      // A repair that did not read every block runs again (after a device reload, an error).
      if (!w.readDone) this.retryRepair(w);
    }
  }

  /** The walk of a repair stopped before its data was durable: run it again, or fail it when stopping. */
  private retryRepair(w: Walk): void {
    const job = w.repair;
    if (!job) return;
    w.repair = undefined;
    if (this.stopped) job.reject(new Error('the agent is stopping'));
    else this.v.requeueRepair(job);
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
    const limit = markLimit(info.ringCapacity, bs, MAX_OUTSTANDING_MARKS, MAX_OUTSTANDING_MARK_BYTES);
    for (let off = start, i = 0; off < end; off += bs, i++) {
      // Commits free the slots of converted marks.
      await this.until(() => v.marksOutstanding < limit, w, ['committed']);
      if (w.cancelled || this.stopped) return false;
      const len = Math.min(bs, end - off);
      if (!(await this.placeMark(w, window, off, len, expect?.[i]))) return false;
    }
    v.noteWindowPlaced(window);
    return true;
  }

  private async placeMark(w: Walk, window: WalkWindow, offset: number, length: number, expect: Buffer | undefined): Promise<boolean> {
    const v = this.v;
    for (;;) {
      if (w.cancelled || this.stopped) return false;
      const since = v.events.stamp;
      const placed = await v.placeMark(
        async () => {
          try {
            return await this.ctx.control.resyncMark(v.devIndex, offset, length);
          } catch (err) {
            if (!markRetryable(errnoCode(err))) throw err;
            return undefined;
          }
        },
        () => {
          const data = this.ctx.readVolume(v.spec.path, offset, length);
          data.catch(() => undefined); // the converter awaits it and reports a failure
          return { walk: w, window, block: Math.floor(offset / this.ctx.blockSize), data, expect };
        },
      );
      if (placed) return true;
      // A ring full of control records frees up with commits; a suspended table says nothing when it resumes.
      await v.events.next(['committed', 'mode', 'abandoned', 'stopped'], { since, timeoutMs: RETRY_MS });
    }
  }

  /** What the replica holds for each block of [start, end) before the marks, when known. */
  private async expectedHashes(w: Walk, start: number, end: number): Promise<Buffer[] | undefined> {
    const bs = this.ctx.blockSize;
    if (w.baseline === 'none') return undefined;
    const out: Buffer[] = [];
    if (w.baseline === 'zero') {
      for (let off = start; off < end; off += bs) out.push(zeroBlockHash(Math.min(bs, end - off)));
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

  /** The dirty regions of the device, read once it is out of BITMAP mode; undefined if stopped. */
  private async bitmapRanges(w: Walk): Promise<ByteRange[] | undefined> {
    const v = this.v;
    for (;;) {
      if (w.cancelled || this.stopped) return undefined;
      const since = v.events.stamp;
      try {
        const bitmap = await this.ctx.control.readBitmap(v.devIndex);
        return dirtyRanges(bitmap.data, bitmap.nbits, bitmap.granularity, v.spec.sizeBytes);
      } catch (err) {
        if (!bitmapReadRetryable(errnoCode(err))) throw err;
        // BITMAP mode ends with a MODE record; a suspended table resumes silently.
        await v.events.next(['mode', 'abandoned', 'stopped'], { since, timeoutMs: RETRY_MS });
      }
    }
  }

  /** The device's info once it takes marks (not in BITMAP mode, not suspended). */
  private async usableDevice(w: Walk): Promise<DeviceInfo | undefined> {
    const v = this.v;
    for (;;) {
      if (w.cancelled || this.stopped) return undefined;
      const since = v.events.stamp;
      const info = await this.deviceInfo();
      if (info && info.modeName !== 'bitmap' && !info.suspended) return info;
      await v.events.next(['mode', 'abandoned', 'stopped'], { since, timeoutMs: RETRY_MS });
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

  /** Waits until `done`, re-checking at each of `on`; a cancelled walk or a stop ends the wait. */
  private async until(done: () => boolean, w: Walk, on: readonly VolumeEvent[]): Promise<void> {
    while (!done() && !w.cancelled && !this.stopped) await this.v.events.next([...on, 'abandoned', 'cancelled', 'stopped']);
  }

  // ---- clearing bits once the data is committed ---------------------------------------------

  private async clearLoop(): Promise<void> {
    const v = this.v;
    while (!this.stopped) {
      const since = v.events.stamp;
      let failed = false;
      try {
        await this.clearCommitted();
      } catch (err) {
        failed = true;
        if (!this.stopped) log.warn('cannot clear dirty bits', { volume: v.id, error: (err as Error).message });
      }
      // A window is cleared once its marks are placed, converted and committed.
      const on: VolumeEvent[] = ['committed', 'converted', 'placed', 'cancelled', 'abandoned', 'stopped'];
      await v.events.next(on, { since, timeoutMs: failed ? CLEAR_RETRY_MS : undefined });
    }
  }

  private async clearCommitted(): Promise<void> {
    const v = this.v;
    for (const w of [...v.clearingWalks]) {
      if (w.cancelled) {
        v.removeClearing(w);
        this.retryRepair(w);
        continue;
      }
      while (w.windows.length > 0) {
        const win = w.windows[0];
        if (!win.complete || win.marksConverted < win.marksPlaced || win.streamSeq === undefined || win.streamSeq > v.committedStream) break;
        w.windows.shift();
        await this.clearWindow(win);
        if (w.purpose === 'resync' && w.wholeDevice) v.saveResyncCursor(w.kind, win.end);
      }
      if (w.placedAll && w.readDone && w.windows.length === 0 && v.committedStream >= w.lastStream) {
        if (w.purpose === 'resync' && w.progress.finishedMs === undefined) {
          v.finishResync(w.progress);
          log.info('resync complete: the receiver holds all of it', { volume: v.id, kind: w.kind, sentBytes: w.progress.sentBytes, seconds: ((w.progress.finishedMs ?? 0) - w.progress.startedMs) / 1000 });
        }
        const job = w.repair;
        if (job) {
          w.repair = undefined;
          job.progress.finishedMs = Date.now();
          log.info('repair complete: the receiver holds all of it', { volume: v.id, reason: job.progress.reason, sentBytes: w.progress.sentBytes, throughSeq: w.lastStream });
          job.resolve({ throughSeq: w.lastStream, sentBytes: w.progress.sentBytes });
        }
        v.removeClearing(w);
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
      if (!clearKeepsBits(code)) throw err;
      log.debug('dirty bits kept for a later drain', { volume: v.id, code, start: win.start, end: win.end });
    }
  }
}
