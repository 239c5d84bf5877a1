/**
 * Runs inside the VM lab guest (as root) for test/vm/receiver-eio.test.ts: a real receiver whose
 * data directory is an ext4 on a device-mapper device over /dev/vda (its journal on /dev/vdb),
 * and the test agent of test/helpers/fault-lab.ts streaming to it with an independent model.
 * On demand the device's table is swapped for dm-flakey failing every write (reads still work),
 * and back. Round 1: writes fail while the receiver runs, then the device heals (no restart).
 * Round 2: writes fail, the receiver is killed with SIGKILL, the device heals, the file system is
 * checked and mounted again, the receiver restarts. After each round: nothing acknowledged went
 * back, and the final point and a sample of the points cut meanwhile export as the model says.
 * Prints one line `FERRY-RESULT {"failures": [...], "facts": {...}}`.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FaultLab } from '../../helpers/fault-lab';

const MiB = 1024 * 1024;
const VOLUME = 'vol-eio';
const DM = 'rxdisk';
const DATA_DEV = '/dev/vda';
const JOURNAL_DEV = '/dev/vdb';
const MOUNT = '/run/rx';
const SEED = Number(process.env.FERRY_SEED ?? 1);

const failures: string[] = [];
const facts: Record<string, unknown> = {};

function check(cond: boolean, message: string): void {
  if (!cond) failures.push(message);
}

function note(message: string): void {
  process.stdout.write(`driver: ${message}\n`);
}

function sh(cmd: string, args: string[], okCodes = [0]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (!okCodes.includes(r.status ?? -1)) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

const sectors = Number(sh('blockdev', ['--getsz', DATA_DEV]).trim());
const TABLES = {
  healthy: `0 ${sectors} linear ${DATA_DEV} 0`,
  // up 0 s, down a day: every write fails with EIO, reads go through.
  failingWrites: `0 ${sectors} flakey ${DATA_DEV} 0 0 86400 1 error_writes`,
};

function setTable(kind: keyof typeof TABLES): void {
  sh('dmsetup', ['load', DM, '--table', TABLES[kind]]);
  sh('dmsetup', ['suspend', '--noflush', '--nolockfs', DM]);
  sh('dmsetup', ['resume', DM]);
  note(`device table: ${kind}`);
}

function mountData(): void {
  fs.mkdirSync(MOUNT, { recursive: true });
  sh('mount', ['-t', 'ext4', '-o', `errors=continue,journal_path=${JOURNAL_DEV}`, `/dev/mapper/${DM}`, MOUNT]);
}

async function waitFor<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 300_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

function volumeStatus(lab: FaultLab): { state: string; problem?: string } | undefined {
  try {
    return lab.status().volumes.find((v) => v.volumeId === VOLUME);
  } catch {
    return undefined;
  }
}

/** Nothing acknowledged went back; the final point and sampled earlier ones equal the model. */
async function checkNothingLost(lab: FaultLab, round: string): Promise<void> {
  check(lab.regressions.length === 0, `${round}: acknowledged seqs went back: ${lab.regressions.join('; ')}`);
  const final = await lab.tag(VOLUME);
  await lab.waitApplied(VOLUME);
  const e = await lab.exportPoint(VOLUME, final.pointId);
  check(e.status === 0, `${round}: export of the final point failed (${e.status}): ${e.stderr}`);
  check(e.sha === lab.expectedSha(VOLUME, final.seq), `${round}: the final point (seq ${final.seq}) differs from the source`);
  const points = lab.points.filter((p) => p.volumeId === VOLUME);
  const sample = points.filter((_, i) => i % Math.max(1, Math.floor(points.length / 4)) === 0);
  for (const p of sample) {
    const x = await lab.exportPoint(VOLUME, p.pointId);
    check(x.status === 0, `${round}: export of point ${p.pointId} failed (${x.status}): ${x.stderr}`);
    check(x.sha === lab.expectedSha(VOLUME, p.seq), `${round}: point ${p.pointId} (seq ${p.seq}) differs from the source`);
  }
  facts[`${round}PointsChecked`] = sample.length + 1;
}

/**
 * Streams while the device fails writes: waits until the receiver says the volume failed (and
 * that writes before the fault were acknowledged), then lets `whileFailing` act and heals.
 */
async function failWhileStreaming(lab: FaultLab, round: string, whileFailing: () => Promise<void>): Promise<void> {
  const streaming = lab.stream(VOLUME, 1200, { tagEvery: 5, deadlineMs: 900_000 });
  streaming.catch(() => undefined);
  const before = lab.acked.get(VOLUME) ?? 0;
  await waitFor(`${round}: the stream to be acknowledged past ${before + 100}`, () => (lab.acked.get(VOLUME) ?? 0) > before + 100);
  setTable('failingWrites');
  const ackedAtFault = lab.acked.get(VOLUME) ?? 0;
  const failed = await waitFor(`${round}: the receiver to report the volume failed`, () => {
    const v = volumeStatus(lab);
    return v?.state === 'failed' ? v : undefined;
  });
  note(`${round}: volume failed: ${failed.problem ?? ''}`);
  check(/EIO|I\/O error|EROFS/.test(failed.problem ?? ''), `${round}: the status does not say why the volume failed: ${failed.problem}`);
  facts[`${round}Problem`] = failed.problem;
  facts[`${round}AckedAtFault`] = ackedAtFault;
  await whileFailing();
  await streaming;
  await waitFor(`${round}: the volume to be healthy again`, () => volumeStatus(lab)?.state === 'healthy');
  facts[`${round}Refusals`] = [...new Set(lab.refusals)];
  for (const code of lab.refusals) check(['VOLUME_FAILED', 'STORAGE_FULL'].includes(code), `${round}: a session was refused with ${code}`);
}

async function main(): Promise<void> {
  sh('modprobe', ['dm-flakey']);
  sh('mke2fs', ['-q', '-F', '-O', 'journal_dev', '-b', '4096', JOURNAL_DEV]);
  sh('dmsetup', ['create', DM, '--table', TABLES.healthy]);
  sh('mkfs.ext4', ['-q', '-F', '-b', '4096', '-J', `device=${JOURNAL_DEV}`, `/dev/mapper/${DM}`]);
  mountData();
  const dir = path.join(MOUNT, 'lab');
  fs.mkdirSync(dir);
  const lab = new FaultLab(dir, ['--segment-size', '1MiB', '--min-free', '1', '--reserve', '0'], SEED);
  lab.volume(VOLUME, 8 * MiB);
  await lab.start();
  await lab.connect();
  await lab.stream(VOLUME, 150, { tagEvery: 5 });
  await lab.waitApplied(VOLUME);

  // Round 1: the device fails writes, then heals; the receiver keeps running throughout.
  await failWhileStreaming(lab, 'live', async () => {
    const rxPid = lab.rx?.child.pid;
    await new Promise((resolve) => setTimeout(resolve, 3000)); // retries run into the fault too
    check(lab.rx?.child.exitCode === null && lab.rx?.child.pid === rxPid, 'live: the receiver exited while its disk failed writes');
    setTable('healthy');
  });
  await checkNothingLost(lab, 'live');

  // Round 2: the device fails writes and the receiver is killed; the operator heals the
  // device, checks the file system and starts the receiver again.
  await failWhileStreaming(lab, 'killed', async () => {
    await lab.kill9();
    setTable('healthy');
    sh('umount', [MOUNT]);
    const fsck = spawnSync('e2fsck', ['-f', '-y', '-j', JOURNAL_DEV, `/dev/mapper/${DM}`], { encoding: 'utf8' });
    facts.fsckStatus = fsck.status;
    note(`e2fsck exited ${fsck.status}: ${fsck.stdout.trim().split('\n').slice(-2).join(' / ')}`);
    mountData();
    await lab.start();
  });
  await checkNothingLost(lab, 'killed');
  const v = lab.status().volumes.find((x) => x.volumeId === VOLUME);
  check(v?.damage.length === 0, `the volume reports damage after the rounds: ${JSON.stringify(v?.damage)}`);
  facts.finalSeq = lab.volumes.get(VOLUME)?.seq;
  await lab.stop();
  sh('umount', [MOUNT]);
  sh('dmsetup', ['remove', DM]);
}

main()
  .catch((err: unknown) => failures.push(`driver error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`))
  .finally(() => {
    process.stdout.write(`FERRY-RESULT ${JSON.stringify({ failures, facts })}\n`);
    process.exit(0);
  });
