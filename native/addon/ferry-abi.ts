// The dm-ferry change-record format (native/common/ferry_abi.h) in TypeScript:
// constants, names and a zero-copy parser for the batches GET_CHANGES returns.
// Pure code: no native addon needed, so it can parse captured batches anywhere.

export const FERRY_ABI_VERSION = 2;
export const BATCH_MAGIC = 0x42595246; // "FRYB" little-endian
export const BATCH_HEADER_SIZE = 48;
export const RECORD_HEADER_SIZE = 48;
export const MAX_DEVICES = 64;

/** Device capture mode (see native/common/README.md for the transitions). */
export type DeviceMode = 'data' | 'metadata' | 'bitmap' | 'draining';
export const DEVICE_MODES: readonly DeviceMode[] = ['data', 'metadata', 'bitmap', 'draining'];

/** What a recovery point taken right after a record can be, as far as the driver knows. */
export type Accuracy = 'exact' | 'approximate' | 'none';
export const ACCURACIES: readonly Accuracy[] = ['exact', 'approximate', 'none'];

/** How a device's stream started: NEW = full sync, CLEAN = drain the saved bitmap, DIRTY = crash: hash-compare everything. */
export type StartState = 'unknown' | 'new' | 'clean' | 'dirty';
export const START_STATES: readonly StartState[] = ['unknown', 'new', 'clean', 'dirty'];

export type RecordKind = 'write' | 'discard' | 'flush' | 'tag' | 'resync-mark' | 'dirty' | 'mode' | 'start';
/** Index = the kind code in ferry_rec.kind. */
export const RECORD_KINDS: readonly (RecordKind | undefined)[] = [
  undefined,
  'write',
  'discard',
  'flush',
  'tag',
  'resync-mark',
  'dirty',
  'mode',
  'start',
];

/** ferry_rec.flags bits. */
export const RecordFlag = {
  FUA: 0x1,
  IO_ERROR: 0x2,
  BITMAP_CUT: 0x4,
  REDELIVERED: 0x8,
  /** DIRTY: overlapping writes were in flight together; the disk may hold either's data there. */
  OVERLAP: 0x10,
} as const;

/** ferry_dev_info.flags bits. */
export const DeviceFlag = {
  SUSPENDED: 0x1,
  HOLD: 0x2,
  POOL_LOW: 0x4,
} as const;

export interface KernelRecord {
  /** Per-device sequence number: +1 per record, no gaps within a load of the table. */
  seq: number;
  /** Index of the device (DeviceInfo.index). */
  devIndex: number;
  kind: RecordKind;
  /**
   * Bytes on the device for write/discard/dirty/resync-mark. For 'tag' the caller's tag id,
   * for 'start' the load generation, else 0.
   */
  offset: number;
  /** Bytes covered on the device; 'mode': the previous mode code; 'start': the start state code. */
  length: number;
  /** Capture time, ns since the Unix epoch. */
  timeNs: bigint;
  accuracy: Accuracy;
  /** The device's mode when the record was made ('mode' records: the new mode). */
  mode: DeviceMode;
  /** RecordFlag bits. */
  flags: number;
  /** Payload (a 'write' in DATA mode): a view into the batch buffer, no copy. Empty otherwise. */
  data: Buffer;
  /** Offset of the record header in the batch buffer. */
  bufferOffset: number;
}

export interface KernelBatch {
  /** Pass to commit(); 0 when the batch is empty. */
  batchId: number;
  records: KernelRecord[];
  /** Some records were handed out before (the consumer reconnected). */
  redelivery: boolean;
  /** Worst accuracy of the batch's records. */
  accuracy: Accuracy;
  /** Bytes of the buffer the batch occupies. */
  bytes: number;
}

/** A batch buffer that does not follow the format (a driver/ABI mismatch). */
export class BatchFormatError extends Error {
  override name = 'BatchFormatError';
  readonly code = 'ERR_FERRY_BATCH_FORMAT';
}

function u64(buf: Buffer, off: number, what: string): number {
  const value = buf.readBigUInt64LE(off);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new BatchFormatError(`${what} ${value} at byte ${off} exceeds 2^53`);
  }
  return Number(value);
}

function named<T>(table: readonly (T | undefined)[], code: number, what: string, off: number): T {
  const name = table[code];
  if (name === undefined) throw new BatchFormatError(`unknown ${what} ${code} at byte ${off}`);
  return name;
}

/**
 * Parses one batch as written by GET_CHANGES into `buf` (from its start). Records' payloads are
 * views into `buf`: reusing the buffer overwrites them. Throws BatchFormatError on a malformed
 * batch (wrong magic/version/sizes, a record running past the end).
 */
export function parseBatch(buf: Buffer): KernelBatch {
  if (buf.length < BATCH_HEADER_SIZE) throw new BatchFormatError(`buffer of ${buf.length} bytes holds no batch header`);
  const magic = buf.readUInt32LE(0);
  if (magic !== BATCH_MAGIC) throw new BatchFormatError(`bad batch magic 0x${magic.toString(16)}`);
  const version = buf.readUInt16LE(4);
  if (version !== FERRY_ABI_VERSION) throw new BatchFormatError(`batch ABI version ${version}, expected ${FERRY_ABI_VERSION}`);
  const hdrSize = buf.readUInt16LE(6);
  const recHdrSize = buf.readUInt32LE(8);
  if (hdrSize !== BATCH_HEADER_SIZE || recHdrSize !== RECORD_HEADER_SIZE) {
    throw new BatchFormatError(`batch header ${hdrSize} / record header ${recHdrSize} bytes, expected 48 / 48`);
  }
  const nrecords = buf.readUInt32LE(12);
  const batchId = u64(buf, 16, 'batch id');
  const total = u64(buf, 24, 'batch size');
  const flags = buf.readUInt32LE(32);
  const accuracyCode = buf.readUInt8(36);
  if (total > buf.length || total < BATCH_HEADER_SIZE) {
    throw new BatchFormatError(`batch claims ${total} bytes, buffer has ${buf.length}`);
  }
  const records: KernelRecord[] = new Array(nrecords);
  let off = BATCH_HEADER_SIZE;
  for (let i = 0; i < nrecords; i++) {
    if (off + RECORD_HEADER_SIZE > total) throw new BatchFormatError(`record ${i} header at byte ${off} runs past the batch`);
    const dataLen = buf.readUInt32LE(off + 32);
    const recSize = buf.readUInt32LE(off + 36);
    if (recSize % 8 !== 0 || recSize < RECORD_HEADER_SIZE + dataLen || off + recSize > total) {
      throw new BatchFormatError(`record ${i} at byte ${off}: size ${recSize} with ${dataLen} payload bytes is invalid`);
    }
    const dataStart = off + RECORD_HEADER_SIZE;
    records[i] = {
      seq: u64(buf, off, 'seq'),
      offset: u64(buf, off + 8, 'offset'),
      timeNs: buf.readBigUInt64LE(off + 16),
      devIndex: buf.readUInt32LE(off + 24),
      length: buf.readUInt32LE(off + 28),
      kind: named(RECORD_KINDS, buf.readUInt16LE(off + 40), 'record kind', off),
      accuracy: named(ACCURACIES, buf.readUInt8(off + 42), 'accuracy', off),
      mode: named(DEVICE_MODES, buf.readUInt8(off + 43), 'mode', off),
      flags: buf.readUInt32LE(off + 44),
      data: buf.subarray(dataStart, dataStart + dataLen),
      bufferOffset: off,
    };
    off += recSize;
  }
  if (off !== total) throw new BatchFormatError(`records end at byte ${off}, batch claims ${total}`);
  return {
    batchId,
    records,
    redelivery: (flags & 0x1) !== 0,
    accuracy: named(ACCURACIES, accuracyCode, 'batch accuracy', 36),
    bytes: total,
  };
}

export interface ByteRange {
  offset: number;
  length: number;
}

/**
 * The device ranges a dirty bitmap marks (bit i = bytes [i, i+1) * granularity, clipped to
 * sizeBytes), adjacent regions merged. `bitmap` holds bytes from bit 0 on.
 */
export function dirtyRanges(bitmap: Buffer, nbits: number, granularity: number, sizeBytes: number): ByteRange[] {
  const ranges: ByteRange[] = [];
  let runStart = -1;
  const limit = Math.min(nbits, bitmap.length * 8);
  const flush = (endBit: number): void => {
    if (runStart < 0) return;
    const offset = runStart * granularity;
    const end = Math.min(endBit * granularity, sizeBytes);
    if (end > offset) ranges.push({ offset, length: end - offset });
    runStart = -1;
  };
  for (let bit = 0; bit < limit; bit++) {
    const byte = bitmap[bit >> 3];
    if (byte === 0 && (bit & 7) === 0) {
      flush(bit);
      bit += 7;
      continue;
    }
    if (byte & (1 << (bit & 7))) {
      if (runStart < 0) runStart = bit;
    } else {
      flush(bit);
    }
  }
  flush(limit);
  return ranges;
}
