import type { Plan, PlanAction, PlanInput, PointSpec } from './api-types';
import { fromLocalInput, toLocalInput } from './format';

/** The plan editor's working copy: text as typed, durations in seconds, keys for stable lists. */

export interface ActionDraft {
  key: number;
  kind: 'script' | 'manual';
  name: string;
  command: string;
  timeoutSec: string;
  instructions: string;
}

export interface BootGroupDraft {
  key: number;
  machines: string[];
  before: ActionDraft[];
  after: ActionDraft[];
}

export type PointKindDraft = PointSpec['kind'];

export interface PointDraft {
  kind: PointKindDraft;
  pointId: string;
  roundId: string;
  time: string;
}

export interface PlanDraft {
  name: string;
  bootGroups: BootGroupDraft[];
  serialPattern: string;
  tcpPort: string;
  healthTimeoutSec: string;
  defaultPoint: PointDraft;
}

let nextKey = 1;
export const newKey = (): number => nextKey++;

export function newAction(kind: 'script' | 'manual'): ActionDraft {
  return { key: newKey(), kind, name: '', command: '', timeoutSec: '300', instructions: '' };
}

export function newBootGroup(): BootGroupDraft {
  return { key: newKey(), machines: [], before: [], after: [] };
}

export function emptyDraft(): PlanDraft {
  return { name: '', bootGroups: [newBootGroup()], serialPattern: 'login:', tcpPort: '0', healthTimeoutSec: '600', defaultPoint: { kind: 'latest', pointId: '', roundId: '', time: '' } };
}

function actionDraft(a: PlanAction): ActionDraft {
  return a.kind === 'script'
    ? { key: newKey(), kind: 'script', name: a.name, command: a.command, timeoutSec: String(a.timeoutMs / 1000), instructions: '' }
    : { key: newKey(), kind: 'manual', name: a.name, command: '', timeoutSec: '300', instructions: a.instructions };
}

export function pointDraft(p: PointSpec): PointDraft {
  const d: PointDraft = { kind: p.kind, pointId: '', roundId: '', time: '' };
  if (p.kind === 'point') d.pointId = String(p.pointId);
  if (p.kind === 'round') d.roundId = String(p.roundId);
  if (p.kind === 'time') d.time = toLocalInput(p.timeMs);
  return d;
}

export function draftOf(plan: Plan): PlanDraft {
  return {
    name: plan.name,
    bootGroups: plan.bootGroups.map((g) => ({ key: newKey(), machines: [...g.machines], before: g.before.map(actionDraft), after: g.after.map(actionDraft) })),
    serialPattern: plan.health.serialPattern,
    tcpPort: String(plan.health.tcpPort),
    healthTimeoutSec: String(plan.health.timeoutMs / 1000),
    defaultPoint: pointDraft(plan.defaultPoint),
  };
}

/** A number as typed; what is not one goes to the API as NaN -> null, for it to refuse at the field. */
function num(text: string, scale = 1): number {
  const t = text.trim();
  const n = t === '' ? Number.NaN : Number(t);
  return Number.isFinite(n) ? Math.round(n * scale) : Number.NaN;
}

function actionInput(a: ActionDraft): PlanAction {
  return a.kind === 'script'
    ? { kind: 'script', name: a.name.trim(), command: a.command, timeoutMs: num(a.timeoutSec, 1000) }
    : { kind: 'manual', name: a.name.trim(), instructions: a.instructions };
}

export function pointInput(p: PointDraft): PointSpec {
  switch (p.kind) {
    case 'latest':
    case 'latest-app':
      return { kind: p.kind };
    case 'point':
      return { kind: 'point', pointId: num(p.pointId) };
    case 'round':
      return { kind: 'round', roundId: num(p.roundId) };
    case 'time':
      return { kind: 'time', timeMs: fromLocalInput(p.time) ?? Number.NaN };
  }
}

export function planInput(d: PlanDraft): PlanInput {
  return {
    name: d.name.trim(),
    bootGroups: d.bootGroups.map((g) => ({ machines: g.machines, before: g.before.map(actionInput), after: g.after.map(actionInput) })),
    health: { serialPattern: d.serialPattern, tcpPort: num(d.tcpPort), timeoutMs: num(d.healthTimeoutSec, 1000) },
    defaultPoint: pointInput(d.defaultPoint),
  };
}

/** A local check before sending: the first number field that is not a number (path, message). */
export function localProblem(d: PlanDraft): { field: string; message: string } | undefined {
  const isNum = (t: string): boolean => t.trim() !== '' && Number.isFinite(Number(t));
  for (const [gi, g] of d.bootGroups.entries())
    for (const side of ['before', 'after'] as const)
      for (const [ai, a] of g[side].entries())
        if (a.kind === 'script' && !isNum(a.timeoutSec)) return { field: `bootGroups.${gi}.${side}.${ai}.timeoutMs`, message: 'Give the timeout in seconds.' };
  if (!isNum(d.tcpPort)) return { field: 'health.tcpPort', message: 'Give a port number (0: none).' };
  if (!isNum(d.healthTimeoutSec)) return { field: 'health.timeoutMs', message: 'Give the timeout in seconds.' };
  const p = d.defaultPoint;
  if (p.kind === 'point' && !isNum(p.pointId)) return { field: 'defaultPoint', message: 'Give a point id.' };
  if (p.kind === 'round' && !isNum(p.roundId)) return { field: 'defaultPoint', message: 'Give a round number.' };
  if (p.kind === 'time' && fromLocalInput(p.time) === undefined) return { field: 'defaultPoint', message: 'Give a time.' };
  return undefined;
}

/** The API's field ('plan.bootGroups[1].before[0].command') as an editor path ('bootGroups.1.before.0.command'). */
export function normalizeField(field: string | undefined): string {
  if (field === undefined) return '';
  return field.replace(/^plan\./, '').replace(/\[(\d+)\]/g, '.$1');
}

/** Every path the editor can show an error at. */
export function errorPaths(d: PlanDraft): string[] {
  const paths = ['name', 'bootGroups', 'health', 'health.serialPattern', 'health.tcpPort', 'health.timeoutMs', 'defaultPoint'];
  d.bootGroups.forEach((g, gi) => {
    paths.push(`bootGroups.${gi}`, `bootGroups.${gi}.machines`);
    for (const side of ['before', 'after'] as const) {
      paths.push(`bootGroups.${gi}.${side}`);
      g[side].forEach((a, ai) => {
        const base = `bootGroups.${gi}.${side}.${ai}`;
        paths.push(base, `${base}.name`, `${base}.kind`);
        if (a.kind === 'script') paths.push(`${base}.command`, `${base}.timeoutMs`);
        else paths.push(`${base}.instructions`);
      });
    }
  });
  return paths;
}

/** Where an error shows: the longest editor path the field is at or under; '' : the form's own note. */
export function placeError(field: string, paths: string[]): string {
  let best = '';
  for (const p of paths) if ((field === p || field.startsWith(`${p}.`)) && p.length > best.length) best = p;
  return best;
}

export function move<T>(list: T[], i: number, delta: number): T[] {
  const j = i + delta;
  if (j < 0 || j >= list.length) return list;
  const copy = [...list];
  [copy[i], copy[j]] = [copy[j], copy[i]];
  return copy;
}

/** A point spec in words. */
export function pointWords(p: PointSpec): string {
  switch (p.kind) {
    case 'latest':
      return 'Latest';
    case 'latest-app':
      return 'Latest app-consistent';
    case 'point':
      return `Point ${p.pointId}`;
    case 'round':
      return `Group round ${p.roundId}`;
    case 'time':
      return `At or before ${new Date(p.timeMs).toLocaleString()}`;
  }
}
