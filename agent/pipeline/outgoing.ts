import { olderCapture } from '../../common/capture-time';
import { buildChangeSet, ChangeSetScratch } from '../transport/change-set';
import { ScratchBuffer } from '../../proto/payload';
import { FrameEncoder, ferry } from '../../proto/frames';
import type { AccuracyName } from '../../proto/types';
import type { CapturedRecord } from '../capture/types';

const SCRATCH: ChangeSetScratch = { raw: new ScratchBuffer(), compressed: new ScratchBuffer() };
const ENCODER = new FrameEncoder();

/** A change set ready to send: encoded once, sent again unchanged after a reconnect. */
export interface SealedChangeSet {
  type: 'changes';
  volumeId: string;
  firstSeq: number;
  lastSeq: number;
  frame: Buffer;
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

  /** Builds the frame; `pendingSinceUs` is the oldest capture time the agent still holds after it. */
  seal(pendingSinceUs: number): SealedChangeSet {
    const first = this.records[0];
    // The payload is gathered and compressed in shared scratch buffers; the encoder copies it out.
    const cs = buildChangeSet(this.volumeId, first.seq, this.records, this.accuracy, pendingSinceUs, SCRATCH);
    return {
      type: 'changes',
      volumeId: this.volumeId,
      firstSeq: first.seq,
      lastSeq: this.lastSeq,
      frame: ENCODER.encode({ changeSet: cs }),
      dataBytes: this.dataBytes,
      oldestCaptureUs: this.oldestCaptureUs,
    };
  }
}
