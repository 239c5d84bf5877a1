import { describe, expect, it } from 'vitest';
import { ageOutTargetFree, planEarlyAgeOut } from '../../receiver/redo/early-age-out';

const MiB = 1024 * 1024;
/** Segments of 1 MiB holding seqs 1-100, 101-200, ... (the last one is the active one). */
const segs = (n: number) => Array.from({ length: n }, (_, i) => ({ firstSeq: i * 100 + 1, bytes: MiB }));

describe('early age-out plan (redo, pure)', () => {
  it('advances just past the oldest segments that free what is wanted', () => {
    expect(planEarlyAgeOut({ segments: segs(5), baseSeq: 0, limitSeq: 500, wantBytes: 1.5 * MiB })).toEqual({ toSeq: 200, freedBytes: 2 * MiB, enough: true });
    expect(planEarlyAgeOut({ segments: segs(5), baseSeq: 0, limitSeq: 500, wantBytes: 1 })).toEqual({ toSeq: 100, freedBytes: MiB, enough: true });
  });

  it('nothing wanted, nothing planned', () => {
    expect(planEarlyAgeOut({ segments: segs(5), baseSeq: 0, limitSeq: 500, wantBytes: 0 })).toBeUndefined();
    expect(planEarlyAgeOut({ segments: segs(5), baseSeq: 0, limitSeq: 500, wantBytes: -MiB })).toBeUndefined();
  });

  it('never frees the active segment, never passes what is applied and checkpointed', () => {
    // Everything wanted: all but the active segment, up to the limit.
    expect(planEarlyAgeOut({ segments: segs(5), baseSeq: 0, limitSeq: 1000, wantBytes: 100 * MiB })).toEqual({ toSeq: 400, freedBytes: 4 * MiB, enough: false });
    // Applied only through 250: the segment holding 201-300 must stay.
    expect(planEarlyAgeOut({ segments: segs(5), baseSeq: 0, limitSeq: 250, wantBytes: 100 * MiB })).toEqual({ toSeq: 200, freedBytes: 2 * MiB, enough: false });
    // Nothing applied past the first segment: no advance frees anything.
    expect(planEarlyAgeOut({ segments: segs(5), baseSeq: 0, limitSeq: 99, wantBytes: MiB })).toBeUndefined();
    expect(planEarlyAgeOut({ segments: segs(1), baseSeq: 0, limitSeq: 1000, wantBytes: MiB })).toBeUndefined();
  });

  it('segments the base already passed count as freed but need no advance', () => {
    expect(planEarlyAgeOut({ segments: segs(5), baseSeq: 200, limitSeq: 500, wantBytes: 2 * MiB })).toBeUndefined();
    expect(planEarlyAgeOut({ segments: segs(5), baseSeq: 200, limitSeq: 500, wantBytes: 3 * MiB })).toEqual({ toSeq: 300, freedBytes: 3 * MiB, enough: true });
  });

  it('aims at twice the floor, at least a twentieth of the file system', () => {
    expect(ageOutTargetFree(12 * MiB, 48 * MiB)).toBe(24 * MiB);
    expect(ageOutTargetFree(1, 32 * MiB)).toBe(1.6 * MiB);
  });
});
