import type { ChangeSetHeader } from '../../proto/change-set-frame';
import { ferry } from '../../proto/frames';
import { packPayload, ScratchBuffer } from '../../proto/payload';
import { accuracyValue, AccuracyName, ExtentKind } from '../../proto/types';

/** One change record as a capture source hands it over. */
export interface ChangeRecord {
  kind: ExtentKind;
  offset: number;
  /** Byte count; for a write it equals data.length. */
  length: number;
  captureTimeUs: number;
  data?: Buffer;
}

const kindValue: Record<ExtentKind, ferry.Extent.Kind> = {
  write: ferry.Extent.Kind.WRITE,
  discard: ferry.Extent.Kind.DISCARD,
  flush: ferry.Extent.Kind.FLUSH,
  noop: ferry.Extent.Kind.NOOP,
};

/** Where buildChangeSet may gather and compress the payload instead of allocating for each set. */
export interface ChangeSetScratch {
  raw: ScratchBuffer;
  compressed: ScratchBuffer;
}

/** Every field of the change set of consecutive records firstSeq, firstSeq+1, ... but the payload's. */
export function changeSetHeader(volumeId: string, firstSeq: number, records: readonly ChangeRecord[], accuracy: AccuracyName, pendingSinceUs = 0): ChangeSetHeader {
  return {
    volumeId,
    firstSeq,
    lastSeq: firstSeq + records.length - 1,
    extents: records.map((r) => ({ kind: kindValue[r.kind], offset: r.offset, length: r.length, captureTimeUs: r.captureTimeUs })),
    accuracy: accuracyValue(accuracy),
    pendingSinceUs,
  };
}

/**
 * Builds the wire form of consecutive records firstSeq, firstSeq+1, ... of one volume. With
 * `scratch`, the payload lives in it: encode the change set before the next build.
 */
export function buildChangeSet(
  volumeId: string,
  firstSeq: number,
  records: readonly ChangeRecord[],
  accuracy: AccuracyName,
  pendingSinceUs = 0,
  scratch?: ChangeSetScratch,
): ferry.IChangeSet {
  const payload = packPayload(gatherPayload(records, scratch?.raw), scratch?.compressed);
  return {
    ...changeSetHeader(volumeId, firstSeq, records, accuracy, pendingSinceUs),
    compression: payload.compression,
    payload: payload.payload,
    uncompressedSize: payload.uncompressedSize,
    payloadCrc32: payload.payloadCrc32,
  };
}

/**
 * The written bytes of `records` in order, as one buffer: a view when they already lie end to
 * end in one piece of memory (a scan's changed blocks), else gathered into `scratch` (valid
 * until its next use) or a new buffer.
 */
export function gatherPayload(records: readonly ChangeRecord[], scratch?: ScratchBuffer): Buffer {
  const parts: Buffer[] = [];
  for (const r of records) if (r.kind === 'write' && r.data && r.data.length > 0) parts.push(r.data);
  const adjacent = contiguous(parts);
  if (adjacent) return adjacent;
  if (!scratch) return Buffer.concat(parts);
  const out = scratch.get(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) off += p.copy(out, off);
  return out;
}

/** One view over `parts` when each starts where the one before it ends in the same memory. */
function contiguous(parts: readonly Buffer[]): Buffer | undefined {
  if (parts.length === 0) return Buffer.alloc(0);
  const first = parts[0];
  let end = first.byteOffset + first.length;
  for (let i = 1; i < parts.length; i++) {
    const p = parts[i];
    if (p.buffer !== first.buffer || p.byteOffset !== end) return undefined;
    end += p.length;
  }
  return Buffer.from(first.buffer, first.byteOffset, end - first.byteOffset);
}
