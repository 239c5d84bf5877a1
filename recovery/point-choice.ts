import type { PointRow } from '../receiver/catalog';
import type { PointSpec } from './model';

/**
 * Which recovery point each volume of a plan's machines takes for a run (pure: the service
 * gathers the catalog's rows and the group's rounds, this decides).
 */

export type ChoicePoint = Pick<PointRow, 'id' | 'volumeId' | 'timeUs' | 'kind' | 'accuracy' | 'damaged' | 'groupRound'>;

export interface ChoiceRound {
  id: number;
  app: boolean;
  pointIds: readonly number[];
}

export interface PointChoiceInput {
  machines: ReadonlyArray<{ machineId: string; volumes: readonly string[] }>;
  /** The plan's machines are the members (or some) of one group with multi-machine consistency. */
  multiMachineConsistency: boolean;
  /** That group's done rounds, newest first (empty when there is none). */
  groupRounds: readonly ChoiceRound[];
  /** The catalog's points of the plan's volumes (any order). */
  points: readonly ChoicePoint[];
}

export type PointChoice =
  | { ok: true; points: Record<string, Record<string, number>>; description: string }
  | { ok: false; reason: string };

/** Why a point cannot be recovered from, or undefined when it can. */
export function unusableReason(p: ChoicePoint): string | undefined {
  if (p.damaged !== undefined && p.damaged !== '') return `its catalog row is damaged (${p.damaged})`;
  if (p.accuracy === 'none') return 'it was cut during a resync (accuracy none: the volume was not consistent then)';
  return undefined;
}

const usable = (p: ChoicePoint): boolean => unusableReason(p) === undefined;

interface Slot {
  machineId: string;
  volumeId: string;
}

function slots(input: PointChoiceInput): Slot[] {
  return input.machines.flatMap((m) => m.volumes.map((volumeId) => ({ machineId: m.machineId, volumeId })));
}

const where = (s: Slot): string => `machine ${s.machineId} volume ${s.volumeId}`;
const iso = (timeUs: number): string => new Date(Math.floor(timeUs / 1000)).toISOString();

function assign(list: Slot[], pick: (s: Slot) => ChoicePoint): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const s of list) (out[s.machineId] ??= {})[s.volumeId] = pick(s).id;
  return out;
}

/** A round's points, one per volume, when they cover every slot and are usable; else why not. */
function roundPoints(input: PointChoiceInput, round: ChoiceRound, list: Slot[], appOnly: boolean): { ok: true; byVolume: Map<string, ChoicePoint> } | { ok: false; reason: string } {
  const ids = new Set(round.pointIds);
  const byVolume = new Map<string, ChoicePoint>();
  for (const p of input.points) if (ids.has(p.id) || (p.groupRound === round.id && p.groupRound > 0)) byVolume.set(p.volumeId, p);
  for (const s of list) {
    const p = byVolume.get(s.volumeId);
    if (!p) return { ok: false, reason: `round ${round.id} has no point of ${where(s)} (it was not a member then, or the point aged out)` };
    const why = unusableReason(p);
    if (why !== undefined) return { ok: false, reason: `round ${round.id}: point ${p.id} of ${where(s)} cannot be used: ${why}` };
    if (appOnly && p.kind !== 'app') return { ok: false, reason: `round ${round.id} is not application-consistent (${where(s)})` };
  }
  return { ok: true, byVolume };
}

function fromRound(input: PointChoiceInput, round: ChoiceRound, list: Slot[], appOnly: boolean, label: string): PointChoice {
  const r = roundPoints(input, round, list, appOnly);
  if (!r.ok) return r;
  return { ok: true, points: assign(list, (s) => r.byVolume.get(s.volumeId) as ChoicePoint), description: `${label}group round ${round.id}${round.app ? ' (app-consistent)' : ''}` };
}

/** Each slot's latest usable point at or before `timeUs` (app points only when asked). */
function atOrBefore(input: PointChoiceInput, list: Slot[], timeUs: number, appOnly: boolean, label: string): PointChoice {
  const picked = new Map<string, ChoicePoint>();
  for (const s of list) {
    let best: ChoicePoint | undefined;
    for (const p of input.points) {
      if (p.volumeId !== s.volumeId || p.timeUs > timeUs || !usable(p) || (appOnly && p.kind !== 'app')) continue;
      if (!best || p.timeUs > best.timeUs || (p.timeUs === best.timeUs && p.id > best.id)) best = p;
    }
    if (!best) return { ok: false, reason: `${where(s)} has no usable ${appOnly ? 'application-consistent ' : ''}point at or before ${iso(timeUs)}` };
    picked.set(s.volumeId, best);
  }
  return { ok: true, points: assign(list, (s) => picked.get(s.volumeId) as ChoicePoint), description: `${label}each volume's latest usable ${appOnly ? 'app ' : ''}point at or before ${iso(timeUs)}` };
}

function latest(input: PointChoiceInput, list: Slot[], appOnly: boolean): PointChoice {
  let fallback = '';
  if (input.multiMachineConsistency) {
    for (const round of input.groupRounds) {
      if (appOnly && !round.app) continue;
      if (roundPoints(input, round, list, appOnly).ok) return fromRound(input, round, list, appOnly, `${appOnly ? 'latest-app' : 'latest'}: `);
    }
    fallback = `no ${appOnly ? 'app-consistent ' : ''}group round covers every volume, so `;
  }
  // The common time: the earliest of the volumes' latest usable points.
  let common = Number.POSITIVE_INFINITY;
  for (const s of list) {
    let newest = -1;
    for (const p of input.points) if (p.volumeId === s.volumeId && usable(p) && (!appOnly || p.kind === 'app') && p.timeUs > newest) newest = p.timeUs;
    if (newest < 0) return { ok: false, reason: `${where(s)} has no usable ${appOnly ? 'application-consistent ' : ''}recovery point` };
    common = Math.min(common, newest);
  }
  return atOrBefore(input, list, common, appOnly, `${appOnly ? 'latest-app' : 'latest'}: ${fallback}`);
}

export function choosePoints(input: PointChoiceInput, spec: PointSpec): PointChoice {
  const list = slots(input);
  if (list.length === 0) return { ok: false, reason: 'the plan has no protected volumes to recover' };
  switch (spec.kind) {
    case 'latest':
      return latest(input, list, false);
    case 'latest-app':
      return latest(input, list, true);
    case 'time':
      return atOrBefore(input, list, spec.timeMs * 1000, false, '');
    case 'round': {
      const round = input.groupRounds.find((r) => r.id === spec.roundId);
      if (!round) return { ok: false, reason: `round ${spec.roundId} is not a done round of the plan's group` };
      return fromRound(input, round, list, false, '');
    }
    case 'point': {
      const p = input.points.find((q) => q.id === spec.pointId);
      if (!p) return { ok: false, reason: `no point ${spec.pointId} of the plan's volumes` };
      const why = unusableReason(p);
      if (why !== undefined) return { ok: false, reason: `point ${p.id} of volume ${p.volumeId} cannot be used: ${why}` };
      if (list.length === 1) {
        if (p.volumeId !== list[0].volumeId) return { ok: false, reason: `point ${p.id} is of volume ${p.volumeId}, not of ${where(list[0])}` };
        return { ok: true, points: assign(list, () => p), description: `point ${p.id} (${p.kind}, ${iso(p.timeUs)})` };
      }
      if (p.groupRound <= 0) return { ok: false, reason: `point ${p.id} is not a group point and the plan has ${list.length} volumes: name a round (round:N) or a time` };
      const round = input.groupRounds.find((r) => r.id === p.groupRound);
      if (!round) return { ok: false, reason: `point ${p.id} belongs to round ${p.groupRound}, which is not a done round of the plan's group` };
      return fromRound(input, round, list, false, `point ${p.id}: `);
    }
  }
}
