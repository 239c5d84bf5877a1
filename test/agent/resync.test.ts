import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AgentLab, churn, fileHash, waitFor } from '../helpers/agent-lab';
import { runFerry, runFerryAsync } from '../helpers/receiver-process';
import { sha256 } from '../helpers/volume-model';
import { scanSpoolSegment, SPOOL_SEGMENT_EXT } from '../../receiver/storage/spool';

const MiB = 1024 * 1024;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}
const SEED = Number(process.env.FERRY_SEED ?? Date.now() % 100000);

describe('agent resync (scan capture, real receiver, real TLS)', () => {
  let lab: AgentLab | undefined;
  afterEach(async () => {
    await lab?.cleanup();
    lab = undefined;
  });

  it(`converges to the source when the volume is written during the initial resync (seed ${SEED})`, async () => {
    lab = new AgentLab('resync-writes');
    // Apply is paused and the spool capped, so the resync stalls part-way (throttled): the
    // writes below then certainly land while it runs, some behind its cursor, some ahead.
    const pause = path.join(lab.receiverDir, 'volumes', 'vol1', 'apply.paused');
    fs.mkdirSync(path.dirname(pause), { recursive: true });
    fs.writeFileSync(pause, '');
    await lab.startReceiver(['--spool-cap', '4MiB']);
    const image = lab.volumeImage('vol1.img', 48 * MiB, SEED);
    lab.writeConfig({ volumes: [{ id: 'vol1', path: image }], scan: { maxPendingBytes: '4MiB' }, pipeline: { windowBytes: '2MiB', maxBatchBytes: '512KiB' } });
    lab.register();
    const agent = lab.startAgent();
    const pid = agent.child.pid as number;
    const stalled = await waitFor('the resync to stall behind the throttle', () => {
      const v = lab?.volumeStatus('vol1', pid);
      return v?.state === 'resyncing' && v.resync && v.resync.percent > 0 && v.resync.percent < 100 && lab?.status(pid)?.throttled ? v : undefined;
    });
    expect(stalled.resync?.finished).toBe(false);
    churn(image, 6 * MiB, SEED + 1);
    fs.rmSync(pause);
    // More writes while the rest of the resync runs, then quiet.
    churn(image, 2 * MiB, SEED + 2);
    await lab.waitProtected('vol1', pid);
    const { image: exported } = await lab.tagAndExport('vol1');
    expect(sha256(exported)).toBe(fileHash(image));
    // Points cut while the resync ran are marked unusable and `latest` skips them.
    const points = JSON.parse(runFerry(['points', '--data', lab.receiverDir, '--json']).stdout) as Array<{ id: number; accuracy: string }>;
    const unusable = points.filter((p) => p.accuracy === 'none');
    expect(unusable.length).toBeGreaterThan(0);
    const refused = runFerry(['export', '--data', lab.receiverDir, '--volume', 'vol1', '--point', String(unusable[0].id), '--out', path.join(lab.dir, 'x.img')]);
    expect(refused.status).toBe(4);
    expect(refused.stderr).toMatch(/resync/);
  });

  it('hash-compare resync of an identical volume sends under 1% of it, and the replica stays exact', async () => {
    lab = new AgentLab('resync-hash');
    await lab.startReceiver();
    const size = 64 * MiB;
    const image = lab.volumeImage('vol1.img', size, SEED);
    const metricsPort = await freePort();
    lab.writeConfig({ volumes: [{ id: 'vol1', path: image }], metrics: { listen: `127.0.0.1:${metricsPort}` } });
    lab.register();
    let agent = lab.startAgent();
    const first = await lab.waitProtected('vol1', agent.child.pid as number);
    expect(first.resync?.kind).toBe('full');
    // The same figures through `ferry agent status --json` and the Prometheus endpoint.
    const status = JSON.parse((await runFerryAsync(['agent', 'status', '--config', lab.configFile, '--json'])).stdout) as { running: boolean; volumes: Array<{ state: string }> };
    expect(status).toMatchObject({ running: true, volumes: [{ state: 'protected' }] });
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(metrics).toContain('ferry_volume_protected{volume="vol1"} 1');
    expect(metrics).toMatch(/ferry_volume_rpo_seconds\{volume="vol1"\} [0-9.]+/);
    expect(metrics).toMatch(/ferry_agent_sent_bytes_total [1-9]/);
    await agent.stop();
    // Re-protect from scratch: the agent has no table, the receiver already has the data.
    fs.rmSync(path.join(lab.dir, 'agent-state', 'volumes'), { recursive: true, force: true });
    agent = lab.startAgent();
    const second = await lab.waitProtected('vol1', agent.child.pid as number);
    expect(second.resync?.kind).toBe('hash-compare');
    expect(second.resync?.sentBytes).toBeLessThan(size / 100);
    const { image: exported } = await lab.tagAndExport('vol1');
    expect(sha256(exported)).toBe(fileHash(image));
  });

  it('an agent killed mid-resync resumes where it stopped, not from zero', async () => {
    lab = new AgentLab('resync-resume');
    const pause = path.join(lab.receiverDir, 'volumes', 'vol1', 'apply.paused');
    fs.mkdirSync(path.dirname(pause), { recursive: true });
    fs.writeFileSync(pause, '');
    await lab.startReceiver(['--spool-cap', '8MiB']);
    const size = 64 * MiB;
    const image = lab.volumeImage('vol1.img', size, SEED, 1); // every block random: all of it must travel
    lab.writeConfig({ volumes: [{ id: 'vol1', path: image }], scan: { maxPendingBytes: '4MiB' }, pipeline: { windowBytes: '2MiB', maxBatchBytes: '512KiB' } });
    lab.register();
    const agent = lab.startAgent();
    const pid = agent.child.pid as number;
    // Killed while the throttle holds the resync part-way: what the receiver has is durable.
    await waitFor('the resync to stall part-way', () => lab?.status(pid)?.throttled && (lab.volumeStatus('vol1', pid)?.resync?.percent ?? 0) > 5);
    await agent.kill9();
    fs.rmSync(pause);
    const again = lab.startAgent();
    const done = await lab.waitProtected('vol1', again.child.pid as number);
    const resumedAt = Number(/resuming the interrupted full resync at byte (\d+)/.exec(again.output())?.[1] ?? 0);
    expect(resumedAt).toBeGreaterThan(0);
    // The second run sent only what lies past the durable cursor, not the whole volume again.
    expect(done.resync?.sentBytes).toBeLessThanOrEqual(size - resumedAt);
    const { image: exported } = await lab.tagAndExport('vol1');
    expect(sha256(exported)).toBe(fileHash(image));
  });
  it('keeps several change sets in flight: a resync seals them at a quarter of scan.maxPendingBytes', async () => {
    lab = new AgentLab('resync-pipelined');
    await lab.startReceiver();
    const size = 32 * MiB;
    const image = lab.volumeImage('vol1.img', size, SEED, 1);
    lab.writeConfig({ volumes: [{ id: 'vol1', path: image }], scan: { maxPendingBytes: '4MiB', blockSize: '64KiB' }, pipeline: { maxBatchBytes: '4MiB' } });
    lab.register();
    const agent = lab.startAgent();
    await lab.waitProtected('vol1', agent.child.pid as number);
    const { image: exported } = await lab.tagAndExport('vol1');
    expect(sha256(exported)).toBe(fileHash(image));
    await agent.stop();
    await lab.receiver.stop();
    // Every change set the spool holds: at most 1 MiB of 64 KiB blocks each, not one 4 MiB set per round trip.
    const spoolDir = path.join(lab.receiverDir, 'volumes', 'vol1', 'spool');
    const sets = fs
      .readdirSync(spoolDir)
      .filter((f) => f.endsWith(`.${SPOOL_SEGMENT_EXT}`))
      .flatMap((f) => scanSpoolSegment(path.join(spoolDir, f)).seqs);
    const blocks = sets.map((s) => s.lastSeq - s.firstSeq + 1);
    expect(blocks.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(size / (64 * 1024));
    expect(Math.max(...blocks)).toBeLessThanOrEqual(16);
  });
});
