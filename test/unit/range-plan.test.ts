import { describe, expect, it } from 'vitest';
import { RangePlan } from '../../receiver/redo/range-plan';
import { VisiblePiece } from '../../receiver/redo/visible-pieces';

const EPOCH = { baseSeq: 0, advancingTo: undefined, forgets: 0 };

/** Record r's payload: byte i is (r * 31 + i) & 0xff. */
function payloadOf(record: number, length: number): Buffer {
  return Buffer.from(Array.from({ length }, (_, i) => (record * 31 + i) & 0xff));
}

/** A whole-extent piece of `record` at `offset` whose data starts `dataOffset` into the payload. */
function piece(record: number, offset: number, length: number, dataOffset: number): VisiblePiece {
  return { offset, length, skip: 0, extent: { seq: record * 100 + offset, offset, length, segment: 1, recordOffset: record * 4096, dataOffset } };
}

/** Reads [from, to) in slices of `step` through the plan; counts payload reads per record. */
function readAll(plan: RangePlan, from: number, to: number, step: number): { image: Buffer; reads: Map<number, number> } {
  const image = Buffer.alloc(to - from, 0xee);
  const reads = new Map<number, number>();
  for (let at = from; at < to; at += step) {
    const end = Math.min(to, at + step);
    const groups = new Map<number, VisiblePiece[]>();
    for (const p of plan.slice(at, end)) {
      const key = p.extent.dataOffset < 0 ? -p.extent.seq : p.extent.recordOffset;
      groups.set(key, [...(groups.get(key) ?? []), p]);
    }
    for (const group of groups.values()) {
      const record = group[0].extent.recordOffset / 4096;
      plan.take(group, end, () => {
        reads.set(record, (reads.get(record) ?? 0) + 1);
        return payloadOf(record, 4096);
      }, (p, bytes) => (bytes ? bytes.copy(image, p.offset - from) : image.fill(0, p.offset - from, p.offset - from + p.length)));
    }
  }
  return { image, reads };
}

describe('RangePlan (pure)', () => {
  // Record 1 holds scattered pieces across the whole range, record 2 one piece that spans two
  // slices, and a discard sits between them.
  const pieces = [piece(1, 0, 100, 0), piece(2, 150, 300, 500), piece(1, 600, 50, 200), { ...piece(3, 700, 40, -1) }, piece(1, 900, 80, 1000)];
  const expected = (): Buffer => {
    const image = Buffer.alloc(1000, 0xee);
    payloadOf(1, 4096).copy(image, 0, 0, 100);
    payloadOf(2, 4096).copy(image, 150, 500, 800);
    payloadOf(1, 4096).copy(image, 600, 200, 250);
    image.fill(0, 700, 740);
    payloadOf(1, 4096).copy(image, 900, 1000, 1080);
    return image;
  };

  it('gives every slice its bytes, reading each record once when what later slices need fits', () => {
    const plan = new RangePlan(EPOCH, 0, 1000, pieces, 1 << 20);
    const { image, reads } = readAll(plan, 0, 1000, 256);
    expect(image.equals(expected())).toBe(true);
    expect(Object.fromEntries(reads)).toEqual({ 1: 1, 2: 1 });
    expect(plan.heldBytes).toBe(0);
  });

  it('with no budget, reads a record again for each slice that needs it, with the same bytes', () => {
    const plan = new RangePlan(EPOCH, 0, 1000, pieces, 0);
    const { image, reads } = readAll(plan, 0, 1000, 256);
    expect(image.equals(expected())).toBe(true);
    expect(Object.fromEntries(reads)).toEqual({ 1: 3, 2: 2 });
  });

  it('puts aside only what fits the budget, and refuses slices out of order', () => {
    const plan = new RangePlan(EPOCH, 0, 1000, pieces, 100);
    const { image, reads } = readAll(plan, 0, 1000, 256);
    expect(image.equals(expected())).toBe(true);
    // Record 1's piece at 600 (50 bytes) fits, its piece at 900 does not after it, and record
    // 2's 300 bytes never do: 1 is read again for the last slice, 2 for the second.
    expect(Object.fromEntries(reads)).toEqual({ 1: 2, 2: 2 });
    expect(() => plan.slice(0, 256)).toThrow(/expected from 1000/);
  });

  it('a write whose record gives no payload is an error naming its seq', () => {
    const plan = new RangePlan(EPOCH, 0, 1000, pieces, 1 << 20);
    const first = plan.slice(0, 256).filter((p) => p.extent.recordOffset === 4096);
    expect(() => plan.take(first, 256, () => undefined, () => undefined)).toThrow(/record of seq 100 gave no payload/);
  });
});
