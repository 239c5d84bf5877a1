/**
 * The TypeScript side of the change-record ABI (native/addon/ferry-abi.ts): parsing batches laid
 * out exactly as native/common/ferry_abi.h describes, rejecting malformed ones, and turning a
 * dirty bitmap into byte ranges. Pure code: no kernel, no root.
 */
import { describe, expect, it } from 'vitest';
import { BATCH_HEADER_SIZE, BatchFormatError, RECORD_HEADER_SIZE, RecordFlag, UnknownDeviceModeError, dirtyRanges, parseBatch, toDeviceInfo, type RawDeviceInfo } from '../../native/addon';

interface RecSpec {
  seq: number;
  offset: number;
  timeNs: bigint;
  dev: number;
  length: number;
  kind: number;
  accuracy: number;
  mode: number;
  flags: number;
  data?: Buffer;
}

/** Writes a batch byte for byte as ferry_stream_get() does. */
function buildBatch(batchId: number, recs: RecSpec[], flags = 0, accuracy = 0): Buffer {
  const sizes = recs.map((r) => RECORD_HEADER_SIZE + Math.ceil((r.data?.length ?? 0) / 8) * 8);
  const total = BATCH_HEADER_SIZE + sizes.reduce((a, b) => a + b, 0);
  const buf = Buffer.alloc(total + 64, 0xee); // trailing garbage must be ignored
  buf.fill(0, 0, total);
  buf.writeUInt32LE(0x42595246, 0);
  buf.writeUInt16LE(2, 4);
  buf.writeUInt16LE(48, 6);
  buf.writeUInt32LE(48, 8);
  buf.writeUInt32LE(recs.length, 12);
  buf.writeBigUInt64LE(BigInt(batchId), 16);
  buf.writeBigUInt64LE(BigInt(total), 24);
  buf.writeUInt32LE(flags, 32);
  buf.writeUInt8(accuracy, 36);
  let off = BATCH_HEADER_SIZE;
  recs.forEach((r, i) => {
    buf.writeBigUInt64LE(BigInt(r.seq), off);
    buf.writeBigUInt64LE(BigInt(r.offset), off + 8);
    buf.writeBigUInt64LE(r.timeNs, off + 16);
    buf.writeUInt32LE(r.dev, off + 24);
    buf.writeUInt32LE(r.length, off + 28);
    buf.writeUInt32LE(r.data?.length ?? 0, off + 32);
    buf.writeUInt32LE(sizes[i], off + 36);
    buf.writeUInt16LE(r.kind, off + 40);
    buf.writeUInt8(r.accuracy, off + 42);
    buf.writeUInt8(r.mode, off + 43);
    buf.writeUInt32LE(r.flags, off + 44);
    r.data?.copy(buf, off + RECORD_HEADER_SIZE);
    off += sizes[i];
  });
  return buf;
}

const base: RecSpec = { seq: 1, offset: 0, timeNs: 1_800_000_000_000_000_000n, dev: 0, length: 0, kind: 1, accuracy: 0, mode: 0, flags: 0 };

describe('parseBatch', () => {
  it('decodes every field and gives payloads as views into the buffer', () => {
    const payload = Buffer.from('0123456789abc'); // 13 bytes: padded to 16
    const buf = buildBatch(
      7,
      [
        { ...base, seq: 10, offset: 4096, length: 13, data: payload, flags: RecordFlag.FUA },
        { ...base, seq: 11, kind: 3, dev: 2 },
        { ...base, seq: 12, kind: 6, offset: 2 ** 40, length: 65536, accuracy: 1, mode: 1 },
        { ...base, seq: 13, kind: 7, mode: 2, length: 1, accuracy: 2 },
        { ...base, seq: 14, kind: 5, flags: RecordFlag.BITMAP_CUT | RecordFlag.REDELIVERED, mode: 3, accuracy: 2 },
      ],
      1,
      2,
    );
    const batch = parseBatch(buf);
    expect(batch.batchId).toBe(7);
    expect(batch.redelivery).toBe(true);
    expect(batch.accuracy).toBe('none');
    expect(batch.bytes).toBe(48 + (48 + 16) + 48 * 4);
    expect(batch.records.map((r) => r.kind)).toEqual(['write', 'flush', 'dirty', 'mode', 'resync-mark']);
    const [w, f, d, m, c] = batch.records;
    expect(w).toMatchObject({ seq: 10, offset: 4096, length: 13, devIndex: 0, accuracy: 'exact', mode: 'data', flags: RecordFlag.FUA });
    expect(w.timeNs).toBe(1_800_000_000_000_000_000n);
    expect(w.data.toString()).toBe('0123456789abc');
    expect(w.data.buffer).toBe(buf.buffer); // a view, not a copy
    expect(f).toMatchObject({ devIndex: 2, data: Buffer.alloc(0) });
    expect(d).toMatchObject({ offset: 2 ** 40, length: 65536, accuracy: 'approximate', mode: 'metadata' });
    expect(m).toMatchObject({ mode: 'bitmap', length: 1 });
    expect(c.flags & RecordFlag.BITMAP_CUT).toBeTruthy();
    expect(c.mode).toBe('draining');
  });

  it('parses an empty batch', () => {
    expect(parseBatch(buildBatch(0, []))).toMatchObject({ batchId: 0, records: [], bytes: 48 });
  });

  it('rejects malformed batches with ERR_FERRY_BATCH_FORMAT', () => {
    const good = buildBatch(1, [{ ...base, length: 8, data: Buffer.alloc(8) }]);
    const bad = (mutate: (b: Buffer) => void): Buffer => {
      const b = Buffer.from(good);
      mutate(b);
      return b;
    };
    const cases: Array<[string, Buffer]> = [
      ['short', Buffer.alloc(20)],
      ['magic', bad((b) => b.writeUInt32LE(0, 0))],
      ['version', bad((b) => b.writeUInt16LE(1, 4))],
      ['record header size', bad((b) => b.writeUInt32LE(56, 8))],
      ['total past the buffer', bad((b) => b.writeBigUInt64LE(10_000n, 24))],
      ['record count', bad((b) => b.writeUInt32LE(2, 12))],
      ['record size not a multiple of 8', bad((b) => b.writeUInt32LE(60, 48 + 36))],
      ['payload past the record', bad((b) => b.writeUInt32LE(64, 48 + 32))],
      ['unknown kind', bad((b) => b.writeUInt16LE(99, 48 + 40))],
      ['seq above 2^53', bad((b) => b.writeBigUInt64LE(1n << 60n, 48))],
    ];
    for (const [what, buf] of cases) {
      let caught: unknown;
      try {
        parseBatch(buf);
      } catch (err) {
        caught = err;
      }
      expect(caught, what).toBeInstanceOf(BatchFormatError);
      expect((caught as BatchFormatError).code, what).toBe('ERR_FERRY_BATCH_FORMAT');
    }
  });
});

describe('dirtyRanges', () => {
  it('merges adjacent regions and clips the last one to the device', () => {
    const bm = Buffer.alloc(8);
    bm[0] = 0b1000_0110; // bits 1, 2, 7
    bm[1] = 0b0000_0001; // bit 8 (adjacent to 7)
    bm[2] = 0b1000_0000; // bit 23: the last bit, a partial region
    expect(dirtyRanges(bm, 24, 4096, 23 * 4096 + 100)).toEqual([
      { offset: 4096, length: 8192 },
      { offset: 7 * 4096, length: 8192 },
      { offset: 23 * 4096, length: 100 },
    ]);
    expect(dirtyRanges(Buffer.alloc(8), 64, 65536, 64 * 65536)).toEqual([]);
    expect(dirtyRanges(Buffer.alloc(8, 0xff), 64, 65536, 64 * 65536)).toEqual([{ offset: 0, length: 64 * 65536 }]);
  });
});

describe('toDeviceInfo', () => {
  const counters = {
    writes: 0, writeBytes: 0, dirtyRecords: 0, discards: 0, flushes: 0, tags: 0, resyncMarks: 0, modeChanges: 0,
    bitmapWrites: 0, failedWrites: 0, droppedFlushes: 0, recordsCommitted: 0, bytesCommitted: 0, overlaps: 0, overlapDirty: 0,
  };
  const raw = (mode: number, startState = 2, flags = 0): RawDeviceInfo => ({
    name: 'ferry-vol1', index: 0, mode, devMajor: 253, devMinor: 1, dataMajor: 7, dataMinor: 0, metaMajor: 7, metaMinor: 1,
    sizeBytes: 1 << 30, granularity: 65536, startState, generation: 1, flags, firstSeq: 1, nextSeq: 10, committedSeq: 5,
    seqLimit: 0, bitmapBits: 16384, dirtyBits: 0, bitmapEpoch: 0, ringCapacity: 4096, ringUsed: 3, ringHandedOut: 0,
    poolSize: 1 << 20, poolUsed: 0, inflight: 0, counters,
  });

  it('names every mode and start state the ABI defines, and reads the suspended flag', () => {
    expect([0, 1, 2, 3].map((m) => toDeviceInfo(raw(m)).modeName)).toEqual(['data', 'metadata', 'bitmap', 'draining']);
    expect([0, 1, 2, 3].map((s) => toDeviceInfo(raw(0, s)).startStateName)).toEqual(['unknown', 'new', 'clean', 'dirty']);
    expect(toDeviceInfo(raw(0, 2, 0x1)).suspended).toBe(true);
    expect(toDeviceInfo(raw(0, 2, 0x2)).suspended).toBe(false);
    expect(toDeviceInfo(raw(1))).toMatchObject({ name: 'ferry-vol1', nextSeq: 10, mode: 1 });
  });

  it('refuses a mode code it does not know instead of calling it data', () => {
    for (const mode of [4, 99, -1]) {
      let caught: unknown;
      try {
        toDeviceInfo(raw(mode));
      } catch (err) {
        caught = err;
      }
      expect(caught, `mode ${mode}`).toBeInstanceOf(UnknownDeviceModeError);
      expect(caught).toMatchObject({ code: 'ERR_FERRY_DEVICE_MODE', device: 'ferry-vol1', modeCode: mode });
      expect((caught as Error).message).toContain(`capture mode ${mode}`);
    }
  });
});
