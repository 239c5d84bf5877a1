import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAgentConfig } from '../../agent/config';
import { emptyRoundStats } from '../../agent/group-round';
import { AgentStatus, prometheusText } from '../../agent/status';
import { effectivePolicy, offerPolicy, POLICY_DEFAULTS } from '../../agent/policy/effective';
import { PolicyKeeper } from '../../agent/policy/policy-keeper';
import type { AgentPolicy } from '../../proto/validate-control';
import { tempDirs } from '../helpers/temp-dirs';

const tempDir = tempDirs();

function group(over: Partial<AgentPolicy> = {}): AgentPolicy {
  return { revision: 3, groupId: 'web', crashIntervalMs: 250, appIntervalMs: 3_600_000, rpoThresholdMs: 20_000, multiMachine: true, ...over };
}

const frame = (over: Partial<AgentPolicy> = {}): Record<string, unknown> => ({ policyVersion: 1, ...group(over) });

describe('the effective policy: group policy, else local config, else default', () => {
  it('a machine in a group takes every value from the group policy, whatever the local config says', () => {
    const e = effectivePolicy({ crashIntervalMs: 5000, appIntervalMs: 0 }, group());
    expect(e.crashIntervalMs).toMatchObject({ value: 250, source: 'group', sourceLabel: 'group web rev 3' });
    expect(e.crashIntervalMs.reason).toMatch(/in group web.*local config's 5000 ms is not used/);
    expect(e.appIntervalMs).toMatchObject({ value: 3_600_000, source: 'group' });
    expect(e.rpoThresholdMs).toMatchObject({ value: 20_000, source: 'group' });
    expect(e).toMatchObject({ groupId: 'web', revision: 3, multiMachine: true });
  });

  it('a machine in no group takes what its config sets, the default for the rest', () => {
    const e = effectivePolicy({ crashIntervalMs: 5000 }, group({ groupId: '', revision: 7 }));
    expect(e.crashIntervalMs).toMatchObject({ value: 5000, source: 'local', sourceLabel: 'local config' });
    expect(e.crashIntervalMs.reason).toMatch(/in no group/);
    expect(e.appIntervalMs).toMatchObject({ value: POLICY_DEFAULTS.appIntervalMs, source: 'default', sourceLabel: 'default' });
    expect(e.rpoThresholdMs).toMatchObject({ value: 30_000, source: 'default' });
    expect(e).toMatchObject({ groupId: '', revision: 7, multiMachine: false });
  });

  it('before any policy arrived, the local config and the defaults decide, and say so', () => {
    const e = effectivePolicy({ appIntervalMs: 60_000 }, undefined);
    expect(e.appIntervalMs).toMatchObject({ value: 60_000, source: 'local' });
    expect(e.crashIntervalMs).toMatchObject({ value: 1000, source: 'default' });
    expect(e.crashIntervalMs.reason).toMatch(/no group policy has arrived/);
    expect(e.revision).toBe(0);
  });

  it('applies only a revision newer than the current one', () => {
    expect(offerPolicy(undefined, group({ revision: 1 }))).toEqual({ kind: 'apply' });
    expect(offerPolicy(group({ revision: 4 }), group({ revision: 5 }))).toEqual({ kind: 'apply' });
    expect(offerPolicy(group({ revision: 4 }), group({ revision: 4 })).kind).toBe('stale');
    expect(offerPolicy(group({ revision: 4 }), group({ revision: 2 }))).toMatchObject({ kind: 'stale', reason: expect.stringMatching(/revision 2 is not newer than the applied revision 4/) });
  });
});

describe('PolicyKeeper: validation, revisions, persistence', () => {
  it('keeps the current policy when an invalid one arrives, and the saved one across a restart', () => {
    const file = path.join(tempDir('policy'), 'policy.json');
    const keeper = new PolicyKeeper(file, { crashIntervalMs: 5000 });
    expect(keeper.effective.crashIntervalMs.source).toBe('local');
    expect(keeper.offer(frame()).kind).toBe('applied');
    expect(keeper.effective.crashIntervalMs).toMatchObject({ value: 250, sourceLabel: 'group web rev 3' });

    const invalid = keeper.offer(frame({ revision: 9, crashIntervalMs: 5 }));
    expect(invalid).toMatchObject({ kind: 'invalid', error: expect.stringMatching(/crash interval 5 ms is outside/) });
    expect(keeper.effective.crashIntervalMs.value).toBe(250);
    expect(keeper.offer({ ...frame({ revision: 9 }), policyVersion: 2 })).toMatchObject({ kind: 'invalid', error: expect.stringMatching(/policy version 2/) });
    expect(keeper.offer(frame({ revision: 2, crashIntervalMs: 900 })).kind).toBe('stale');

    const restarted = new PolicyKeeper(file, { crashIntervalMs: 5000 });
    expect(restarted.effective.crashIntervalMs).toMatchObject({ value: 250, source: 'group', sourceLabel: 'group web rev 3' });
  });

  it('ignores a damaged saved policy (local config decides until the receiver sends one)', () => {
    const file = path.join(tempDir('policy-bad'), 'policy.json');
    fs.writeFileSync(file, '{"policyVersion":1,"revision":');
    expect(new PolicyKeeper(file, {}).effective.crashIntervalMs.source).toBe('default');
  });
});

describe('agent config: the local policy values', () => {
  const base = { receiver: { url: 'wss://r:7443', fingerprint: 'AB'.repeat(32) }, volumes: [{ id: 'v', path: '/dev/null' }] };
  const parse = (extra: Record<string, unknown>) => parseAgentConfig(JSON.stringify({ ...base, ...extra }), '/etc/ferry/agent.json');

  it('records only what the file sets', () => {
    expect(parse({}).policy).toEqual({ crashIntervalMs: undefined, appIntervalMs: undefined, rpoThresholdMs: undefined });
    expect(parse({ tags: { crashIntervalMs: '2s', appIntervalMs: '1h' }, rpoThresholdMs: '45s' }).policy).toEqual({ crashIntervalMs: 2000, appIntervalMs: 3_600_000, rpoThresholdMs: 45_000 });
    expect(parse({ tags: { appIntervalMs: 'off' } }).policy.appIntervalMs).toBe(0);
  });

  it('refuses values outside the policy bounds, naming the key', () => {
    expect(() => parse({ tags: { appIntervalMs: '1s' } })).toThrow(/tags\.appIntervalMs/);
    expect(() => parse({ rpoThresholdMs: 10 })).toThrow(/rpoThresholdMs must be between 1000/);
  });
});

describe('metrics: the effective RPO threshold and the group rounds', () => {
  it('exports the threshold, hold-time quantiles and round outcomes', () => {
    const status: AgentStatus = {
      pid: 1,
      updatedMs: 0,
      name: 'vm-a',
      agentId: 'agent-1',
      receiver: 'wss://r:7443',
      capture: 'scan',
      connected: true,
      throttled: false,
      sentBytes: 0,
      throughputBytesPerSecond: 0,
      rssBytes: 0,
      points: { lastCrashTagMs: 0, lastAppTagMs: 0, tagsSent: 0 },
      policy: effectivePolicy({}, group({ rpoThresholdMs: 20_000 })),
      rounds: { ...emptyRoundStats(), outcomes: { ...emptyRoundStats().outcomes, committed: 4, expired: 1 }, lastHoldMs: 40, p50HoldMs: 35, p99HoldMs: 1500 },
      events: { queued: 0, dropped: 0 },
      volumes: [],
    };
    const text = prometheusText(status);
    expect(text).toContain('ferry_agent_rpo_threshold_seconds 20\n');
    expect(text).toContain('ferry_agent_group_round_hold_seconds{quantile="0.5"} 0.035\n');
    expect(text).toContain('ferry_agent_group_round_hold_seconds{quantile="0.99"} 1.5\n');
    expect(text).toContain('ferry_agent_group_rounds_total{outcome="committed"} 4\n');
    expect(text).toContain('ferry_agent_group_rounds_total{outcome="expired"} 1\n');
  });
});
