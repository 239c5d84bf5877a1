import { ControlError } from '../control/contract';
import { isSafeId } from '../proto/ids';
import { BootGroup, DEFAULT_HEALTH, HealthCheck, PlanAction, PointSpec } from './model';

/**
 * The checks of a plan an operator sends (API body, CLI flags, a plan file): pure, so that the
 * API's fake and the real service refuse the same plans with the same words and field.
 */

/** What a valid PlanInput becomes: every default filled in. */
export interface ValidPlan {
  name: string;
  bootGroups: BootGroup[];
  health: HealthCheck;
  defaultPoint: PointSpec;
}

export const PLAN_LIMITS = {
  maxNameLength: 64,
  maxGroups: 100,
  maxMachinesPerGroup: 1000,
  maxActionsPerSide: 50,
  maxActionNameLength: 128,
  maxCommandLength: 8192,
  maxInstructionsLength: 8192,
  maxPatternLength: 1024,
  minScriptTimeoutMs: 1000,
  maxScriptTimeoutMs: 3_600_000,
  defaultScriptTimeoutMs: 300_000,
  minHealthTimeoutMs: 10_000,
  maxHealthTimeoutMs: 24 * 3_600_000,
} as const;

function refuse(field: string, message: string): never {
  throw new ControlError('invalid', message, field);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isWhole(v: unknown, min: number, max: number): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max;
}

function text(v: unknown, field: string, what: string, max: number, allowEmpty = false): string {
  if (typeof v !== 'string') refuse(field, `${what} must be text`);
  if (!allowEmpty && v.trim() === '') refuse(field, `${what} must not be empty`);
  if (v.length > max) refuse(field, `${what} is longer than ${max} characters`);
  return v;
}

export function checkPlanName(name: unknown, field = 'name'): string {
  if (typeof name !== 'string' || name.length > PLAN_LIMITS.maxNameLength || !isSafeId(name)) {
    refuse(field, `plan name ${JSON.stringify(name)} must be 1..${PLAN_LIMITS.maxNameLength} letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
  return name;
}

function checkAction(a: unknown, field: string): PlanAction {
  if (!isObject(a)) refuse(field, `${field} must be an object with kind script or manual`);
  if (a.kind === 'script') {
    const name = text(a.name, `${field}.name`, 'a script needs a name:', PLAN_LIMITS.maxActionNameLength);
    const command = text(a.command, `${field}.command`, `script ${name} needs a command:`, PLAN_LIMITS.maxCommandLength);
    let timeoutMs: number = PLAN_LIMITS.defaultScriptTimeoutMs;
    if (a.timeoutMs !== undefined) {
      if (!isWhole(a.timeoutMs, PLAN_LIMITS.minScriptTimeoutMs, PLAN_LIMITS.maxScriptTimeoutMs)) {
        refuse(`${field}.timeoutMs`, `script ${name}: timeoutMs must be ${PLAN_LIMITS.minScriptTimeoutMs}..${PLAN_LIMITS.maxScriptTimeoutMs} ms (1 s .. 1 h)`);
      }
      timeoutMs = a.timeoutMs;
    }
    return { kind: 'script', name, command, timeoutMs };
  }
  if (a.kind === 'manual') {
    const name = text(a.name, `${field}.name`, 'a manual step needs a name:', PLAN_LIMITS.maxActionNameLength);
    const instructions = a.instructions === undefined ? '' : text(a.instructions, `${field}.instructions`, `manual step ${name}: instructions`, PLAN_LIMITS.maxInstructionsLength, true);
    return { kind: 'manual', name, instructions };
  }
  refuse(`${field}.kind`, `${field}.kind must be script or manual`);
}

function checkActions(list: unknown, field: string): PlanAction[] {
  if (list === undefined) return [];
  if (!Array.isArray(list)) refuse(field, `${field} must be a list of actions`);
  if (list.length > PLAN_LIMITS.maxActionsPerSide) refuse(field, `${field} has more than ${PLAN_LIMITS.maxActionsPerSide} actions`);
  return list.map((a, i) => checkAction(a, `${field}[${i}]`));
}

export function checkHealth(h: unknown, field = 'health'): HealthCheck {
  if (h === undefined) return { ...DEFAULT_HEALTH };
  if (!isObject(h)) refuse(field, `${field} must be an object (serialPattern, tcpPort, timeoutMs)`);
  const health = { ...DEFAULT_HEALTH };
  if (h.serialPattern !== undefined) {
    const pattern = text(h.serialPattern, `${field}.serialPattern`, 'the serial pattern', PLAN_LIMITS.maxPatternLength, true);
    try {
      new RegExp(pattern);
    } catch (err) {
      refuse(`${field}.serialPattern`, `the serial pattern ${JSON.stringify(pattern)} is not a valid regular expression: ${(err as Error).message}`);
    }
    health.serialPattern = pattern;
  }
  if (h.tcpPort !== undefined) {
    if (!isWhole(h.tcpPort, 0, 65535)) refuse(`${field}.tcpPort`, `tcpPort must be 0 (none) .. 65535, not ${JSON.stringify(h.tcpPort)}`);
    health.tcpPort = h.tcpPort;
  }
  if (h.timeoutMs !== undefined) {
    if (!isWhole(h.timeoutMs, PLAN_LIMITS.minHealthTimeoutMs, PLAN_LIMITS.maxHealthTimeoutMs)) {
      refuse(`${field}.timeoutMs`, `the health timeout must be ${PLAN_LIMITS.minHealthTimeoutMs}..${PLAN_LIMITS.maxHealthTimeoutMs} ms (10 s .. 24 h)`);
    }
    health.timeoutMs = h.timeoutMs;
  }
  for (const key of Object.keys(h)) {
    if (!['serialPattern', 'tcpPort', 'timeoutMs'].includes(key)) refuse(`${field}.${key}`, `${field}.${key} is not a known field`);
  }
  return health;
}

/** A point spec in a request or a stored plan (the API's words go through parsePointSpec first). */
export function checkPointSpec(p: unknown, field: string): PointSpec {
  if (!isObject(p)) refuse(field, `${field} must be a point spec (latest, latest-app, a point id, round:N or a time)`);
  switch (p.kind) {
    case 'latest':
    case 'latest-app':
      return { kind: p.kind };
    case 'point':
      if (!isWhole(p.pointId, 1, Number.MAX_SAFE_INTEGER)) refuse(`${field}.pointId`, 'a point id is a whole number of at least 1');
      return { kind: 'point', pointId: p.pointId };
    case 'round':
      if (!isWhole(p.roundId, 1, Number.MAX_SAFE_INTEGER)) refuse(`${field}.roundId`, 'a round id is a whole number of at least 1');
      return { kind: 'round', roundId: p.roundId };
    case 'time':
      if (!isWhole(p.timeMs, 0, Number.MAX_SAFE_INTEGER)) refuse(`${field}.timeMs`, 'a point time is milliseconds since the epoch');
      return { kind: 'time', timeMs: p.timeMs };
    default:
      refuse(`${field}.kind`, `${field}.kind must be latest, latest-app, point, round or time`);
  }
}

/**
 * A PlanInput checked against the machines that exist (by id), defaults filled in; refusals are
 * ControlError('invalid') naming the field (`bootGroups[1].machines[0]`).
 */
export function validatePlanInput(input: unknown, knownMachineIds: Iterable<string>): ValidPlan {
  if (!isObject(input)) refuse('body', 'a plan is an object: name, bootGroups, health, defaultPoint');
  const known = new Set(knownMachineIds);
  const name = checkPlanName(input.name);
  const groups = input.bootGroups;
  if (!Array.isArray(groups) || groups.length === 0) refuse('bootGroups', `plan ${name} needs at least one boot group`);
  if (groups.length > PLAN_LIMITS.maxGroups) refuse('bootGroups', `a plan has at most ${PLAN_LIMITS.maxGroups} boot groups`);
  const seen = new Map<string, string>();
  const bootGroups = groups.map((g: unknown, gi): BootGroup => {
    const field = `bootGroups[${gi}]`;
    if (!isObject(g)) refuse(field, `${field} must be an object with machines, before and after`);
    const machines = g.machines;
    if (!Array.isArray(machines) || machines.length === 0) refuse(`${field}.machines`, `boot group ${gi + 1} has no machines`);
    if (machines.length > PLAN_LIMITS.maxMachinesPerGroup) refuse(`${field}.machines`, `boot group ${gi + 1} has more than ${PLAN_LIMITS.maxMachinesPerGroup} machines`);
    const ids = machines.map((m: unknown, mi): string => {
      const mf = `${field}.machines[${mi}]`;
      if (typeof m !== 'string' || m === '') refuse(mf, `${mf} must be a machine id`);
      if (!known.has(m)) refuse(mf, `no machine ${JSON.stringify(m)} (boot group ${gi + 1}): see ferry machine list`);
      const first = seen.get(m);
      if (first !== undefined) refuse(mf, `machine ${m} is in the plan twice (${first} and ${mf}): a machine boots once`);
      seen.set(m, mf);
      return m;
    });
    for (const key of Object.keys(g)) {
      if (!['machines', 'before', 'after'].includes(key)) refuse(`${field}.${key}`, `${field}.${key} is not a known field`);
    }
    return { machines: ids, before: checkActions(g.before, `${field}.before`), after: checkActions(g.after, `${field}.after`) };
  });
  const health = checkHealth(input.health);
  const defaultPoint = input.defaultPoint === undefined ? ({ kind: 'latest' } as const) : checkPointSpec(input.defaultPoint, 'defaultPoint');
  for (const key of Object.keys(input)) {
    if (!['name', 'bootGroups', 'health', 'defaultPoint'].includes(key)) refuse(key, `${key} is not a known field of a plan`);
  }
  return { name, bootGroups, health, defaultPoint };
}

/** The machine ids of a plan in boot order. */
export function planMachineIds(plan: { bootGroups: ReadonlyArray<{ machines: readonly string[] }> }): string[] {
  return plan.bootGroups.flatMap((g) => g.machines);
}
