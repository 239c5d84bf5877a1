import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { controlRequest } from '../../agent/control';
import type { AgentStatus } from '../../agent/status';
import { AgentLab, AgentProcess, churn, fileHash, waitFor } from '../helpers/agent-lab';
import { prng, sha256 } from '../helpers/volume-model';

const MiB = 1024 * 1024;
const SEED = Number(process.env.FERRY_SEED ?? Date.now() % 100000);
const RECEIVER_KILLS = 20;
const AGENT_KILLS = 10;
/** The first reconnect delay: what the agent must come back to after any session that logged in. */
const MIN_BACKOFF_MS = 500;

/** Writes into the image in small steps until stopped (real, fsync'd writes), yielding in between. */
function churnLoop(image: string, seed: number): { stop: () => Promise<number> } {
  let running = true;
  const done = (async () => {
    let bytes = 0;
    for (let i = 0; running; i++) {
      bytes += churn(image, 128 * 1024, seed + i);
      await new Promise((r) => setTimeout(r, 40));
    }
    return bytes;
  })();
  return {
    stop: async () => {
      running = false;
      return done;
    },
  };
}

/** The agent's JSON log lines, in order. */
function logLines(agent: AgentProcess): Array<Record<string, unknown>> {
  return agent
    .output()
    .split('\n')
    .flatMap((line) => {
      try {
        const doc = JSON.parse(line) as unknown;
        return typeof doc === 'object' && doc !== null ? [doc as Record<string, unknown>] : [];
      } catch {
        return [];
      }
    });
}

/** The running agent's own figures, straight from its control socket (not the 1 s status file). */
async function liveStatus(lab: AgentLab): Promise<AgentStatus> {
  const reply = await controlRequest(path.join(lab.dir, 'agent-state', 'agent.sock'), { cmd: 'status' }, 5000);
  if (!reply.ok || !reply.status) throw new Error(`agent status failed: ${reply.ok ? 'no status' : reply.error}`);
  return reply.status;
}

/** A random pause so that the kill lands anywhere in the stream (not a synchronization). */
const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('kill loops under a real agent (SIGKILL, scan capture, a source being written)', () => {
  let lab: AgentLab | undefined;
  afterEach(async () => {
    await lab?.cleanup();
    lab = undefined;
  });

  it(`receiver killed ${RECEIVER_KILLS} times: the agent is back at the minimum backoff each time and nothing acked is lost (seed ${SEED})`, async () => {
    lab = new AgentLab('kill-rx');
    const l = lab;
    await l.startReceiver();
    const image = l.volumeImage('vol1.img', 16 * MiB, SEED);
    l.writeConfig({ volumes: [{ id: 'vol1', path: image }], scan: { intervalMs: 100 } });
    l.register();
    const agent = l.startAgent();
    const pid = agent.child.pid as number;
    await l.waitProtected('vol1', pid);
    const writer = churnLoop(image, SEED);
    const random = prng(SEED);
    /** What the agent had acknowledged right before each kill: the receiver must hold at least that. */
    const ackedBeforeKill: number[] = [];
    try {
      for (let trial = 0; trial < RECEIVER_KILLS; trial++) {
        const from = (await liveStatus(l)).volumes[0].durableSeq;
        await waitFor(`trial ${trial}: changes acknowledged in this session`, async () => {
          const s = await liveStatus(l);
          return s.connected && s.volumes[0].durableSeq > from;
        }, 30_000);
        await pause(random() * 400);
        ackedBeforeKill.push((await liveStatus(l)).volumes[0].durableSeq);
        await l.receiver.kill9();
        await l.startReceiver();
      }
      await waitFor('the last reconnect', async () => (await liveStatus(l)).connected, 30_000);
    } finally {
      await writer.stop();
    }
    await l.waitProtected('vol1', pid);
    expect(agent.child.exitCode, agent.output().slice(-2000)).toBeNull();

    const lines = logLines(agent);
    // Every session the agent logged into reports the receiver's durable seq: it never went
    // backwards, and after each restart it covers everything acknowledged before the kill.
    const sessions = lines.filter((l) => l.message === 'connected to the receiver').map((l) => (l.durable as Record<string, number>).vol1);
    expect(sessions.length).toBe(RECEIVER_KILLS + 1);
    for (let i = 1; i < sessions.length; i++) {
      expect(sessions[i], `session ${i}`).toBeGreaterThanOrEqual(sessions[i - 1]);
      expect(sessions[i], `session ${i} after kill ${i - 1}`).toBeGreaterThanOrEqual(ackedBeforeKill[i - 1]);
    }
    // The retry schedule, from the log: the first retry after a session that had logged in is
    // at the minimum, and only consecutive failures double it.
    let expected: number | undefined;
    let firstRetries = 0;
    for (const line of lines) {
      if (line.message === 'connected to the receiver') expected = MIN_BACKOFF_MS;
      if (line.message !== 'no session with the receiver; retrying') continue;
      expect(line.backoffMs, JSON.stringify(line)).toBe(expected);
      if (expected === MIN_BACKOFF_MS) firstRetries++;
      expect(line.retryInMs as number).toBeGreaterThanOrEqual((line.backoffMs as number) * 0.75);
      expect(line.retryInMs as number).toBeLessThanOrEqual((line.backoffMs as number) * 1.25);
      expected = Math.min(30_000, (expected as number) * 2);
    }
    expect(firstRetries).toBe(RECEIVER_KILLS);
    // Restarts are not resyncs: the initial resync was the only one.
    expect(lines.filter((l) => l.message === 'volume needs a resync').length).toBe(1);

    const { image: exported } = await l.tagAndExport('vol1');
    expect(sha256(exported)).toBe(fileHash(image));
  }, 600_000);

  it(`agent killed ${AGENT_KILLS} times while the source is written: the export equals the source (seed ${SEED})`, async () => {
    lab = new AgentLab('kill-agent');
    const l = lab;
    await l.startReceiver();
    const image = l.volumeImage('vol1.img', 16 * MiB, SEED + 1);
    l.writeConfig({ volumes: [{ id: 'vol1', path: image }], scan: { intervalMs: 100 } });
    l.register();
    let agent = l.startAgent();
    await l.waitProtected('vol1', agent.child.pid as number);
    const writer = churnLoop(image, SEED + 1000);
    const random = prng(SEED + 1);
    try {
      for (let trial = 0; trial < AGENT_KILLS; trial++) {
        const current = agent;
        const started = await waitFor(`trial ${trial}: the agent connected`, async () => {
          const s = await liveStatus(l).catch(() => undefined);
          return s?.pid === current.child.pid && s.connected ? s : undefined;
        }, 30_000);
        await waitFor(`trial ${trial}: changes acknowledged by this agent`, async () => (await liveStatus(l)).volumes[0].durableSeq > started.volumes[0].durableSeq, 30_000);
        await pause(random() * 400);
        await current.kill9();
        // Its successor picks up the stream from the scan table: no resync.
        agent = l.startAgent();
        await waitFor(`trial ${trial}: the next agent attached`, () => /volume protected, no resync needed|volume needs a resync/.exec(agent.output())?.[0], 30_000);
        expect(agent.output(), `trial ${trial}`).toMatch(/volume protected, no resync needed/);
      }
    } finally {
      await writer.stop();
    }
    await l.waitProtected('vol1', agent.child.pid as number);
    const { image: exported } = await l.tagAndExport('vol1');
    expect(sha256(exported)).toBe(fileHash(image));
  }, 600_000);
});
