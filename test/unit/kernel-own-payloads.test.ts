import { describe, expect, it } from 'vitest';
import type { KernelRecord } from '../../native/addon';
import { ownPayloads } from '../../agent/capture/kernel-source';

function rec(seq: number, data: Buffer): KernelRecord {
  return { seq, devIndex: 0, kind: data.length > 0 ? 'write' : 'flush', offset: seq * 4096, length: data.length, timeNs: 0n, accuracy: 'exact', mode: 'data', flags: 0, data } as unknown as KernelRecord;
}

describe('ownPayloads', () => {
  it('copies the payloads out of the shared GET buffer in one piece, so the next GET cannot change them', () => {
    const shared = Buffer.alloc(64 * 1024);
    shared.fill(1, 100, 4196);
    shared.fill(2, 4300, 8396);
    const records = [rec(1, shared.subarray(100, 4196)), rec(2, EMPTY_VIEW(shared)), rec(3, shared.subarray(4300, 8396))];
    const own = ownPayloads(records, shared.subarray(0, 16 * 1024));
    shared.fill(9);
    expect(own.map((r) => r.data.length)).toEqual([4096, 0, 4096]);
    expect(own[0].data.every((b) => b === 1)).toBe(true);
    expect(own[2].data.every((b) => b === 2)).toBe(true);
    // one allocation shared by the batch, not the GET buffer
    expect(own[0].data.buffer).toBe(own[2].data.buffer);
    expect(own[0].data.buffer).not.toBe(shared.buffer);
    expect(own.map((r) => r.seq)).toEqual([1, 2, 3]);
  });

  it('copies a payload that is not a view into the shared buffer on its own', () => {
    const shared = Buffer.alloc(8192);
    const other = Buffer.alloc(4096, 7);
    const own = ownPayloads([rec(1, other)], shared);
    other.fill(0);
    expect(own[0].data.every((b) => b === 7)).toBe(true);
  });
});

function EMPTY_VIEW(b: Buffer): Buffer {
  return b.subarray(0, 0);
}
