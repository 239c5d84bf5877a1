import { BufferLease, BufferPool, SharedLease } from '../../common/buffer-pool';
import { olderCapture } from '../../common/capture-time';
import { changeSetHeader, gatherPayload } from '../transport/change-set';
import { WS_HEADER_ROOM } from '../transport/ws-frame';
import { encodeChangeSetFrame } from '../../proto/change-set-frame';
import { ScratchBuffer } from '../../proto/payload';
import type { ferry } from '../../proto/frames';
import type { AccuracyName } from '../../proto/types';
import type { CapturedRecord } from '../capture/types';

/** Where records that do not lie end to end in memory are gathered before compression. */
const GATHER = new ScratchBuffer();

/** A change set ready to send: encoded once, sent again unchanged after a reconnect. */
export interface SealedChangeSet {
  type: 'changes';
  volumeId: string;
  firstSeq: number;
  lastSeq: number;
  /** Preceded by WS_HEADER_ROOM bytes of its memory (see ReceiverConnection.sendWithHeadroom). */
  frame: Buffer;
  /**
   * The frame's memory: each send takes a user (done when the socket has written it); sealed
   * once nothing will send it again (the receiver holds it durably), it goes back to its pool
   * when the last write is done.
   */
  memory: SharedLease;
  /** Uncompressed bytes of written data (throughput and backlog figures). */
  dataBytes: number;
  oldestCaptureUs: number;
}

export interface PendingTag {
  type: 'tag';
  tag: ferry.ITag;
}

export type OutgoingItem = SealedChangeSet | PendingTag;

/** Records of one volume waiting to become a change set; they share one accuracy. */
export class OpenChangeSet {
  readonly records: CapturedRecord[] = [];
  dataBytes = 0;
  readonly openedMs = Date.now();

  constructor(
    readonly volumeId: string,
    readonly accuracy: AccuracyName,
  ) {}

  add(record: CapturedRecord): void {
    this.records.push(record);
    if (record.kind === 'write') this.dataBytes += record.length;
  }

  /** Capture time of the oldest record (0: none has one). */
  get oldestCaptureUs(): number {
    let oldest = 0;
    for (const r of this.records) oldest = olderCapture(oldest, r.captureTimeUs);
    return oldest;
  }

  get lastSeq(): number {
    return this.records[this.records.length - 1]?.seq ?? 0;
  }

  /**
   * Builds the frame in memory from `frames`; `pendingSinceUs` is the oldest capture time the
   * agent still holds after it. The records' data has been copied out when this returns: each
   * record's `release` is called.
   */
  seal(pendingSinceUs: number, frames: BufferPool): SealedChangeSet {
    const first = this.records[0];
    let lease: BufferLease | undefined;
    const { frame } = encodeChangeSetFrame(
      changeSetHeader(this.volumeId, first.seq, this.records, this.accuracy, pendingSinceUs),
      gatherPayload(this.records, GATHER),
      (size) => (lease = frames.take(size)).buffer,
      WS_HEADER_ROOM,
    );
    for (const r of this.records) r.release?.();
    if (!lease) throw new Error('the change-set encoder took no memory');
    return {
      type: 'changes',
      volumeId: this.volumeId,
      firstSeq: first.seq,
      lastSeq: this.lastSeq,
      frame,
      memory: new SharedLease(lease),
      dataBytes: this.dataBytes,
      oldestCaptureUs: this.oldestCaptureUs,
    };
  }
}
