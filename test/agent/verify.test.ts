import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { VolumeVerifyReport } from '../../agent/verify/verifier';
import { ExitCode } from '../../common/errors';
import { AgentLab, churn, fileHash, waitFor } from '../helpers/agent-lab';
import { FakeReceiver } from '../helpers/fake-receiver';
import { CliResult, runFerry, runFerryAsync } from '../helpers/receiver-process';
import { sha256 } from '../helpers/volume-model';

const MiB = 1024 * 1024;
const BLOCK = 64 * 1024; // the scan block size: verify compares and repairs blocks of it
const SEED = Number(process.env.FERRY_SEED ?? Date.now() % 100000);

interface VerifyJson {
  divergence: boolean;
  volumes: VolumeVerifyReport[];
}

function verify(lab: AgentLab, ...args: string[]): Promise<CliResult> {
  return runFerryAsync(['agent', 'verify', '--config', lab.configFile, ...args]);
}

function parseVerify(r: CliResult): VerifyJson {
  try {
    return JSON.parse(r.stdout) as VerifyJson;
  } catch {
    throw new Error(`verify printed no JSON (exit ${r.status}): ${r.stdout}\n${r.stderr}`);
  }
}

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

describe('ferry agent verify (scan capture, real receiver, real TLS)', () => {
  let lab: AgentLab | undefined;
  afterEach(async () => {
    await lab?.cleanup();
    lab = undefined;
  });

  async function protectedVolume(name: string, sizeBytes: number): Promise<{ lab: AgentLab; image: string; pid: number }> {
    const l = new AgentLab(name);
    lab = l;
    await l.startReceiver();
    const image = l.volumeImage('vol1.img', sizeBytes, SEED);
    l.writeConfig({ volumes: [{ id: 'vol1', path: image }] });
    l.register();
    const agent = l.startAgent();
    const pid = agent.child.pid as number;
    await l.waitProtected('vol1', pid);
    return { lab: l, image, pid };
  }

  it('(a) finds no divergence on a quiet volume (exit 0)', async () => {
    const size = 32 * MiB;
    const { lab: l } = await protectedVolume('verify-quiet', size);
    const r = await verify(l, '--json');
    expect(r.status, r.stderr).toBe(ExitCode.ok);
    const report = parseVerify(r);
    expect(report.divergence).toBe(false);
    expect(report.volumes).toEqual([
      expect.objectContaining({ volumeId: 'vol1', checkedBytes: size, blocksCompared: size / BLOCK, divergedBlocks: 0, busyBlocks: 0, repaired: false, divergedOffsets: [] }),
    ]);
    const text = await verify(l);
    expect(text.status).toBe(ExitCode.ok);
    expect(text.stdout).toMatch(/^vol1: 32\.0 MiB checked, 512 blocks of 64\.0 KiB compared in [0-9.]+ s: 0 diverged, 0 busy/m);
    expect(text.stdout).toMatch(/no divergence between the source and the replica/);
  });

  it(`(b) raises no false alarm while the volume is written, and the replica converges afterwards (seed ${SEED})`, async () => {
    const { lab: l, image, pid } = await protectedVolume('verify-busy', 32 * MiB);
    const writer = churnLoop(image, SEED);
    await waitFor('writes to flow', () => (l.volumeStatus('vol1', pid)?.backlogBytes ?? 0) > 0 || (l.volumeStatus('vol1', pid)?.durableSeq ?? 0) > 0);
    let r: CliResult;
    try {
      r = await verify(l, '--json');
    } finally {
      const written = await writer.stop();
      expect(written).toBeGreaterThan(0);
    }
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(ExitCode.ok);
    const report = parseVerify(r).volumes[0];
    expect(report.divergedBlocks, JSON.stringify(report)).toBe(0);
    // Blocks written while it ran were checked again (and again while still written).
    expect(report.checks).toBeGreaterThan(0);
    const { image: exported } = await l.tagAndExport('vol1');
    expect(sha256(exported)).toBe(fileHash(image));
  });

  it('(c) finds the replica blocks damaged behind its back, repairs them (exit 8), and then finds nothing', async () => {
    const size = 32 * MiB;
    const { lab: l, image, pid } = await protectedVolume('verify-damage', size);
    // Blocks in the zero half of the image: nothing ever writes them again.
    const damaged = [20 * MiB, 24 * MiB + 5 * BLOCK, 31 * MiB + 15 * BLOCK];
    await l.receiver.stop();
    await waitFor('the agent to notice', () => l.status(pid)?.connected === false);
    const replica = path.join(l.receiverDir, 'volumes', 'vol1', 'replica.img');
    const fd = fs.openSync(replica, 'r+');
    for (const [i, offset] of damaged.entries()) fs.writeSync(fd, Buffer.from([0x5a, 0xa5, i + 1]), 0, 3, offset + 1000 * (i + 1));
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    await l.startReceiver();
    await waitFor('the agent to reconnect', () => l.status(pid)?.connected === true);

    const first = await verify(l, '--json');
    expect(first.status, `${first.stdout}\n${first.stderr}`).toBe(ExitCode.damageFound);
    const found = parseVerify(first).volumes[0];
    expect(found).toMatchObject({ divergedBlocks: 3, divergedOffsets: damaged, busyBlocks: 0, repaired: true, repairSentBytes: 3 * BLOCK });
    expect(found.repairThroughSeq).toBeGreaterThan(0);
    expect(l.agents[0].output()).toMatch(/verify found divergence between the source and the replica/);
    expect(l.agents[0].output()).toMatch(/repair complete: the receiver holds all of it.*"sentBytes":196608/);
    // `ferry agent status` shows the repair.
    const status = JSON.parse((await runFerryAsync(['agent', 'status', '--config', l.configFile, '--json'])).stdout) as { volumes: Array<{ repair?: unknown }> };
    expect(status.volumes[0].repair).toMatchObject({ reason: 'verify found divergence', finished: true, percent: 100, sentBytes: 3 * BLOCK });

    const second = await verify(l);
    expect(second.status, `${second.stdout}\n${second.stderr}`).toBe(ExitCode.ok);
    expect(second.stdout).toMatch(/0 diverged/);
    const { image: exported } = await l.tagAndExport('vol1');
    expect(sha256(exported)).toBe(fileHash(image));
  });

  it('(c) with --no-repair reports the divergence (exit 8) and leaves it', async () => {
    const { lab: l, pid } = await protectedVolume('verify-norepair', 8 * MiB);
    await l.receiver.stop();
    await waitFor('the agent to notice', () => l.status(pid)?.connected === false);
    const replica = path.join(l.receiverDir, 'volumes', 'vol1', 'replica.img');
    const fd = fs.openSync(replica, 'r+');
    fs.writeSync(fd, Buffer.from('damage'), 0, 6, 6 * MiB + 3 * BLOCK + 77);
    fs.closeSync(fd);
    await l.startReceiver();
    await waitFor('the agent to reconnect', () => l.status(pid)?.connected === true);
    for (let i = 0; i < 2; i++) {
      const r = await verify(l, '--no-repair');
      expect(r.status, r.stderr).toBe(ExitCode.damageFound);
      expect(r.stdout).toMatch(/1 diverged, 0 busy .*; repaired: no \(--no-repair\)/);
      expect(r.stdout).toContain(`diverged blocks at byte offsets: ${6 * MiB + 3 * BLOCK}`);
      expect(r.stdout).toMatch(/DIVERGENCE FOUND: 1 block\(s\) in 1 volume\(s\)/);
    }
  });

  it('(e) bad arguments: an unknown volume (exit 2), no agent running (exit 4), each a one-line message', async () => {
    const l = new AgentLab('verify-args');
    lab = l;
    const image = l.volumeImage('vol1.img', MiB, SEED);
    l.writeConfig({ volumes: [{ id: 'vol1', path: image }], url: 'wss://127.0.0.1:1', fingerprint: 'AB'.repeat(32) });
    const oneLine = (r: CliResult, status: number, message: RegExp): void => {
      expect(r.status, r.stderr).toBe(status);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    };
    oneLine(runFerry(['agent', 'verify', '--config', l.configFile, '--volume', 'nope']), ExitCode.usage, /^ferry: unknown volume nope: .* protects vol1$/m);
    oneLine(runFerry(['agent', 'verify', '--config', l.configFile]), ExitCode.notReady, /^ferry: no agent is running/);
    oneLine(runFerry(['agent', 'verify', '--config', path.join(l.dir, 'missing.json')]), ExitCode.usage, /^ferry: cannot read config/);
    expect(runFerry(['agent', 'verify', '--config', l.configFile, '--timeout', 'soon']).status).toBe(ExitCode.usage);
    // An agent that runs but has never reached its receiver: not ready.
    fs.mkdirSync(path.join(l.dir, 'agent-state'), { recursive: true });
    const credential = { agentId: 'agent-0123456789abcdef', credential: Buffer.alloc(32, 7).toString('base64'), receiverUrl: 'wss://127.0.0.1:1' };
    fs.writeFileSync(path.join(l.dir, 'agent-state', 'credential.json'), JSON.stringify(credential));
    const agent = l.startAgent();
    await waitFor('the agent to retry its receiver', () => /no session with the receiver; retrying/.test(agent.output()));
    oneLine(await verify(l), ExitCode.notReady, /^ferry: verify failed: the agent is still starting: no volume is attached yet$/m);
  });
});

describe('RepairRequest from the receiver (fake receiver, real agent process)', () => {
  let lab: AgentLab | undefined;
  let rx: FakeReceiver | undefined;
  afterEach(async () => {
    await lab?.cleanup();
    await rx?.close();
    lab = undefined;
    rx = undefined;
  });

  it('(d) sends the blocks that differ, answers RepairDone once durable, never runs a request twice, ignores malformed ones', async () => {
    const size = 8 * MiB;
    const fake = await FakeReceiver.start({ vol1: size });
    rx = fake;
    const l = new AgentLab('verify-repair-request');
    lab = l;
    const image = l.volumeImage('vol1.img', size, SEED);
    const source = fs.readFileSync(image);
    l.writeConfig({ volumes: [{ id: 'vol1', path: image }], url: fake.url, fingerprint: fake.fingerprint });
    fake.writeCredential(path.join(l.dir, 'agent-state'));
    const agent = l.startAgent();
    const pid = agent.child.pid as number;
    await l.waitProtected('vol1', pid);
    const replica = fake.replicas.get('vol1') as Buffer;
    await waitFor('the replica to equal the source', () => replica.equals(source));

    const damage = (block: number): void => {
      replica.fill(0x77, block * BLOCK + 512, block * BLOCK + 1024);
    };
    const writesSince = (n: number): number[] => fake.writes.slice(n).map((w) => w.offset / BLOCK);
    const doneFor = (id: number): Promise<unknown> => waitFor(`RepairDone ${id}`, () => fake.repairDone.find((d) => d.requestId === id));
    // Decoded frames leave out fields that are zero.
    const answer = (i: number): Record<string, unknown> => {
      const d = fake.repairDone[i];
      return { volumeId: d.volumeId, requestId: d.requestId, throughSeq: d.throughSeq ?? 0, sentBytes: d.sentBytes ?? 0 };
    };

    // Request 7 (two ranges that touch blocks 3 and 17), the same again while it runs, and 10 behind it.
    // Acks come late: RepairDone must still wait for them.
    fake.ackDelayMs = 300;
    damage(3);
    damage(17);
    damage(5);
    let mark = fake.writes.length;
    const request7 = { volumeId: 'vol1', requestId: 7, ranges: [{ offset: 3 * BLOCK + 5, length: 10 }, { offset: 16 * BLOCK, length: 2 * BLOCK }], reason: 'test damage' };
    fake.send({ repairRequest: request7 });
    fake.send({ repairRequest: request7 });
    fake.send({ repairRequest: { volumeId: 'vol1', requestId: 10, ranges: [{ offset: 5 * BLOCK, length: BLOCK }] } });
    await doneFor(10);
    expect(fake.repairDone.map((d) => d.requestId)).toEqual([7, 10]);
    expect(writesSince(mark).sort((a, b) => a - b)).toEqual([3, 5, 17]);
    const seqOf = (block: number): number => Math.max(...fake.writes.slice(mark).filter((w) => w.offset === block * BLOCK).map((w) => w.seq));
    expect(answer(0)).toEqual({ volumeId: 'vol1', requestId: 7, throughSeq: Math.max(seqOf(3), seqOf(17)), sentBytes: 2 * BLOCK });
    expect(answer(1)).toEqual({ volumeId: 'vol1', requestId: 10, throughSeq: seqOf(5), sentBytes: BLOCK });
    expect(replica.equals(source)).toBe(true);
    expect(agent.output()).toMatch(/already running or queued: not run twice/);
    for (const [i, d] of fake.repairDone.entries()) expect(d.throughSeq ?? 0).toBeLessThanOrEqual(fake.ackedWhenDone[i]);
    fake.ackDelayMs = 0;

    // The whole volume (no ranges): only the damaged block travels.
    damage(40);
    mark = fake.writes.length;
    fake.send({ repairRequest: { volumeId: 'vol1', requestId: 8, ranges: [] } });
    await doneFor(8);
    expect(writesSince(mark)).toEqual([40]);
    expect(answer(2)).toMatchObject({ requestId: 8, sentBytes: BLOCK, throughSeq: fake.writes[fake.writes.length - 1].seq });
    expect(replica.equals(source)).toBe(true);

    // Malformed requests are ignored with a warning; the agent carries on. A request whose
    // blocks all match puts nothing in the stream and names the stream position.
    fake.send({ repairRequest: { volumeId: 'nope', requestId: 90 } });
    fake.send({ repairRequest: { volumeId: 'vol1', requestId: 91, ranges: [{ offset: size - 512, length: 1024 }] } });
    fake.send({ repairRequest: { volumeId: 'vol1', requestId: 92, ranges: Array.from({ length: 65537 }, () => ({ offset: 0, length: 512 })) } });
    mark = fake.writes.length;
    fake.send({ repairRequest: { volumeId: 'vol1', requestId: 9, ranges: [{ offset: 0, length: BLOCK }] } });
    await doneFor(9);
    expect(fake.writes.length).toBe(mark);
    expect(answer(3)).toEqual({ volumeId: 'vol1', requestId: 9, throughSeq: fake.durable.get('vol1'), sentBytes: 0 });
    expect(fake.repairDone.map((d) => d.requestId)).toEqual([7, 10, 8, 9]);
    expect(agent.output().match(/ignoring a malformed repair request/g)).toHaveLength(3);
    expect(agent.output()).toMatch(/not one this agent protects/);
    expect(agent.output()).toMatch(/ends past the end of the volume/);
    expect(agent.output()).toMatch(/65537 ranges/);
    expect(agent.child.exitCode).toBeNull();

    // After a new login the receiver asks again for what it has no answer of: a request already
    // done is answered from memory (the same RepairDone, nothing sent again).
    fake.onLogin = [{ repairRequest: request7 }];
    mark = fake.writes.length;
    const logins = fake.logins;
    fake.dropSession();
    await waitFor('the agent to log in again', () => fake.logins > logins);
    await waitFor('RepairDone 7 again', () => fake.repairDone.length === 5);
    expect(answer(4)).toEqual(answer(0));
    expect(fake.writes.length).toBe(mark);
  });
});
