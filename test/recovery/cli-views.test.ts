import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { changedSteps, jobSummary } from '../../cli/failover-commands';
import { planFromFile, planFromFlags, withMachineIds, type PlanFlags } from '../../cli/plan-commands';
import type { Machine } from '../../control/model';
import type { Job } from '../../recovery/model';
import { tempDirs } from '../helpers/temp-dirs';

const tempDir = tempDirs();
const none: PlanFlags = { bootGroup: [], scriptBefore: [], scriptAfter: [], manualBefore: [], manualAfter: [] };

describe('ferry plan: flags and files to a PlanInput', () => {
  it('puts actions in their groups and applies --script-timeout', () => {
    const input = planFromFlags('shop', {
      ...none,
      bootGroup: [['db01'], ['web01', 'web02']],
      scriptAfter: [{ group: 1, side: 'after', action: { kind: 'script', name: 'warm', command: 'a:b', timeoutMs: 300_000 } }],
      manualBefore: [{ group: 2, side: 'before', action: { kind: 'manual', name: 'dns', instructions: 'x' } }],
      scriptTimeout: 30_000,
      healthPort: 22,
    });
    expect(input).toEqual({
      name: 'shop',
      bootGroups: [
        { machines: ['db01'], before: [], after: [{ kind: 'script', name: 'warm', command: 'a:b', timeoutMs: 30_000 }] },
        { machines: ['web01', 'web02'], before: [{ kind: 'manual', name: 'dns', instructions: 'x' }], after: [] },
      ],
      health: { tcpPort: 22 },
    });
  });

  it('reads what plan show --json prints, keeping the revision and taking a point word', () => {
    const file = path.join(tempDir('plan-file'), 'p.yaml');
    fs.writeFileSync(file, 'id: shop\nname: shop\nrevision: 4\ncreatedMs: 1\nupdatedMs: 2\ndefaultPoint: round:12\nbootGroups:\n  - machines: [db01]\n');
    expect(planFromFile(file)).toEqual({ input: { name: 'shop', defaultPoint: { kind: 'round', roundId: 12 }, bootGroups: [{ machines: ['db01'] }] }, revision: 4 });
    fs.writeFileSync(file, 'name: [unclosed\n');
    expect(() => planFromFile(file)).toThrow(/neither YAML nor JSON/);
  });

  it('turns machine names into ids and refuses an unknown one', () => {
    const machines = [{ id: 'm-1', name: 'db01' }, { id: 'm-2', name: 'web01' }] as Machine[];
    expect(withMachineIds({ name: 'p', bootGroups: [{ machines: ['db01', 'm-2'] }] }, machines).bootGroups[0].machines).toEqual(['m-1', 'm-2']);
    expect(() => withMachineIds({ name: 'p', bootGroups: [{ machines: ['ghost'] }] }, machines)).toThrow(/no machine ghost/);
  });
});

describe('ferry failover: following a job', () => {
  const job: Job = {
    id: 3, kind: 'test-failover', planId: 'shop', state: 'running', point: { kind: 'latest' }, startedMs: 0, finishedMs: null, rtoMs: null, reason: '',
    steps: [{ id: 1, name: 'boot group 1', state: 'running', startedMs: 0, finishedMs: null, detail: '' }],
    machines: [],
  };

  it('prints only the steps that changed', () => {
    expect(changedSteps(undefined, job).map((s) => s.id)).toEqual([1]);
    expect(changedSteps(job, job)).toEqual([]);
    const next = structuredClone(job);
    next.steps[0].state = 'succeeded';
    next.steps.push({ id: 2, name: 'script warm', state: 'pending', startedMs: null, finishedMs: null, detail: '' });
    expect(changedSteps(job, next).map((s) => s.id)).toEqual([1, 2]);
  });

  it('ends with the machines by name, their evidence and the RTO', () => {
    const done: Job = {
      ...job, state: 'succeeded', finishedMs: 90_000, rtoMs: 84_000,
      machines: [{ machineId: 'm-1', vmName: 'shop-db01', runsOn: 'qemu:shop-db01', points: { root: 41 }, state: 'healthy', address: '10.77.0.10', serialLog: '/r/j3/db01.log', screenshot: '/r/j3/db01.png', bootMs: 61_000, detail: '' }],
    };
    const text = jobSummary(done, [{ id: 'm-1', name: 'db01' }] as Machine[]);
    expect(text).toMatch(/^job 3 test-failover of plan shop at point latest: succeeded$/m);
    expect(text).toMatch(/^db01\s+healthy\s+61s\s+10\.77\.0\.10\s+qemu:shop-db01\s+root@41$/m);
    expect(text).toMatch(/^db01: screenshot \/r\/j3\/db01\.png$/m);
    expect(text).toMatch(/^RTO 84s /m);
  });
});
