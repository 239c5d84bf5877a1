import { randomBytes } from 'crypto';
import { describe, expect, it } from 'vitest';
import { buildChangeSet, ChangeRecord, changeSetHeader, gatherPayload } from '../../agent/transport/change-set';
import { encodeChangeSetFrame } from '../../proto/change-set-frame';
import { decodeFrame, encodeFrame, ferry } from '../../proto/frames';
import { ScratchBuffer } from '../../proto/payload';
import { validateChangeSet } from '../../proto/validate';

const KiB = 1024;
const VOLUME = 1 << 30;

const write = (offset: number, data: Buffer, captureTimeUs = 1_700_000_000_000_000): ChangeRecord => ({ kind: 'write', offset, length: data.length, captureTimeUs, data });
const text = (bytes: number): Buffer => Buffer.from('ferry replicates blocks; '.repeat(Math.ceil(bytes / 25)).slice(0, bytes));

/** The frame as the new encoder writes it, into memory from an allocator that records what it gave. */
function encode(records: ChangeRecord[], firstSeq = 1, pendingSinceUs = 0): { frame: Buffer; given: Buffer[] } {
  const given: Buffer[] = [];
  const { frame } = encodeChangeSetFrame(changeSetHeader('vol-1', firstSeq, records, 'exact', pendingSinceUs), gatherPayload(records), (size) => {
    const b = Buffer.alloc(size, 0xee);
    given.push(b);
    return b;
  });
  return { frame, given };
}

const cases: Array<[string, ChangeRecord[]]> = [
  ['compressible text', [write(0, text(64 * KiB)), write(128 * KiB, text(4 * KiB))]],
  ['incompressible data (sent raw)', [write(4096, randomBytes(256 * KiB))]],
  ['no data at all (flush and discard only)', [{ kind: 'flush', offset: 0, length: 0, captureTimeUs: 5 }, { kind: 'discard', offset: 8192, length: 4096, captureTimeUs: 6 }]],
  ['many small extents', Array.from({ length: 3000 }, (_, i) => write(i * 4096, i % 2 ? randomBytes(512) : text(512)))],
  ['a full 4 MiB set of 64 KiB blocks, half random', Array.from({ length: 64 }, (_, i) => write(i * 64 * KiB, i % 2 ? randomBytes(64 * KiB) : text(64 * KiB)))],
];

describe('encodeChangeSetFrame (payload compressed straight into the frame)', () => {
  it.each(cases)('%s: decodes to what encodeFrame(buildChangeSet) decodes to, and the receiver validates it', (_name, records) => {
    const firstSeq = 2 ** 40;
    const { frame, given } = encode(records, firstSeq, 1_700_000_000_000_123);
    expect(given).toHaveLength(1);
    expect(frame.buffer).toBe(given[0].buffer);
    const ours = decodeFrame(frame);
    const theirs = decodeFrame(encodeFrame({ changeSet: buildChangeSet('vol-1', firstSeq, records, 'exact', 1_700_000_000_000_123) }));
    // Field by field (the payload as bytes: an element-wise compare of megabytes is slow).
    const { payload: ourPayload, ...ourFields } = ours.changeSet as ferry.ChangeSet;
    const { payload: theirPayload, ...theirFields } = theirs.changeSet as ferry.ChangeSet;
    expect(ours.version).toBe(theirs.version);
    expect(ourFields).toEqual(theirFields);
    expect(Buffer.from(ourPayload ?? []).equals(Buffer.from(theirPayload ?? []))).toBe(true);
    const batch = validateChangeSet(ours.changeSet as ferry.IChangeSet, VOLUME);
    expect(batch.data.equals(Buffer.concat(records.flatMap((r) => (r.data ? [r.data] : []))))).toBe(true);
    expect(batch.firstSeq).toBe(firstSeq);
    expect(batch.lastSeq).toBe(firstSeq + records.length - 1);
  });

  it('keeps incompressible data raw and compresses text', () => {
    const raw = decodeFrame(encode([write(0, randomBytes(64 * KiB))]).frame).changeSet;
    expect(raw?.compression ?? 0).toBe(ferry.Compression.COMPRESSION_NONE);
    const lz4 = decodeFrame(encode([write(0, text(64 * KiB))]).frame).changeSet;
    expect(lz4?.compression).toBe(ferry.Compression.LZ4_BLOCK);
    expect(lz4?.payload?.length).toBeLessThan(16 * KiB);
  });
});

describe('gatherPayload', () => {
  it('gives a view when the records lie end to end in one buffer, else gathers a copy', () => {
    const slab = randomBytes(3 * 4096);
    const adjacent = [write(0, slab.subarray(0, 4096)), write(8192, slab.subarray(4096, 8192)), write(65536, slab.subarray(8192))];
    const view = gatherPayload(adjacent);
    expect(view.buffer).toBe(slab.buffer);
    expect(view.equals(slab)).toBe(true);

    const apart = [write(0, slab.subarray(0, 4096)), write(8192, slab.subarray(8192))];
    const scratch = new ScratchBuffer();
    const gathered = gatherPayload(apart, scratch);
    expect(gathered.buffer).not.toBe(slab.buffer);
    expect(gathered.equals(Buffer.concat([slab.subarray(0, 4096), slab.subarray(8192)]))).toBe(true);
    expect(gatherPayload([{ kind: 'flush', offset: 0, length: 0, captureTimeUs: 1 }]).length).toBe(0);
  });
});
