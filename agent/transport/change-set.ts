import { ferry } from '../../proto/frames';
import { packPayload } from '../../proto/payload';
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

/** Builds the wire form of consecutive records firstSeq, firstSeq+1, ... of one volume. */
export function buildChangeSet(
  volumeId: string,
  firstSeq: number,
  records: readonly ChangeRecord[],
  accuracy: AccuracyName,
  pendingSinceUs = 0,
): ferry.IChangeSet {
  const payload = packPayload(Buffer.concat(records.filter((r) => r.kind === 'write').map((r) => r.data ?? Buffer.alloc(0))));
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
