import { describe, expect, it } from 'vitest';
import { ControlError } from '../../control/contract';
import { DEFAULT_HEALTH } from '../../recovery/model';
import { validatePlanInput } from '../../recovery/plan-validate';

const known = ['m-web', 'm-db', 'm-app'];

/** The refusal of a plan: its kind, field and message. */
function refusal(input: unknown): { kind: string; field?: string; message: string } {
  try {
    validatePlanInput(input, known);
  } catch (err) {
    if (err instanceof ControlError) return { kind: err.kind, field: err.field, message: err.message };
    throw err;
  }
  throw new Error('the plan was expected to be refused');
}

const base = { name: 'shop', bootGroups: [{ machines: ['m-db'] }, { machines: ['m-web', 'm-app'] }] };

describe('validatePlanInput', () => {
  it('fills the defaults of a minimal plan', () => {
    const plan = validatePlanInput(base, known);
    expect(plan).toEqual({
      name: 'shop',
      bootGroups: [
        { machines: ['m-db'], before: [], after: [] },
        { machines: ['m-web', 'm-app'], before: [], after: [] },
      ],
      health: DEFAULT_HEALTH,
      defaultPoint: { kind: 'latest' },
    });
  });

  it('keeps scripts (default timeout 5 min), manual steps, health and the default point', () => {
    const plan = validatePlanInput(
      {
        ...base,
        bootGroups: [
          { machines: ['m-db'], after: [{ kind: 'script', name: 'warm', command: 'echo ok' }] },
          { machines: ['m-web'], before: [{ kind: 'manual', name: 'dns', instructions: 'point www at the sandbox' }, { kind: 'script', name: 's', command: 'true', timeoutMs: 1000 }] },
        ],
        health: { serialPattern: 'login:\\s*$', tcpPort: 22, timeoutMs: 60_000 },
        defaultPoint: { kind: 'round', roundId: 7 },
      },
      known,
    );
    expect(plan.bootGroups[0].after).toEqual([{ kind: 'script', name: 'warm', command: 'echo ok', timeoutMs: 300_000 }]);
    expect(plan.bootGroups[1].before).toEqual([
      { kind: 'manual', name: 'dns', instructions: 'point www at the sandbox' },
      { kind: 'script', name: 's', command: 'true', timeoutMs: 1000 },
    ]);
    expect(plan.health).toEqual({ serialPattern: 'login:\\s*$', tcpPort: 22, timeoutMs: 60_000 });
    expect(plan.defaultPoint).toEqual({ kind: 'round', roundId: 7 });
  });

  it.each([
    ['a bad name', { ...base, name: '../etc' }, 'name', /plan name "..\/etc" must be/],
    ['an empty name', { ...base, name: '' }, 'name', /plan name/],
    ['no boot groups', { name: 'p', bootGroups: [] }, 'bootGroups', /at least one boot group/],
    ['an empty group', { name: 'p', bootGroups: [{ machines: ['m-db'] }, { machines: [] }] }, 'bootGroups[1].machines', /boot group 2 has no machines/],
    ['an unknown machine', { name: 'p', bootGroups: [{ machines: ['m-db'] }, { machines: ['m-web', 'nope'] }] }, 'bootGroups[1].machines[1]', /no machine "nope" \(boot group 2\)/],
    ['a machine twice', { name: 'p', bootGroups: [{ machines: ['m-db'] }, { machines: ['m-db'] }] }, 'bootGroups[1].machines[0]', /machine m-db is in the plan twice \(bootGroups\[0\]\.machines\[0\]/],
    ['a script without command', { name: 'p', bootGroups: [{ machines: ['m-db'], after: [{ kind: 'script', name: 'x' }] }] }, 'bootGroups[0].after[0].command', /script x needs a command/],
    ['a script timeout under 1 s', { name: 'p', bootGroups: [{ machines: ['m-db'], before: [{ kind: 'script', name: 'x', command: 'c', timeoutMs: 999 }] }] }, 'bootGroups[0].before[0].timeoutMs', /1 s \.\. 1 h/],
    ['a script timeout over 1 h', { name: 'p', bootGroups: [{ machines: ['m-db'], before: [{ kind: 'script', name: 'x', command: 'c', timeoutMs: 3_600_001 }] }] }, 'bootGroups[0].before[0].timeoutMs', /1 s \.\. 1 h/],
    ['a manual step without name', { name: 'p', bootGroups: [{ machines: ['m-db'], before: [{ kind: 'manual', name: ' ', instructions: 'x' }] }] }, 'bootGroups[0].before[0].name', /manual step needs a name/],
    ['an unknown action kind', { name: 'p', bootGroups: [{ machines: ['m-db'], before: [{ kind: 'pray', name: 'x' }] }] }, 'bootGroups[0].before[0].kind', /script or manual/],
    ['a health timeout too short', { ...base, health: { timeoutMs: 5 } }, 'health.timeoutMs', /10 s \.\. 24 h/],
    ['a serial pattern that is no RegExp', { ...base, health: { serialPattern: 'login:(' } }, 'health.serialPattern', /not a valid regular expression/],
    ['a TCP port out of range', { ...base, health: { tcpPort: 70000 } }, 'health.tcpPort', /0 \(none\) \.\. 65535/],
    ['a bad point kind', { ...base, defaultPoint: { kind: 'yesterday' } }, 'defaultPoint.kind', /latest, latest-app, point, round or time/],
    ['a point id of 0', { ...base, defaultPoint: { kind: 'point', pointId: 0 } }, 'defaultPoint.pointId', /at least 1/],
    ['a time that is no number', { ...base, defaultPoint: { kind: 'time', timeMs: 'noon' } }, 'defaultPoint.timeMs', /milliseconds/],
    ['an unknown field', { ...base, colour: 'red' }, 'colour', /not a known field/],
  ])('refuses %s, naming the field', (_what, input, field, message) => {
    const r = refusal(input);
    expect(r.kind).toBe('invalid');
    expect(r.field).toBe(field);
    expect(r.message).toMatch(message);
  });
});
