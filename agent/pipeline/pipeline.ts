import { randomUUID } from 'crypto';
import * as lz4 from 'lz4';
import { BufferPool } from '../../common/buffer-pool';
import { olderCapture } from '../../common/capture-time';
import { log } from '../../common/log';
import { Signal } from '../../common/signal';
import { nowUs } from '../../common/time';
import { DecodedFrame, ferry } from '../../proto/frames';
import { accuracyValue } from '../../proto/types';
import type { CapturedRecord, CaptureSource, VolumeCut } from '../capture/types';
import type { ConnectionError, ReceiverConnection, VolumeProgress } from '../transport/receiver-connection';
import { OpenChangeSet, OutgoingItem, SealedChangeSet } from './outgoing';
import { Throughput } from './throughput';

export interface PipelineOptions {
  /** A change set is sealed at this many bytes of data... */
  maxBatchBytes: number;
  /** ...or when its oldest record has waited this long. */
  maxBatchDelayMs: number;
  /** Encoded change sets sent and not yet durable, at most. */
  windowBytes: number;
}

const writeBytes = (rec: CapturedRecord): number => (rec.kind === 'write' ? rec.length : 0);

/** Room for a frame of a full change set: its largest lz4 payload and a header of many extents. */
const FRAME_HEADER_ROOM = 1024 * 1024;

/**
 * Frames are sealed at maxBatchBytes of data, and at most a window of them is unacknowledged:
 * a pooled buffer per full frame, as many kept as a window holds. Small frames (a quiet
 * volume's) take plain buffers.
 */
function framePool(opts: PipelineOptions): BufferPool {
  const bytes = lz4.encodeBound(opts.maxBatchBytes) + FRAME_HEADER_ROOM;
  return new BufferPool(bytes, Math.ceil(opts.windowBytes / opts.maxBatchBytes) + 1, Math.min(256 * 1024, opts.maxBatchBytes / 4));
}

/** Change sets in flight at once within a source's pending cap (see Pipeline.sealBytes), and their least size. */
const PIPELINED_SETS = 4;
const PIPELINED_SETS_MIN_BYTES = 64 * 1024;

/** The receiver's durable seq went below what it had acknowledged: it lost data. */
export class ReceiverRegressedError extends Error {}

interface CaptureBatchState {
  id: number;
  /** Highest seq of each volume in the batch; the batch is committed when all are durable. */
  lastSeq: Map<string, number>;
}

interface TagRequest {
  kind: 'crash' | 'app';
  name: string;
  cuts: VolumeCut[];
  groupId: string;
  /** The group round the tag answers (0: the agent's own tag). */
  groupRound: number;
  resolve: (pointIds: number[]) => void;
  reject: (err: Error) => void;
  queued: boolean;
}

interface DurableWaiter {
  volumeId: string;
  seq: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

export interface VolumePipelineStatus {
  durableSeq: number;
  capturedSeq: number;
  backlogBytes: number;
  oldestPendingCaptureUs: number;
}

/**
 * Moves change records from the capture source to the receiver: batches them into change sets
 * (by size and time, lz4), sends them within a bounded window, and commits capture batches only
 * once the receiver has acknowledged them as durable. Survives reconnects: unacknowledged change
 * sets are sent again, from where the receiver's durable seq says it stands.
 */
export class Pipeline {
  private conn: ReceiverConnection | undefined;
  /**
   * A change-set frame handed to the connection's socket and not yet written. The next one
   * waits for it: frames queued behind a pending write reach node's TLS as one writev, which
   * copies them all into a fresh buffer before encrypting (2 CPU s per resync GB measured).
   */
  private writing: ReceiverConnection | undefined;
  private readonly open = new Map<string, OpenChangeSet>();
  private outgoing: OutgoingItem[] = [];
  private inFlight: SealedChangeSet[] = [];
  private inFlightBytes = 0;
  private readonly batches: CaptureBatchState[] = [];
  private readonly durable = new Map<string, number>();
  private readonly committed = new Map<string, number>();
  private readonly pulled = new Map<string, number>();
  private readonly tags: TagRequest[] = [];
  private durableWaiters: DurableWaiter[] = [];
  private throttled = false;
  private running = false;
  private readonly room = new Signal();
  private loop: Promise<void> | undefined;
  private committing = Promise.resolve();
  private fatal: Error | undefined;
  private readonly onFatal: Array<(err: Error) => void> = [];
  readonly sent = new Throughput();
  /** Memory of the frames sent and not yet durable, reused once the receiver holds them. */
  private readonly frames: BufferPool;

  /**
   * Size at which change sets (and the source's batches) are sealed: maxBatchBytes, or a
   * quarter of what the source lets be unacknowledged when that is smaller. With one full set
   * per round trip, reading, sending, the receiver's fsync and the ack would all take turns.
   */
  private readonly sealBytes: number;

  constructor(
    private readonly source: CaptureSource,
    private readonly opts: PipelineOptions,
  ) {
    this.frames = framePool(opts);
    const cap = source.pendingCapBytes;
    this.sealBytes = cap === undefined ? opts.maxBatchBytes : Math.max(PIPELINED_SETS_MIN_BYTES, Math.min(opts.maxBatchBytes, Math.floor(cap / PIPELINED_SETS)));
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.pump();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.room.notify();
    await this.loop;
    await this.committing;
    const stopped = new Error('the agent is stopping');
    for (const tag of [...this.tags]) this.failTag(tag, stopped);
    for (const waiter of this.durableWaiters.splice(0)) waiter.reject(stopped);
  }

  /** Called with an error the pipeline cannot recover from by itself (see ReceiverRegressedError). */
  onFatalError(handler: (err: Error) => void): void {
    this.onFatal.push(handler);
  }

  get isThrottled(): boolean {
    return this.throttled;
  }

  get isConnected(): boolean {
    return this.conn?.isOpen ?? false;
  }

  // ---- connection -----------------------------------------------------------------------------

  /** Starts using a logged-in connection whose volumes are declared; `durable` is where each stands. */
  attach(conn: ReceiverConnection, durable: Map<string, VolumeProgress>): void {
    for (const [volumeId, p] of durable) {
      const committed = this.committed.get(volumeId) ?? 0;
      if (p.durableSeq < committed) {
        this.raiseFatal(new ReceiverRegressedError(`receiver reports volume ${volumeId} durable through seq ${p.durableSeq}, but it had acknowledged ${committed}: it lost data`));
        return;
      }
      this.noteDurable(volumeId, p.durableSeq);
    }
    this.conn = conn;
    this.throttled = false;
    conn.on('progress', this.onProgress);
    conn.on('throttle', this.onThrottle);
    conn.on('frame', this.onFrame);
    this.trySend();
  }

  /** The connection failed: what was in flight goes back to the front of the queue. */
  detach(err: ConnectionError | Error): void {
    if (!this.conn) return;
    this.conn.off('progress', this.onProgress);
    this.conn.off('throttle', this.onThrottle);
    this.conn.off('frame', this.onFrame);
    this.conn = undefined;
    this.writing = undefined;
    this.outgoing = [...this.inFlight, ...this.outgoing];
    this.inFlight = [];
    this.inFlightBytes = 0;
    for (const tag of this.tags.filter((t) => t.queued)) this.failTag(tag, new Error(`the connection failed before the receiver confirmed the tag: ${err.message}`));
  }

  private readonly onProgress = (volumeId: string, p: VolumeProgress): void => this.noteDurable(volumeId, p.durableSeq);

  private readonly onThrottle = (delayMs: number): void => {
    const was = this.throttled;
    this.throttled = delayMs > 0;
    if (this.throttled && !was) log.warn('receiver asked to slow down: sending paused', { delayMs });
    if (!this.throttled && was) log.info('receiver resumed: sending again');
    this.trySend();
  };

  private readonly onFrame = (frame: DecodedFrame): void => {
    if (!frame.tagAck) return;
    const tag = this.tags.find((t) => t.groupId === frame.tagAck?.groupId);
    if (tag) {
      this.tags.splice(this.tags.indexOf(tag), 1);
      tag.resolve((frame.tagAck.pointIds ?? []).map(Number));
    }
  };

  // ---- waiting for the receiver ------------------------------------------------------------

  /** Resolves once the receiver holds the volume durably through `seq`; waits through reconnects. */
  whenDurable(volumeId: string, seq: number): Promise<void> {
    if (seq <= (this.durable.get(volumeId) ?? 0)) return Promise.resolve();
    if (!this.running) return Promise.reject(new Error('the agent is stopping'));
    return new Promise((resolve, reject) => this.durableWaiters.push({ volumeId, seq, resolve, reject }));
  }

  // ---- tags ------------------------------------------------------------------------------------

  /**
   * Sends a tag at `cuts` once every record up to each cut is on its way; resolves with the
   * receiver's point ids.
   */
  tag(kind: 'crash' | 'app', cuts: VolumeCut[], name = '', groupRound = 0): Promise<number[]> {
    return new Promise((resolve, reject) => {
      this.tags.push({ kind, name, cuts, groupId: randomUUID(), groupRound, resolve, reject, queued: false });
      this.room.notify();
    });
  }

  private failTag(tag: TagRequest, err: Error): void {
    const i = this.tags.indexOf(tag);
    if (i >= 0) this.tags.splice(i, 1);
    tag.reject(err);
  }

  /** Queues the tags whose cuts have all been pulled from the source, after their change sets. */
  private queueReadyTags(): void {
    for (const tag of this.tags) {
      if (tag.queued) continue;
      if (!tag.cuts.every((c) => c.seq <= (this.pulled.get(c.volumeId) ?? 0) || c.seq <= (this.durable.get(c.volumeId) ?? 0))) continue;
      for (const c of tag.cuts) this.seal(c.volumeId);
      tag.queued = true;
      this.outgoing.push({
        type: 'tag',
        tag: {
          kind: tag.kind === 'app' ? ferry.Tag.Kind.APP : ferry.Tag.Kind.CRASH,
          groupId: tag.groupId,
          name: tag.name,
          groupRound: tag.groupRound,
          timeUs: nowUs(),
          cuts: tag.cuts.map((c) => ({ volumeId: c.volumeId, seq: c.seq, accuracy: accuracyValue(c.accuracy) })),
        },
      });
    }
  }

  // ---- the pump -------------------------------------------------------------------------------

  private async pump(): Promise<void> {
    while (this.running && !this.fatal) {
      this.queueReadyTags();
      this.sealStale();
      this.trySend();
      if (this.queuedBytes() >= this.opts.windowBytes) {
        await this.room.wait(this.opts.maxBatchDelayMs);
        continue;
      }
      let batch;
      try {
        batch = await this.source.next(this.sealBytes, this.opts.maxBatchDelayMs);
      } catch (err) {
        this.raiseFatal(err as Error);
        return;
      }
      if (!batch) {
        // A source should wait for records itself; never spin the event loop if one does not.
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      const lastSeq = new Map<string, number>();
      for (const rec of batch.records) {
        lastSeq.set(rec.volumeId, rec.seq);
        this.pulled.set(rec.volumeId, Math.max(this.pulled.get(rec.volumeId) ?? 0, rec.seq));
        if (rec.seq <= (this.durable.get(rec.volumeId) ?? 0)) {
          rec.release?.(); // the receiver has it (redelivery)
          continue;
        }
        let open = this.open.get(rec.volumeId);
        // Sealed before it would grow past sealBytes (a batch from the source may be as large
        // again): the encode scratch buffers and every frame stay within one batch's size.
        if (open && (open.accuracy !== rec.accuracy || open.dataBytes + writeBytes(rec) > this.sealBytes)) {
          this.seal(rec.volumeId);
          open = undefined;
        }
        if (!open) {
          open = new OpenChangeSet(rec.volumeId, rec.accuracy);
          this.open.set(rec.volumeId, open);
        }
        open.add(rec);
        if (open.dataBytes >= this.sealBytes) this.seal(rec.volumeId);
      }
      this.batches.push({ id: batch.id, lastSeq });
      this.commitDurable();
      this.sealIfIdle();
    }
  }

  /**
   * With nothing on its way to the receiver, an open change set waiting to fill up only delays
   * what it holds (a source may be unable to add to it until acknowledgements come): it is
   * sealed and sent now. While frames are in flight, records keep gathering into full sets.
   */
  private sealIfIdle(): void {
    if (this.open.size === 0 || this.throttled || !this.conn?.isOpen || this.inFlight.length > 0) return;
    if (this.outgoing.some((item) => item.type === 'changes')) return;
    for (const volumeId of [...this.open.keys()]) this.seal(volumeId);
    this.trySend();
  }

  /** Bytes queued or in flight: pulling more from the source waits while this is over the window. */
  private queuedBytes(): number {
    let bytes = this.inFlightBytes;
    for (const item of this.outgoing) if (item.type === 'changes') bytes += item.frame.length;
    for (const open of this.open.values()) bytes += open.dataBytes;
    return bytes;
  }

  private seal(volumeId: string): void {
    const open = this.open.get(volumeId);
    if (!open || open.records.length === 0) return;
    this.open.delete(volumeId);
    this.outgoing.push(open.seal(this.oldestPendingCaptureUs(), this.frames));
  }

  private sealStale(): void {
    const now = Date.now();
    for (const [volumeId, open] of this.open) if (now - open.openedMs >= this.opts.maxBatchDelayMs) this.seal(volumeId);
  }

  private trySend(): void {
    const conn = this.conn;
    if (!conn?.isOpen) return;
    while (this.outgoing.length > 0) {
      const item = this.outgoing[0];
      if (item.type === 'changes') {
        if (this.throttled || this.inFlightBytes >= this.opts.windowBytes || this.writing === conn) return;
        if (item.lastSeq <= (this.durable.get(item.volumeId) ?? 0)) {
          this.outgoing.shift();
          item.memory.seal();
          continue;
        }
        this.outgoing.shift();
        const release = item.memory.user();
        this.writing = conn;
        try {
          conn.sendWithHeadroom(item.frame, () => {
            release();
            if (this.writing !== conn) return;
            this.writing = undefined;
            this.trySend();
          });
        } catch {
          this.writing = undefined;
          release();
          this.outgoing.unshift(item);
          return;
        }
        this.inFlight.push(item);
        this.inFlightBytes += item.frame.length;
        this.sent.add(item.dataBytes);
      } else {
        this.outgoing.shift();
        try {
          conn.send({ tag: item.tag });
        } catch {
          return;
        }
      }
    }
  }

  private noteDurable(volumeId: string, seq: number): void {
    if (seq <= (this.durable.get(volumeId) ?? 0)) return;
    this.durable.set(volumeId, seq);
    const keep: SealedChangeSet[] = [];
    for (const cs of this.inFlight) {
      if (cs.volumeId === volumeId && cs.lastSeq <= seq) {
        this.inFlightBytes -= cs.frame.length;
        cs.memory.seal();
      } else keep.push(cs);
    }
    this.inFlight = keep;
    if (this.durableWaiters.length > 0) {
      const ready = this.durableWaiters.filter((w) => w.volumeId === volumeId && w.seq <= seq);
      this.durableWaiters = this.durableWaiters.filter((w) => !ready.includes(w));
      for (const w of ready) w.resolve();
    }
    this.commitDurable();
    this.room.notify();
    this.trySend();
    this.sealIfIdle();
  }

  /** Commits, in order, every capture batch whose records are all durable at the receiver. */
  private commitDurable(): void {
    this.committing = this.committing.then(async () => {
      while (this.batches.length > 0) {
        const head = this.batches[0];
        for (const [volumeId, seq] of head.lastSeq) if (seq > (this.durable.get(volumeId) ?? 0)) return;
        this.batches.shift();
        try {
          await this.source.commit(head.id);
        } catch (err) {
          this.raiseFatal(err as Error);
          return;
        }
        for (const [volumeId, seq] of head.lastSeq) this.committed.set(volumeId, Math.max(this.committed.get(volumeId) ?? 0, seq));
      }
    });
  }

  private raiseFatal(err: Error): void {
    if (this.fatal) return;
    this.fatal = err;
    this.running = false;
    this.room.notify();
    for (const h of this.onFatal) h(err);
  }

  // ---- figures ---------------------------------------------------------------------------------

  /** Capture time of the oldest change not yet durable at the receiver (0: none). */
  oldestPendingCaptureUs(): number {
    let oldest = this.source.oldestQueuedCaptureUs();
    for (const cs of this.inFlight) oldest = olderCapture(oldest, cs.oldestCaptureUs);
    for (const item of this.outgoing) if (item.type === 'changes') oldest = olderCapture(oldest, item.oldestCaptureUs);
    for (const open of this.open.values()) oldest = olderCapture(oldest, open.oldestCaptureUs);
    return oldest;
  }

  volumeStatus(volumeId: string): VolumePipelineStatus {
    let backlog = 0;
    let oldest = 0;
    for (const cs of [...this.inFlight, ...this.outgoing]) {
      if (cs.type !== 'changes' || cs.volumeId !== volumeId) continue;
      backlog += cs.dataBytes;
      oldest = olderCapture(oldest, cs.oldestCaptureUs);
    }
    const open = this.open.get(volumeId);
    if (open) {
      backlog += open.dataBytes;
      oldest = olderCapture(oldest, open.oldestCaptureUs);
    }
    // Changes the source has not handed out yet (scan: also writes no pass has seen yet).
    oldest = olderCapture(oldest, this.source.unsentSinceUs?.(volumeId) ?? 0);
    return { durableSeq: this.durable.get(volumeId) ?? 0, capturedSeq: this.pulled.get(volumeId) ?? 0, backlogBytes: backlog, oldestPendingCaptureUs: oldest };
  }

  /** Sends a heartbeat carrying the agent's backlog age (the receiver's RPO figure) and how it sees each volume. */
  heartbeat(volumes: ferry.IVolumeReport[] = []): void {
    if (!this.conn?.isOpen) return;
    try {
      this.conn.send({ heartbeat: { timeUs: nowUs(), pendingSinceUs: this.oldestPendingCaptureUs(), volumes } });
    } catch {
      // the failure is reported through the connection's 'failed' event
    }
  }
}
