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
  const writes = records.filter((r) => r.kind === 'write').map((r) => r.data ?? Buffer.alloc(0));
  const payload = packPayload(scratch ? gather(writes, scratch.raw) : Buffer.concat(writes), scratch?.compressed);
  return {
    volumeId,
    firstSeq,
    lastSeq: firstSeq + records.length - 1,
    extents: records.map((r) => ({ kind: kindValue[r.kind], offset: r.offset, length: r.length, captureTimeUs: r.captureTimeUs })),
    compression: payload.compression,
    payload: payload.payload,
    uncompressedSize: payload.uncompressedSize,
    payloadCrc32: payload.payloadCrc32,
    accuracy: accuracyValue(accuracy),
    pendingSinceUs,
  };
}

/** Concatenates `parts` into `scratch` (no new allocation once it has grown). */
function gather(parts: readonly Buffer[], scratch: ScratchBuffer): Buffer {
  const out = scratch.get(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) off += p.copy(out, off);
  return out;
}
