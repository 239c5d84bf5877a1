import type { AccuracyName, ExtentKind } from '../../proto/types';

/**
 * How a capture source currently sees writes to a volume:
 * - exact: every write with its data, in completion order (kernel DATA mode);
 * - approximate: the ranges are known, the data is read back later (kernel METADATA, scan);
 * - bitmap-draining: only dirty regions are known; they are being read back (kernel BITMAP).
 */
export type CaptureMode = 'exact' | 'approximate' | 'bitmap-draining';

/** One change of one volume, numbered in that volume's stream. */
export interface CapturedRecord {
  volumeId: string;
  seq: number;
  kind: ExtentKind;
  offset: number;
  /** Bytes; for a write equal to data.length. 0 for flush and noop markers. */
  length: number;
  captureTimeUs: number;
  /** The written bytes (writes only). */
  data?: Buffer;
  /**
   * Called once `data` has been copied out (or is not needed): the source may then reuse its
   * memory. Sources whose data is plain garbage-collected memory leave it out.
   */
  release?: () => void;
  /** What a recovery point cut right after this record is worth. */
  accuracy: AccuracyName;
}

/** Records handed out together; they are freed (committed) together once the receiver has them durable. */
export interface CaptureBatch {
  id: number;
  records: CapturedRecord[];
}

/** A volume as the agent protects it. */
export interface ProtectedVolume {
  id: string;
  path: string;
  sizeBytes: number;
  blockSize: number;
  /** Block devices are read with O_DIRECT: their page cache may be stale next to a mounted filesystem. */
  isBlockDevice: boolean;
}

export type ResyncKind = 'full' | 'hash-compare' | 'delta';

/** What a volume needs before its stream alone keeps the replica equal to the source. */
export type ResyncNeed = { kind: 'none'; reason: string } | { kind: ResyncKind; reason: string };

export interface ResyncProgress {
  kind: ResyncKind;
  doneBytes: number;
  totalBytes: number;
  /** Bytes of block data the resync put into the stream (the rest matched or was zero). */
  sentBytes: number;
  startedMs: number;
  finishedMs?: number;
}

export interface VolumeCut {
  volumeId: string;
  seq: number;
  accuracy: AccuracyName;
}

export interface TagOptions {
  /** Longest time new writes may be held to cut all streams at one moment. */
  holdMs: number;
  /** The volumes are frozen and `settle` succeeded: the cut is a consistent image. */
  quiesced: boolean;
  /**
   * Windows: volumes ("E:\\") whose VSS writers freeze around the cut. The kernel source then
   * cuts at the VSS freeze point (ferryflt sees it go by); other sources refuse it.
   */
  vssVolumes?: string[];
  /**
   * An operator's point: the cut holds every write that completed before the request, waiting
   * for it until this time (ms since the epoch). The kernel source sees writes as they complete
   * and scan points are approximate by design: neither waits; ebpf waits for a pass that reads
   * them back (its ring holds their ranges, not their data).
   */
  completedWritesByMs?: number;
}

/** Why a source could not make its streams reflect the volumes (see `CaptureSource.settle`). */
export type SettleFailure =
  /** A resync of the volume is running: its stream cannot describe the volume until it is done. */
  | { kind: 'resync-running'; volumeId: string; resync: ResyncKind; doneBytes: number; totalBytes: number }
  /**
   * The deadline passed while the volume was still being read (`doneBytes` of `totalBytes`);
   * `waitingForAcks`: reading had stopped until the receiver acknowledges the changes already read.
   */
  | { kind: 'deadline'; volumeId: string; waitedMs: number; doneBytes: number; totalBytes: number; waitingForAcks: boolean }
  | { kind: 'stopping' };

/** New writes held on volumes for a group round (see `CaptureSource.hold`). */
export interface WriteHold {
  /**
   * Cuts every held stream at the held moment and releases. Rejects when the bound already
   * released the hold (a cut then would not be the held moment).
   */
  commit(): Promise<VolumeCut[]>;
  /** Releases without a cut; idempotent; resolves at once when the bound already released it. */
  release(): Promise<void>;
}

export type SettleResult = { settled: true } | { settled: false; failure: SettleFailure };

/** Where a hash-compare resync gets the receiver's block hashes from (16 bytes per block). */
export type RemoteHashes = (volumeId: string, offset: number, blockSize: number, count: number) => Promise<Buffer>;

/** A byte range of a volume. */
export interface ByteRange {
  offset: number;
  length: number;
}

/** What a finished repair put into the stream. */
export interface RepairResult {
  /** Every block of the repair is in the stream at a seq <= this (all of it durable at the receiver). */
  throughSeq: number;
  /** Bytes of block data sent (the blocks that differed from the receiver's). */
  sentBytes: number;
}

export interface RepairProgress {
  /** Why the repair runs (the receiver's reason, or `verify`). */
  reason: string;
  doneBytes: number;
  totalBytes: number;
  sentBytes: number;
  startedMs: number;
  finishedMs?: number;
}

/** The capture sources: dm-ferry / ferryflt, the eBPF write tracker, or periodic scans. */
export type CaptureKindName = 'kernel' | 'ebpf' | 'scan';

/**
 * A source of change records for the volumes of one machine: the `scan` source (no driver),
 * the `ebpf` source (write tracker, no module) or the `kernel` source (dm-ferry / ferryflt). Records come out in transactional batches:
 * `next` hands a batch out, `commit` frees it after the receiver made it durable; a batch
 * never committed is produced again after the agent restarts.
 */
export interface CaptureSource {
  readonly kind: CaptureKindName;
  /**
   * Starts capturing `volume`. `receiverDurableSeq` is where the receiver's stream of it
   * stands; the source continues the stream after it and says which resync is needed.
   */
  attach(volume: ProtectedVolume, receiverDurableSeq: number): Promise<ResyncNeed>;
  /** Runs a resync in the background, its data ordered into the stream. */
  startResync(volumeId: string, kind: ResyncKind, remote: RemoteHashes): void;
  resyncProgress(volumeId: string): ResyncProgress | undefined;
  /** Granularity of hash-compares and repairs (the receiver is asked for hashes of blocks this size). */
  readonly blockSize: number;
  /**
   * Compares `ranges` of a volume (all of it when empty) with the receiver's block hashes, as a
   * hash-compare resync does, and puts the blocks that differ into the stream, ordered with
   * captured writes by seq. Repairs of a volume run one at a time, in the order asked. Resolves
   * once every record of the repair is durable at the receiver. Points cut while it runs are
   * not usable (accuracy none).
   */
  repair(volumeId: string, ranges: readonly ByteRange[], remote: RemoteHashes, reason: string): Promise<RepairResult>;
  /** The running repair of the volume, else the last one. */
  repairProgress(volumeId: string): RepairProgress | undefined;
  mode(volumeId: string): CaptureMode;
  /**
   * Sources that hand out at most this many bytes not yet committed (scan, ebpf: their
   * `maxPendingBytes`): the pipeline keeps its change sets small enough that several of them
   * fit, so that their round trips overlap instead of one set waiting for the last one's ack.
   */
  readonly pendingCapBytes?: number;
  /** The next batch of at most about `maxBytes`, waiting up to `timeoutMs` for one. */
  next(maxBytes: number, timeoutMs: number): Promise<CaptureBatch | undefined>;
  commit(batchId: number): Promise<void>;
  /**
   * Earliest moment a change not yet handed out may have happened, over all volumes (0: none):
   * the capture time of the oldest queued record, or for the scan source, when a block was
   * read longest ago if that is older (a write right after the read waits for the next pass).
   */
  oldestQueuedCaptureUs(): number;
  /** The same for one volume; sources that see every write as it completes may leave it out. */
  unsentSinceUs?(volumeId: string): number;
  /** Cuts every listed stream at one moment; records up to each cut are handed out before any after it. */
  tag(volumeIds: string[], options: TagOptions): Promise<VolumeCut[]>;
  /**
   * Sources that see writes as they happen (kernel): holds new writes on every listed volume
   * until the hold's commit or release, at most `boundMs` (the source, and the driver below it,
   * release by themselves then). Resolves once no write is in flight on any of them.
   */
  hold?(volumeIds: string[], boundMs: number): Promise<WriteHold>;
  /**
   * Makes the streams reflect the volumes as they are now (the scan source runs a full pass;
   * the kernel source has nothing to do), by `deadlineMs` at the latest; says why when it could not.
   */
  settle(volumeIds: string[], deadlineMs: number): Promise<SettleResult>;
  close(): Promise<void>;
}
