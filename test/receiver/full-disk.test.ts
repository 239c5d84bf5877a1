/**
 * A full disk is a state, not a crash: the receiver's spool, undo journal or replica each runs
 * out of room on a real (loop-mounted) ext4, and all of its data on a small tmpfs, while an
 * agent streams. Nothing that was not stored is acknowledged, nothing acknowledged is lost,
 * the receiver holds the agent and resumes by itself once space is freed (no restart, no
 * resync), and the same holds across a SIGKILL while full. Needs root (mount, losetup).
 *
 * The first two groups are the undo journal's (its spool is freed at every checkpoint; its
 * history is in journal/; apply writes the replica). Under redo the applied spool IS the retention: its cases (last
 * describe) fill the spool's file system with history alone and expect the oldest points to age
 * out early, reported, while replication goes on.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/agent-lab';
import { FaultLab } from '../helpers/fault-lab';
import { makeTempDir } from '../helpers/receiver-process';
import { fillWithBallast, MountedFs, mountExt4, mountTmpfs } from '../helpers/small-fs';
import { useJournal } from '../helpers/journal';
import { runFerry } from '../helpers/receiver-process';

const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI) throw new Error('the full-disk tests need root (loop devices, mount) and CI runs them');

const A = 'vol-a';
const MiB = 1024 * 1024;
/** No floor, no reserve: the stream runs into ENOSPC itself. */
const NO_FLOOR = ['--min-free', '1', '--reserve', '0', '--segment-size', '1MiB'];

const mounts: MountedFs[] = [];
const dirs: string[] = [];
const labs: FaultLab[] = [];
afterAll(async () => {
  for (const lab of labs) await lab.stop().catch(() => undefined);
  for (const m of mounts.reverse()) {
    try {
      m.unmount();
    } catch {
      // already gone
    }
  }
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function newLab(name: string, args: string[], seed: number): FaultLab {
  const dir = makeTempDir(name);
  dirs.push(dir);
  const lab = new FaultLab(dir, args, seed);
  labs.push(lab);
  return lab;
}

function mount(m: MountedFs): MountedFs {
  mounts.push(m);
  return m;
}


/** Nothing acknowledged went back, and a point cut now exports equal to the source. */
async function expectFinalExact(lab: FaultLab): Promise<void> {
  expect(lab.regressions).toEqual([]);
  const final = await lab.tag(A);
  await lab.waitApplied(A);
  const r = await lab.exportPoint(A, final.pointId);
  expect(r.status, r.stderr).toBe(0);
  expect(r.sha, 'the final image equals the source').toBe(lab.expectedSha(A, final.seq));
}

/** The end of every run: nothing acknowledged went back, and every point exports as the model says. */
async function expectNothingLost(lab: FaultLab): Promise<void> {
  await expectFinalExact(lab);
  const acked = lab.points.filter((p) => p.volumeId === A);
  const sample = acked.filter((_, i) => i % Math.max(1, Math.floor(acked.length / 5)) === 0);
  for (const p of sample) {
    const e = await lab.exportPoint(A, p.pointId);
    expect(e.status, `point ${p.pointId}: ${e.stderr}`).toBe(0);
    expect(e.sha, `point ${p.pointId} at seq ${p.seq}`).toBe(lab.expectedSha(A, p.seq));
  }
}

/**
 * Fills the file system at `fsDir` up to `leave` free bytes, streams until the receiver says the
 * volume is full, optionally kills it there, frees the space, and lets the stream finish.
 */
async function runOutOfSpace(lab: FaultLab, fsDir: string, leave: number, opts: { pauseApply?: boolean; killWhileFull?: boolean; count: number; whileFull?: () => void }): Promise<void> {
  const ballast = fillWithBallast(fsDir, leave);
  const pause = path.join(lab.dataDir, 'volumes', A, 'apply.paused');
  if (opts.pauseApply) fs.writeFileSync(pause, '');
  const streaming = lab.stream(A, opts.count, { tagEvery: 7 });
  streaming.catch(() => undefined);
  const refusalsBefore = lab.refusals.length;
  await lab.waitForState(A, ['full'], 'the volume to run out of room');
  const status = lab.status();
  expect(status.alerts.some((a) => a.subject === A && a.severity === 'error')).toBe(true);
  opts.whileFull?.();
  if (opts.killWhileFull) await lab.kill9();
  fs.rmSync(ballast);
  fs.rmSync(pause, { force: true });
  if (opts.killWhileFull) await lab.start();
  await streaming;
  // The stream may have been all acknowledged before the kill (apply filled the disk later):
  // log in again as the agent would.
  if (!lab.conn) await lab.reconnect(A, Date.now() + 60_000);
  await lab.waitForState(A, ['healthy'], 'the volume to be healthy again');
  // What the receiver refused while full, it refused with a clear code.
  for (const code of lab.refusals.slice(refusalsBefore)) expect(['STORAGE_FULL', 'VOLUME_FAILED']).toContain(code);
}

describe.skipIf(!isRoot)('a full disk is a state, not a crash: undo spool and journal (root)', { timeout: 600_000 }, () => {
  useJournal('undo');
  it('spool: the agent is held before the spool file system fills, and let go when space comes back', async () => {
    const lab = newLab('full-floor', ['--min-free', '12MiB', '--reserve', '0', '--segment-size', '1MiB'], 21);
    const spoolDir = path.join(lab.dataDir, 'volumes', A, 'spool');
    mount(mountExt4(path.join(lab.dir, 'spool.ext4'), spoolDir, 48));
    lab.volume(A, 4 * MiB);
    await lab.start();
    await lab.connect();
    await lab.stream(A, 200);
    const ballast = fillWithBallast(spoolDir, 20 * MiB);
    const pause = path.join(lab.dataDir, 'volumes', A, 'apply.paused');
    fs.writeFileSync(pause, '');
    const streaming = lab.stream(A, 3000, { tagEvery: 7 });
    streaming.catch(() => undefined);
    await lab.waitForState(A, ['held'], 'the agent to be held');
    const status = lab.status();
    expect(status.storage.some((s) => s.low)).toBe(true);
    expect(status.alerts.some((a) => /free space low/.test(a.message))).toBe(true);
    await waitFor('the Throttle frame', () => (lab.conn?.throttleDelayMs ?? 0) > 0);
    fs.rmSync(ballast);
    fs.rmSync(pause);
    await streaming;
    // Held in time: the spool never ran out, so no session was refused.
    expect(lab.refusals).toEqual([]);
    await expectNothingLost(lab);
  });

  it('spool: ENOSPC refuses the change set, nothing unstored is acknowledged, ingest resumes by itself, also after a SIGKILL while full', async () => {
    const lab = newLab('full-spool', NO_FLOOR, 22);
    const spoolDir = path.join(lab.dataDir, 'volumes', A, 'spool');
    mount(mountExt4(path.join(lab.dir, 'spool.ext4'), spoolDir, 32));
    lab.volume(A, 4 * MiB);
    await lab.start();
    await lab.connect();
    await lab.stream(A, 100);
    await runOutOfSpace(lab, spoolDir, 4 * MiB, { pauseApply: true, count: 1500 });
    expect(lab.refusals).toContain('STORAGE_FULL');
    await runOutOfSpace(lab, spoolDir, 4 * MiB, { pauseApply: true, killWhileFull: true, count: 1500 });
    await expectNothingLost(lab);
  });

  it('journal: apply waits for room while ingest goes on, and resumes from its checkpoint by itself, also after a SIGKILL', async () => {
    const lab = newLab('full-journal', NO_FLOOR, 23);
    const journalDir = path.join(lab.dataDir, 'volumes', A, 'journal');
    // The journal keeps what the stream overwrites (nothing is old enough for retention here):
    // room for both rounds once the ballast is gone.
    mount(mountExt4(path.join(lab.dir, 'journal.ext4'), journalDir, 128));
    lab.volume(A, 4 * MiB);
    await lab.start();
    await lab.connect();
    await lab.stream(A, 300);
    await lab.waitApplied(A);
    await runOutOfSpace(lab, journalDir, 2 * MiB, { count: 400 });
    await runOutOfSpace(lab, journalDir, 2 * MiB, { killWhileFull: true, count: 400 });
    await expectNothingLost(lab);
  });
});

describe.skipIf(!isRoot)('a full disk is a state, not a crash: undo replica and whole data directory (root)', { timeout: 600_000 }, () => {
  // Undo's outcomes: under redo the replica is written only by an advance (its ENOSPC is
  // test/unit/redo-faults.test.ts), and a data directory filled by ballast ages history out
  // rather than staying full (the redo cases below).
  useJournal('undo');
  it('replica: a write into the sparse replica that finds no room is rolled back and applied again once there is', async () => {
    const lab = newLab('full-replica', NO_FLOOR, 24);
    const volumeDir = path.join(lab.dataDir, 'volumes', A);
    mount(mountExt4(path.join(lab.dir, 'volume.ext4'), volumeDir, 96));
    for (const sub of ['spool', 'journal']) mount(mountTmpfs(path.join(volumeDir, sub), 128));
    lab.volume(A, 64 * MiB);
    await lab.start();
    await lab.connect();
    await lab.stream(A, 50);
    await runOutOfSpace(lab, volumeDir, 3 * MiB, { count: 400 });
    await runOutOfSpace(lab, volumeDir, 3 * MiB, { killWhileFull: true, count: 400 });
    await expectNothingLost(lab);
  });

  it('tmpfs: all the receiver data on a small tmpfs fills up, and everything resumes once space is freed, also after a SIGKILL', async () => {
    const dir = makeTempDir('full-tmpfs');
    dirs.push(dir);
    const dataDir = path.join(dir, 'data');
    mount(mountTmpfs(dataDir, 160));
    // With a space reserve: given back when the disk fills up, made again once there is room.
    const lab = new FaultLab(dir, ['--min-free', '1', '--reserve', '4MiB', '--segment-size', '1MiB'], 25, dataDir);
    labs.push(lab);
    lab.volume(A, 8 * MiB);
    await lab.start();
    await lab.connect();
    await lab.stream(A, 100);
    const reserve = path.join(dataDir, 'reserve');
    await waitFor('the reserve to be made', () => fs.existsSync(reserve) && fs.statSync(reserve).size === 4 * MiB);
    await runOutOfSpace(lab, dataDir, 6 * MiB, { count: 500, whileFull: () => {
      expect(fs.existsSync(reserve)).toBe(false);
      expect(lab.status().alerts.some((a) => /reserve was used up/.test(a.message))).toBe(true);
    } });
    await waitFor('the reserve to be made again', () => fs.existsSync(reserve) && fs.statSync(reserve).size === 4 * MiB);
    await runOutOfSpace(lab, dataDir, 6 * MiB, { killWhileFull: true, count: 500 });
    await expectNothingLost(lab);
  });
});

interface AgedOutJson {
  points: number;
  times: number;
  oldestRetainedSeq: number;
}

function volumeStatus(lab: FaultLab): { state: string; durableSeq: number; appliedSeq: number; unappliedBytes: number; agedOutEarly?: AgedOutJson } {
  const v = (lab.status().volumes as Array<{ volumeId: string }>).find((x) => x.volumeId === A);
  return v as unknown as { state: string; durableSeq: number; appliedSeq: number; unappliedBytes: number; agedOutEarly?: AgedOutJson };
}

/**
 * Under redo, what an operator is owed after the spool ran short: every point still listed
 * exports exact, every acknowledged point not listed is older than the oldest retained seq (aged
 * out early, reported), the newest state is exact, and nothing acknowledged went back.
 */
async function expectRetainedExact(lab: FaultLab): Promise<AgedOutJson> {
  await expectFinalExact(lab);
  const early = volumeStatus(lab).agedOutEarly;
  expect(early, 'the status reports the early age-out').toBeDefined();
  if (!early) throw new Error('no early age-out');
  expect(early.times).toBeGreaterThan(0);
  expect(early.points).toBeGreaterThan(0);
  const listed = new Set((JSON.parse(runFerry(['points', '--data', lab.dataDir, '--volume', A, '--json']).stdout) as Array<{ id: number }>).map((p) => p.id));
  const acked = lab.points.filter((p) => p.volumeId === A);
  for (const p of acked.filter((x) => !listed.has(x.pointId))) expect(p.seq, `point ${p.pointId} is gone only if aged out`).toBeLessThan(early.oldestRetainedSeq);
  const kept = acked.filter((x) => listed.has(x.pointId));
  expect(kept.length).toBeGreaterThan(0);
  const sample = kept.filter((_, i) => i % Math.max(1, Math.floor(kept.length / 5)) === 0);
  for (const p of sample) {
    const e = await lab.exportPoint(A, p.pointId);
    expect(e.status, `point ${p.pointId}: ${e.stderr}`).toBe(0);
    expect(e.sha, `point ${p.pointId} at seq ${p.seq}`).toBe(lab.expectedSha(A, p.seq));
  }
  const gone = acked.find((x) => !listed.has(x.pointId));
  if (gone) {
    const e = await lab.exportPoint(A, gone.pointId);
    expect(e.status).toBe(3);
    expect(e.stderr).toMatch(/has no point/);
  }
  expect(lab.status().alerts.some((a) => a.subject === A && /aged out early for lack of space/.test(a.message))).toBe(true);
  expect(lab.rx?.output()).toMatch(/points aged out early/);
  return early;
}

/** A receiver whose volume's spool is a 32 MiB ext4 of its own, started and connected. */
async function onSmallSpool(name: string, args: string[], seed: number): Promise<FaultLab> {
  const lab = newLab(name, args, seed);
  mount(mountExt4(path.join(lab.dir, 'spool.ext4'), path.join(lab.dataDir, 'volumes', A, 'spool'), 32));
  lab.volume(A, 4 * MiB);
  await lab.start();
  await lab.connect();
  return lab;
}

describe.skipIf(!isRoot)('redo: the spool is the retention; a spool file system that fills ages out the oldest points early (root)', { timeout: 600_000 }, () => {
  useJournal('redo');

  it('below the floor the oldest points age out before the agent is held; unapplied change sets never do; retained history is not backlog', async () => {
    // A small spool cap: if retained history counted as backlog the agent would be held for good.
    const lab = await onSmallSpool('redo-full-floor', ['--min-free', '8MiB', '--reserve', '0', '--segment-size', '1MiB', '--spool-cap', '4MiB'], 31);
    // Several times the file system's size of history (the window is a day: none is due to go).
    await lab.stream(A, 2500, { tagEvery: 7 });
    expect(lab.refusals, 'history alone never makes the receiver refuse').toEqual([]);
    const first = await expectRetainedExact(lab);
    expect(volumeStatus(lab).unappliedBytes).toBe(0);

    // Apply stopped: what is not applied cannot age out, so the agent is held at the floor.
    const pause = path.join(lab.dataDir, 'volumes', A, 'apply.paused');
    fs.writeFileSync(pause, '');
    const applied = volumeStatus(lab).appliedSeq;
    const streaming = lab.stream(A, 2500, { tagEvery: 7 });
    streaming.catch(() => undefined);
    // Held at the floor, or by the spool cap once the unapplied bytes pass it (whichever comes
    // first depends on how much the last age-out freed): the agent gets a Throttle either way.
    await waitFor('the agent to be held with change sets unapplied', () => (lab.conn?.throttleDelayMs ?? 0) > 0 && volumeStatus(lab).durableSeq > applied, 120_000);
    // The status says so for as long as the agent stays held, also between the cap's two marks.
    await lab.waitForState(A, ['held'], 'the status to say held while the agent is held', 30_000);
    const held = volumeStatus(lab);
    expect(held.agedOutEarly?.oldestRetainedSeq ?? 0).toBeLessThanOrEqual(applied);
    fs.rmSync(pause);
    await streaming;
    expect(lab.refusals).toEqual([]);
    const second = await expectRetainedExact(lab);
    expect(second.times).toBeGreaterThan(first.times);
  });

  it('with no floor, ENOSPC refuses the change set, the oldest points age out and ingest resumes by itself, also after a SIGKILL while full', async () => {
    const lab = await onSmallSpool('redo-full-spool', NO_FLOOR, 32);
    // Nothing is freed by hand: the history itself runs the file system full, more than once.
    await lab.stream(A, 2500, { tagEvery: 7 });
    expect(lab.refusals).toContain('STORAGE_FULL');
    for (const code of lab.refusals) expect(['STORAGE_FULL', 'VOLUME_FAILED']).toContain(code);
    await expectRetainedExact(lab);
    // Killed while the spool is full (apply stopped, so nothing can age out): the restarted
    // receiver ages out once apply runs again, and the stream finishes.
    const pause = path.join(lab.dataDir, 'volumes', A, 'apply.paused');
    fs.writeFileSync(pause, '');
    const streaming = lab.stream(A, 2500, { tagEvery: 7 });
    streaming.catch(() => undefined);
    await lab.waitForState(A, ['full'], 'the volume to run out of room');
    await lab.kill9();
    fs.rmSync(pause);
    await lab.start();
    await streaming;
    if (!lab.conn) await lab.reconnect(A, Date.now() + 60_000);
    await lab.waitForState(A, ['healthy'], 'the volume to be healthy again');
    await expectRetainedExact(lab);
  });
});
