import { describe, expect, it } from 'vitest';
import { JobRecord } from '../../recovery/job-record';
import type { Job } from '../../recovery/model';

function record(): { job: JobRecord; seen: Job[]; clock: { t: number } } {
  const clock = { t: 1000 };
  const job = new JobRecord({ id: 7, kind: 'test-failover', planId: 'shop', point: { kind: 'latest' } }, () => clock.t);
  const seen: Job[] = [];
  job.on('changed', (j) => seen.push(j));
  return { job, seen, clock };
}

describe('JobRecord', () => {
  it('runs steps to success, emitting a snapshot on every transition', () => {
    const { job, seen, clock } = record();
    const a = job.addStep('export web at point 4');
    const b = job.addStep('boot group 1');
    job.startStep(a);
    clock.t = 1500;
    job.finishStep(a, true, 'exported');
    job.startStep(b);
    job.setMachine('m-web', { vmName: 'shop-web', state: 'booting' });
    clock.t = 4000;
    job.setMachine('m-web', { state: 'healthy', bootMs: 2500 });
    job.finishStep(b, true, '1 machine healthy');
    job.setRto(3000);
    job.succeed();
    expect(seen).toHaveLength(10);
    const end = job.snapshot();
    expect(end).toMatchObject({ id: 7, state: 'succeeded', rtoMs: 3000, finishedMs: 4000, reason: '' });
    expect(end.steps.map((s) => [s.name, s.state, s.startedMs, s.finishedMs])).toEqual([
      ['export web at point 4', 'succeeded', 1000, 1500],
      ['boot group 1', 'succeeded', 1500, 4000],
    ]);
    expect(end.machines).toEqual([{ machineId: 'm-web', vmName: 'shop-web', runsOn: '', points: {}, state: 'healthy', address: '', serialLog: '', screenshot: '', bootMs: 2500, detail: '' }]);
    // Snapshots are copies: what a listener got does not change later.
    expect(seen[0].steps).toHaveLength(1);
    expect(seen[0].steps[0].state).toBe('pending');
  });

  it('waits at a manual step and runs again when it is finished', () => {
    const { job } = record();
    const s = job.addStep('manual check-dns');
    job.waitStep(s, 'point www at the sandbox');
    expect(job.state).toBe('waiting');
    expect(job.snapshot().steps[0]).toMatchObject({ state: 'waiting', detail: 'point www at the sandbox', startedMs: 1000 });
    job.finishStep(s, true, 'resumed by admin');
    expect(job.state).toBe('running');
  });

  it('fails or cancels: running and waiting steps fail, pending ones are skipped, the job takes the reason', () => {
    const { job } = record();
    const a = job.addStep('boot group 1');
    const b = job.addStep('manual x');
    const c = job.addStep('boot group 2');
    job.startStep(a);
    job.fail('health check of m-web timed out after 10m');
    const end = job.snapshot();
    expect(end.state).toBe('failed');
    expect(end.reason).toMatch(/timed out/);
    expect(end.steps.map((s) => s.state)).toEqual(['failed', 'skipped', 'skipped']);
    expect(end.steps[0].detail).toMatch(/timed out/);
    expect(() => job.startStep(b)).toThrow(/has ended \(failed\)/);
    expect(() => job.succeed()).toThrow(/has ended/);
    expect(c).toBe(3);

    const other = record().job;
    const w = other.addStep('manual y');
    other.waitStep(w, 'do it');
    other.cancel('cancelled by an operator');
    expect(other.snapshot()).toMatchObject({ state: 'cancelled', reason: 'cancelled by an operator', steps: [{ state: 'failed' }] });
  });

  it('refuses transitions that do not fit a step', () => {
    const { job } = record();
    const a = job.addStep('a');
    expect(() => job.finishStep(a, true, '')).toThrow(/is pending, not running or waiting/);
    job.startStep(a);
    expect(() => job.startStep(a)).toThrow(/is running, not pending/);
    expect(() => job.skipStep(99, '')).toThrow(/no step 99/);
  });
});
