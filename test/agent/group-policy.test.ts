import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentStatus } from '../../agent/status';
import { ferry } from '../../proto/frames';
import { AgentProcess, startAgentProcess, waitFor } from '../helpers/agent-lab';
import { FakeReceiver } from '../helpers/fake-receiver';
import { makeTempDir, runFerryAsync } from '../helpers/receiver-process';

const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI) throw new Error('the group policy test needs root (loop device, mount, FIFREEZE) and CI runs it');
const TOOLS = { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` };
const run = (cmd: string, args: string[]): string => execFileSync(cmd, args, { env: TOOLS, encoding: 'utf8' }).trim();

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;
const VOL = 'fs1';

/** Resolves with the exit code once a write to `dir` is on disk: it blocks while the filesystem is frozen. */
function writeCompletes(dir: string, name: string): Promise<number | null> {
  return new Promise((resolve) => {
    const child = spawn('sh', ['-c', `echo data > ${path.join(dir, name)} && sync -f ${dir}`], { stdio: 'ignore' });
    child.once('exit', (code) => resolve(code));
  });
}

/** Lines the hook script appended: "pre" or "post", one per run. */
function hookRuns(logFile: string): string[] {
  return fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').split('\n').filter(Boolean) : [];
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function gaps(times: number[]): number[] {
  return times.slice(1).map((t, i) => t - times[i]);
}

describe.skipIf(!isRoot)('group policy and group rounds on a real agent (scan capture of a mounted ext4, scripted receiver)', () => {
  let dir: string;
  let receiver: FakeReceiver;
  let agent: AgentProcess;
  let device = '';
  let mount = '';
  let configFile = '';
  let hookLog = '';
  let writer: ChildProcess | undefined;

  const status = async (): Promise<AgentStatus> => {
    const r = await runFerryAsync(['agent', 'status', '--config', configFile, '--json']);
    if (r.status !== 0) throw new Error(`status failed (${r.status}): ${r.stderr}`);
    return JSON.parse(r.stdout) as AgentStatus;
  };
  const policy = (revision: number, over: Partial<ferry.IPolicy> = {}): ferry.IPolicy => ({
    policyVersion: 1,
    revision,
    groupId: 'web',
    crashIntervalMs: 300,
    appIntervalMs: 0,
    rpoThresholdMs: 5000,
    multiMachine: true,
    ...over,
  });
  const crashTagTimes = (sinceMs: number): number[] => receiver.tags.filter((t) => t.atMs >= sinceMs && t.tag.kind === ferry.Tag.Kind.CRASH && !t.tag.groupRound).map((t) => t.atMs);
  const eventsOf = (kind: string): ferry.IAgentEvent[] => receiver.events.filter((e) => e.kind === kind);

  beforeAll(async () => {
    dir = makeTempDir('group-policy');
    const image = path.join(dir, 'fs.img');
    fs.writeFileSync(image, Buffer.alloc(0));
    fs.truncateSync(image, SIZE);
    run('mkfs.ext4', ['-q', '-F', image]);
    device = run('losetup', ['-f', '--show', image]);
    mount = path.join(dir, 'mnt');
    fs.mkdirSync(mount);
    run('mount', [device, mount]);
    hookLog = path.join(dir, 'hooks.log');
    const hook = path.join(dir, 'hook.sh');
    fs.writeFileSync(hook, `#!/bin/sh\necho "$1" >> ${hookLog}\n`, { mode: 0o755 });

    receiver = await FakeReceiver.start({ [VOL]: SIZE });
    const stateDir = path.join(dir, 'state');
    receiver.writeCredential(stateDir);
    configFile = path.join(dir, 'agent.json');
    const config = {
      receiver: { url: receiver.url, fingerprint: receiver.fingerprint },
      name: 'vm-a',
      stateDir,
      capture: 'scan',
      volumes: [{ id: VOL, path: device, mount }],
      scan: { intervalMs: 100 },
      tags: { crashIntervalMs: 3000, preHook: hook, postHook: hook },
    };
    fs.writeFileSync(configFile, JSON.stringify(config));
    agent = startAgentProcess(configFile);
  });

  afterAll(async () => {
    writer?.kill('SIGKILL');
    await agent?.stop();
    await receiver?.close();
    // Not frozen unless a test failed half-way: the normal case is an EINVAL, silenced.
    spawn('fsfreeze', ['--unfreeze', mount], { stdio: 'ignore', env: TOOLS });
    try {
      run('umount', [mount]);
    } finally {
      run('losetup', ['-d', device]);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('logs in with its software version and OS, and reports its volumes in every heartbeat', async () => {
    await waitFor('the initial resync', () => receiver.heartbeats.some((h) => h.volumes?.some((v) => v.volumeId === VOL && v.state === 'protected')), 60_000);
    expect(receiver.hellos[0]).toMatchObject({ intent: ferry.Hello.Intent.LOGIN, software: 'ferry-agent/0.1.0', os: expect.stringMatching(/^linux \S+ (x64|arm64)$/) });
    const last = receiver.heartbeats[receiver.heartbeats.length - 1];
    expect(last.volumes).toEqual([expect.objectContaining({ volumeId: VOL, state: 'protected', mode: 'approximate' })]);
    // A receiver that never sent a policy may not know AgentEvent: nothing was sent yet.
    expect(receiver.events).toEqual([]);
  });

  it('applies a group policy live: the crash tags speed up; status shows each value with its source; queued events follow', async () => {
    writer = spawn('sh', ['-c', `while :; do dd if=/dev/urandom of=${mount}/churn bs=64k count=2 conv=fsync 2>/dev/null; sleep 0.05; done`], { stdio: 'ignore' });
    const before = await status();
    expect(before.policy.crashIntervalMs).toMatchObject({ value: 3000, source: 'local', sourceLabel: 'local config' });
    expect(before.policy.rpoThresholdMs).toMatchObject({ value: 30_000, source: 'default' });
    const slowFrom = Date.now();
    await waitFor('three crash tags at the local interval', () => crashTagTimes(slowFrom).length >= 3, 30_000);
    const slow = median(gaps(crashTagTimes(slowFrom)));

    receiver.send({ policy: policy(1) });
    const fastFrom = Date.now();
    await waitFor('ten crash tags at the group interval', () => crashTagTimes(fastFrom).length >= 10, 30_000);
    const fast = median(gaps(crashTagTimes(fastFrom)));
    expect(slow).toBeGreaterThan(2500);
    expect(fast).toBeLessThan(1000);

    const after = await status();
    expect(after.policy.crashIntervalMs).toMatchObject({ value: 300, source: 'group', sourceLabel: 'group web rev 1' });
    expect(after.policy.rpoThresholdMs).toMatchObject({ value: 5000, sourceLabel: 'group web rev 1' });
    expect(after.policy.appIntervalMs).toMatchObject({ value: 0, source: 'group' });
    const human = await runFerryAsync(['agent', 'status', '--config', configFile]);
    expect(human.stdout).toContain('crash points every 300ms (group web rev 1)');
    expect(human.stdout).toContain('RPO threshold 5s (group web rev 1)');
    // The resync events waited for a receiver that takes them.
    await waitFor('the resync events', () => eventsOf('resync-finished').length > 0, 10_000);
    expect(eventsOf('resync-started')[0]).toMatchObject({ volumeId: VOL, severity: ferry.AgentEvent.Severity.INFO, text: expect.stringMatching(/full resync of fs1 started/) });
  });

  it('keeps the current policy when an invalid one arrives, and says so', async () => {
    receiver.send({ policy: policy(9, { crashIntervalMs: 5 }) });
    const e = await waitFor('the policy-invalid event', () => eventsOf('policy-invalid')[0], 10_000);
    expect(e).toMatchObject({ severity: ferry.AgentEvent.Severity.WARNING, text: expect.stringMatching(/crash interval 5 ms is outside/) });
    expect((await status()).policy.crashIntervalMs).toMatchObject({ value: 300, sourceLabel: 'group web rev 1' });
  });

  it('cuts app-consistent points on the policy schedule, running the hooks', async () => {
    const hooksBefore = hookRuns(hookLog).length;
    const from = Date.now();
    receiver.send({ policy: policy(2, { appIntervalMs: 10_000 }) });
    // The tags themselves, not their arrival times: a crash tag can arrive in the same millisecond.
    const appTags = () => receiver.tags.filter((t) => t.atMs >= from && t.tag.kind === ferry.Tag.Kind.APP);
    await waitFor('two scheduled app points', () => appTags().length >= 2, 40_000, 200);
    const [first, second] = appTags();
    expect(first.atMs - from).toBeGreaterThan(9000);
    expect(second.atMs - first.atMs).toBeGreaterThan(8000);
    expect(second.atMs - first.atMs).toBeLessThan(13_000);
    expect(first.tag.cuts?.[0]).toMatchObject({ volumeId: VOL, accuracy: ferry.Accuracy.EXACT });
    expect(hookRuns(hookLog).slice(hooksBefore, hooksBefore + 4)).toEqual(['pre', 'post', 'pre', 'post']);
    // Off again: the rounds below need the machine to themselves.
    receiver.send({ policy: policy(3, { appIntervalMs: 0 }) });
    await waitFor('the app schedule off', async () => (await status()).policy.appIntervalMs.value === 0, 10_000);
    writer?.kill('SIGKILL');
    writer = undefined;
  });

  it('takes part in a group round: prepare -> held (frozen), commit -> released and a tag of the round', async () => {
    const hooksBefore = hookRuns(hookLog).length;
    receiver.send({ groupPrepare: { roundId: 1, groupId: 'web', holdMs: 3000, app: false } });
    const held = await waitFor('GroupHeld of round 1', () => receiver.groupHeld.find((h) => Number(h.roundId) === 1), 10_000);
    expect(held).toMatchObject({ ok: true });
    expect(hookRuns(hookLog).slice(hooksBefore)).toEqual(['pre']);
    // Writes wait while the round holds them.
    let written = false;
    const write = writeCompletes(mount, 'during-round').then((code) => {
      written = true;
      return code;
    });
    await new Promise((r) => setTimeout(r, 200));
    expect(written).toBe(false);
    receiver.send({ groupCommit: { roundId: 1 } });
    const tag = await waitFor('the tag of round 1', () => receiver.tags.find((t) => Number(t.tag.groupRound) === 1), 10_000);
    expect(tag.tag).toMatchObject({ kind: ferry.Tag.Kind.CRASH, cuts: [expect.objectContaining({ volumeId: VOL, accuracy: ferry.Accuracy.EXACT })] });
    expect(await write).toBe(0);
    await waitFor('the post-hook', () => hookRuns(hookLog).length >= hooksBefore + 2, 10_000);
    const rounds = (await status()).rounds;
    expect(rounds.outcomes.committed).toBe(1);
    expect(rounds.lastHoldMs).toBeGreaterThan(0);
    expect(rounds.lastHoldMs).toBeLessThan(3000);
  });

  it('a round never committed is released by its bound: thawed, post-hook run, round-hold-expired reported', async () => {
    const hooksBefore = hookRuns(hookLog).length;
    const sentMs = Date.now();
    receiver.send({ groupPrepare: { roundId: 2, groupId: 'web', holdMs: 1500, app: false } });
    expect(await waitFor('GroupHeld of round 2', () => receiver.groupHeld.find((h) => Number(h.roundId) === 2), 10_000)).toMatchObject({ ok: true });
    const expired = await waitFor('round-hold-expired', () => eventsOf('round-hold-expired')[0], 10_000);
    expect(Date.now() - sentMs).toBeGreaterThanOrEqual(1400);
    expect(expired).toMatchObject({ severity: ferry.AgentEvent.Severity.WARNING, text: expect.stringMatching(/group round 2 of group web: no commit within the 1500 ms hold/) });
    expect(await writeCompletes(mount, 'after-expiry')).toBe(0);
    await waitFor('the post-hook', () => hookRuns(hookLog).length >= hooksBefore + 2, 10_000);
    expect(hookRuns(hookLog).slice(hooksBefore)).toEqual(['pre', 'post']);
    receiver.send({ groupCommit: { roundId: 2 } });
    await new Promise((r) => setTimeout(r, 300));
    expect(receiver.tags.some((t) => Number(t.tag.groupRound) === 2)).toBe(false);
    const s = await status();
    expect(s.rounds.outcomes.expired).toBe(1);
    expect(s.rounds.p99HoldMs).toBeGreaterThanOrEqual(1500);
  });

  it('a session lost during a round releases the hold', async () => {
    receiver.send({ groupPrepare: { roundId: 3, groupId: 'web', holdMs: 5000, app: false } });
    await waitFor('GroupHeld of round 3', () => receiver.groupHeld.find((h) => Number(h.roundId) === 3), 10_000);
    const droppedMs = Date.now();
    receiver.dropSession();
    expect(await writeCompletes(mount, 'after-drop')).toBe(0);
    expect(Date.now() - droppedMs).toBeLessThan(4000);
    await waitFor('the agent back', () => receiver.connected && receiver.logins >= 2, 20_000);
    expect((await status()).rounds.outcomes['session-lost']).toBe(1);
  });

  it('an application-consistent round records an app point of the round', async () => {
    await waitFor('volumes declared again', () => receiver.heartbeats.length > 0 && receiver.connected, 10_000);
    receiver.send({ groupPrepare: { roundId: 4, groupId: 'web', holdMs: 3000, app: true } });
    expect(await waitFor('GroupHeld of round 4', () => receiver.groupHeld.find((h) => Number(h.roundId) === 4), 10_000)).toMatchObject({ ok: true });
    receiver.send({ groupCommit: { roundId: 4 } });
    const tag = await waitFor('the tag of round 4', () => receiver.tags.find((t) => Number(t.tag.groupRound) === 4), 10_000);
    expect(tag.tag).toMatchObject({ kind: ferry.Tag.Kind.APP, cuts: [expect.objectContaining({ volumeId: VOL, accuracy: ferry.Accuracy.EXACT })] });
  });
});
