// The receiver's side of a failback session: it compares the recovered disk of each volume the
// original machine declares with that machine's disk (the agent hashes its own blocks) and
// sends the blocks that differ, pass after pass, until a pass that began with the recovered
// machine stopped has ended.
import * as fs from 'fs';
import { buildChangeSet, ChangeRecord } from '../agent/transport/change-set';
import { BLOCK_HASH_BYTES, blockHashes } from '../common/block-hash';
import { log } from '../common/log';
import { nowUs } from '../common/time';
import { ErrorCode, errorCodeName, ProtocolError } from '../proto/errors';
import type { DecodedFrame, OutgoingFrame } from '../proto/frames';
import { Limits } from '../proto/limits';
import { failbackStateValue, FailbackStateName, validateFailbackAck, validateFailbackVolume, ValidFailbackVolume } from '../proto/validate-failback';
import { validateHeartbeat, timeWindow } from '../proto/validate';
import { checkVolumeId } from '../proto/check-ids';
import { afterPass, batchRanges, Chunk, chunkBlocks, differingBlocks, differingRanges, planChunks } from './failback-plan';

/**
 * What the recovery service tells a failback session (recovery/service.ts implements it and
 * the receiver passes it to every session: ReceiverOptions.failback).
 */
export interface FailbackAccess {
  /** The recovered disk of this machine's volume on this host, when the machine may fail back now; else why not. */
  disk(agentId: string, volumeId: string): { ok: true; path: string; sizeBytes: number } | { ok: false; reason: string };
  /** True once the recovered machine is stopped: a pass that starts after this is the final one. */
  sourceStopped(agentId: string): boolean;
  /** Progress for the job that waits on it (bytes sent, passes, done). */
  report(agentId: string, volumeId: string, progress: FailbackProgress): void;
}

export interface FailbackProgress {
  pass: number;
  state: 'copying' | 'in-sync' | 'done' | 'failed';
  sentBytes: number;
  differingBlocks: number;
  comparedBytes: number;
  sizeBytes: number;
  detail: string;
}

export interface FailbackTuning {
  /** Pause between two passes while the recovered machine runs. */
  pauseMs: number;
  /** Data compared per HashRequest. */
  chunkBytes: number;
  /** Block data per change set. */
  changeSetBytes: number;
  /** Change sets sent and not yet acked, per volume. */
  window: number;
}

export const DEFAULT_FAILBACK_TUNING: FailbackTuning = { pauseMs: 5000, chunkBytes: 16 * 1024 * 1024, changeSetBytes: 4 * 1024 * 1024, window: 4 };

/** Progress within a pass reaches the recovery service at most this often (pass starts and ends always). */
const REPORT_EVERY_MS = 1000;

/** How the session lets the failback speak to the agent. */
export interface FailbackPeer {
  send(frame: OutgoingFrame): void;
  /** Ends the session with an Error frame. */
  fail(err: unknown): void;
}

function refuse(message: string): never {
  throw new ProtocolError(ErrorCode.FAILBACK_REFUSED, message);
}

/**
 * At login: may this machine fail back now? Only when the receiver has a recovery service and
 * the machine is failed over (its replication stream is refused: `streamRefusal`).
 */
export function admitFailback(agentId: string, access: FailbackAccess | undefined, streamRefusal: string | undefined): FailbackAccess {
  if (!access) refuse('this receiver has no recovery service: it cannot serve a failback');
  if (streamRefusal === undefined) {
    refuse(`machine ${agentId} is not failed over: its disks are the primaries, there is nothing to fail back (run \`ferry agent run\` to protect it)`);
  }
  return access;
}

/** The failback session of each machine on this receiver: a newer one takes over from an older one. */
export class FailbackSessions {
  private readonly byAgent = new Map<string, FailbackSession>();

  open(agentId: string, session: FailbackSession): void {
    const older = this.byAgent.get(agentId);
    this.byAgent.set(agentId, session);
    older?.supersede();
  }

  closed(agentId: string, session: FailbackSession): void {
    if (this.byAgent.get(agentId) === session) this.byAgent.delete(agentId);
  }
}

/** Thrown into the pass loops when the session ends: not an error of theirs. */
class SessionEnded extends Error {}

/** One failback session: the volumes the agent declared, each with its own pass loop. */
export class FailbackSession {
  private readonly volumes = new Map<string, VolumeFailback>();
  private nextRequestId = 1;
  private ended = false;

  constructor(
    private readonly agentId: string,
    private readonly access: FailbackAccess,
    private readonly peer: FailbackPeer,
    /** The agent that owns a volume in the receiver's catalog (undefined: no such volume). */
    private readonly ownerOf: (volumeId: string) => string | undefined,
    private readonly tuning: FailbackTuning = DEFAULT_FAILBACK_TUNING,
  ) {
    log.info('failback session started', { agent: agentId });
  }

  /** A frame from the agent; throws ProtocolError for anything a failback session does not take. */
  onFrame(frame: DecodedFrame): void {
    if (frame.failbackVolume) return this.declare(validateFailbackVolume(frame.failbackVolume));
    if (frame.blockHashes) {
      const answer = frame.blockHashes;
      return this.volume(answer.volumeId ?? '').onHashes(answer.requestId ?? 0, Buffer.from(answer.hashes ?? new Uint8Array()));
    }
    if (frame.ack) {
      for (const ack of validateFailbackAck(frame.ack)) this.volume(ack.volumeId).onAck(ack.durableSeq);
      return;
    }
    if (frame.heartbeat) {
      validateHeartbeat(frame.heartbeat, timeWindow(nowUs()));
      return;
    }
    if (frame.error) {
      const why = `${errorCodeName(frame.error.code ?? 0)}: ${frame.error.message ?? ''}`;
      for (const v of this.volumes.values()) v.noteFailed(`the agent stopped: ${why}`);
      throw new ProtocolError(ErrorCode.FAILBACK_REFUSED, `the agent ended the failback (${why})`);
    }
    throw new ProtocolError(ErrorCode.UNEXPECTED_FRAME, `${frame.body} is not accepted in a failback session`);
  }

  /**
   * A newer failback session of the machine took over (the operator ran it again while this
   * connection lingered): this one stops without a word to the recovery service.
   */
  supersede(): void {
    for (const v of this.volumes.values()) v.silence();
    this.close('a newer failback session of this machine took over');
    this.peer.fail(new ProtocolError(ErrorCode.FAILBACK_REFUSED, `a newer failback session of machine ${this.agentId} took over from this one`));
  }

  /** The session is over (closed or failed): pass loops stop, unfinished volumes report failed. */
  close(reason = 'the session ended'): void {
    if (this.ended) return;
    this.ended = true;
    for (const v of this.volumes.values()) v.stop(reason);
  }


  private volume(volumeId: string): VolumeFailback {
    checkVolumeId(volumeId);
    return this.volumes.get(volumeId) ?? refuse(`volume ${volumeId} was not declared with FailbackVolume in this session`);
  }

  private declare(spec: ValidFailbackVolume): void {
    if (this.volumes.has(spec.volumeId)) refuse(`volume ${spec.volumeId} is declared twice`);
    const owner = this.ownerOf(spec.volumeId);
    if (owner === undefined) refuse(`volume ${spec.volumeId} was never replicated to this receiver: there is no recovered disk of it`);
    if (owner !== this.agentId) throw new ProtocolError(ErrorCode.FORBIDDEN_VOLUME, `volume ${spec.volumeId} belongs to another agent`);
    const disk = this.access.disk(this.agentId, spec.volumeId);
    if (!disk.ok) refuse(`volume ${spec.volumeId} cannot fail back: ${disk.reason}`);
    if (disk.sizeBytes !== spec.sizeBytes) {
      refuse(`volume ${spec.volumeId}: the original disk is ${spec.sizeBytes} bytes, the recovered disk ${disk.sizeBytes}: sizes must match exactly (give the right device with --volume ${spec.volumeId}=DEVICE)`);
    }
    let fd: number;
    try {
      fd = fs.openSync(disk.path, 'r');
    } catch (err) {
      return refuse(`volume ${spec.volumeId}: cannot open the recovered disk ${disk.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const volume = new VolumeFailback(this.agentId, spec, fd, this.access, this.peer, this.tuning, () => this.nextRequestId++);
    this.volumes.set(spec.volumeId, volume);
    void volume.run().then(
      () => {
        if ([...this.volumes.values()].every((v) => v.isDone)) log.info('failback session complete', { agent: this.agentId });
      },
      (err: unknown) => {
        if (!(err instanceof SessionEnded)) this.peer.fail(err);
      },
    );
  }
}

interface Waiter<T> {
  resolve(value: T): void;
  reject(err: Error): void;
}

/** The pass loop of one volume and what it waits on (hash answers, acks, the pause). */
class VolumeFailback {
  private pass = 0;
  private finalPass = false;
  private sentBytes = 0;
  private differing = 0;
  private compared = 0;
  private lastSeq = 0;
  private ackedSeq = 0;
  /** The last seq of each change set sent and not yet acked, oldest first. */
  private inFlight: number[] = [];
  private outcome: 'done' | 'failed' | undefined;
  private lastReportMs = 0;
  private silenced = false;
  private stopped: string | undefined;
  private readonly hashWaiters = new Map<number, Waiter<Buffer> & { chunk: Chunk }>();
  private ackWaiter: { seq: number; waiter: Waiter<void> } | undefined;
  private pauseWaiter: { timer: NodeJS.Timeout; waiter: Waiter<void> } | undefined;

  constructor(
    private readonly agentId: string,
    private readonly spec: ValidFailbackVolume,
    private readonly fd: number,
    private readonly access: FailbackAccess,
    private readonly peer: FailbackPeer,
    private readonly tuning: FailbackTuning,
    private readonly newRequestId: () => number,
  ) {}

  get isDone(): boolean {
    return this.outcome === 'done';
  }

  async run(): Promise<void> {
    try {
      for (;;) {
        this.pass++;
        // Read once, at the start: a pass is final only if the source was stopped for all of it.
        this.finalPass = this.access.sourceStopped(this.agentId);
        this.compared = 0;
        this.state('copying');
        await this.onePass();
        await this.acked(this.lastSeq);
        if (afterPass(this.finalPass) === 'done') break;
        this.state('in-sync');
        await this.pause();
      }
      this.state('done');
      this.outcome = 'done';
      log.info('failback volume done', { agent: this.agentId, volume: this.spec.volumeId, passes: this.pass, sentBytes: this.sentBytes, differingBlocks: this.differing });
    } catch (err) {
      const why = err instanceof SessionEnded ? (this.stopped ?? 'the session ended') : (err as Error).message;
      this.noteFailed(`${why}; run \`ferry agent failback\` on the original machine again: it sends only what still differs`);
      throw err;
    } finally {
      fs.closeSync(this.fd);
    }
  }

  private async onePass(): Promise<void> {
    const { blockSize, sizeBytes, volumeId } = this.spec;
    const perChunk = chunkBlocks(blockSize, this.tuning.chunkBytes, Limits.maxHashBlocks);
    for (const chunk of planChunks(sizeBytes, blockSize, perChunk)) {
      // The agent hashes its disk while this side reads the recovered one.
      const [theirs, data] = await Promise.all([this.agentHashes(chunk), this.readRecovered(chunk)]);
      const indexes = differingBlocks(blockHashes(data, blockSize), theirs, chunk.count);
      this.differing += indexes.length;
      const ranges = differingRanges(chunk, blockSize, sizeBytes, indexes, this.tuning.changeSetBytes);
      for (const batch of batchRanges(ranges, this.tuning.changeSetBytes)) {
        const records: ChangeRecord[] = batch.map((r) => ({ kind: 'write', offset: r.offset, length: r.length, captureTimeUs: 0, data: data.subarray(r.offset - chunk.offset, r.offset - chunk.offset + r.length) }));
        // The window: at most `window` change sets unacked.
        if (this.inFlight.length >= this.tuning.window) await this.acked(this.inFlight[this.inFlight.length - this.tuning.window]);
        const changeSet = buildChangeSet(volumeId, this.lastSeq + 1, records, 'none');
        this.lastSeq += records.length;
        this.inFlight.push(this.lastSeq);
        this.peer.send({ changeSet });
        this.sentBytes += batch.reduce((n, r) => n + r.length, 0);
      }
      this.compared += data.length;
      const now = Date.now();
      if (now - this.lastReportMs >= REPORT_EVERY_MS) this.report(`pass ${this.pass}${this.finalPass ? ' (final)' : ''}: ${this.compared} of ${sizeBytes} bytes compared`);
    }
  }

  private readRecovered(chunk: Chunk): Promise<Buffer> {
    const length = Math.min(chunk.count * this.spec.blockSize, this.spec.sizeBytes - chunk.offset);
    const buf = Buffer.alloc(length);
    return new Promise((resolve, reject) => {
      fs.read(this.fd, buf, 0, length, chunk.offset, (err, bytes) => {
        if (err) return reject(new ProtocolError(ErrorCode.VOLUME_FAILED, `cannot read the recovered disk of ${this.spec.volumeId} at ${chunk.offset}: ${err.code ?? err.message}`));
        // A disk that shrank under us reads short: the rest stays zero and compares as such.
        if (bytes < length) log.warn('short read of a recovered disk', { volume: this.spec.volumeId, offset: chunk.offset, bytes, length });
        resolve(buf);
      });
    });
  }

  private agentHashes(chunk: Chunk): Promise<Buffer> {
    const requestId = this.newRequestId();
    const { volumeId, blockSize } = this.spec;
    return new Promise<Buffer>((resolve, reject) => {
      if (this.stopped) return reject(new SessionEnded(this.stopped));
      this.hashWaiters.set(requestId, { resolve, reject, chunk });
      this.peer.send({ hashRequest: { volumeId, offset: chunk.offset, blockSize, count: chunk.count, requestId } });
    });
  }

  onHashes(requestId: number, hashes: Buffer): void {
    const waiter = this.hashWaiters.get(requestId) ?? refuse(`block hashes of ${this.spec.volumeId} answer request ${requestId}, which is not pending`);
    const expected = waiter.chunk.count * BLOCK_HASH_BYTES;
    if (hashes.length !== expected) {
      throw new ProtocolError(ErrorCode.BAD_FRAME, `block hashes of ${this.spec.volumeId} for request ${requestId}: ${hashes.length} bytes, expected ${expected}`);
    }
    this.hashWaiters.delete(requestId);
    waiter.resolve(hashes);
  }

  onAck(seq: number): void {
    if (seq > this.lastSeq) throw new ProtocolError(ErrorCode.BAD_FRAME, `ack of ${this.spec.volumeId} at seq ${seq}, past the last change set sent (${this.lastSeq})`);
    this.ackedSeq = Math.max(this.ackedSeq, seq);
    this.inFlight = this.inFlight.filter((last) => last > this.ackedSeq);
    const pending = this.ackWaiter;
    if (pending && this.ackedSeq >= pending.seq) {
      this.ackWaiter = undefined;
      pending.waiter.resolve();
    }
  }

  /** Resolves once the agent has every seq through `seq` durable on its disk. */
  private acked(seq: number): Promise<void> {
    if (this.ackedSeq >= seq) return Promise.resolve();
    return new Promise((resolve, reject) => {
      if (this.stopped) return reject(new SessionEnded(this.stopped));
      this.ackWaiter = { seq, waiter: { resolve, reject } };
    });
  }

  private pause(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.stopped) return reject(new SessionEnded(this.stopped));
      const timer = setTimeout(() => {
        this.pauseWaiter = undefined;
        resolve();
      }, this.tuning.pauseMs);
      this.pauseWaiter = { timer, waiter: { resolve, reject } };
    });
  }

  stop(reason: string): void {
    if (this.stopped) return;
    this.stopped = reason;
    const ended = new SessionEnded(reason);
    for (const w of this.hashWaiters.values()) w.reject(ended);
    this.hashWaiters.clear();
    this.ackWaiter?.waiter.reject(ended);
    this.ackWaiter = undefined;
    if (this.pauseWaiter) {
      clearTimeout(this.pauseWaiter.timer);
      this.pauseWaiter.waiter.reject(ended);
      this.pauseWaiter = undefined;
    }
  }

  /** No more reports: a newer session of the machine reports for this volume. */
  silence(): void {
    this.silenced = true;
  }

  /** Reports the volume failed, once, unless it is done. */
  noteFailed(detail: string): void {
    if (this.outcome) return;
    this.outcome = 'failed';
    this.report(detail, 'failed');
  }

  private state(state: FailbackStateName): void {
    const { volumeId } = this.spec;
    this.peer.send({
      failbackState: { volumeId, pass: this.pass, state: failbackStateValue[state], final: this.finalPass, sentBytes: this.sentBytes, differingBlocks: this.differing, comparedBytes: this.compared },
    });
    const detail = state === 'copying' ? `pass ${this.pass}${this.finalPass ? ' (final: the recovered machine is stopped)' : ''} started` : state === 'in-sync' ? `pass ${this.pass} ended` : `equal after ${this.pass} passes`;
    this.report(detail, state);
  }

  private report(detail: string, state: FailbackProgress['state'] = 'copying'): void {
    if (this.silenced) return;
    this.lastReportMs = Date.now();
    const progress: FailbackProgress = { pass: this.pass, state, sentBytes: this.sentBytes, differingBlocks: this.differing, comparedBytes: this.compared, sizeBytes: this.spec.sizeBytes, detail };
    try {
      this.access.report(this.agentId, this.spec.volumeId, progress);
    } catch (err) {
      log.error('the recovery service did not take a failback report', { agent: this.agentId, volume: this.spec.volumeId, error: (err as Error).message });
    }
  }
}
