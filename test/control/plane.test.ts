/**
 * The configuration server inside a real receiver (startReceiver: real TLS, real catalog),
 * driven by three agents scripted over the real protocol: policies reach them after login and
 * after a change, group rounds commit (points recorded with their round, listed by the plane
 * and by `ferry points --group`, exported by `ferry export --group`) or abort within their
 * bound when one member stalls, a tag for a round that is not committing is refused, and the
 * alerts reach a real webhook server once, with retries.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ControlEvent } from '../../control/model';
import { ferry } from '../../proto/frames';
import { ReceiverOptions, startReceiver, RunningReceiver } from '../../receiver/server';
import { waitFor } from '../helpers/agent-lab';
import { within } from '../helpers/raw-client';
import { makeTempDir, runFerryAsync, writePassphrase } from '../helpers/receiver-process';
import { ScriptedAgent } from './scripted-agent';

const GROUP = 'shop';
const DAY_MS = 24 * 3600 * 1000;
const HOLD_MS = 1000;
/** "Within the bound" on a loaded 2-core machine: the bound plus scheduling slack. */
const ABORT_DEADLINE_MS = HOLD_MS + 2000;

interface Hook {
  url: string;
  received: ControlEvent[];
  close(): Promise<void>;
}

/** A real HTTP server that records the events POSTed to it; the first `failFirst` requests get a 500. */
async function startHook(failFirst = 0): Promise<Hook> {
  const received: ControlEvent[] = [];
  let requests = 0;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      requests++;
      if (requests <= failFirst) {
        res.writeHead(500).end('not now');
        return;
      }
      received.push(JSON.parse(body) as ControlEvent);
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    received,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

describe('control plane in a real receiver', () => {
  let dir: string;
  let dataDir: string;
  let rx: RunningReceiver;
  let agents: ScriptedAgent[] = [];
  let target: { port: number; localAddress: string };
  let passphrase: string;
  let options: ReceiverOptions;

  beforeAll(async () => {
    dir = makeTempDir('plane');
    dataDir = path.join(dir, 'data');
    const pp = writePassphrase(dir);
    passphrase = pp.passphrase;
    options = {
      dataDir,
      host: '127.0.0.1',
      port: 0,
      passphraseFile: pp.file,
      retentionUs: DAY_MS * 1000,
      spoolCapBytes: 64 * 1024 * 1024,
      checkpointIntervalMs: 200,
      retentionIntervalMs: 60_000,
      segmentBytes: 8 * 1024 * 1024,
      minFreeBytes: 1024 * 1024,
      reserveBytes: 0,
      roundHoldMs: HOLD_MS,
      roundTagTimeoutMs: 5000,
      alertIntervalMs: 200,
      webhookRetryMs: 300,
    };
    rx = await startReceiver(options);
    target = { port: rx.port, localAddress: '127.0.0.1' };
    for (const name of ['web', 'app', 'db']) agents.push(await ScriptedAgent.register(target, passphrase, name, () => GROUP));
    for (const [i, a] of agents.entries()) {
      await a.declare(`vol-${['web', 'app', 'db'][i]}`);
      await a.write(`vol-${['web', 'app', 'db'][i]}`, i + 1);
    }
  });

  afterAll(async () => {
    for (const a of agents) a.close();
    await rx?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('lists the registered agents as machines and sends each a no-group Policy after login', async () => {
    for (const a of agents) {
      const p = await within(a.waitPolicy(() => true), 5000, 'the first policy');
      expect(p.groupId).toBe('');
      expect(p.policyVersion).toBe(1);
      expect(p.revision).toBeGreaterThan(0);
    }
    const machines = await waitFor('machines protected', () => {
      const list = rx.plane.machines();
      return list.length === 3 && list.every((m) => m.state === 'protected') && list;
    }, 10_000);
    expect(machines.map((m) => m.name).sort()).toEqual(['app', 'db', 'web']);
    const web = machines.find((m) => m.name === 'web');
    expect(web).toMatchObject({ os: 'linux test', agentVersion: 'scripted-agent/1', connected: true, groupId: null });
    expect(web?.volumes.map((v) => v.volumeId)).toEqual(['vol-web']);
  });

  it('sends the group policy when machines join and again, with the new revision, when it changes', async () => {
    rx.plane.createGroup(GROUP, { multiMachineConsistency: true, crashConsistentIntervalMs: DAY_MS, appConsistentIntervalMs: 0, rpoThresholdMs: 5000 });
    for (const a of agents) rx.plane.addMember(GROUP, a.agentId);
    let group = rx.plane.group(GROUP);
    expect(group.members.sort()).toEqual(agents.map((a) => a.agentId).sort());
    for (const a of agents) {
      const p = await within(a.waitPolicy((x) => x.groupId === GROUP && x.revision === group.revision), 5000, 'the group policy');
      expect(p).toMatchObject({ rpoThresholdMs: 5000, multiMachine: true, appIntervalMs: 0 });
    }
    const before = group.revision;
    group = rx.plane.setPolicy(GROUP, { crashConsistentIntervalMs: DAY_MS - 1000 });
    expect(group.revision).toBeGreaterThan(before);
    for (const a of agents) {
      const p = await within(a.waitPolicy((x) => x.revision === group.revision), 5000, 'the changed policy');
      expect(p.crashIntervalMs).toBe(DAY_MS - 1000);
    }
    // A new session gets the current policy right after its Welcome.
    const again = await agents[0].relogin(target);
    const p = await within(again.waitPolicy(() => true), 5000, 'the policy after a new login');
    expect(p).toMatchObject({ groupId: GROUP, revision: group.revision });
    again.close();
    // The first session is still there: the agent stays connected through it.
    expect(rx.plane.machine(agents[0].agentId).connected).toBe(true);
    agents[0].close();
    await waitFor('the sessions to count as gone', () => !rx.plane.machine(agents[0].agentId).connected, 10_000);
    expect(rx.plane.machine(agents[0].agentId).state).toBe('disconnected');
    agents[0] = await agents[0].relogin(target);
    await agents[0].declare('vol-web');
  });

  it('commits a round all members answer and records every member volume at its cut with the round', async () => {
    const round = await within(rx.plane.runRound(GROUP), 15_000, 'the round');
    expect(round).toMatchObject({ state: 'done', groupId: GROUP, reason: '' });
    expect(round.holdMs).not.toBeNull();
    expect(round.pointIds).toHaveLength(3);
    const groupPoints = rx.plane.groupPoints(GROUP);
    expect(groupPoints[0].round.id).toBe(round.id);
    const points = groupPoints[0].points;
    expect(points.map((p) => p.volumeId).sort()).toEqual(['vol-app', 'vol-db', 'vol-web']);
    for (const p of points) expect(p.groupRound).toBe(round.id);

    const listed = await waitFor('the group point applied', async () => {
      const r = await runFerryAsync(['points', '--data', dataDir, '--group', GROUP, '--json']);
      expect(r.status).toBe(0);
      const list = JSON.parse(r.stdout) as Array<{ round: { id: number }; points: Array<{ volumeId: string; machine: string; exportable: boolean }> }>;
      return list[0]?.points.every((p) => p.exportable) && list;
    }, 20_000, 200);
    expect(listed[0].round.id).toBe(round.id);
    expect(listed[0].points.map((p) => `${p.machine}/${p.volumeId}`).sort()).toEqual(['app/vol-app', 'db/vol-db', 'web/vol-web']);
    const text = await runFerryAsync(['points', '--data', dataDir, '--group', GROUP]);
    expect(text.stdout).toMatch(new RegExp(`^${round.id}\\t.*\\tcrash\\t\\d+ms\\tweb\\tvol-web\\t`, 'm'));

    const missing = await runFerryAsync(['points', '--data', dataDir, '--group', 'nope']);
    expect([missing.status, missing.stderr.trim()]).toEqual([3, `ferry: no group nope in ${dataDir}`]);
    const noRound = await runFerryAsync(['export', '--data', dataDir, '--group', GROUP, '--out', path.join(dir, 'x')]);
    expect(noRound.status).toBe(2);
    expect(noRound.stderr).toContain('--group and --round go together');

    const out = path.join(dir, 'export');
    const exported = await runFerryAsync(['export', '--data', dataDir, '--group', GROUP, '--round', String(round.id), '--out', out]);
    expect(exported.stderr).toBe('');
    expect(exported.status).toBe(0);
    expect(fs.readdirSync(out).sort()).toEqual(['app-vol-app.img', 'db-vol-db.img', 'web-vol-web.img']);
    // Each image is its volume at the cut: the one block written holds its agent's fill byte.
    for (const [name, fill] of [['web-vol-web.img', 1], ['app-vol-app.img', 2], ['db-vol-db.img', 3]] as const) {
      const image = fs.readFileSync(path.join(out, name));
      expect(image.length).toBe(1024 * 1024);
      expect(image.subarray(0, 4096).every((b) => b === fill)).toBe(true);
    }
  });

  it('aborts a round within its bound when one member stalls, and tells every member', async () => {
    const stalled = agents[2];
    stalled.rounds = 'stall';
    const started = Date.now();
    const round = await within(rx.plane.runRound(GROUP), 15_000, 'the round');
    const took = Date.now() - started;
    stalled.rounds = 'answer';
    expect(round.state).toBe('aborted');
    expect(round.reason).toContain(stalled.agentId);
    expect(round.reason).toContain(`${HOLD_MS} ms hold bound`);
    expect(took).toBeLessThan(ABORT_DEADLINE_MS);
    for (const a of agents) await within(a.ws.waitFrame((f) => (f.groupAbort?.roundId === round.id ? f.groupAbort : undefined)), 5000, 'the GroupAbort');
    const events = rx.plane.events({ kind: 'round-aborted' });
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ severity: 'warning', subjectKind: 'group', subjectId: GROUP });
    expect(rx.plane.groupPoints(GROUP)).toHaveLength(1);
    expect(rx.plane.metrics()).toContain(`ferry_group_rounds_total{group="${GROUP}",result="aborted"} 1`);
    // A stalled round never committed: its members have no tag to send for it.
  });

  it('aborts a committed round whose tag does not come, and still takes that tag when it comes late', async () => {
    const late = agents[2];
    late.rounds = 'no-tag';
    const round = await within(rx.plane.runRound(GROUP), 20_000, 'the round');
    late.rounds = 'answer';
    expect(round.state).toBe('aborted');
    expect(round.reason).toBe(`${late.agentId} sent no tag within 5000 ms of the commit`);
    expect(round.holdMs).not.toBeNull();
    // Its tag was cut at a real commit: recorded with the round (which stays aborted), the session goes on.
    const acksBefore = new Set(late.ws.frames.filter((f) => f.tagAck));
    late.ws.sendFrame({ tag: late.tagFrame(round.id) });
    const ack = await within(late.ws.waitFrame((f) => (f.tagAck && !acksBefore.has(f) ? f.tagAck : undefined)), 5000, 'the late tag ack');
    expect(ack.pointIds).toHaveLength(1);
    expect(late.ws.error).toBeUndefined();
    expect(rx.plane.groupPoints(GROUP).every((g) => g.round.id !== round.id)).toBe(true);
  });

  it('refuses with BAD_TAG a tag for a round that is not committing', async () => {
    const aborted = rx.plane.rounds(GROUP).find((r) => r.state === 'aborted' && r.holdMs === null);
    expect(aborted).toBeDefined();
    const extra = await agents[1].relogin(target);
    await extra.declare('vol-app');
    extra.ws.sendFrame({ tag: extra.tagFrame(aborted?.id ?? 1) });
    const error = await within(extra.ws.nextError(), 5000, 'the refusal');
    expect(error?.code).toBe('BAD_TAG');
    extra.close();
    // No point was recorded for it.
    expect(rx.plane.groupPoints(GROUP).every((g) => g.round.id !== aborted?.id)).toBe(true);
    agents[1].close();
    agents[1] = await agents[1].relogin(target);
    await agents[1].declare('vol-app');
  });

  it('raises rpo-exceeded once, delivers it to a webhook, and rpo-recovered once RPO is back', async () => {
    const hook = await startHook();
    const flaky = await startHook(1);
    try {
      rx.plane.addWebhook(hook.url);
      const flakyHook = rx.plane.addWebhook(flaky.url, 'warning');
      const web = agents[0];
      web.pendingSinceUs = (Date.now() - 20_000) * 1000;
      web.sendHeartbeat();
      const exceeded = await waitFor('rpo-exceeded', () => rx.plane.events({ kind: 'rpo-exceeded' })[0], 10_000);
      expect(exceeded).toMatchObject({ severity: 'warning', subjectKind: 'volume', subjectId: 'vol-web' });
      const posted = await waitFor('the webhook POST', () => hook.received.find((e) => e.kind === 'rpo-exceeded'), 10_000);
      expect(posted).toMatchObject({ id: exceeded.id, subjectId: 'vol-web' });
      expect(rx.plane.metrics()).toMatch(/ferry_rpo_seconds\{machine="web",volume="vol-web",group="shop"\} (1\d|2\d)\./);

      web.pendingSinceUs = 0;
      web.sendHeartbeat();
      const recovered = await waitFor('rpo-recovered', () => rx.plane.events({ kind: 'rpo-recovered' })[0], 10_000);
      expect(recovered.subjectId).toBe('vol-web');
      // Hysteresis: several evaluations later, still one of each.
      await waitFor('more evaluations', () => hook.received.some((e) => e.kind === 'rpo-recovered'), 10_000);
      expect(rx.plane.events({ kind: 'rpo-exceeded' })).toHaveLength(1);
      expect(rx.plane.events({ kind: 'rpo-recovered' })).toHaveLength(1);

      // The failing webhook got a 500 first, was retried, and holds the warning in the end.
      const delivery = await waitFor('the retried delivery', () => rx.plane.deliveries(flakyHook.id).find((d) => d.eventId === exceeded.id && d.state === 'delivered'), 15_000);
      expect(delivery.attempts).toBe(2);
      expect(flaky.received.map((e) => e.kind)).toEqual(['rpo-exceeded']);
      // The info-level recovery was not for it.
      expect(rx.plane.deliveries(flakyHook.id).map((d) => d.eventId)).toEqual([exceeded.id]);
    } finally {
      await hook.close();
      await flaky.close();
    }
  });

  it('follows volume reports: resync started and finished, the machine state, and the metrics', async () => {
    const db = agents[2];
    db.reportState = 'resyncing';
    db.sendHeartbeat();
    await waitFor('resync-started', () => rx.plane.events({ kind: 'resync-started', subjectId: 'vol-db' })[0], 10_000);
    expect(rx.plane.machine(db.agentId).state).toBe('resyncing');
    expect(rx.plane.metrics()).toContain('ferry_machine_state{machine="db",state="resyncing"} 1');
    // What an agent says of another agent's volume counts for nothing.
    const web = agents[0];
    web.ws.sendFrame({ heartbeat: { timeUs: Date.now() * 1000, volumes: [{ volumeId: 'vol-db', state: 'repairing', mode: 'exact' }] } });
    web.ws.sendFrame({ agentEvent: { severity: 3, kind: 'app-point-failed', volumeId: 'vol-db', text: 'spoofed', timeUs: Date.now() * 1000 } });
    // Frames are handled in order: once this one is stored, the two above were handled.
    web.ws.sendFrame({ agentEvent: { severity: 1, kind: 'app-point-missed', volumeId: 'vol-web', text: 'marker', timeUs: Date.now() * 1000 } });
    await waitFor('the marker event', () => rx.plane.events({ subjectId: 'vol-web' }).find((e) => e.text.includes('marker')), 10_000);
    expect(rx.plane.events({ subjectId: 'vol-db' }).filter((e) => e.text.includes('spoofed') || e.kind !== 'resync-started')).toEqual([]);
    expect(rx.plane.machine(db.agentId).state).toBe('resyncing');
    db.reportState = 'protected';
    db.sendHeartbeat();
    await waitFor('resync-finished', () => rx.plane.events({ kind: 'resync-finished', subjectId: 'vol-db' })[0], 10_000);
    expect(rx.plane.machine(db.agentId).state).toBe('protected');
    const metrics = rx.plane.metrics();
    expect(metrics).toContain(`ferry_rpo_threshold_seconds{group="${GROUP}"} 5`);
    expect(metrics).toContain(`ferry_group_rounds_total{group="${GROUP}",result="done"} 1`);
    expect(metrics).toMatch(/ferry_round_hold_seconds_count\{group="shop"\} 1/);
    expect(metrics).toMatch(/ferry_events_total\{severity="warning"\} \d+/);
  });

  it('never runs two rounds of one group at once: a round asked for meanwhile waits for the running one', async () => {
    const [first, second] = await within(Promise.all([rx.plane.runRound(GROUP), rx.plane.runRound(GROUP, { app: true })]), 20_000, 'two rounds');
    expect([first.state, second.state]).toEqual(['done', 'done']);
    expect(second.app).toBe(true);
    expect(second.id).toBeGreaterThan(first.id);
    expect(second.startedMs).toBeGreaterThanOrEqual(first.finishedMs ?? Infinity);
    await expect(rx.plane.runRound('no-such-group')).rejects.toMatchObject({ kind: 'not-found' });
  });

  it('stores agent events as they come', async () => {
    agents[0].ws.sendFrame({ agentEvent: { severity: ferry.AgentEvent.Severity.ERROR, kind: 'app-point-failed', volumeId: 'vol-web', text: 'hook pre-freeze.sh exited 3 (mount /srv)', timeUs: Date.now() * 1000 } });
    const event = await waitFor('the agent event', () => rx.plane.events({ kind: 'app-point-failed' })[0], 10_000);
    expect(event).toMatchObject({ severity: 'error', subjectKind: 'volume', subjectId: 'vol-web', text: 'web: hook pre-freeze.sh exited 3 (mount /srv)' });
  });

  it('runs rounds on the crash interval while multi-machine consistency is on, and applies the group retention', async () => {
    const doneBefore = rx.plane.rounds(GROUP).filter((r) => r.state === 'done').length;
    rx.plane.setPolicy(GROUP, { crashConsistentIntervalMs: 300, retentionMs: 2 * 3600 * 1000 });
    await waitFor('scheduled rounds', () => rx.plane.rounds(GROUP).filter((r) => r.state === 'done').length >= doneBefore + 3, 15_000);
    expect(rx.plane.rounds(GROUP).filter((r) => r.state === 'done').every((r) => r.pointIds.length === 3)).toBe(true);
    rx.plane.setPolicy(GROUP, { crashConsistentIntervalMs: DAY_MS });
    // The last scheduled round may still be running: wait for it.
    await waitFor('no round running', () => rx.plane.rounds(GROUP, 1)[0]?.finishedMs !== null, 10_000);
    expect(rx.plane.rounds(GROUP).filter((r) => r.state === 'aborted')).toHaveLength(2);
    expect(rx.core.retentionWindowUs('vol-web')).toBe(2 * 3600 * 1000 * 1000);
  });

  it('removing a machine from the group keeps its group points and gives it the no-group policy', async () => {
    const app = agents[1];
    const group = rx.plane.removeMember(GROUP, app.agentId);
    expect(group.members).not.toContain(app.agentId);
    const p = await within(app.waitPolicy((x) => x.groupId === ''), 5000, 'the no-group policy');
    expect(p.revision).toBeGreaterThan(group.revision - 1);
    expect(rx.plane.machine(app.agentId).groupId).toBeNull();
    const points = rx.plane.groupPoints(GROUP);
    expect(points[0].points.map((x) => x.volumeId)).toContain('vol-app');
    expect(() => rx.plane.deleteGroup(GROUP)).toThrow(/still has 2 member/);
    // Out of the group, its volume has the receiver-wide retention again.
    expect(rx.core.retentionWindowUs('vol-app')).toBe(DAY_MS * 1000);
  });

  it('keeps machines, groups and group points across a receiver restart', async () => {
    const pointsBefore = rx.plane.groupPoints(GROUP).map((g) => g.round.id);
    const members = rx.plane.group(GROUP).members;
    for (const a of agents) a.close();
    await rx.close();
    rx = await startReceiver({ ...options, port: 0 });
    expect(rx.plane.group(GROUP).members.sort()).toEqual(members.sort());
    expect(rx.plane.groupPoints(GROUP).map((g) => g.round.id)).toEqual(pointsBefore);
    expect(rx.plane.machines().map((m) => m.state)).toEqual(['disconnected', 'disconnected', 'disconnected']);
    target = { port: rx.port, localAddress: '127.0.0.1' };
    agents = [await agents[0].relogin(target)];
    const p = await within(agents[0].waitPolicy(() => true), 5000, 'the policy after a restart');
    expect(p).toMatchObject({ groupId: GROUP, revision: rx.plane.group(GROUP).revision });
  });
});

describe('machine disconnected alert', () => {
  it('is raised once after the bound and cleared once when the machine is back', async () => {
    const dir = makeTempDir('plane-away');
    const pp = writePassphrase(dir);
    const rx = await startReceiver({
      dataDir: path.join(dir, 'data'),
      host: '127.0.0.1',
      port: 0,
      passphraseFile: pp.file,
      retentionUs: DAY_MS * 1000,
      spoolCapBytes: 64 * 1024 * 1024,
      checkpointIntervalMs: 200,
      retentionIntervalMs: 60_000,
      segmentBytes: 8 * 1024 * 1024,
      minFreeBytes: 1024 * 1024,
      reserveBytes: 0,
      disconnectAlertMs: 1000,
      alertIntervalMs: 100,
    });
    const target = { port: rx.port, localAddress: '127.0.0.1' };
    let agent: ScriptedAgent | undefined;
    try {
      const first = await ScriptedAgent.register(target, pp.passphrase, 'web', () => '');
      first.close();
      const away = await waitFor('machine-disconnected', () => rx.plane.events({ kind: 'machine-disconnected' })[0], 10_000);
      expect(away).toMatchObject({ severity: 'error', subjectKind: 'machine', subjectId: first.agentId });
      agent = await first.relogin(target);
      await waitFor('machine-reconnected', () => rx.plane.events({ kind: 'machine-reconnected' })[0], 10_000);
      expect(rx.plane.events({ kind: 'machine-disconnected' })).toHaveLength(1);
    } finally {
      agent?.close();
      await rx.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
