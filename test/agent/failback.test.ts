/**
 * Failback by pull, real parts: a receiver (startReceiver: real TLS, real catalog) whose
 * recovery service is played by the test (a FailbackAccess and the stream refusal of a
 * failed-over machine), a real agent process (scan capture) that registered and replicated a
 * file-backed volume, and `ferry agent failback` as a real process against the original image
 * while a writer keeps changing the "recovered disk" the way a running VM would.
 */
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FailbackAccess, FailbackProgress } from '../../receiver/failback-sender';
import { RunningReceiver, startReceiver } from '../../receiver/server';
import { AgentLab, fileHash, waitFor } from '../helpers/agent-lab';
import { CliResult, FERRY_BIN, runFerryAsync } from '../helpers/receiver-process';
import { fillWithBallast, mountExt4, mountTmpfs } from '../helpers/small-fs';
import { prng } from '../helpers/volume-model';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const BLOCK = 64 * 1024;
const SEED = Number(process.env.FERRY_SEED ?? Date.now() % 100000);
const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI) throw new Error('the failback test needs root for its mounted-device case (loop device, mount) and CI runs it');

/** The recovery service as the failback sees it: which machine is failed over, where its disks are, whether its VM runs. */
class TestRecovery implements FailbackAccess {
  failedOver = false;
  stopped = false;
  readonly disks = new Map<string, string>();
  readonly reports: Array<{ agentId: string; volumeId: string; progress: FailbackProgress }> = [];

  streamRefusal = (agentId: string): string | undefined => (this.failedOver ? `machine ${agentId} is failed over (it runs on the recovery site): fail back to protect it again` : undefined);

  disk(_agentId: string, volumeId: string): { ok: true; path: string; sizeBytes: number } | { ok: false; reason: string } {
    const file = this.disks.get(volumeId);
    if (!file) return { ok: false, reason: `no recovered disk for ${volumeId}` };
    return { ok: true, path: file, sizeBytes: fs.statSync(file).size };
  }

  sourceStopped(): boolean {
    return this.stopped;
  }

  report(agentId: string, volumeId: string, progress: FailbackProgress): void {
    this.reports.push({ agentId, volumeId, progress });
  }

  /** The end-of-pass reports of the run that started at report index `from`. */
  passEnds(from: number): FailbackProgress[] {
    return this.reports.slice(from).map((r) => r.progress).filter((p) => p.state === 'in-sync' || p.state === 'done');
  }
}

/** Rewrites 4 KiB inside `fraction` of the 64 KiB blocks (distinct blocks), then fills a contiguous region: what the recovered VM wrote. */
function changeRecoveredDisk(file: string, fraction: number, grown: { offset: number; length: number }, seed: number): number {
  const random = prng(seed);
  const blocks = SIZE / BLOCK;
  const picked = new Set<number>();
  while (picked.size < Math.round(blocks * fraction)) picked.add(Math.floor(random() * blocks));
  const fd = fs.openSync(file, 'r+');
  try {
    for (const b of picked) fs.writeSync(fd, crypto.randomBytes(4096), 0, 4096, b * BLOCK + Math.floor(random() * 16) * 4096);
    fs.writeSync(fd, crypto.randomBytes(grown.length), 0, grown.length, grown.offset);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return picked.size;
}

/**
 * A VM that keeps writing, as a running system does: 4 KiB every `everyMs` into a hot region
 * (a log, a database page set) until stopped, so each pass finds newer data there.
 */
function startWriter(file: string, region: { offset: number; length: number }, everyMs: number): { stop(): number } {
  let writes = 0;
  const fd = fs.openSync(file, 'r+');
  const timer = setInterval(() => {
    fs.writeSync(fd, crypto.randomBytes(4096), 0, 4096, region.offset + crypto.randomInt(region.length / 4096) * 4096);
    writes++;
  }, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      return writes;
    },
  };
}

interface FailbackRun {
  done: Promise<CliResult>;
  stderr(): string;
}

function startFailback(args: string[]): FailbackRun {
  const child = spawn(process.execPath, [FERRY_BIN, 'agent', 'failback', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  return { done: new Promise((resolve) => child.on('exit', (status) => resolve({ status, stdout, stderr }))), stderr: () => stderr };
}

interface Summary {
  volumes: Array<{ volumeId: string; path: string; sizeBytes: number; sentBytes: number; passes: number; differingBlocks: number }>;
}

describe(`ferry agent failback (real receiver, real agent, seed ${SEED})`, () => {
  const recovery = new TestRecovery();
  let lab: AgentLab;
  let rx: RunningReceiver;
  let image: string;
  let agentId: string;

  beforeAll(async () => {
    lab = new AgentLab('failback');
    rx = await startReceiver({
      dataDir: lab.receiverDir,
      host: '127.0.0.1',
      port: 0,
      passphraseFile: lab.passphraseFile,
      retentionUs: 24 * 3600 * 1_000_000,
      spoolCapBytes: 64 * MiB,
      checkpointIntervalMs: 200,
      retentionIntervalMs: 60_000,
      segmentBytes: 8 * MiB,
      minFreeBytes: MiB,
      reserveBytes: 0,
      streamRefusal: recovery.streamRefusal,
      failback: recovery,
      failbackTuning: { pauseMs: 300, chunkBytes: 4 * MiB, changeSetBytes: MiB, window: 4 },
    });
    image = lab.volumeImage('vol1.img', SIZE, SEED);
    lab.writeConfig({ volumes: [{ id: 'vol1', path: image }], url: `wss://127.0.0.1:${rx.port}`, fingerprint: rx.identity.fingerprint });
    // Async: the receiver runs in this process, a blocking spawn would stall it.
    const reg = await runFerryAsync(['agent', 'register', '--config', lab.configFile, '--passphrase-file', lab.passphraseFile]);
    expect(reg.status, reg.stderr).toBe(0);
    agentId = /registered as (\S+);/.exec(reg.stdout)?.[1] ?? '';
    const agent = lab.startAgent();
    await lab.waitProtected('vol1', agent.child.pid as number);
    expect(await agent.stop()).toBe(0);
  }, 120_000);

  afterAll(async () => {
    await rx?.close();
    await lab?.cleanup();
  });

  it('refuses a failback for a machine that is not failed over, and writes nothing', async () => {
    const before = fileHash(image);
    const r = await runFerryAsync(['agent', 'failback', '--config', lab.configFile]);
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/FAILBACK_REFUSED: machine agent-\w+ is not failed over/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(fileHash(image)).toBe(before);
  });

  it('once failed over, the normal agent is refused with FAILED_OVER', async () => {
    recovery.failedOver = true;
    const agent = lab.startAgent();
    await waitFor('the FAILED_OVER refusal', () => /FAILED_OVER: machine agent-\w+ is failed over/.test(agent.output()), 30_000);
    await agent.stop();
  });

  it('refuses a recovered disk of another size, and the original disk is unchanged', async () => {
    const other = path.join(lab.dir, 'other-size.img');
    fs.writeFileSync(other, Buffer.alloc(SIZE + MiB));
    recovery.disks.set('vol1', other);
    const before = fileHash(image);
    const r = await runFerryAsync(['agent', 'failback', '--config', lab.configFile]);
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/FAILBACK_REFUSED: volume vol1: the original disk is 67108864 bytes, the recovered disk 68157440: sizes must match exactly/);
    expect(fileHash(image)).toBe(before);
    fs.rmSync(other);
  });

  it('refuses a mounted device, named by its device or by its image file', async () => {
    if (!isRoot) return;
    const fsImage = path.join(lab.dir, 'mounted.img');
    const mounted = mountExt4(fsImage, path.join(lab.dir, 'mnt'), 16);
    try {
      const loop = execFileSync('losetup', ['-j', fsImage], { encoding: 'utf8' }).split(':')[0];
      expect(loop).toMatch(/^\/dev\/loop\d+$/);
      const byDevice = await runFerryAsync(['agent', 'failback', '--config', lab.configFile, '--volume', `vol1=${loop}`]);
      expect(byDevice.status, byDevice.stderr).toBe(4);
      expect(byDevice.stderr).toContain(`volume vol1: ${loop} is in use (${loop} is mounted at ${path.join(lab.dir, 'mnt')})`);
      const byFile = await runFerryAsync(['agent', 'failback', '--config', lab.configFile, '--volume', `vol1=${fsImage}`]);
      expect(byFile.status, byFile.stderr).toBe(4);
      expect(byFile.stderr).toMatch(/is in use \(the image is attached to \/dev\/loop\d+; \/dev\/loop\d+ is mounted at/);
      expect(byFile.stderr).toMatch(/pass --force/);
    } finally {
      mounted.unmount();
    }
  });

  it('brings the recovered disk back: pass 1 copies, later passes copy newer writes, the final pass leaves the disks equal', async () => {
    const recovered = path.join(lab.dir, 'recovered-vol1.img');
    fs.copyFileSync(image, recovered);
    recovery.disks.set('vol1', recovered);
    const changed = changeRecoveredDisk(recovered, 0.03, { offset: 40 * MiB, length: MiB }, SEED + 1);
    const writer = startWriter(recovered, { offset: 20 * MiB, length: 4 * BLOCK }, 50);
    const from = recovery.reports.length;
    const run = startFailback(['--config', lab.configFile, '--json']);
    let firstPass: FailbackProgress | undefined;
    try {
      firstPass = await waitFor('pass 1 to end', () => recovery.passEnds(from)[0], 60_000);
      expect(firstPass).toMatchObject({ pass: 1, state: 'in-sync' });
      // The writer went on: a later pass finds the newer blocks and sends them.
      await waitFor('a later pass that sent newer writes', () => recovery.passEnds(from).find((p) => p.pass >= 2 && p.sentBytes > (firstPass as FailbackProgress).sentBytes), 60_000);
      // The control plane never heard of the failback session: the machine is not connected.
      expect(rx.plane.machine(agentId).connected).toBe(false);
    } finally {
      const writes = writer.stop();
      console.log(`failback: the recovered VM wrote ${writes} times 4 KiB into a 256 KiB hot region during the passes`);
      recovery.stopped = true;
    }
    const r = await run.done;
    expect(r.status, r.stderr).toBe(0);
    expect(run.stderr()).toMatch(/vol1: pass \d+ started \(final: the recovered machine is stopped\)/);
    expect(fileHash(image)).toBe(fileHash(recovered));
    const summary = (JSON.parse(r.stdout) as Summary).volumes[0];
    const last = recovery.reports.at(-1)?.progress as FailbackProgress;
    expect(last).toMatchObject({ state: 'done', sentBytes: summary.sentBytes, sizeBytes: SIZE, pass: summary.passes });
    expect(summary.passes).toBeGreaterThanOrEqual(3);
    // Pass 1 sent the 3% changed blocks and the grown region, not the volume.
    expect(firstPass.sentBytes).toBeGreaterThanOrEqual(MiB);
    const fraction = summary.sentBytes / SIZE;
    console.log(
      `failback: ${changed} of ${SIZE / BLOCK} blocks (3%) rewritten + 1 MiB grown region + the writer's hot region: ` +
        `sent ${summary.sentBytes} bytes of ${SIZE} (${(100 * fraction).toFixed(2)}%) in ${summary.passes} passes; pass 1 sent ${firstPass.sentBytes}`,
    );
    expect(fraction).toBeLessThan(0.1);
    console.log(`failback: what the operator saw on stderr:\n${run.stderr()}`);
  }, 180_000);

  it('a second failback against identical disks sends no data', async () => {
    const r = await runFerryAsync(['agent', 'failback', '--config', lab.configFile]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/failback complete: every volume equals its recovered disk/);
    expect(r.stdout).toMatch(/vol1\t\S+vol1\.img\t64\.0 MiB\t0 B\t0\.00%\t1\t0/);
    const last = recovery.reports.at(-1)?.progress;
    expect(last).toMatchObject({ state: 'done', sentBytes: 0, differingBlocks: 0, pass: 1 });
    console.log(`failback: second run against identical disks sent 0 bytes of data:\n${r.stdout}`);
  }, 60_000);

  it('a write error on the original disk stops the failback with a clear error; a later run completes it', async () => {
    if (!isRoot) return;
    // The original disk: a sparse image on a nearly full tmpfs, so writes into its holes fail (ENOSPC).
    const small = mountTmpfs(path.join(lab.dir, 'small'), 48);
    try {
      const original = path.join(small.mountPoint, 'original.img');
      fs.writeFileSync(original, '');
      fs.truncateSync(original, SIZE);
      const ballast = fillWithBallast(small.mountPoint, 4 * MiB);
      const from = recovery.reports.length;
      const failed = await runFerryAsync(['agent', 'failback', '--config', lab.configFile, '--volume', `vol1=${original}`]);
      console.log(`failback: a write error on the original disk:\n${failed.stderr}`);
      expect(failed.status, failed.stderr).toBe(1);
      expect(failed.stderr).toMatch(/ferry: failback stopped: volume vol1: cannot write the disk at \d+: ENOSPC; every change acked before this is on the disk/);
      await waitFor('the failed report', () => recovery.reports.slice(from).find((r) => r.progress.state === 'failed'), 10_000);
      expect(recovery.reports.slice(from).find((r) => r.progress.state === 'failed')?.progress.detail).toMatch(/VOLUME_FAILED.*ENOSPC/);
      fs.rmSync(ballast);
      const again = await runFerryAsync(['agent', 'failback', '--config', lab.configFile, '--volume', `vol1=${original}`]);
      expect(again.status, again.stderr).toBe(0);
      expect(fileHash(original)).toBe(fileHash(recovery.disks.get('vol1') as string));
    } finally {
      small.unmount();
    }
  }, 60_000);
});
