import { BLOCK_HASH_BYTES, zeroBlockHash } from '../../common/block-hash';
import { BufferPool, SharedLease } from '../../common/buffer-pool';
import { log } from '../../common/log';
import { nowUs } from '../../common/time';
import { olderCapture, oldestCapture } from '../../common/capture-time';
import { AccuracyName } from '../../proto/types';
import { BlockHasher, sharedBuffer } from './block-hasher';
import { ChunkReadTimes } from './read-times';
import { BlockEntry, ResyncState, ScanTable } from './scan-table';
import { Signal } from '../../common/signal';
import { VolumeReader } from './volume-reader';
import { blockRanges, rangeBytes } from './ranges';
import { splitReads, type PassScope, type ScopedRead } from './pass-scope';
import type {
  ByteRange,
  CaptureBatch,
  CaptureMode,
  CaptureSource,
  CapturedRecord,
  ProtectedVolume,
  RemoteHashes,
  RepairProgress,
  RepairResult,
  ResyncKind,
  ResyncNeed,
  ResyncProgress,
  SettleResult,
  TagOptions,
  VolumeCut,
} from './types';

/** Bytes read (and hashed) per step of a pass. */
const CHUNK_BYTES = 4 * 1024 * 1024;
/** Changed blocks are copied into slabs of this size (pooled)... */
const SLAB_BYTES = 1024 * 1024;
/** ...or, when fewer bytes than this are left to copy, into a plain buffer of their size. */
const SMALL_SLAB_BYTES = 256 * 1024;
const NOT_LOGGED = Promise.resolve();
/** Compact the scan table's log after this many entries (or on the timer). */
const COMPACT_LOG_ENTRIES = 65536;
const COMPACT_INTERVAL_MS = 10_000;

export interface ScanOptions {
  stateDirOf: (volumeId: string) => string;
  intervalMs: number;
  blockSize: number;
  /** Data emitted but not yet committed, per volume, above which scanning pauses. */
  maxPendingBytes: number;
}

/**
 * Orders pass starts and ends against settle requests strictly (a clock may read the same
 * value twice): a pass that started at or after a request's tick began after it.
 */
let passClock = 0;
const passTick = (): number => ++passClock;

/** A chunk read in flight, and when it was issued. */
interface ChunkRead {
  offset: number;
  issuedUs: number;
  data: Promise<Buffer>;
}

interface QueuedRecord {
  record: CapturedRecord;
  entry: BlockEntry | undefined;
  /** Where the pass was when it emitted this record (start of its chunk). */
  passOffset: number;
  /** The block hash in the table's log, durable: the record may be handed out once this resolves. */
  logged: Promise<void>;
}

/** A handed-out record as the source remembers it until commit: no data, just bookkeeping. */
interface OutstandingRecord {
  seq: number;
  bytes: number;
  entry: BlockEntry | undefined;
  passOffset: number;
}

interface ResyncRun {
  kind: ResyncKind;
  remote: RemoteHashes;
  progress: ResyncProgress;
  /** Seq of the last record of the resync pass, once it has finished. */
  doneSeq: number;
  /** A resync of these reads only (a delta of known ranges), not of the whole volume. */
  reads?: ScopedRead[];
}

/** A repair asked for: block-aligned ranges compared with the receiver's hashes (see CaptureSource.repair). */
interface RepairJob {
  ranges: ByteRange[];
  remote: RemoteHashes;
  progress: RepairProgress;
  resolve: (result: RepairResult) => void;
  reject: (err: Error) => void;
}

/** One volume under scan capture: a file handle, its scan table and its queue of records. */
class ScanVolume {
  nextSeq: number;
  readonly queue: QueuedRecord[] = [];
  /** Handed out, not yet committed, oldest first. */
  readonly outstanding: OutstandingRecord[] = [];
  pendingBytes = 0;
  resync: ResyncRun | undefined;
  /** Repairs waiting for the scan loop, oldest first; they run between passes. */
  readonly repairs: RepairJob[] = [];
  /** The repair putting its blocks into the stream now (points are not usable meanwhile). */
  repairing: RepairJob | undefined;
  lastRepair: RepairJob | undefined;
  /** Set by `settle`: a pass that started before this tick does not count. */
  settleRequestedTick = 0;
  lastPassStartTick = 0;
  lastPassEndTick = 0;
  passOffset = 0;
  /** Bytes read back by passes (not repairs), since the volume was attached. */
  readBytes = 0;
  /** When each chunk was last read: a change found in a chunk may date back to its previous read. */
  readonly readTimes: ChunkReadTimes;
  readonly room = new Signal();
  readonly wake = new Signal();
  readonly passDone = new Signal();
  /** Two chunk buffers, shared with the hash worker: one being hashed, one being read into. */
  private readonly buffers = [sharedBuffer(CHUNK_BYTES), sharedBuffer(CHUNK_BYTES)];

  constructor(
    readonly spec: ProtectedVolume,
    readonly table: ScanTable,
    private readonly reader: VolumeReader,
    receiverDurableSeq: number,
    private readonly opts: ScanOptions,
    private readonly hasher: BlockHasher,
    /** Memory for the changed blocks of a chunk, reused once the pipeline has encoded them. */
    private readonly slabs: BufferPool,
    private readonly emitted: () => void,
    /** Passes read only what the scope hands them (ebpf); without one they read the whole volume. */
    private readonly scope?: PassScope,
  ) {
    this.nextSeq = receiverDurableSeq + 1;
    // Nothing this process read vouches for the volume before it started capturing.
    this.readTimes = new ChunkReadTimes(Math.ceil(spec.sizeBytes / CHUNK_BYTES), nowUs());
  }

  get blockSize(): number {
    return this.opts.blockSize;
  }

  /** A fresh replica reads as zeroes: tell the table so that zero blocks are never sent. */
  assumeZeroReplica(): void {
    for (let b = 0; b < this.table.blocks; b++) {
      const len = Math.min(this.blockSize, this.spec.sizeBytes - b * this.blockSize);
      this.table.noteReceiverHas(b, zeroBlockHash(len));
    }
  }

  /** A resync or a repair is putting data into the stream: points cut now are not usable. */
  get unusable(): boolean {
    return this.resync !== undefined || this.repairing !== undefined;
  }

  async run(isClosed: () => boolean): Promise<void> {
    while (!isClosed()) {
      const repair = this.resync ? undefined : this.repairs.shift();
      if (repair) await this.runRepair(repair, isClosed);
      if (isClosed()) return;
      const started = Date.now();
      await this.pass(isClosed);
      if (isClosed()) return;
      if (this.settleRequestedTick > this.lastPassStartTick || this.repairs.length > 0) continue;
      if (this.scope) {
        // The scope's owner wakes the loop when it adds ranges.
        if (!this.scope.hasWork) await this.wake.wait(this.opts.intervalMs);
        continue;
      }
      const wait = started + this.opts.intervalMs - Date.now();
      if (wait > 0) await this.wake.wait(wait);
    }
  }

  /**
   * A hash-compare pass over the repair's ranges only: each block takes the receiver's hash as
   * what the receiver holds, and the blocks whose data differs are put into the stream.
   */
  private async runRepair(job: RepairJob, isClosed: () => boolean): Promise<void> {
    const { progress } = job;
    this.repairing = job;
    this.lastRepair = job;
    progress.startedMs = Date.now();
    log.info('repair started', { volume: this.spec.id, reason: progress.reason, ranges: job.ranges.length, bytes: progress.totalBytes });
    try {
      // The receiver's hashes must cover every record the stream has given it so far: with
      // nothing in flight its answer (given once it applied what it accepted) describes them all.
      // The scan loop runs this repair, so nothing else is emitted until it ends.
      while ((this.queue.length > 0 || this.outstanding.length > 0) && !isClosed()) await this.room.wait(1000);
      let lastSeq = 0;
      for (const range of job.ranges) {
        const end = range.offset + range.length;
        for (let offset = range.offset; offset < end; ) {
          while (this.pendingBytes >= this.opts.maxPendingBytes && !isClosed()) await this.room.wait(1000);
          if (isClosed()) throw new Error('the agent is stopping');
          const length = Math.min(CHUNK_BYTES, end - offset);
          await this.learnReceiverHashes(job.remote, offset, length);
          const data = await this.read(offset, length, this.buffers[0]);
          const before = this.nextSeq;
          progress.sentBytes += await this.scanChunk(offset, data, 'none');
          if (this.nextSeq > before) lastSeq = this.nextSeq - 1;
          progress.doneBytes += length;
          offset += length;
        }
      }
      const throughSeq = lastSeq > 0 ? lastSeq : this.nextSeq - 1;
      this.repairing = undefined;
      void this.whenCommitted(throughSeq, isClosed).then(
        () => {
          progress.finishedMs = Date.now();
          log.info('repair complete: the receiver holds all of it', { volume: this.spec.id, reason: progress.reason, sentBytes: progress.sentBytes, throughSeq });
          job.resolve({ throughSeq, sentBytes: progress.sentBytes });
        },
        (err: unknown) => job.reject(err as Error),
      );
    } catch (err) {
      this.repairing = undefined;
      if (!isClosed()) log.warn('repair failed', { volume: this.spec.id, reason: progress.reason, error: (err as Error).message });
      job.reject(err as Error);
    }
  }

  /** Every block of [offset, offset + length) takes the receiver's hash, known or not. */
  private async learnReceiverHashes(remote: RemoteHashes, offset: number, length: number): Promise<void> {
    const first = offset / this.blockSize;
    const count = Math.ceil(length / this.blockSize);
    const hashes = await remote(this.spec.id, offset, this.blockSize, count);
    for (let i = 0; i < count; i++) {
      const h = hashes.subarray(i * BLOCK_HASH_BYTES, (i + 1) * BLOCK_HASH_BYTES);
      // A short answer: an impossible hash makes the block be sent, which is always safe.
      this.table.noteReceiverHas(first + i, h.length === BLOCK_HASH_BYTES ? h : Buffer.alloc(BLOCK_HASH_BYTES));
    }
  }

  private async whenCommitted(seq: number, isClosed: () => boolean): Promise<void> {
    while (this.table.committedSeq < seq) {
      if (isClosed()) throw new Error('the agent is stopping');
      await this.room.wait(1000);
    }
  }

  /** Rejects the repairs not started yet (the agent is stopping). */
  dropRepairs(err: Error): void {
    for (const job of this.repairs.splice(0)) job.reject(err);
  }

  private async pass(isClosed: () => boolean): Promise<void> {
    const resync = this.resync;
    if (resync?.reads) return this.scopedPass(isClosed, resync.reads, resync);
    if (!resync && this.scope) return this.scopedPass(isClosed, this.scope.take(CHUNK_BYTES), undefined);
    const startOffset = resync ? Math.min(this.table.resync.cursor, this.spec.sizeBytes) : 0;
    this.lastPassStartTick = passTick();
    // Read-ahead: the next chunk is read (thread pool) while this one is hashed.
    let ahead: ChunkRead | undefined;
    let flip = 0;
    const readChunk = (offset: number): ChunkRead => ({
      offset,
      issuedUs: nowUs(),
      data: this.read(offset, Math.min(CHUNK_BYTES, this.spec.sizeBytes - offset), this.buffers[flip++ % 2]),
    });
    for (let offset = startOffset - (startOffset % CHUNK_BYTES); offset < this.spec.sizeBytes; offset += CHUNK_BYTES) {
      if (isClosed()) {
        await ahead?.data.catch(() => undefined);
        return;
      }
      if (!resync && this.settleRequestedTick > this.lastPassStartTick) {
        // An app-consistent tag wants a pass that began after the freeze: start over.
        await ahead?.data.catch(() => undefined);
        ahead = undefined;
        this.lastPassStartTick = passTick();
        offset = -CHUNK_BYTES;
        continue;
      }
      this.passOffset = offset;
      const length = Math.min(CHUNK_BYTES, this.spec.sizeBytes - offset);
      if (resync?.kind === 'hash-compare') await this.learnRemoteHashes(resync.remote, offset, length);
      const current = ahead?.offset === offset ? ahead : readChunk(offset);
      const data = await current.data;
      const next = offset + CHUNK_BYTES;
      ahead = next < this.spec.sizeBytes ? readChunk(next) : undefined;
      this.readBytes += length;
      // Read and hashed while the changes before it are on their way: once they are acknowledged,
      // only the copy and the log sync stand between the room and this chunk's records.
      const hashes = await this.hasher.hash(data, this.blockSize);
      while (this.pendingBytes >= this.opts.maxPendingBytes && !isClosed()) await this.room.wait(1000);
      if (isClosed()) {
        await ahead?.data.catch(() => undefined);
        return;
      }
      await this.scanChunk(offset, data, resync ? 'none' : 'approximate', current.issuedUs, undefined, hashes);
      if (resync) resync.progress.doneBytes = offset + length;
    }
    await ahead?.data.catch(() => undefined);
    this.passOffset = this.spec.sizeBytes;
    this.lastPassEndTick = passTick();
    if (resync) this.finishResync(resync, 'resync pass read the whole volume');
    this.passDone.notify();
  }

  /**
   * A pass over `reads` only: the ranges a scope reported written, or those of a scoped resync.
   * A change found dates back to its read's `sinceUs` (when the write happened).
   */
  private async scopedPass(isClosed: () => boolean, reads: readonly ScopedRead[], resync: ResyncRun | undefined): Promise<void> {
    this.lastPassStartTick = passTick();
    const scope = this.scope;
    let next: Promise<Buffer> | undefined;
    let flip = 0;
    const readAt = (i: number): Promise<Buffer> => this.read(reads[i].offset, reads[i].length, this.buffers[flip++ % 2]);
    for (let i = 0; i < reads.length; i++) {
      while (this.pendingBytes >= this.opts.maxPendingBytes && !isClosed()) await this.room.wait(1000);
      if (isClosed()) {
        await next?.catch(() => undefined);
        if (!resync) scope?.giveBack(reads.slice(i));
        return;
      }
      const read = reads[i];
      this.passOffset = read.offset;
      const data = await (next ?? readAt(i));
      next = i + 1 < reads.length ? readAt(i + 1) : undefined;
      this.readBytes += read.length;
      await this.scanChunk(read.offset, data, resync ? 'none' : 'approximate', undefined, read.sinceUs);
      if (resync) resync.progress.doneBytes += read.length;
      else scope?.done(read);
    }
    this.passOffset = this.spec.sizeBytes;
    this.lastPassEndTick = passTick();
    if (resync) this.finishResync(resync, 'resync pass read its ranges');
    this.passDone.notify();
  }

  private finishResync(resync: ResyncRun, what: string): void {
    resync.doneSeq = this.nextSeq - 1;
    this.resync = undefined;
    log.info(what, { volume: this.spec.id, kind: resync.kind, sentBytes: resync.progress.sentBytes, doneSeq: resync.doneSeq });
    this.finishedResync = resync;
    this.noteResyncDurable();
  }

  /** The ranges of queued and handed-out records not committed yet (what a restart must read again). */
  uncommittedRanges(): ByteRange[] {
    const ranges: ByteRange[] = [];
    for (const q of this.queue) if (q.record.length > 0) ranges.push({ offset: q.record.offset, length: q.record.length });
    for (const o of this.outstanding) if (o.entry) ranges.push({ offset: o.entry.block * this.blockSize, length: o.bytes });
    return ranges;
  }

  /** The last finished resync, kept until its records are committed (see persistedResync). */
  finishedResync: ResyncRun | undefined;

  private read(offset: number, length: number, into: Buffer): Promise<Buffer> {
    return this.reader.read(offset, length, into);
  }

  /** Earliest moment a change not yet handed out may have happened: queued, or not seen yet. */
  unsentSinceUs(): number {
    let oldest = this.scope ? this.scope.unsentSinceUs() : this.readTimes.oldest();
    for (const q of this.queue) oldest = olderCapture(oldest, q.record.captureTimeUs);
    return oldest;
  }

  /** How far the current pass has read, for a settle that wants a pass begun at tick `sinceTick`. */
  passProgress(sinceTick: number): number {
    return this.lastPassStartTick >= sinceTick ? Math.min(this.passOffset, this.spec.sizeBytes) : 0;
  }

  close(): Promise<void> {
    this.table.close();
    return this.reader.close();
  }

  /** Hash-compare: blocks the table does not know yet take the receiver's hash. */
  private async learnRemoteHashes(remote: RemoteHashes, offset: number, length: number): Promise<void> {
    const first = offset / this.blockSize;
    const count = Math.ceil(length / this.blockSize);
    let unknown = false;
    for (let b = first; b < first + count; b++) if (!this.table.isKnown(b)) unknown = true;
    if (!unknown) return;
    const hashes = await remote(this.spec.id, offset, this.blockSize, count);
    for (let i = 0; i < count; i++) {
      if (!this.table.isKnown(first + i)) this.table.noteReceiverHas(first + i, hashes.subarray(i * BLOCK_HASH_BYTES, (i + 1) * BLOCK_HASH_BYTES));
    }
  }

  /**
   * Emits the blocks of a chunk whose hash the stream does not carry yet; returns their bytes.
   * `readUs`: when the read of this whole chunk was issued (a pass), so that a write after it is
   * left to the next pass; a repair reads parts of chunks and leaves the passes' record alone.
   */
  private async scanChunk(offset: number, data: Buffer, accuracy: AccuracyName, readUs?: number, sinceUs?: number, knownHashes?: Buffer): Promise<number> {
    const hashes = knownHashes ?? (await this.hasher.hash(data, this.blockSize));
    // A change found now happened after the previous read of this chunk saw the old contents:
    // that is the earliest moment it could have happened, so the RPO counts from there
    // (unless the caller knows when: a tracked write's time).
    const chunk = Math.floor(offset / CHUNK_BYTES);
    const captureTimeUs = sinceUs ?? this.readTimes.get(chunk);
    if (readUs !== undefined) this.readTimes.set(chunk, readUs);
    const changed: number[] = [];
    let total = 0;
    for (let start = 0, i = 0; start < data.length; start += this.blockSize, i++) {
      if (this.table.sentMatches((offset + start) / this.blockSize, hashes.subarray(i * BLOCK_HASH_BYTES, (i + 1) * BLOCK_HASH_BYTES))) continue;
      changed.push(i);
      total += Math.min(this.blockSize, data.length - start);
    }
    if (total === 0) return 0;
    // The changed blocks are copied end to end into pooled slabs (the records are views into
    // them), each given back once every record in it has been encoded into a frame. Slabs are
    // small next to a chunk so that sparse changes do not hold whole chunks of memory.
    let slab: SharedLease | undefined;
    let left = total;
    const entries: BlockEntry[] = [];
    const first = this.queue.length;
    let at = 0;
    for (const i of changed) {
      const start = i * this.blockSize;
      const block = (offset + start) / this.blockSize;
      const blockBytes = Math.min(this.blockSize, data.length - start);
      if (!slab || at + blockBytes > slab.buffer.length) {
        slab?.seal();
        slab = new SharedLease(this.slabs.take(Math.max(blockBytes, Math.min(SLAB_BYTES, left))));
        at = 0;
      }
      const copy = slab.buffer;
      const length = data.copy(copy, at, start, start + blockBytes);
      left -= length;
      const hash = hashes.subarray(i * BLOCK_HASH_BYTES, (i + 1) * BLOCK_HASH_BYTES);
      this.table.noteSent(block, hash);
      const seq = this.nextSeq++;
      const record: CapturedRecord = { volumeId: this.spec.id, seq, kind: 'write', offset: offset + start, length, captureTimeUs, data: copy.subarray(at, at + length), release: slab.user(), accuracy };
      at += length;
      const entry = { seq, block, hash };
      entries.push(entry);
      this.queue.push({ record, entry, passOffset: offset, logged: NOT_LOGGED });
    }
    slab?.seal();
    // The hashes are logged and synced now, while the records wait in the queue, so that handing
    // them out (which must wait for that) seldom waits; a sync covers everything appended before it.
    const logged = this.table.log(entries);
    logged.catch(() => undefined); // awaited (and reported) by `next`
    for (let q = first; q < this.queue.length; q++) this.queue[q].logged = logged;
    this.pendingBytes += total;
    if (this.resync) this.resync.progress.sentBytes += total;
    this.emitted();
    return total;
  }

  /** Resync state as it may be persisted: only what the receiver already holds durably. */
  persistedResync(): ResyncState {
    const oldest = this.outstanding[0] ?? this.queue[0];
    const running = this.resync;
    if (running) return { kind: running.kind, cursor: oldest ? oldest.passOffset : this.passOffset, doneSeq: 0 };
    const finished = this.finishedResync;
    if (finished && this.table.committedSeq < finished.doneSeq) {
      return { kind: finished.kind, cursor: oldest ? oldest.passOffset : this.spec.sizeBytes, doneSeq: 0 };
    }
    return { kind: 'none', cursor: 0, doneSeq: finished?.doneSeq ?? this.table.resync.doneSeq };
  }

  /** After a commit or the end of a pass: note how far the resync is durable (a restart resumes there). */
  noteResyncDurable(): void {
    const finished = this.finishedResync;
    if (finished && finished.progress.finishedMs === undefined && this.table.committedSeq >= finished.doneSeq) {
      finished.progress.finishedMs = Date.now();
      log.info('resync complete: the receiver holds all of it', { volume: this.spec.id, kind: finished.kind, doneSeq: finished.doneSeq });
    }
    if (!this.resync && this.table.resync.kind === 'none') return;
    const state = this.persistedResync();
    if (state.kind === this.table.resync.kind && state.cursor === this.table.resync.cursor && state.doneSeq === this.table.resync.doneSeq) return;
    this.table.logResync(state, this.table.committedSeq);
  }

  compact(): void {
    const resync = this.persistedResync();
    const saved = this.table.resync;
    this.table.resync = resync;
    // Queued records are logged already (scanChunk): they stay in the log, after the handed-out ones.
    const logged = [...this.outstanding, ...this.queue].flatMap((q) => (q.entry ? [q.entry] : []));
    if (!this.table.compact(logged)) this.table.resync = saved;
  }
}

/**
 * Driverless capture: every `intervalMs` each volume is read in blocks, hashed, and compared
 * with what the receiver holds (or will hold); changed blocks become write records. Points
 * are approximate (a pass is not an instant) unless the volume was frozen for the pass.
 */
export class ScanSource implements CaptureSource {
  readonly kind = 'scan' as const;
  private readonly volumes = new Map<string, ScanVolume>();
  private readonly batches = new Map<number, Array<{ volume: ScanVolume; items: OutstandingRecord[] }>>();
  private nextBatchId = 1;
  private closed = false;
  private readonly available = new Signal();
  private readonly loops: Array<Promise<void>> = [];
  private compactTimer: NodeJS.Timeout | undefined;
  private rr = 0;
  private readonly hasher = new BlockHasher();
  private readonly slabs: BufferPool;

  constructor(private readonly opts: ScanOptions) {
    // The queue holds up to maxPendingBytes of changed blocks, and a chunk's more.
    this.slabs = new BufferPool(SLAB_BYTES, Math.ceil((opts.maxPendingBytes + CHUNK_BYTES) / SLAB_BYTES), SMALL_SLAB_BYTES);
  }

  async attach(spec: ProtectedVolume, receiverDurableSeq: number): Promise<ResyncNeed> {
    const { need } = await this.open(spec, receiverDurableSeq);
    if (need.kind === 'none') this.startCapture(spec.id);
    return need;
  }

  /**
   * Opens a volume's scan table and says what the table alone asks for. Sources built on these
   * passes (ebpf) give a `scope`, may ask for more, and start the volume themselves (startCapture
   * or startResync).
   */
  async open(spec: ProtectedVolume, receiverDurableSeq: number, scope?: PassScope): Promise<{ need: ResyncNeed; stale: boolean }> {
    if (this.volumes.has(spec.id)) throw new Error(`volume ${spec.id} is already attached`);
    const reader = await VolumeReader.open(spec);
    const { table, stale } = ScanTable.open(this.opts.stateDirOf(spec.id), spec.sizeBytes, this.opts.blockSize, receiverDurableSeq);
    const volume = new ScanVolume(spec, table, reader, receiverDurableSeq, this.opts, this.hasher, this.slabs, () => this.available.notify(), scope);
    this.volumes.set(spec.id, volume);
    let need: ResyncNeed;
    if (stale && receiverDurableSeq === 0) {
      volume.assumeZeroReplica();
      need = { kind: 'full', reason: 'the replica is new' };
    } else if (stale) {
      need = { kind: 'hash-compare', reason: "no scan table describes the receiver's copy (unclean stop, another machine, or a receiver restore)" };
    } else if (table.resync.kind !== 'none') {
      need = { kind: table.resync.kind, reason: `resuming the interrupted ${table.resync.kind} resync at byte ${table.resync.cursor}` };
    } else {
      need = { kind: 'none', reason: 'the scan table matches the receiver' };
    }
    if (!this.compactTimer) {
      this.compactTimer = setInterval(() => this.compactAll(), COMPACT_INTERVAL_MS);
      this.compactTimer.unref();
    }
    return { need, stale };
  }

  /** Starts the passes of a volume that needs no resync. */
  startCapture(volumeId: string): void {
    this.startLoop(this.volume(volumeId));
  }

  private startLoop(volume: ScanVolume): void {
    this.loops.push(
      volume.run(() => this.closed).catch((err: unknown) => {
        if (!this.closed) log.error('scan stopped', { volume: volume.spec.id, error: (err as Error).message });
      }),
    );
  }

  /**
   * Starts a resync of the whole volume, or (`ranges`) a delta of those ranges only: their
   * blocks are compared with what the scan table says the receiver holds.
   */
  startResync(volumeId: string, kind: ResyncKind, remote: RemoteHashes, ranges?: readonly ByteRange[]): void {
    const volume = this.volume(volumeId);
    if (ranges) {
      const blocks = blockRanges(ranges, this.opts.blockSize, volume.spec.sizeBytes);
      volume.table.resync = { kind, cursor: 0, doneSeq: 0 };
      const reads = splitReads(blocks, CHUNK_BYTES, nowUs());
      volume.resync = { kind, remote, doneSeq: 0, reads, progress: { kind, doneBytes: 0, totalBytes: rangeBytes(blocks), sentBytes: 0, startedMs: Date.now() } };
    } else {
      const resumeAt = volume.table.resync.kind === kind ? volume.table.resync.cursor : 0;
      volume.table.resync = { kind, cursor: resumeAt, doneSeq: 0 };
      volume.resync = { kind, remote, doneSeq: 0, progress: { kind, doneBytes: resumeAt, totalBytes: volume.spec.sizeBytes, sentBytes: 0, startedMs: Date.now() } };
    }
    volume.compact();
    this.startLoop(volume);
  }

  /** Bytes the volume's passes have read back since it was attached. */
  readBytes(volumeId: string): number {
    return this.volume(volumeId).readBytes;
  }

  /**
   * What a clean stop leaves unsent: the ranges of records not committed and, while a scoped
   * resync runs, all of its ranges. (Ranges a scope still holds are its owner's to keep.)
   */
  unsentRanges(volumeId: string): ByteRange[] {
    const v = this.volume(volumeId);
    const ranges = v.uncommittedRanges();
    for (const r of v.resync?.reads ?? []) ranges.push({ offset: r.offset, length: r.length });
    return ranges;
  }

  /** The table's resync state as the volume was opened with (an interrupted resync). */
  openedResync(volumeId: string): ResyncState {
    return this.volume(volumeId).table.resync;
  }

  /** Wakes a volume's passes (its scope has new ranges). */
  wake(volumeId: string): void {
    this.volumes.get(volumeId)?.wake.notify();
  }

  resyncProgress(volumeId: string): ResyncProgress | undefined {
    const volume = this.volumes.get(volumeId);
    return volume?.resync?.progress ?? volume?.finishedResync?.progress;
  }

  get blockSize(): number {
    return this.opts.blockSize;
  }

  get pendingCapBytes(): number {
    return this.opts.maxPendingBytes;
  }

  repair(volumeId: string, ranges: readonly ByteRange[], remote: RemoteHashes, reason: string): Promise<RepairResult> {
    const volume = this.volume(volumeId);
    if (this.closed) return Promise.reject(new Error('the agent is stopping'));
    const blocks = blockRanges(ranges, this.opts.blockSize, volume.spec.sizeBytes);
    return new Promise((resolve, reject) => {
      const progress: RepairProgress = { reason, doneBytes: 0, totalBytes: rangeBytes(blocks), sentBytes: 0, startedMs: Date.now() };
      volume.repairs.push({ ranges: blocks, remote, progress, resolve, reject });
      volume.wake.notify();
    });
  }

  repairProgress(volumeId: string): RepairProgress | undefined {
    const volume = this.volumes.get(volumeId);
    return (volume?.repairing ?? volume?.lastRepair)?.progress;
  }

  mode(volumeId: string): CaptureMode {
    this.volume(volumeId);
    return 'approximate';
  }

  private volume(volumeId: string): ScanVolume {
    const v = this.volumes.get(volumeId);
    if (!v) throw new Error(`volume ${volumeId} is not attached`);
    return v;
  }

  async next(maxBytes: number, timeoutMs: number): Promise<CaptureBatch | undefined> {
    if (!this.hasQueued()) await this.available.wait(timeoutMs);
    if (!this.hasQueued() || this.closed) return undefined;
    const parts: Array<{ volume: ScanVolume; items: QueuedRecord[] }> = [];
    let bytes = 0;
    const vols = [...this.volumes.values()];
    // Round-robin over volumes so that one busy volume cannot starve the others.
    for (let i = 0; i < vols.length && bytes < maxBytes; i++) {
      const volume = vols[(this.rr + i) % vols.length];
      const items: QueuedRecord[] = [];
      while (volume.queue.length > 0 && (bytes < maxBytes || items.length === 0)) {
        const item = volume.queue.shift() as QueuedRecord;
        items.push(item);
        bytes += item.record.length;
      }
      if (items.length > 0) parts.push({ volume, items });
    }
    this.rr++;
    const kept: Array<{ volume: ScanVolume; items: OutstandingRecord[] }> = [];
    const logged = new Set<Promise<void>>();
    for (const { volume, items } of parts) {
      for (const q of items) logged.add(q.logged);
      const outstanding = items.map((q) => ({ seq: q.record.seq, bytes: q.record.length, entry: q.entry, passOffset: q.passOffset }));
      volume.outstanding.push(...outstanding);
      kept.push({ volume, items: outstanding });
    }
    const id = this.nextBatchId++;
    this.batches.set(id, kept);
    await Promise.all(logged);
    return { id, records: parts.flatMap((p) => p.items.map((q) => q.record)) };
  }

  private hasQueued(): boolean {
    for (const v of this.volumes.values()) if (v.queue.length > 0) return true;
    return false;
  }

  async commit(batchId: number): Promise<void> {
    const parts = this.batches.get(batchId);
    if (!parts) throw new Error(`capture batch ${batchId} is not outstanding`);
    this.batches.delete(batchId);
    for (const { volume, items } of parts) {
      // Batches are committed in the order they were handed out: this one heads the list.
      if (volume.outstanding[0] !== items[0]) throw new Error(`capture batch ${batchId} committed out of order`);
      volume.outstanding.splice(0, items.length);
      volume.table.noteCommitted(
        items.flatMap((q) => (q.entry ? [q.entry] : [])),
        items[items.length - 1].seq,
      );
      volume.pendingBytes -= items.reduce((n, q) => n + q.bytes, 0);
      volume.room.notify();
      volume.noteResyncDurable();
      if (volume.table.logEntryCount >= COMPACT_LOG_ENTRIES) volume.compact();
    }
  }

  /** Counts writes not seen yet too: a block changed right after a pass read it waits for the next pass. */
  oldestQueuedCaptureUs(): number {
    return oldestCapture([...this.volumes.values()].map((v) => v.unsentSinceUs()));
  }

  unsentSinceUs(volumeId: string): number {
    return this.volumes.get(volumeId)?.unsentSinceUs() ?? 0;
  }

  /** Scan streams have no writes to hold: the cut is simply what has been emitted so far. */
  async tag(volumeIds: string[], options: TagOptions): Promise<VolumeCut[]> {
    if (options.vssVolumes?.length) throw new Error('scan capture cannot cut at a VSS freeze point: it needs the ferryflt driver');
    return volumeIds.map((id) => {
      const v = this.volume(id);
      const accuracy: AccuracyName = v.unusable ? 'none' : options.quiesced ? 'exact' : 'approximate';
      return { volumeId: id, seq: v.nextSeq - 1, accuracy };
    });
  }

  async settle(volumeIds: string[], deadlineMs: number): Promise<SettleResult> {
    const volumes = volumeIds.map((id) => this.volume(id));
    for (const v of volumes) {
      if (!v.resync) continue;
      const p = v.resync.progress;
      return { settled: false, failure: { kind: 'resync-running', volumeId: v.spec.id, resync: v.resync.kind, doneBytes: p.doneBytes, totalBytes: p.totalBytes } };
    }
    const startedMs = Date.now();
    const requested = passTick();
    for (const v of volumes) {
      v.settleRequestedTick = requested;
      v.wake.notify();
    }
    for (const v of volumes) {
      while (!(v.lastPassStartTick >= requested && v.lastPassEndTick >= v.lastPassStartTick)) {
        if (this.closed) return { settled: false, failure: { kind: 'stopping' } };
        const left = deadlineMs - Date.now();
        if (left <= 0) {
          const waitingForAcks = v.pendingBytes >= this.opts.maxPendingBytes;
          return { settled: false, failure: { kind: 'deadline', volumeId: v.spec.id, waitedMs: Date.now() - startedMs, doneBytes: v.passProgress(requested), totalBytes: v.spec.sizeBytes, waitingForAcks } };
        }
        await v.passDone.wait(left);
      }
    }
    return { settled: true };
  }

  private compactAll(): void {
    for (const v of this.volumes.values()) {
      try {
        v.compact();
      } catch (err) {
        log.warn('cannot save the scan table', { volume: v.spec.id, error: (err as Error).message });
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.compactTimer) clearInterval(this.compactTimer);
    for (const v of this.volumes.values()) {
      v.dropRepairs(new Error('the agent is stopping'));
      v.wake.notify();
      v.room.notify();
    }
    this.available.notify();
    await Promise.all(this.loops);
    for (const v of this.volumes.values()) {
      v.compact();
      await v.close();
    }
    await this.hasher.close();
  }
}
