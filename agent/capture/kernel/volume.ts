import { log } from '../../../common/log';
import { START_STATES, type ByteRange, type DeviceMode, type KernelRecord, type StartState } from '../../../native/addon/ferry-abi';
import type { AccuracyName } from '../../../proto/types';
import type { CaptureMode, ProtectedVolume, RemoteHashes, RepairProgress, RepairResult, ResyncKind, ResyncProgress, VolumeCut } from '../types';
import { AccuracyTracker } from './accuracy';
import { BlockSet } from './block-set';
import { chooseWalk, modeChange, reloadPlan } from './decisions';
import type { DeviceNumber } from './devices';
import type { StreamLog } from './stream-log';
import { VolumeEvents, type VolumeEventWaits } from './volume-events';

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

/** What the walker takes to run next (see takeWalk). */
export type TakenWalk =
  | { purpose: 'resync'; kind: ResyncKind; remote: RemoteHashes | undefined; cursor: number; progress: ResyncProgress }
  | { purpose: 'repair'; job: RepairJob }
  | { purpose: 'drain' };

interface ResyncRequest {
  kind: ResyncKind;
  remote?: RemoteHashes;
  cursor: number;
  /** The agent started it (it brings the receiver's hashes). */
  ready: boolean;
}

export const DEVICE_MODE_TO_CAPTURE: Record<DeviceMode, CaptureMode> = {
  data: 'exact',
  metadata: 'approximate',
  bitmap: 'bitmap-draining',
  draining: 'bitmap-draining',
};

export interface VolumeInit {
  devIndex: number;
  generation: number;
  /** Kernel seq of the current load's START record. */
  loadFirstSeq: number;
  mode: DeviceMode;
  /** Stream seq the next stream record gets. */
  nextStream: number;
  /** Kernel seq the next record of the device should have. */
  firstKseq: number;
}

/**
 * The kernel source's state of one protected volume, and its only writer: stream numbering,
 * resync, repair and drain requests, the marks placed and not yet converted or committed, the
 * walks whose bits wait to be cleared, what points are worth. Transitions are methods; each
 * emits the event its waiters need (events).
 */
export class KernelVolume {
  private readonly emitter = new VolumeEvents();
  private index: number;
  private loadGeneration: number;
  private loadFirstSeq: number;
  private deviceMode: DeviceMode;
  /** The mode of the last MODE record: notes compare records with records, not with STATS. */
  private recordMode: DeviceMode;
  private next: number;
  /** Kernel seq the next record of the device should have (undefined: not known yet). */
  private expectKseq: number | undefined;
  private committed: number;
  private outstandingMarks = 0;
  private readonly tracker = new AccuracyTracker();
  private readonly marks = new Map<number, PendingMark>();
  /** Resolves once the mark ioctl in progress has registered its PendingMark. */
  private markPlacing: Promise<void> | undefined;
  /** Blocks written since the running compare walk started (they must be sent, not compared). */
  private touched: BlockSet | undefined;
  private walk: Walk | undefined;
  /** Walks whose windows still wait for their commit (bitmap clear, cursor). */
  private readonly clearing: Walk[] = [];
  /** The next resync to run. */
  private resyncRequest: ResyncRequest | undefined;
  private drainRequested = false;
  private resync: ResyncProgress | undefined;
  /** Repairs waiting for the walker, oldest first. */
  private readonly repairs: RepairJob[] = [];
  private repair: RepairProgress | undefined;
  private readonly tagCuts = new Map<number, VolumeCut>();
  private readonly tagWaiters = new Map<number, (cut: VolumeCut | Error) => void>();
  private isStopped = false;

  constructor(
    readonly spec: ProtectedVolume,
    readonly device: DeviceNumber,
    readonly log: StreamLog,
    /** Where the receiver's stream stood at attach. */
    readonly receiverDurable: number,
    init: VolumeInit,
    /** The receiver's hashes for resyncs the source starts itself (the last ones the agent gave). */
    private readonly remoteHashes: () => RemoteHashes | undefined = () => undefined,
  ) {
    this.index = init.devIndex;
    this.loadGeneration = init.generation;
    this.loadFirstSeq = init.loadFirstSeq;
    this.deviceMode = init.mode;
    this.recordMode = init.mode;
    this.next = init.nextStream;
    this.expectKseq = init.firstKseq;
    this.committed = receiverDurable;
  }

  get id(): string {
    return this.spec.id;
  }

  /** Waits for the volume's transitions. */
  get events(): VolumeEventWaits {
    return this.emitter;
  }

  get devIndex(): number {
    return this.index;
  }

  get generation(): number {
    return this.loadGeneration;
  }

  get mode(): DeviceMode {
    return this.deviceMode;
  }

  /** Stream seq the next stream record gets. */
  get nextStream(): number {
    return this.next;
  }

  /** Highest stream seq the receiver holds durably (committed). */
  get committedStream(): number {
    return this.committed;
  }

  /** Marks placed whose records are not committed yet (they hold ring slots). */
  get marksOutstanding(): number {
    return this.outstandingMarks;
  }

  get lastResync(): ResyncProgress | undefined {
    return this.resync;
  }

  /** The running repair, else the last one. */
  get lastRepair(): RepairProgress | undefined {
    return this.repair;
  }

  get stopped(): boolean {
    return this.isStopped;
  }

  /** A walk is running. */
  get walking(): boolean {
    return this.walk !== undefined;
  }

  /** A resync or a drain waits to run. */
  get requestPending(): boolean {
    return this.resyncRequest !== undefined || this.drainRequested;
  }

  /** Walks whose bits are not cleared yet, oldest first. */
  get clearingWalks(): readonly Walk[] {
    return this.clearing;
  }

  /** The device got another index (a table was loaded, a device came or went). */
  moveTo(devIndex: number): void {
    if (devIndex !== this.index) log.info('the volume\'s ferry device has a new index', { volume: this.id, from: this.index, to: devIndex });
    this.index = devIndex;
  }

  // ---- requests ------------------------------------------------------------------------------

  /** At attach: the resync the plan needs, run once the agent starts it (with the receiver's hashes). */
  needResync(kind: ResyncKind, cursor: number): void {
    this.tracker.resyncStarted();
    this.resyncRequest = { kind, cursor, ready: false };
    this.log.saveResync({ kind, cursor }, this.committed);
  }

  /** The agent starts a resync; the one the attach asked for resumes at its cursor. */
  startResync(kind: ResyncKind, remote: RemoteHashes): void {
    const cursor = this.resyncRequest?.kind === kind ? this.resyncRequest.cursor : 0;
    this.beginResync(kind, remote, cursor);
  }

  /** The stream no longer describes the replica: a new resync from the start. */
  requestResync(kind: ResyncKind, reason: string): void {
    log.warn(`volume needs a ${kind} resync`, { volume: this.id, reason });
    this.beginResync(kind, this.remoteHashes(), 0);
  }

  /** A resync walk failed: it runs again from the last saved cursor, unless another is pending. */
  retryResync(kind: ResyncKind, remote: RemoteHashes | undefined): void {
    this.resyncRequest ??= { kind, remote, cursor: this.log.resync.cursor, ready: true };
    this.emitter.emit('request');
  }

  private beginResync(kind: ResyncKind, remote: RemoteHashes | undefined, cursor: number): void {
    this.tracker.resyncStarted();
    this.resyncRequest = { kind, remote, cursor, ready: true };
    this.resync = { kind, doneBytes: cursor, totalBytes: kind === 'delta' ? 0 : this.spec.sizeBytes, sentBytes: 0, startedMs: Date.now() };
    this.log.saveResync({ kind, cursor }, this.committed);
    this.emitter.emit('request');
  }

  /** The device is (or was) in BITMAP mode: points are unusable until a drain covers this episode. */
  noteBitmapEpisode(): void {
    this.tracker.bitmapEntered();
  }

  /** The device's dirty bits are to be read back. */
  requestDrain(): void {
    this.drainRequested = true;
    this.emitter.emit('request');
  }

  queueRepair(job: RepairJob): void {
    this.repairs.push(job);
    this.emitter.emit('request');
  }

  /** A repair whose walk did not read every block runs again, first. */
  requeueRepair(job: RepairJob): void {
    job.progress.doneBytes = 0;
    job.progress.sentBytes = 0;
    this.repairs.unshift(job);
    this.emitter.emit('request');
  }

  /** The walk to run now, taken out of the requests (see chooseWalk). */
  takeWalk(): TakenWalk | undefined {
    const choice = chooseWalk({ resync: this.resyncRequest, repairsQueued: this.repairs.length, drainRequested: this.drainRequested, clearingWalks: this.clearing.length });
    switch (choice.run) {
      case 'resync': {
        const req = this.resyncRequest as ResyncRequest;
        this.resyncRequest = undefined;
        const size = this.spec.sizeBytes;
        const whole = req.kind !== 'delta';
        const cursor = whole ? Math.min(req.cursor, size) : 0;
        this.resync = { kind: req.kind, doneBytes: cursor, totalBytes: whole ? size : 0, sentBytes: 0, startedMs: Date.now() };
        return { purpose: 'resync', kind: req.kind, remote: req.remote, cursor, progress: this.resync };
      }
      case 'repair': {
        const job = this.repairs.shift() as RepairJob;
        this.tracker.resyncStarted();
        this.repair = job.progress;
        return { purpose: 'repair', job };
      }
      case 'drain':
        this.drainRequested = false;
        return { purpose: 'drain' };
      case 'none':
        return undefined;
    }
  }

  // ---- walks ---------------------------------------------------------------------------------

  beginWalk(w: Walk): void {
    this.walk = w;
    if (w.purpose === 'drain') w.covers = this.tracker.episodes;
  }

  endWalk(w: Walk): void {
    if (this.walk === w) this.walk = undefined;
    if (this.touched && !w.readDone) this.touched = undefined;
  }

  /** From now until the walk's data is read, blocks written are sent, not compared. */
  trackTouched(blockSize: number): void {
    this.touched = new BlockSet(blockSize, this.spec.sizeBytes);
  }

  noteTouched(offset: number, length: number): void {
    this.touched?.addRange(offset, length);
  }

  touchedSinceWalkStart(block: number): boolean {
    return this.touched?.has(block) ?? false;
  }

  /** The walk failed: it never completes. */
  cancelWalk(w: Walk): void {
    w.cancelled = true;
    this.emitter.emit('cancelled');
  }

  /** The walk's marks are about to be placed: it stays listed until its bits are cleared. */
  addClearing(w: Walk): void {
    this.clearing.push(w);
  }

  removeClearing(w: Walk): void {
    const i = this.clearing.indexOf(w);
    if (i >= 0) this.clearing.splice(i, 1);
    this.emitter.emit('cleared');
  }

  /**
   * Places one mark: `place` runs the ioctl (undefined: not placed, try later); the mark is
   * registered before anyone who meets its record in the stream looks for it (takeMark).
   */
  async placeMark(place: () => Promise<number | undefined>, mark: (kseq: number) => PendingMark): Promise<boolean> {
    let registered = (): void => undefined;
    this.markPlacing = new Promise<void>((resolve) => (registered = resolve));
    try {
      const kseq = await place();
      if (kseq === undefined) return false;
      const m = mark(kseq);
      this.marks.set(kseq, m);
      this.outstandingMarks++;
      m.walk.marksPlaced++;
      m.window.marksPlaced++;
      m.window.lastKseq = kseq;
      return true;
    } finally {
      this.markPlacing = undefined;
      registered();
    }
  }

  /** The mark whose RESYNC_MARK record has kernel seq `kseq`, if this agent placed it in this load. */
  async takeMark(kseq: number): Promise<PendingMark | undefined> {
    let mark = this.marks.get(kseq);
    if (!mark && this.markPlacing) {
      await this.markPlacing;
      mark = this.marks.get(kseq);
    }
    if (mark) this.marks.delete(kseq);
    return mark;
  }

  noteWindowPlaced(window: WalkWindow): void {
    window.complete = true;
    this.emitter.emit('placed');
  }

  /** A mark's data (or NOOP) is in the stream, its last stream seq `lastStream`. */
  noteMarkConverted(mark: PendingMark, lastStream: number, length: number, sentBytes: number, nextKseq: number): void {
    const w = mark.walk;
    w.progress.sentBytes += sentBytes;
    w.progress.doneBytes += length;
    w.marksConverted++;
    mark.window.marksConverted++;
    mark.window.streamSeq = lastStream;
    w.lastStream = lastStream;
    if (w.placedAll && w.marksConverted === w.marksPlaced) this.walkReadDone(w, nextKseq);
    this.emitter.emit('converted');
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
    this.emitter.emit('converted');
  }

  /** A whole-device resync window is durable: a restart resumes after it. */
  saveResyncCursor(kind: ResyncKind, cursor: number): void {
    this.log.saveResync({ kind, cursor }, this.committed);
  }

  /** The resync walk `progress` belongs to is durable at the receiver. */
  finishResync(progress: ResyncProgress): void {
    progress.finishedMs = Date.now();
    if (!this.resyncRequest) this.log.saveResync({ kind: 'none', cursor: 0 }, this.committed);
  }

  // ---- the stream ----------------------------------------------------------------------------

  /**
   * Gives a kernel record of this device its `width` stream seqs and returns the first. A START
   * of another load than the one attached to is a reload; a kernel seq that does not follow the
   * previous one is a gap: the volume needs a hash-compare resync.
   */
  numberRecord(rec: KernelRecord, width: number): number {
    if (rec.kind === 'start') {
      // The START of the load the agent attached to may come (again); any other is a new start.
      if (rec.offset !== this.loadGeneration || rec.seq !== this.loadFirstSeq) {
        this.loadFirstSeq = rec.seq;
        this.reloaded(rec.offset, START_STATES[rec.length] ?? 'unknown');
      }
      this.expectKseq = rec.seq;
    }
    if (this.expectKseq !== undefined && rec.seq !== this.expectKseq) this.requestResync('hash-compare', `kernel seq ${rec.seq} arrived where ${this.expectKseq} was expected`);
    this.expectKseq = rec.seq + 1;
    const first = this.next;
    this.next += width;
    return first;
  }

  /** A new table was loaded on the device while the agent ran (protect, unprotect, reload). */
  private reloaded(generation: number, startState: StartState): void {
    log.warn('the ferry device was loaded again', { volume: this.id, load: generation, start: startState });
    const walk = this.walk;
    const interrupted = walk?.purpose === 'resync' && !walk.readDone ? walk.kind : this.resyncRequest?.kind;
    this.abandonLoad('the device was reloaded before the tag reached the agent');
    this.loadGeneration = generation;
    const plan = reloadPlan(startState, generation, interrupted);
    if (plan.kind === 'drain') {
      if (plan.resumeResync) this.resyncRequest = { kind: plan.resumeResync, remote: this.remoteHashes(), cursor: this.log.resync.cursor, ready: true };
      this.tracker.bitmapEntered();
      this.requestDrain();
    } else {
      this.requestResync('hash-compare', plan.reason);
    }
  }

  /** A MODE record: the device's capture mode changed. */
  noteModeRecord(mode: DeviceMode): void {
    const from = this.recordMode;
    this.recordMode = mode;
    this.deviceMode = mode;
    const change = modeChange(from, mode);
    if (change.bitmapEpisode) this.tracker.bitmapEntered();
    if (change.note?.level === 'warn') log.warn(change.note.message, { volume: this.id });
    else if (change.note) log.info(change.note.message, { volume: this.id, from });
    if (change.drain) this.requestDrain();
    this.emitter.emit('mode');
  }

  /** The mode as the device reports it now (STATS), between MODE records. */
  refreshMode(mode: DeviceMode): void {
    this.deviceMode = mode;
  }

  /** Data was read back after the device's next kernel seq was `nextKseq`. */
  noteReadBack(nextKseq: number): void {
    this.tracker.readBack(nextKseq);
  }

  /** What a point cut right after the device's record `kseq` is worth. */
  accuracyAt(kseq: number): AccuracyName {
    return this.tracker.at(kseq);
  }

  /** The receiver holds the stream up to `streamSeq`; `marks` marks' records were among what was committed. */
  noteCommitted(streamSeq: number, marks: number): void {
    this.committed = Math.max(this.committed, streamSeq);
    this.log.noteCommitted(this.committed);
    this.outstandingMarks = Math.max(0, this.outstandingMarks - marks);
    this.emitter.emit('committed');
  }

  // ---- tags ----------------------------------------------------------------------------------

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

  // ---- reloads and stopping ------------------------------------------------------------------

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
    this.emitter.emit('abandoned');
  }

  /** The agent stops: walks end, queued repairs fail. */
  stop(): void {
    this.isStopped = true;
    this.abandonLoad('the agent is stopping');
    for (const job of this.repairs.splice(0)) job.reject(new Error('the agent is stopping'));
    this.emitter.emit('stopped');
  }

  /** Once the walker ended: repairs whose walks still waited for their commit fail. */
  failUnfinishedRepairs(): void {
    for (const w of this.clearing) {
      w.repair?.reject(new Error('the agent is stopping'));
      w.repair = undefined;
    }
  }
}
