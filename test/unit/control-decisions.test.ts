/**
 * The control plane's pure decisions: a machine's state, the alert latches (hysteresis), the
 * group round state machine, the round schedule, webhook retries, policy checks and the
 * metrics text. The real-path tests are test/control/plane.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { diskAlerts, disconnectAlerts, resyncTransitions, retentionAlerts, rpoAlerts, VolumeRpo } from '../../control/alerts';
import { ControlError } from '../../control/contract';
import { machineState } from '../../control/machine-state';
import { renderMetrics } from '../../control/metrics';
import { DEFAULT_POLICY } from '../../control/model';
import { dueRound } from '../../control/plane';
import { checkPolicyPatch, checkRecoveryPatch } from '../../control/policy';
import { RoundMachine, RoundPlan } from '../../control/round-machine';
import { afterAttempt, checkWebhookUrl, DEFAULT_WEBHOOK_OPTIONS, retryDelayMs } from '../../control/webhooks';
import type { ValidVolumeReport } from '../../proto/validate-control';

const report = (volumeId: string, state: ValidVolumeReport['state'], resyncPercent = 0): ValidVolumeReport => ({ volumeId, state, mode: 'exact', resyncPercent });

describe('machine state', () => {
  it('is the worst that applies, with its reasons', () => {
    expect(machineState(true, [{ volumeId: 'a', report: report('a', 'protected'), receiver: { state: 'healthy' } }])).toEqual({ state: 'protected', reasons: [] });
    expect(machineState(false, [{ volumeId: 'a', receiver: { state: 'healthy' } }]).state).toBe('disconnected');
    // A volume failed on the receiver side outranks a missing session.
    const failed = machineState(false, [{ volumeId: 'a', receiver: { state: 'failed', problem: 'EIO on the spool' } }]);
    expect(failed.state).toBe('failed');
    expect(failed.reasons[0]).toContain('EIO on the spool');
    const resync = machineState(true, [
      { volumeId: 'a', report: report('a', 'resyncing', 40), receiver: { state: 'healthy' } },
      { volumeId: 'b', report: report('b', 'throttled'), receiver: { state: 'held' } },
    ]);
    expect(resync).toEqual({ state: 'resyncing', reasons: ['a resyncing (40%)'] });
    const degraded = machineState(true, [{ volumeId: 'b', report: report('b', 'protected'), receiver: { state: 'held', problem: 'spool above cap' } }]);
    expect(degraded.state).toBe('degraded');
    expect(degraded.reasons).toEqual(['b held at the receiver: spool above cap']);
    expect(machineState(true, []).state).toBe('degraded');
    // An agent that sends no reports is judged by the receiver's side.
    expect(machineState(true, [{ volumeId: 'a', receiver: { state: 'healthy' }, usable: true }]).state).toBe('protected');
    // Not before the receiver holds a usable point: the first heartbeat has not come yet.
    expect(machineState(true, [{ volumeId: 'a', receiver: { state: 'healthy' }, usable: false }])).toEqual({ state: 'resyncing', reasons: ['a has no usable point yet (initial copy not finished)'] });
  });
});

describe('alert latches', () => {
  const volume = (rpoSeconds: number): VolumeRpo => ({ volumeId: 'v', machineName: 'web', groupId: 'shop', rpoSeconds, thresholdMs: 10_000 });

  it('raise rpo-exceeded once over the threshold and rpo-recovered once under 80% of it', () => {
    let active = new Set<string>();
    const kinds: string[] = [];
    for (const rpo of [1, 9, 11, 15, 9, 8.5, 11, 7.9, 5, 12]) {
      const step = rpoAlerts(active, [volume(rpo)]);
      active = step.active;
      kinds.push(...step.events.map((e) => e.kind));
    }
    expect(kinds).toEqual(['rpo-exceeded', 'rpo-recovered', 'rpo-exceeded']);
    expect(active.has('v')).toBe(true);
  });

  it('raise machine-disconnected after the bound, and machine-reconnected only after that', () => {
    const m = (connected: boolean, since?: number) => [{ id: 'a1', name: 'web', connected, disconnectedSinceMs: since }];
    let step = disconnectAlerts(new Set(), m(false, 1000), 30_000, 60_000);
    expect(step.events).toEqual([]);
    // Back before the bound: nothing to say.
    expect(disconnectAlerts(step.active, m(true), 40_000, 60_000).events).toEqual([]);
    step = disconnectAlerts(step.active, m(false, 1000), 61_000, 60_000);
    expect(step.events.map((e) => [e.kind, e.severity])).toEqual([['machine-disconnected', 'error']]);
    step = disconnectAlerts(step.active, m(false, 1000), 90_000, 60_000);
    expect(step.events).toEqual([]);
    step = disconnectAlerts(step.active, m(true), 91_000, 60_000);
    expect(step.events.map((e) => e.kind)).toEqual(['machine-reconnected']);
    expect(step.active.size).toBe(0);
  });

  it('raise disk-low and disk-ok on transitions only', () => {
    let active = new Set<string>();
    const kinds: string[] = [];
    for (const low of [false, true, true, false, false]) {
      const step = diskAlerts(active, [{ path: '/data', freeBytes: 1, low }]);
      active = step.active;
      kinds.push(...step.events.map((e) => e.kind));
    }
    expect(kinds).toEqual(['disk-low', 'disk-ok']);
  });

  it('raise retention-shortfall only for a volume older than its window that keeps less than it', () => {
    const hour = 3600_000;
    const now = 100 * hour;
    // Young volume: nothing, whatever it keeps.
    expect(retentionAlerts(new Set(), [{ volumeId: 'v', windowMs: 24 * hour, protectedSinceMs: now - 2 * hour, oldestPointMs: now - hour }], now).events).toEqual([]);
    // Old enough, keeps the window (pruning lag inside the slack): nothing.
    expect(retentionAlerts(new Set(), [{ volumeId: 'v', windowMs: 24 * hour, protectedSinceMs: 0, oldestPointMs: now - 23 * hour }], now).events).toEqual([]);
    const short = retentionAlerts(new Set(), [{ volumeId: 'v', windowMs: 24 * hour, protectedSinceMs: 0, oldestPointMs: now - 2 * hour }], now);
    expect(short.events.map((e) => e.kind)).toEqual(['retention-shortfall']);
    expect(retentionAlerts(short.active, [{ volumeId: 'v', windowMs: 24 * hour, protectedSinceMs: 0, oldestPointMs: now - 10 * hour }], now).events).toEqual([]);
    expect(retentionAlerts(short.active, [{ volumeId: 'v', windowMs: 24 * hour, protectedSinceMs: 0, oldestPointMs: now - 24 * hour }], now).events.map((e) => e.kind)).toEqual([
      'retention-restored',
    ]);
  });

  it('derive resync started and finished from volume report transitions', () => {
    const before = new Map([['a', 'protected' as const], ['b', 'resyncing' as const], ['c', 'resyncing' as const]]);
    const events = resyncTransitions('web', before, [report('a', 'resyncing'), report('b', 'protected'), report('c', 'disconnected'), report('d', 'resyncing')]);
    expect(events.map((e) => `${e.kind} ${e.subjectId}`)).toEqual(['resync-started a', 'resync-finished b', 'resync-started d']);
  });
});

describe('group round state machine', () => {
  const plan: RoundPlan = { id: 7, groupId: 'shop', app: false, members: ['a', 'b', 'c'], holdMs: 1000, tagTimeoutMs: 5000 };
  const all = new Set(['a', 'b', 'c']);

  it('prepares, commits once all held, and is done once every member tagged', () => {
    const r = new RoundMachine(plan);
    expect(r.start(100, all)).toEqual([{ kind: 'prepare', to: ['a', 'b', 'c'] }]);
    expect(r.deadlineMs).toBe(1100);
    expect(r.acceptsTag('a')).toBe(false);
    expect(r.onHeld('a', true, '', 150)).toEqual([]);
    expect(r.onHeld('a', true, '', 160)).toEqual([]);
    expect(r.onHeld('x', true, '', 160)).toEqual([]);
    expect(r.onHeld('b', true, '', 170)).toEqual([]);
    expect(r.onHeld('c', true, '', 190)).toEqual([{ kind: 'commit', to: ['a', 'b', 'c'] }]);
    expect(r.phase).toBe('committing');
    expect(r.acceptsTag('a')).toBe(true);
    expect(r.acceptsTag('x')).toBe(false);
    expect(r.onTagged('a', [11, 12], 200)).toEqual([]);
    expect(r.acceptsTag('a')).toBe(false);
    expect(r.onTagged('b', [13], 205)).toEqual([]);
    expect(r.onTagged('c', [10], 210)).toEqual([{ kind: 'finished' }]);
    expect(r.outcome()).toEqual({ state: 'done', reason: '', holdMs: 90, totalMs: 110, pointIds: [10, 11, 12, 13] });
    expect(r.expire(5000)).toEqual([]);
  });

  it('aborts at once when a member is not connected, telling every member', () => {
    const r = new RoundMachine(plan);
    const actions = r.start(0, new Set(['a', 'c']));
    expect(actions[0]).toEqual({ kind: 'abort', to: ['a', 'b', 'c'], reason: 'b is not connected' });
    expect(r.outcome().state).toBe('aborted');
  });

  it('aborts on a refusal, a lost member or the hold bound', () => {
    const refused = new RoundMachine(plan);
    refused.start(0, all);
    expect(refused.onHeld('b', false, 'freeze failed', 10)[0]).toMatchObject({ kind: 'abort', reason: 'b could not hold its writes: freeze failed' });

    const lost = new RoundMachine(plan);
    lost.start(0, all);
    lost.onHeld('a', true, '', 5);
    expect(lost.onLost('c', 10)[0]).toMatchObject({ kind: 'abort', to: ['a', 'b', 'c'] });

    const stalled = new RoundMachine(plan);
    stalled.start(0, all);
    stalled.onHeld('a', true, '', 5);
    stalled.onHeld('c', true, '', 6);
    expect(stalled.expire(999)).toEqual([]);
    const abort = stalled.expire(1000);
    expect(abort[0]).toMatchObject({ kind: 'abort', reason: 'b did not answer within the 1000 ms hold bound' });
    expect(stalled.outcome()).toMatchObject({ state: 'aborted', holdMs: null, totalMs: 1000 });
    // Late answers change nothing.
    expect(stalled.onHeld('b', true, '', 1001)).toEqual([]);
  });

  it('aborts a commit whose tags do not all come, telling those that did not tag', () => {
    const r = new RoundMachine(plan);
    r.start(0, all);
    for (const m of ['a', 'b', 'c']) r.onHeld(m, true, '', 10);
    r.onTagged('a', [1], 20);
    const actions = r.expire(10 + 5000);
    expect(actions[0]).toMatchObject({ kind: 'abort', to: ['b', 'c'], reason: 'b, c sent no tag within 5000 ms of the commit' });
    expect(r.outcome().holdMs).toBe(10);
    // Those told to commit may still have a tag on the wire: the driver takes it for a while.
    expect(r.untaggedAfterCommit()).toEqual(['b', 'c']);
    const never = new RoundMachine(plan);
    never.start(0, all);
    never.expire(1000);
    expect(never.untaggedAfterCommit()).toEqual([]);
  });
});

describe('round schedule', () => {
  const policy = { ...DEFAULT_POLICY, multiMachineConsistency: true, crashConsistentIntervalMs: 1000, appConsistentIntervalMs: 60_000 };
  it('asks for app rounds on their interval and crash rounds on theirs, nothing when off', () => {
    expect(dueRound(policy, { crashMs: 0, appMs: 0 }, 999)).toBeUndefined();
    expect(dueRound(policy, { crashMs: 0, appMs: 0 }, 1000)).toBe('crash');
    expect(dueRound(policy, { crashMs: 59_500, appMs: 0 }, 60_000)).toBe('app');
    expect(dueRound({ ...policy, appConsistentIntervalMs: 0 }, { crashMs: 0, appMs: 0 }, 10 ** 9)).toBe('crash');
    expect(dueRound({ ...policy, multiMachineConsistency: false }, { crashMs: 0, appMs: 0 }, 10 ** 9)).toBeUndefined();
  });
});

describe('webhook retries', () => {
  it('double from 1 s up to 5 min and give up after 10 attempts', () => {
    expect([1, 2, 3, 9, 10].map((n) => retryDelayMs(n, DEFAULT_WEBHOOK_OPTIONS))).toEqual([1000, 2000, 4000, 256_000, 300_000]);
    let d = { webhookId: 1, eventId: 2, state: 'pending' as const, attempts: 0, lastError: '', nextAttemptMs: 0 } as Parameters<typeof afterAttempt>[0];
    for (let i = 0; i < 9; i++) {
      d = afterAttempt(d, 'HTTP 500', 0, DEFAULT_WEBHOOK_OPTIONS);
      expect(d.state).toBe('pending');
    }
    expect(afterAttempt(d, undefined, 0, DEFAULT_WEBHOOK_OPTIONS)).toMatchObject({ state: 'delivered', attempts: 10, nextAttemptMs: null });
    expect(afterAttempt(d, 'HTTP 500', 0, DEFAULT_WEBHOOK_OPTIONS)).toMatchObject({ state: 'failed', attempts: 10, lastError: 'HTTP 500' });
  });

  it('take http and https URLs only', () => {
    expect(checkWebhookUrl('https://hooks.example/ferry')).toBeUndefined();
    expect(checkWebhookUrl('ftp://x/')).toMatch(/http or https/);
    expect(checkWebhookUrl('not a url')).toMatch(/not a URL/);
  });
});

describe('policy and recovery checks', () => {
  it('name the field at fault', () => {
    const fieldOf = (fn: () => unknown): string | undefined => {
      try {
        fn();
      } catch (err) {
        return err instanceof ControlError ? `${err.kind}:${err.field ?? ''}` : 'other';
      }
      return undefined;
    };
    expect(checkPolicyPatch({ rpoThresholdMs: 5000, appConsistentIntervalMs: 0 })).toEqual({ rpoThresholdMs: 5000, appConsistentIntervalMs: 0 });
    expect(fieldOf(() => checkPolicyPatch({ crashConsistentIntervalMs: 10 }))).toBe('invalid:crashConsistentIntervalMs');
    expect(fieldOf(() => checkPolicyPatch({ retentionMs: 1.5 }))).toBe('invalid:retentionMs');
    expect(fieldOf(() => checkPolicyPatch({ bogus: 1 } as never))).toBe('invalid:bogus');
    expect(fieldOf(() => checkRecoveryPatch({ vcpus: 0 }))).toBe('invalid:vcpus');
    expect(checkRecoveryPatch({ recoveredName: 'web-dr', bootOrder: 2 })).toEqual({ recoveredName: 'web-dr', bootOrder: 2 });
  });
});

describe('metrics text', () => {
  it('has the gauges, counters and summary with escaped labels', () => {
    const text = renderMetrics({
      volumes: [{ machine: 'web "1"', volume: 'v1', group: 'shop', rpoSeconds: 1.5 }],
      groups: [{ group: 'shop', rpoThresholdSeconds: 30 }],
      machines: [{ machine: 'web', state: 'protected' }],
      rounds: [{ group: 'shop', done: 3, aborted: 1 }],
      holds: [{ group: 'shop', count: 3, sumSeconds: 0.06, recentSeconds: [0.01, 0.02, 0.03] }],
      events: { info: 2, warning: 1, error: 0 },
    });
    expect(text).toContain('ferry_rpo_seconds{machine="web \\"1\\"",volume="v1",group="shop"} 1.5');
    expect(text).toContain('ferry_rpo_threshold_seconds{group="shop"} 30');
    expect(text).toContain('ferry_machine_state{machine="web",state="protected"} 1');
    expect(text).toContain('ferry_machine_state{machine="web",state="failed"} 0');
    expect(text).toContain('ferry_group_rounds_total{group="shop",result="aborted"} 1');
    expect(text).toContain('ferry_round_hold_seconds{group="shop",quantile="0.5"} 0.02');
    expect(text).toContain('ferry_round_hold_seconds_count{group="shop"} 3');
    expect(text).toContain('ferry_events_total{severity="warning"} 1');
    expect(text).toContain('# TYPE ferry_rpo_seconds gauge');
  });
});
