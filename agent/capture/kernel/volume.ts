import { Signal } from '../../../common/signal';
import type { DeviceMode, ByteRange } from '../../../native/addon/ferry-abi';
import type { CaptureMode, ProtectedVolume, RemoteHashes, RepairProgress, RepairResult, ResyncKind, ResyncProgress, VolumeCut } from '../types';
import { AccuracyTracker } from './accuracy';
import type { BlockSet } from './block-set';
import type { DeviceNumber } from './devices';
import type { StreamLog } from './stream-log';

/** A repair asked for (CaptureSource.repair): block-aligned ranges, compared like a hash-compare resync. */
export interface RepairJob {
  ranges: ByteRange[];
  remote: RemoteHashes;
  progress: RepairProgress;
  resolve: (result: RepairResult) => void;
  reject: (err: Error) => void;
}

/** A run of resync marks over some ranges of a volume: a resync, a repair, or the drain of dirty bits. */
export interface Walk {
  purpose: 'resync' | 'repair' | 'drain';
  kind: ResyncKind;
  /** Where the marks go; filled from the bitmap at the start of a delta or drain. */
  ranges: ByteRange[];
  /** Whole-device walks persist a cursor so that a restart resumes them. */
  wholeDevice: boolean;
  /** zero: the replica is new (all zero); remote: the receiver's hashes; none: always send. */
  baseline: 'zero' | 'remote' | 'none';
  remote?: RemoteHashes;
  /** Bitmap episodes that were open when a drain started (see AccuracyTracker). */
  covers: number;
  progress: ResyncProgress;
  /** Windows whose bits are cleared (and cursor saved) once their last mark is committed. */
  windows: WalkWindow[];
  marksPlaced: number;
  marksConverted: number;
  placedAll: boolean;
  /** Every mark was converted: the accuracy tracker was told. */
  readDone: boolean;
  /** Stream seq of the last mark converted. */
  lastStream: number;
  cancelled: boolean;
  /** The repair this walk runs (purpose repair). */
  repair?: RepairJob;
}

export interface WalkWindow {
  /** The bitmap epoch read before the window's first mark (CLEAR_BITMAP refuses a stale one). */
  epoch: number;
  start: number;
  end: number;
  lastKseq: number;
  marksPlaced: number;
  marksConverted: number;
  /** Every mark of the window is placed. */
  complete: boolean;
  /** Stream seq of the window's latest converted mark. */
  streamSeq?: number;
}

/** A mark the walker placed: the data read after it, and what to compare it with. */
export interface PendingMark {
  walk: Walk;
  window: WalkWindow;
  block: number;
  data: Promise<Buffer>;
  /** The block hash the replica has before the mark (hash-compare, new replica). */
  expect?: Buffer;
}

export const DEVICE_MODE_TO_CAPTURE: Record<DeviceMode, CaptureMode> = {
  data: 'exact',
  metadata: 'approximate',
  bitmap: 'bitmap-draining',
  draining: 'bitmap-draining',
};

/** The kernel source's state of one protected volume. */
export class KernelVolume {
  devIndex: number;
  generation: number;
  /** Kernel seq of the current load's START record. */
  loadFirstSeq: number;
  mode: DeviceMode;
  /** Stream seq the next stream record gets. */
  nextStream: number;
  /** Kernel seq the next record of the device should have (undefined: not known yet). */
  expectKseq: number | undefined;
  committedStream = 0;
  outstandingMarks = 0;
  readonly tracker = new AccuracyTracker();
  readonly marks = new Map<number, PendingMark>();
  /** Resolves once the mark ioctl in progress has registered its PendingMark. */
  markPlacing: Promise<void> | undefined;
  /** Blocks written since the running compare walk started (they must be sent, not compared). */
  touched: BlockSet | undefined;
  walk: Walk | undefined;
  /** Walks whose windows still wait for their commit (bitmap clear, cursor). */
  readonly clearing: Walk[] = [];
  /** The next resync to run; `ready` once the agent started it (it brings the receiver's hashes). */
  resyncRequest: { kind: ResyncKind; remote?: RemoteHashes; cursor: number; ready: boolean } | undefined;
  drainRequested = false;
  lastResync: ResyncProgress | undefined;
  /** Repairs waiting for the walker, oldest first. */
  readonly repairs: RepairJob[] = [];
  lastRepair: RepairProgress | undefined;
  readonly tagCuts = new Map<number, VolumeCut>();
  readonly tagWaiters = new Map<number, (cut: VolumeCut | Error) => void>();
  readonly changed = new Signal();

  constructor(
    readonly spec: ProtectedVolume,
    readonly device: DeviceNumber,
    readonly log: StreamLog,
    readonly receiverDurable: number,
    init: { devIndex: number; generation: number; loadFirstSeq: number; mode: DeviceMode; nextStream: number; firstKseq: number },
  ) {
    this.devIndex = init.devIndex;
    this.generation = init.generation;
    this.loadFirstSeq = init.loadFirstSeq;
    this.mode = init.mode;
    this.nextStream = init.nextStream;
    this.expectKseq = init.firstKseq;
    this.committedStream = receiverDurable;
  }

  get id(): string {
    return this.spec.id;
  }

  /** Remembers a converted TAG record's cut and wakes whoever waits for it. */
  noteTag(kseq: number, cut: VolumeCut): void {
    const waiter = this.tagWaiters.get(kseq);
    if (waiter) {
      this.tagWaiters.delete(kseq);
      waiter(cut);
      return;
    }
    this.tagCuts.set(kseq, cut);
    if (this.tagCuts.size > 64) this.tagCuts.delete(this.tagCuts.keys().next().value as number);
  }

  /** The cut of the TAG record with kernel seq `kseq`, once it has been converted. */
  waitTag(kseq: number, timeoutMs: number): Promise<VolumeCut> {
    const known = this.tagCuts.get(kseq);
    if (known) {
      this.tagCuts.delete(kseq);
      return Promise.resolve(known);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.tagWaiters.delete(kseq);
        reject(new Error(`volume ${this.id}: the tag did not reach the agent within ${timeoutMs} ms (is the receiver slow?)`));
      }, timeoutMs);
      this.tagWaiters.set(kseq, (cut) => {
        clearTimeout(timer);
        if (cut instanceof Error) reject(cut);
        else resolve(cut);
      });
    });
  }

  /**
   * Every mark of `w` was converted (the last one at a point where the device's next kernel
   * seq was at most `nextKseq`): the stream from there on no longer lacks its data.
   */
  walkReadDone(w: Walk, nextKseq: number): void {
    if (w.readDone) return;
    w.readDone = true;
    if (this.touched && this.walk === w) this.touched = undefined;
    if (w.purpose === 'drain') this.tracker.drainRead(w.covers, nextKseq);
    else if (this.resyncRequest) this.tracker.readBack(nextKseq);
    else this.tracker.resyncRead(nextKseq);
    this.changed.notify();
  }

  /** The device was reloaded: what was in flight in the old load never comes. */
  abandonLoad(why: string): void {
    for (const [kseq, waiter] of this.tagWaiters) {
      this.tagWaiters.delete(kseq);
      waiter(new Error(`volume ${this.id}: ${why}`));
    }
    this.tagCuts.clear();
    this.marks.clear();
    this.outstandingMarks = 0;
    if (this.walk) this.walk.cancelled = true;
    for (const w of this.clearing) w.cancelled = true;
    this.changed.notify();
  }
}
