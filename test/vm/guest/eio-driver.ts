/**
 * Runs inside the VM lab guest (as root) for test/vm/receiver-eio.test.ts: a real receiver whose
 * data directory is an ext4 on a device-mapper device over /dev/vda, and the test agent of
 * test/helpers/fault-lab.ts streaming to it with an independent model. On demand the device
 * becomes a bad region: every block the file system has not allocated yet fails writes with EIO
 * (dm-flakey `error_writes` over the free ranges, reads still work), so each new spool and undo
 * journal write fails while the file system's own metadata stays writable (a fault in blocks ext4
 * itself needs would make ext4 abort its journal and go read-only, which no receiver can undo). Round 1: writes fail while the receiver runs, then the device heals (no restart).
 * Round 2: writes fail, the receiver is killed with SIGKILL, the device heals, the file system is
 * checked and mounted again, the receiver restarts. After each round: nothing acknowledged went
 * back, and the final point and a sample of the points cut meanwhile export as the model says.
 * Prints one line `FERRY-RESULT {"failures": [...], "facts": {...}}`.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FaultLab, type StatusJson } from '../../helpers/fault-lab';
import { runFerryAsync } from '../../helpers/receiver-process';

const MiB = 1024 * 1024;
const VOLUME = 'vol-eio';
const DM = 'rxdisk';
const DATA_DEV = '/dev/vda';
const BLOCK = 4096;
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

/**
 * Runs a command without blocking the event loop: the test agent must keep its heartbeat going
 * while dmsetup waits for a suspend, like a real agent on another machine would.
 */
function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${out}${err}`))));
  });
}

const sectors = Number(sh('blockdev', ['--getsz', DATA_DEV]).trim());
const HEALTHY = `0 ${sectors} linear ${DATA_DEV} 0`;

/** The free block ranges of the file system, from its on-disk bitmaps (`dumpe2fs`). */
async function freeRanges(): Promise<Array<[number, number]>> {
  // dumpe2fs's exit status is not reliable on a mounted file system: check its output instead.
  const out = await run('dumpe2fs', [`/dev/mapper/${DM}`]).catch((err: Error) => err.message);
  if (!/^Group 0:/m.test(out)) throw new Error(`dumpe2fs printed no block groups: ${out.slice(0, 2000)}`);
  const ranges: Array<[number, number]> = [];
  for (const line of out.split('\n')) {
    const m = /^\s+Free blocks: (.+)$/.exec(line);
    if (!m) continue;
    for (const part of m[1].split(',')) {
      const [a, b] = part.trim().split('-').map(Number);
      if (Number.isFinite(a)) ranges.push([a, Number.isFinite(b) ? b : a]);
    }
  }
  return ranges.sort((x, y) => x[0] - y[0]);
}

/** A table that maps the device as is, except that writes to `bad` block ranges fail. */
function badRegionTable(bad: Array<[number, number]>): string {
  const lines: string[] = [];
  let at = 0;
  const map = (start: number, end: number, target: string): void => {
    if (end > start) lines.push(`${start} ${end - start} ${target}`);
  };
  for (const [first, last] of bad) {
    const start = (first * BLOCK) / 512;
    const end = Math.min(sectors, ((last + 1) * BLOCK) / 512);
    map(at, start, `linear ${DATA_DEV} ${at}`);
    // up 0 s, down a day: every write fails with EIO, reads go through.
    map(start, end, `flakey ${DATA_DEV} ${start} 0 86400 1 error_writes`);
    at = end;
  }
  map(at, sectors, `linear ${DATA_DEV} ${at}`);
  return lines.join('\n');
}

async function loadTable(table: string, what: string): Promise<void> {
  const file = '/run/rxdisk.table';
  fs.writeFileSync(file, `${table}\n`);
  const started = Date.now();
  await run('dmsetup', ['load', DM, file]);
  await run('dmsetup', ['suspend', '--noflush', '--nolockfs', DM]);
  await run('dmsetup', ['resume', DM]);
  note(`device table: ${what} (switched in ${Date.now() - started} ms)`);
}

/** From now on every block ext4 had not allocated fails writes (its bitmaps flushed first). */
async function failNewBlocks(): Promise<void> {
  // Frozen, ext4 has checkpointed its journal: the on-disk bitmaps are current until the thaw,
  // and the table changes before anything new is allocated.
  await run('fsfreeze', ['-f', MOUNT]);
  try {
    const bad = await freeRanges();
    facts.badBlocks = bad.reduce((n, [a, b]) => n + b - a + 1, 0);
    await loadTable(badRegionTable(bad), `writes fail in ${bad.length} free ranges (${String(facts.badBlocks)} blocks)`);
  } finally {
    await run('fsfreeze', ['-u', MOUNT]);
  }
}

function heal(): Promise<void> {
  return loadTable(HEALTHY, 'healthy');
}

function mountData(): void {
  fs.mkdirSync(MOUNT, { recursive: true });
  sh('mount', ['-t', 'ext4', '-o', 'errors=remount-ro', `/dev/mapper/${DM}`, MOUNT]);
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

async function volumeStatus(lab: FaultLab): Promise<StatusJson['volumes'][number] | undefined> {
  const r = await runFerryAsync(['receiver', 'status', '--data', lab.dataDir, '--json']);
  try {
    return (JSON.parse(r.stdout) as StatusJson).volumes.find((v) => v.volumeId === VOLUME);
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
  const sample = points.filter((_, i) => i % Math.max(1, Math.floor(points.length / 3)) === 0);
  for (const p of sample) {
    const x = await lab.exportPoint(VOLUME, p.pointId);
    // A point that needs change sets the receiver found damaged (an append whose fsync failed
    // before a SIGKILL) refuses to export (exit 8) until nothing; it never exports a wrong image.
    if (x.status === 8 && repaired) continue;
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
  const streaming = lab.stream(VOLUME, 400, { tagEvery: 5, deadlineMs: 600_000 });
  streaming.catch(() => undefined);
  const before = lab.acked.get(VOLUME) ?? 0;
  await waitFor(`${round}: the stream to be acknowledged past ${before + 60}`, () => (lab.acked.get(VOLUME) ?? 0) > before + 60);
  await failNewBlocks();
  const ackedAtFault = lab.acked.get(VOLUME) ?? 0;
  const failed = await waitFor(`${round}: the receiver to report the volume failed`, async () => {
    const v = await volumeStatus(lab);
    return v?.state === 'failed' ? v : undefined;
  });
  note(`${round}: volume failed: ${failed.problem ?? ''}`);
  check(/EIO|I\/O error|EROFS/.test(failed.problem ?? ''), `${round}: the status does not say why the volume failed: ${failed.problem}`);
  facts[`${round}Problem`] = failed.problem;
  facts[`${round}AckedAtFault`] = ackedAtFault;
  await whileFailing();
  await streaming;
  // The receiver cuts a failed append back at once, so a SIGKILL normally leaves nothing it
  // could take for damage; should the cut not have reached the disk, it asks the agent for a
  // repair: answer every request, as an agent does (the count is in the facts).
  const repairDeadline = Date.now() + 300_000;
  for (let answered = 0; ; ) {
    if (Date.now() > repairDeadline) throw new Error(`${round}: the volume stayed damaged after ${answered} repair(s) were answered`);
    const pending = lab.repairRequests.slice(answered);
    if (pending.length === 0) {
      facts[`${round}RepairsAnswered`] = answered;
      const v = await volumeStatus(lab);
      if (v?.state !== 'damaged') break;
      await new Promise((resolve) => setTimeout(resolve, 500));
      continue;
    }
    for (const req of pending) {
      note(`${round}: repair request ${req.requestId} for ${req.volumeId}: ${req.reason ?? ''}`);
      facts[`${round}RepairReasons`] = [...((facts[`${round}RepairReasons`] as string[] | undefined) ?? []), req.reason ?? ''];
      lab.answerRepair(req);
    }
    answered += pending.length;
    repaired = true;
    note(`${round}: answered ${pending.length} repair request(s)`);
  }
  let last: StatusJson['volumes'][number] | undefined;
  await waitFor(`${round}: the volume to be healthy again`, async () => {
    last = (await volumeStatus(lab)) ?? last;
    return last?.state === 'healthy';
  }).catch((err: Error) => {
    throw new Error(`${err.message}; last status: ${JSON.stringify(last)}`);
  });
  facts[`${round}Refusals`] = [...new Set(lab.refusals)];
  for (const code of lab.refusals) check(['VOLUME_FAILED', 'STORAGE_FULL'].includes(code), `${round}: a session was refused with ${code}`);
}

async function main(): Promise<void> {
  sh('modprobe', ['dm-flakey']);
  sh('dmsetup', ['create', DM, '--table', HEALTHY]);
  sh('mkfs.ext4', ['-q', '-F', '-b', String(BLOCK), `/dev/mapper/${DM}`]);
  mountData();
  const dir = path.join(MOUNT, 'lab');
  fs.mkdirSync(dir);
  const lab = new FaultLab(dir, ['--segment-size', '1MiB', '--min-free', '1', '--reserve', '0'], SEED);
  current = lab;
  lab.volume(VOLUME, 8 * MiB);
  await lab.start();
  await lab.connect();
  await lab.stream(VOLUME, 100, { tagEvery: 5 });
  await lab.waitApplied(VOLUME);

  // Round 1: the device fails writes, then heals; the receiver keeps running throughout.
  await failWhileStreaming(lab, 'live', async () => {
    const rxPid = lab.rx?.child.pid;
    await new Promise((resolve) => setTimeout(resolve, 3000)); // retries run into the fault too
    check(lab.rx?.child.exitCode === null && lab.rx?.child.pid === rxPid, 'live: the receiver exited while its disk failed writes');
    await heal();
  });
  await checkNothingLost(lab, 'live');

  // Round 2: the device fails writes and the receiver is killed; the operator heals the
  // device, checks the file system and starts the receiver again.
  await failWhileStreaming(lab, 'killed', async () => {
    await lab.kill9();
    await heal();
    sh('umount', [MOUNT]);
    const fsck = spawnSync('e2fsck', ['-f', '-y', `/dev/mapper/${DM}`], { encoding: 'utf8' });
    facts.fsckStatus = fsck.status;
    note(`e2fsck exited ${fsck.status}: ${fsck.stdout.trim().split('\n').slice(-2).join(' / ')}`);
    mountData();
    await lab.start();
  });
  await checkNothingLost(lab, 'killed');
  const v = await volumeStatus(lab);
  check(v?.damage.length === 0, `the volume reports damage after the rounds: ${JSON.stringify(v?.damage)}`);
  facts.finalSeq = lab.volumes.get(VOLUME)?.seq;
  await lab.stop();
  sh('umount', [MOUNT]);
  sh('dmsetup', ['remove', DM]);
}

let current: FaultLab | undefined;
/** A repair was answered: points cut before it may refuse to export (never export wrong). */
let repaired = false;

main()
  .catch((err: unknown) => failures.push(`driver error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`))
  .finally(() => {
    if (failures.length > 0) process.stdout.write(`--- receiver log (tail) ---\n${current?.rx?.output().slice(-12000) ?? '(no receiver)'}\n`);
    process.stdout.write(`FERRY-RESULT ${JSON.stringify({ failures, facts })}\n`);
    process.exit(0);
  });
