import { describe, expect, it } from 'vitest';
import type { PointSpec } from '../../recovery/model';
import { choosePoints, type ChoicePoint, type PointChoiceInput } from '../../recovery/point-choice';

const S = 1_000_000; // µs per second
const T0 = Date.UTC(2026, 11, 3, 10, 0, 0) * 1000;

function pt(id: number, volumeId: string, sec: number, extra: Partial<ChoicePoint> = {}): ChoicePoint {
  return { id, volumeId, timeUs: T0 + sec * S, kind: 'crash', accuracy: 'exact', groupRound: 0, ...extra };
}

/** Two machines: web (web-root, web-data) and db (db-root). */
function input(points: ChoicePoint[], extra: Partial<PointChoiceInput> = {}): PointChoiceInput {
  return {
    machines: [
      { machineId: 'web', volumes: ['web-root', 'web-data'] },
      { machineId: 'db', volumes: ['db-root'] },
    ],
    multiMachineConsistency: false,
    groupRounds: [],
    points,
    ...extra,
  };
}

function chosen(i: PointChoiceInput, spec: PointSpec): Record<string, Record<string, number>> {
  const r = choosePoints(i, spec);
  if (!r.ok) throw new Error(r.reason);
  return r.points;
}

function reason(i: PointChoiceInput, spec: PointSpec): string {
  const r = choosePoints(i, spec);
  if (r.ok) throw new Error(`expected a refusal, got ${JSON.stringify(r.points)}`);
  return r.reason;
}

describe('choosePoints: latest without multi-machine consistency', () => {
  const points = [
    pt(1, 'web-root', 10), pt(2, 'web-data', 10), pt(3, 'db-root', 10),
    pt(4, 'web-root', 20), pt(5, 'web-data', 21), pt(6, 'db-root', 15),
    pt(7, 'web-root', 30),
  ];

  it("takes each volume's latest usable point at or before the earliest of the volumes' latest points", () => {
    // Latest per volume: 30, 21, 15 -> common time 15: web-root 10 (id 1), web-data 10 (id 2), db-root 15 (id 6).
    expect(chosen(input(points), { kind: 'latest' })).toEqual({ web: { 'web-root': 1, 'web-data': 2 }, db: { 'db-root': 6 } });
    expect(choosePoints(input(points), { kind: 'latest' })).toMatchObject({ description: expect.stringMatching(/at or before 2026-12-03T10:00:15\.000Z/) });
  });

  it('skips points cut during a resync and damaged rows', () => {
    const bad = [...points, pt(8, 'db-root', 40, { accuracy: 'none' }), pt(9, 'web-data', 40, { damaged: 'checksum mismatch' })];
    expect(chosen(input(bad), { kind: 'latest' })).toEqual({ web: { 'web-root': 1, 'web-data': 2 }, db: { 'db-root': 6 } });
  });

  it('says which machine and volume has no usable point', () => {
    expect(reason(input(points.filter((p) => p.volumeId !== 'web-data')), { kind: 'latest' })).toMatch(/machine web volume web-data has no usable recovery point/);
    // A volume whose only points are after the common time.
    const late = [pt(1, 'web-root', 50), pt(2, 'web-data', 50), pt(3, 'db-root', 10)];
    expect(reason(input(late), { kind: 'latest' })).toMatch(/machine web volume web-root has no usable point at or before 2026-12-03T10:00:10/);
  });

  it('latest-app looks at application-consistent points only', () => {
    const app = [...points, pt(10, 'web-root', 8, { kind: 'app' }), pt(13, 'web-root', 14, { kind: 'app' }), pt(11, 'web-data', 12, { kind: 'app' }), pt(12, 'db-root', 12, { kind: 'app' })];
    expect(chosen(input(app), { kind: 'latest-app' })).toEqual({ web: { 'web-root': 10, 'web-data': 11 }, db: { 'db-root': 12 } });
    expect(reason(input(points), { kind: 'latest-app' })).toMatch(/machine web volume web-root has no usable application-consistent recovery point/);
  });
});

describe('choosePoints: group rounds', () => {
  const rounds = [
    { id: 9, app: false, pointIds: [20, 21] }, // misses db-root
    { id: 8, app: true, pointIds: [14, 15, 16] },
    { id: 7, app: false, pointIds: [11, 12, 13] },
  ];
  const points = [
    pt(11, 'web-root', 10, { groupRound: 7 }), pt(12, 'web-data', 10, { groupRound: 7 }), pt(13, 'db-root', 10, { groupRound: 7 }),
    pt(14, 'web-root', 20, { groupRound: 8, kind: 'app' }), pt(15, 'web-data', 20, { groupRound: 8, kind: 'app' }), pt(16, 'db-root', 20, { groupRound: 8, kind: 'app' }),
    pt(20, 'web-root', 30, { groupRound: 9 }), pt(21, 'web-data', 30, { groupRound: 9 }),
    pt(22, 'db-root', 31),
  ];
  const grouped = input(points, { multiMachineConsistency: true, groupRounds: rounds });

  it('latest is the newest round that covers every volume of every machine', () => {
    const r = choosePoints(grouped, { kind: 'latest' });
    expect(r).toEqual({ ok: true, points: { web: { 'web-root': 14, 'web-data': 15 }, db: { 'db-root': 16 } }, description: 'latest: group round 8 (app-consistent)' });
  });

  it('latest-app takes the newest application-consistent round', () => {
    const lateCrash = input(points, { multiMachineConsistency: true, groupRounds: [{ id: 10, app: false, pointIds: [30, 31, 32] }, ...rounds] });
    lateCrash.points = [...points, pt(30, 'web-root', 40, { groupRound: 10 }), pt(31, 'web-data', 40, { groupRound: 10 }), pt(32, 'db-root', 40, { groupRound: 10 })];
    expect(chosen(lateCrash, { kind: 'latest' })).toEqual({ web: { 'web-root': 30, 'web-data': 31 }, db: { 'db-root': 32 } });
    expect(chosen(lateCrash, { kind: 'latest-app' })).toEqual({ web: { 'web-root': 14, 'web-data': 15 }, db: { 'db-root': 16 } });
  });

  it('falls back to the common time, and says so, when no round covers every volume', () => {
    const r = choosePoints(input(points, { multiMachineConsistency: true, groupRounds: [rounds[0]] }), { kind: 'latest' });
    expect(r).toMatchObject({ ok: true, description: expect.stringMatching(/no group round covers every volume/) });
  });

  it('a round: its points, refused when it misses a volume or is not a done round', () => {
    expect(chosen(grouped, { kind: 'round', roundId: 7 })).toEqual({ web: { 'web-root': 11, 'web-data': 12 }, db: { 'db-root': 13 } });
    expect(reason(grouped, { kind: 'round', roundId: 9 })).toMatch(/round 9 has no point of machine db volume db-root/);
    expect(reason(grouped, { kind: 'round', roundId: 99 })).toMatch(/round 99 is not a done round/);
  });

  it("a point id of a plan of several volumes: that point's round, refused clearly otherwise", () => {
    expect(chosen(grouped, { kind: 'point', pointId: 15 })).toEqual({ web: { 'web-root': 14, 'web-data': 15 }, db: { 'db-root': 16 } });
    expect(reason(grouped, { kind: 'point', pointId: 22 })).toMatch(/point 22 is not a group point and the plan has 3 volumes: name a round/);
    expect(reason(grouped, { kind: 'point', pointId: 999 })).toMatch(/no point 999/);
  });

  it('refuses a round whose point was cut during a resync', () => {
    const cut = input(points.map((p) => (p.id === 13 ? { ...p, accuracy: 'none' as const } : p)), { multiMachineConsistency: true, groupRounds: rounds });
    expect(reason(cut, { kind: 'round', roundId: 7 })).toMatch(/point 13 of machine db volume db-root cannot be used: it was cut during a resync/);
  });
});

describe('choosePoints: one volume, and times', () => {
  const one: PointChoiceInput = { machines: [{ machineId: 'web', volumes: ['web-root'] }], multiMachineConsistency: false, groupRounds: [], points: [pt(1, 'web-root', 10), pt(2, 'web-root', 20, { accuracy: 'none' }), pt(3, 'other', 5)] };

  it('a point id of a one-volume plan is that point', () => {
    expect(chosen(one, { kind: 'point', pointId: 1 })).toEqual({ web: { 'web-root': 1 } });
    expect(reason(one, { kind: 'point', pointId: 2 })).toMatch(/point 2 of volume web-root cannot be used: it was cut during a resync/);
    expect(reason(one, { kind: 'point', pointId: 3 })).toMatch(/point 3 is of volume other, not of machine web volume web-root/);
  });

  it("a time: each volume's latest usable point at or before it", () => {
    expect(chosen(one, { kind: 'time', timeMs: (T0 + 25 * S) / 1000 })).toEqual({ web: { 'web-root': 1 } });
    expect(reason(one, { kind: 'time', timeMs: (T0 + 5 * S) / 1000 })).toMatch(/machine web volume web-root has no usable point at or before 2026-12-03T10:00:05/);
  });
});
