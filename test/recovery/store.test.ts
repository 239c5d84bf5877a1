import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ControlError } from '../../control/contract';
import { ControlStore } from '../../control/store';
import { DEFAULT_HEALTH, type Job } from '../../recovery/model';
import { validatePlanInput } from '../../recovery/plan-validate';
import { RecoveryStore } from '../../recovery/store';
import { tempDirs } from '../helpers/temp-dirs';

const tempDir = tempDirs();

function catalog(): string {
  return path.join(tempDir('recovery-store'), 'catalog.db');
}

const plan = (name: string, machines: string[][]) => ({ ...validatePlanInput({ name, bootGroups: machines.map((m) => ({ machines: m })) }, machines.flat()), id: name });

function newJob(planId: string, extra: Partial<Job> = {}): Omit<Job, 'id'> {
  return { kind: 'test-failover', planId, state: 'running', point: { kind: 'latest' }, startedMs: 1000, finishedMs: null, rtoMs: null, steps: [], machines: [], reason: '', ...extra };
}

describe('RecoveryStore', () => {
  it('keeps plans beside the control tables of the same catalog file, across reopen', () => {
    const file = catalog();
    const control = ControlStore.open(file);
    const store = RecoveryStore.open(file);
    const p = store.addPlan(plan('shop', [['db'], ['web', 'app']]), 5000);
    expect(p).toEqual({ id: 'shop', name: 'shop', bootGroups: [{ machines: ['db'], before: [], after: [] }, { machines: ['web', 'app'], before: [], after: [] }], health: DEFAULT_HEALTH, defaultPoint: { kind: 'latest' }, revision: 1, createdMs: 5000, updatedMs: 5000 });
    expect(() => store.addPlan(plan('shop', [['db']]), 6000)).toThrow(/plan shop exists already/);
    control.addGroup({ id: 'g', policy: { rpoThresholdMs: 1, retentionMs: 1, crashConsistentIntervalMs: 1, appConsistentIntervalMs: 0, multiMachineConsistency: true }, revision: 1, createdMs: 1 });
    store.close();
    control.close();

    const again = RecoveryStore.open(file);
    expect(again.plans().map((x) => x.id)).toEqual(['shop']);
    expect(again.plan('shop')?.bootGroups[1].machines).toEqual(['web', 'app']);
    expect(again.plan('nope')).toBeUndefined();
    again.close();
  });

  it('replaces a plan only at the revision read: a stale edit is a conflict, a missing plan not-found', () => {
    const file = catalog();
    const store = RecoveryStore.open(file);
    store.addPlan(plan('p', [['a']]), 1);
    // Two editors on two connections both read revision 1: the first to write wins.
    const other = RecoveryStore.open(file);
    const v2 = other.replacePlan('p', plan('p', [['a'], ['b']]), 1, 2);
    other.close();
    expect(v2).toMatchObject({ revision: 2, createdMs: 1, updatedMs: 2 });
    expect(v2.bootGroups).toHaveLength(2);
    let conflict: unknown;
    try {
      store.replacePlan('p', plan('p', [['c']]), 1, 3);
    } catch (err) {
      conflict = err;
    }
    expect(conflict).toBeInstanceOf(ControlError);
    expect(conflict).toMatchObject({ kind: 'conflict', field: 'revision', message: expect.stringMatching(/changed since revision 1 \(it is at revision 2 now\)/) });
    expect(store.plan('p')?.bootGroups).toHaveLength(2);
    expect(() => store.replacePlan('q', plan('q', [['a']]), 1, 3)).toThrow(/no plan q/);
    expect(store.deletePlan('p')).toBe(true);
    expect(store.deletePlan('p')).toBe(false);
    store.close();
  });

  it('stores jobs, lists them newest first by filter, and fails the ones a crash left running', () => {
    const file = catalog();
    const store = RecoveryStore.open(file);
    const a = store.addJob(newJob('shop'));
    const b = store.addJob(newJob('shop', { kind: 'cleanup', state: 'succeeded', finishedMs: 2000 }));
    const c = store.addJob(newJob('other', { state: 'waiting' }));
    expect([a.id, b.id, c.id]).toEqual([1, 2, 3]);
    store.saveJob({
      ...a,
      steps: [
        { id: 1, name: 'boot group 1', state: 'succeeded', startedMs: 1, finishedMs: 2, detail: 'ok' },
        { id: 2, name: 'boot group 2', state: 'running', startedMs: 3, finishedMs: null, detail: '' },
        { id: 3, name: 'script x', state: 'pending', startedMs: null, finishedMs: null, detail: '' },
      ],
      machines: [{ machineId: 'web', vmName: 'shop-web', runsOn: 'qemu:shop-web', points: { 'web-root': 4 }, state: 'healthy', address: '10.77.0.10', serialLog: '/x/web.log', screenshot: '/x/web.png', bootMs: 1200, detail: '' }],
    });
    expect(store.jobs().map((j) => j.id)).toEqual([3, 2, 1]);
    expect(store.jobs({ planId: 'shop' }).map((j) => j.id)).toEqual([2, 1]);
    expect(store.jobs({ kind: 'cleanup' }).map((j) => j.id)).toEqual([2]);
    expect(store.jobs({ state: 'waiting' }).map((j) => j.id)).toEqual([3]);
    expect(store.jobs({ limit: 1 }).map((j) => j.id)).toEqual([3]);
    expect(store.job(1)?.machines[0]).toMatchObject({ vmName: 'shop-web', points: { 'web-root': 4 } });
    store.close();

    // A restart: another connection to the same file finds the unfinished jobs.
    const after = RecoveryStore.open(file);
    const failed = after.markUnfinished('the receiver restarted during the job', 9000);
    expect(failed.map((j) => j.id)).toEqual([1, 3]);
    const one = after.job(1) as Job;
    expect(one).toMatchObject({ state: 'failed', reason: 'the receiver restarted during the job', finishedMs: 9000 });
    expect(one.steps.map((s) => s.state)).toEqual(['succeeded', 'failed', 'skipped']);
    expect(after.job(2)?.state).toBe('succeeded');
    expect(after.job(3)?.state).toBe('failed');
    expect(after.markUnfinished('again', 9500)).toEqual([]);
    after.close();
  });

  it("keeps each machine's protection state", () => {
    const store = RecoveryStore.open(catalog());
    expect(store.protection('web')).toBeUndefined();
    store.setProtection({ machineId: 'web', state: 'failed-over', runsOn: 'qemu:shop-web', jobId: 4, sinceMs: 100 });
    store.setProtection({ machineId: 'web', state: 'failing-back', runsOn: 'qemu:shop-web', jobId: 5, sinceMs: 200 });
    expect(store.protection('web')).toEqual({ machineId: 'web', state: 'failing-back', runsOn: 'qemu:shop-web', jobId: 5, sinceMs: 200 });
    expect(store.protections()).toHaveLength(1);
    store.close();
  });
});
