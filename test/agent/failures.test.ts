import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { ReceiverStatus } from '../../receiver/status';
import { AgentLab, churn, fileHash, waitFor } from '../helpers/agent-lab';
import { sha256 } from '../helpers/volume-model';

const MiB = 1024 * 1024;
const SEED = Number(process.env.FERRY_SEED ?? Date.now() % 100000);

/** Writes to the image in small steps until stopped, yielding to the event loop in between. */
function churnLoop(image: string, seed: number): { stop: () => Promise<number> } {
  let running = true;
  let bytes = 0;
  const done = (async () => {
    for (let i = 0; running; i++) {
      bytes += churn(image, 256 * 1024, seed + i);
      await new Promise((r) => setTimeout(r, 20));
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

function receiverStatus(lab: AgentLab): ReceiverStatus | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(lab.receiverDir, 'status.json'), 'utf8')) as ReceiverStatus;
  } catch {
    return undefined;
  }
}

describe('agent failures (real processes, SIGKILL)', () => {
  let lab: AgentLab | undefined;
  afterEach(async () => {
    await lab?.cleanup();
    lab = undefined;
  });

  it(`loses nothing and does not resync when the receiver is killed mid-stream (seed ${SEED})`, async () => {
    lab = new AgentLab('rx-kill');
    await lab.startReceiver();
    const image = lab.volumeImage('vol1.img', 32 * MiB, SEED);
    lab.writeConfig({ volumes: [{ id: 'vol1', path: image }] });
    lab.register();
    const agent = lab.startAgent();
    const pid = agent.child.pid as number;
    const before = await lab.waitProtected('vol1', pid);
    const writer = churnLoop(image, SEED);
    await waitFor('changes to flow', () => (lab?.volumeStatus('vol1', pid)?.durableSeq ?? 0) > before.durableSeq + 20);
    await lab.receiver.kill9();
    await waitFor('the agent to notice', () => lab?.status(pid)?.connected === false);
    await lab.startReceiver();
    await waitFor('the agent to reconnect', () => lab?.status(pid)?.connected === true);
    const written = await writer.stop();
    expect(written).toBeGreaterThan(0);
    const after = await lab.waitProtected('vol1', pid);
    expect(agent.child.exitCode).toBeNull();
    // The same initial resync, nothing resent in bulk.
    expect(after.resync).toMatchObject({ kind: 'full', sentBytes: before.resync?.sentBytes });
    expect(agent.output().match(/volume needs a resync/g)?.length).toBe(1);
    const { image: exported } = await lab.tagAndExport('vol1');
    expect(sha256(exported)).toBe(fileHash(image));
  });

  it(`re-sends what was not acknowledged after the agent is killed with SIGKILL (seed ${SEED})`, async () => {
    lab = new AgentLab('agent-kill');
    await lab.startReceiver();
    const image = lab.volumeImage('vol1.img', 32 * MiB, SEED);
    lab.writeConfig({ volumes: [{ id: 'vol1', path: image }] });
    lab.register();
    const first = lab.startAgent();
    const firstPid = first.child.pid as number;
    const before = await lab.waitProtected('vol1', firstPid);
    const writer = churnLoop(image, SEED + 7);
    await waitFor('changes to flow', () => (lab?.volumeStatus('vol1', firstPid)?.durableSeq ?? 0) > before.durableSeq + 20);
    await first.kill9();
    const second = lab.startAgent();
    await waitFor('the second agent to connect', () => lab?.status(second.child.pid)?.connected);
    await writer.stop();
    await lab.waitProtected('vol1', second.child.pid as number);
    expect(second.output()).toMatch(/volume protected, no resync needed/);
    const { image: exported } = await lab.tagAndExport('vol1');
    expect(sha256(exported)).toBe(fileHash(image));
  });

  it('obeys Throttle: stops sending while the receiver spool is over its cap, resumes after', async () => {
    lab = new AgentLab('throttle');
    const pause = path.join(lab.receiverDir, 'volumes', 'vol1', 'apply.paused');
    fs.mkdirSync(path.dirname(pause), { recursive: true });
    fs.writeFileSync(pause, '');
    const cap = 2 * MiB;
    await lab.startReceiver(['--spool-cap', '2MiB']);
    const image = lab.volumeImage('vol1.img', 32 * MiB, SEED, 1);
    const windowBytes = MiB;
    const batchBytes = 256 * 1024;
    lab.writeConfig({ volumes: [{ id: 'vol1', path: image }], pipeline: { windowBytes, maxBatchBytes: batchBytes } });
    lab.register();
    const agent = lab.startAgent();
    const pid = agent.child.pid as number;
    await waitFor('the agent to be throttled', () => lab?.status(pid)?.throttled);
    // While throttled the agent sends nothing: the receiver's durable seq stands still over
    // several of its status updates, and its spool stays within cap + the agent's window.
    const seen: ReceiverStatus[] = [];
    await waitFor('three receiver status updates', () => {
      const s = receiverStatus(lab as AgentLab);
      // Only snapshots written after the volume was declared (an older one may still be on disk).
      if (s && s.volumes.some((v) => v.volumeId === 'vol1') && s.updatedUs !== seen[seen.length - 1]?.updatedUs) seen.push(s);
      return seen.length >= 4;
    });
    const durable = seen.slice(1).map((s) => s.volumes.find((v) => v.volumeId === 'vol1')?.durableSeq);
    expect(new Set(durable).size).toBe(1);
    for (const s of seen) expect(s.volumes[0].unappliedBytes).toBeLessThanOrEqual(cap + windowBytes + batchBytes + 64 * 1024);
    expect(lab.status(pid)?.volumes[0].state).toBe('resyncing');
    fs.rmSync(pause);
    await lab.waitProtected('vol1', pid);
    expect(lab.status(pid)?.throttled).toBe(false);
    const { image: exported } = await lab.tagAndExport('vol1');
    expect(sha256(exported)).toBe(fileHash(image));
  });
});
