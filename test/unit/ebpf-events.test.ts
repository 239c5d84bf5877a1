/**
 * Decoding the eBPF write tracker's packed events (agent/capture/ebpf/events.ts): the wire
 * layout of tracker.ts, every op, the flags, and buffers that are not well-formed events. The
 * real program's events are checked in test/vm/ebpf-tracker.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { decodeEvents, TraceDecodeError } from '../../agent/capture/ebpf/events';
import { EVENT_BYTES } from '../../agent/capture/ebpf/tracker';

interface RawEvent {
  timeNs?: bigint;
  sector?: bigint;
  bytes?: number;
  slot?: number;
  op?: number;
  flags?: number;
  reserved?: number;
}

function encode(events: RawEvent[]): Buffer {
  const buf = Buffer.alloc(events.length * EVENT_BYTES);
  events.forEach((e, i) => {
    const off = i * EVENT_BYTES;
    buf.writeBigUInt64LE(e.timeNs ?? 1n, off);
    buf.writeBigUInt64LE(e.sector ?? 0n, off + 8);
    buf.writeUInt32LE(e.bytes ?? 0, off + 16);
    buf.writeUInt32LE(e.slot ?? 0, off + 20);
    buf.writeUInt16LE(e.op ?? 1, off + 24);
    buf.writeUInt16LE(e.flags ?? 0, off + 26);
    buf.writeUInt32LE(e.reserved ?? 0, off + 28);
  });
  return buf;
}

describe('decodeEvents', () => {
  it('reads every field at its offset, little endian', () => {
    const buf = encode([{ timeNs: 0x0102030405060708n, sector: 0x1_0000_0002n, bytes: 0x10_2000, slot: 7, op: 1, flags: 0 }]);
    expect(EVENT_BYTES).toBe(32);
    expect(decodeEvents(buf)).toEqual([
      { slot: 7, sector: 0x1_0000_0002, bytes: 0x10_2000, op: 'write', fua: false, preflush: false, error: false, timeNs: 0x0102030405060708n },
    ]);
  });

  it('names every REQ_OP the program reports', () => {
    const ops = [1, 2, 3, 5, 9].map((op) => ({ op }));
    expect(decodeEvents(encode(ops)).map((e) => e.op)).toEqual(['write', 'flush', 'discard', 'secure-erase', 'write-zeroes']);
  });

  it('reads FUA, PREFLUSH and ERROR as separate bits', () => {
    const decoded = decodeEvents(encode([{ flags: 1 }, { flags: 2 }, { flags: 4 }, { flags: 7 }]));
    expect(decoded.map(({ fua, preflush, error }) => ({ fua, preflush, error }))).toEqual([
      { fua: true, preflush: false, error: false },
      { fua: false, preflush: true, error: false },
      { fua: false, preflush: false, error: true },
      { fua: true, preflush: true, error: true },
    ]);
  });

  it('keeps the order and decodes an empty buffer to no events', () => {
    expect(decodeEvents(Buffer.alloc(0))).toEqual([]);
    const decoded = decodeEvents(encode([{ sector: 8n }, { sector: 0n }, { sector: 4n }]));
    expect(decoded.map((e) => e.sector)).toEqual([8, 0, 4]);
  });

  it('refuses a buffer that is not a whole number of events', () => {
    const buf = encode([{}, {}]);
    expect(() => decodeEvents(buf.subarray(0, 40))).toThrow(TraceDecodeError);
    expect(() => decodeEvents(buf.subarray(0, 40))).toThrow('40 bytes is not a multiple of the 32-byte event');
    expect(() => decodeEvents(buf.subarray(0, 31))).toThrow('31 bytes');
  });

  it('refuses garbled events: a read or unknown op, unknown flags, a nonzero reserved field, a huge sector', () => {
    expect(() => decodeEvents(encode([{}, { op: 0 }]))).toThrow('trace event 1: unknown op 0');
    expect(() => decodeEvents(encode([{ op: 4 }]))).toThrow('unknown op 4');
    expect(() => decodeEvents(encode([{ flags: 8 }]))).toThrow('unknown flags 0x8');
    expect(() => decodeEvents(encode([{ reserved: 1 }]))).toThrow('reserved field is 0x1');
    expect(() => decodeEvents(encode([{ sector: 1n << 60n }]))).toThrow(/sector \d+ is out of range/);
    expect(() => decodeEvents(Buffer.alloc(64, 0xff))).toThrow(TraceDecodeError);
  });
});
