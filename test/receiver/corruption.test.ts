/**
 * Damage at rest: bytes flipped in each kind of file of a stopped receiver (spool middle and
 * tail, undo journal, checkpoint slots, catalog rows, replica blocks). After a restart the
 * damage is reported with its file and offset, no export writes a wrong image (it is exact or
 * it refuses with exit 8), `ferry receiver verify` finds it, the other volume keeps running,
 * and the repair path (a RepairRequest answered by the agent) makes later points exact again.
 *
 * The journal-specific cases run under the journal they are about (a damaged undo record; a
 * damaged retained spool record under redo); the replica case runs under both journals, with the
 * flipped block outside any retained version (under redo a block whose newest version is still
 * retained is never read from the replica, so the damage is placed where both journals read it).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { FaultLab, flipByte, segmentFiles, segmentRecords } from '../helpers/fault-lab';
import { makeTempDir, runFerry } from '../helpers/receiver-process';
import { randomRecords } from '../helpers/volume-model';
import { JOURNALS, useJournal } from '../helpers/journal';

const A = 'vol-a';
const B = 'vol-b';
const SIZE = 4 * 1024 * 1024;
const SEGMENT_ARGS = ['--segment-size', '128KiB'];
/** A receiver started with these ages out every point at start-up (and not again while it runs). */
/** How an export names damaged replica blocks (undo: "... do not match their checksums"; redo: "... does not match its checksum"). */
const REPLICA_MISMATCH = /do(es)? not match (their|its) checksums?/;
const AGE_OUT_ALL = ['--retention', '1ms', '--retention-interval', '1h'];

const dirs: string[] = [];
const labs: FaultLab[] = [];
afterAll(async () => {
  for (const lab of labs) await lab.stop().catch(() => undefined);
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function newLab(name: string, seed: number): FaultLab {
  const dir = makeTempDir(name);
  dirs.push(dir);
  const lab = new FaultLab(dir, SEGMENT_ARGS, seed);
  labs.push(lab);
  return lab;
}

/** A lab with volume A started and connected, 30 change sets applied behind point p1. */
async function labWithPoint(name: string, seed: number): Promise<{ lab: FaultLab; p1: { pointId: number; seq: number } }> {
  const lab = newLab(name, seed);
  lab.volume(A, SIZE);
  await lab.start();
  await lab.connect();
  lab.sendRandom(A, 30);
  const p1 = await lab.tag(A);
  await lab.waitApplied(A);
  return { lab, p1 };
}

function spoolSeqs(meta: Buffer): { first: number; last: number } {
  return { first: Number(meta.readBigUInt64LE(0)), last: Number(meta.readBigUInt64LE(8)) };
}

/** Every spool record of a volume with its file. */
function spoolRecords(lab: FaultLab, volumeId: string): Array<{ file: string; offset: number; bodyOffset: number; bodyLength: number; first: number; last: number }> {
  return segmentFiles(path.join(lab.dataDir, 'volumes', volumeId, 'spool'), 'seg').flatMap((file) =>
    segmentRecords(file, 16).map((r) => ({ file, offset: r.offset, bodyOffset: r.bodyOffset, bodyLength: r.bodyLength, ...spoolSeqs(r.meta) })),
  );
}

async function expectExact(lab: FaultLab, volumeId: string, point: { pointId: number; seq: number }): Promise<void> {
  const r = await lab.exportPoint(volumeId, point.pointId);
  expect(r.status, `export of point ${point.pointId}: ${r.stderr}`).toBe(0);
  expect(r.sha, `point ${point.pointId} at seq ${point.seq}`).toBe(lab.expectedSha(volumeId, point.seq));
}

async function expectRefused(lab: FaultLab, volumeId: string, point: number | string, mention: RegExp): Promise<void> {
  const r = await lab.exportPoint(volumeId, point);
  expect(r.status, `export of point ${point} must refuse: ${r.stdout}`).toBe(8);
  expect(r.stderr).toMatch(mention);
  expect(r.stderr).not.toMatch(/\n\s+at /); // one line, no stack trace
  expect(fs.readdirSync(lab.dir).filter((n) => n.includes('.partial-'))).toEqual([]);
}

describe('damage at rest is found, reported and never exported as a good image', () => {
  it('spool: a damaged change set in the middle is reported, apply goes on after it, points that need it refuse, a repair heals it, the other volume runs on', async () => {
    const lab = newLab('corrupt-spool', 11);
    lab.volume(A, SIZE);
    lab.volume(B, SIZE);
    await lab.start();
    await lab.connect();
    lab.sendRandom(A, 40);
    const p1 = await lab.tag(A);
    await lab.waitApplied(A);
    // Hold apply so the next change sets stay in the spool, unapplied, when the damage comes.
    fs.writeFileSync(path.join(lab.dataDir, 'volumes', A, 'apply.paused'), '');
    const held = lab.volumes.get(A)?.seq ?? 0;
    lab.sendRandom(A, 60);
    const p2 = await lab.tag(A);
    lab.sendRandom(A, 60);
    const p3 = await lab.tag(A);
    await lab.waitDurable(A);
    lab.sendRandom(B, 30);
    await lab.waitApplied(B);
    await lab.stop();

    const victim = spoolRecords(lab, A).find((r) => r.first > held + 5 && r.last < p2.seq);
    expect(victim, 'a spooled, unapplied change set before point 2').toBeDefined();
    if (!victim) return;
    flipByte(victim.file, victim.bodyOffset + Math.floor(victim.bodyLength / 2));
    const verifyBefore = lab.verify(A);
    expect(verifyBefore.status).toBe(8);
    expect(verifyBefore.report.volumes[0].damage).toContainEqual(expect.objectContaining({ kind: 'spool', file: victim.file, offset: victim.offset, seqFrom: victim.first, seqTo: victim.last }));

    fs.rmSync(path.join(lab.dataDir, 'volumes', A, 'apply.paused'));
    const rx = await lab.start();
    const durable = await lab.connect();
    // Nothing acknowledged went backwards: the damaged record's seqs are known from its header.
    expect(durable.get(A)).toBe(p3.seq);
    const repair = await lab.repairRequest(A);
    expect(repair.ranges ?? []).toEqual([]); // lost writes could be anywhere: the whole volume
    await lab.waitApplied(A, p3.seq);
    expect(rx.output().split('\n').some((l) => l.includes('damage found') && l.includes(victim.file) && l.includes(`"offset":${victim.offset}`))).toBe(true);

    await expectExact(lab, A, p1);
    await expectRefused(lab, A, p2.pointId, /lost to damage/);
    await expectRefused(lab, A, p3.pointId, /lost to damage/);
    const status = lab.status();
    const a = status.volumes.find((v) => v.volumeId === A);
    expect(a?.state).toBe('damaged');
    expect(a?.damage.some((d) => d.file === victim.file && d.seqFrom === victim.first)).toBe(true);
    expect(status.volumes.find((v) => v.volumeId === B)?.state).toBe('healthy');

    // The other volume never stopped.
    lab.sendRandom(B, 20);
    const pb = await lab.tag(B);
    await lab.waitApplied(B);
    await expectExact(lab, B, pb);

    // The agent answers the repair with the source's blocks: later points are exact again.
    const through = lab.answerRepair(repair);
    await lab.waitApplied(A, through);
    const p4 = await lab.tag(A);
    await lab.waitApplied(A);
    await expectExact(lab, A, p4);
    await expectRefused(lab, A, p3.pointId, /lost to damage/);
    // The status file catches up with the repair's end on its next write.
    await lab.waitForState(A, ['healthy'], 'the repaired volume to be healthy', 30_000);
    await lab.stop();
  });

  it('spool: a damaged last change set is reported as damage (not dropped as a torn tail) and the durable seq does not go back', async () => {
    const { lab, p1 } = await labWithPoint('corrupt-tail', 12);
    fs.writeFileSync(path.join(lab.dataDir, 'volumes', A, 'apply.paused'), '');
    lab.sendRandom(A, 30);
    const last = await lab.waitDurable(A);
    await lab.stop();
    const records = spoolRecords(lab, A);
    const tail = records[records.length - 1];
    flipByte(tail.file, tail.bodyOffset + 10);
    fs.rmSync(path.join(lab.dataDir, 'volumes', A, 'apply.paused'));
    const rx = await lab.start();
    const durable = await lab.connect();
    expect(durable.get(A)).toBe(last);
    await lab.repairRequest(A);
    expect(rx.output()).toMatch(/damage found/);
    await lab.waitApplied(A, last);
    await expectExact(lab, A, p1);
    await lab.stop();
  });

  it('spool: bytes after the last change set that never reached the disk (a crash after a failed write) ask no repair once the seqs go on after them, and a restart does not report them again', async () => {
    const { lab, p1 } = await labWithPoint('corrupt-unwritten', 13);
    const last = await lab.waitDurable(A);
    await lab.stop();
    // What a disk that failed the append's writes leaves in the file's new blocks: old bytes,
    // not zeroes (so not a torn tail), and no valid record.
    const records = spoolRecords(lab, A);
    const tail = records[records.length - 1];
    const garbage = Buffer.alloc(96 * 1024);
    for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 131 + 7) & 0xff || 1;
    fs.appendFileSync(tail.file, garbage);
    const rx = await lab.start();
    const durable = await lab.connect();
    expect(durable.get(A)).toBe(last);
    expect(rx.output()).toMatch(/damage found/);
    // The agent's next change sets go on from the durable seq: nothing was lost in those bytes.
    lab.sendRandom(A, 20);
    const p2 = await lab.tag(A);
    await lab.waitApplied(A);
    await lab.waitForState(A, ['healthy'], 'the volume to be healthy once apply crossed the bytes', 30_000);
    expect(lab.repairRequests).toEqual([]);
    expect(rx.output()).toMatch(/spool damage held nothing the replica needs/);
    const resolved = lab.status().volumes.find((v) => v.volumeId === A);
    expect(resolved?.damage).toEqual([]);
    await expectExact(lab, A, p1);
    await expectExact(lab, A, p2);
    // A restart reads the same bytes again: known and resolved, not damage again.
    await lab.stop();
    const again = await lab.start();
    await lab.connect();
    expect(again.output()).not.toMatch(/damage found/);
    expect(lab.status().volumes.find((v) => v.volumeId === A)?.state).toBe('healthy');
    expect(lab.repairRequests).toEqual([]);
    await expectExact(lab, A, p2);
    await lab.stop();
  });

  it('spool: damage that appears while the receiver runs is found when apply reads it; the volume is opened again and goes on after it', async () => {
    const lab = newLab('corrupt-live', 17);
    lab.volume(A, SIZE);
    await lab.start();
    await lab.connect();
    lab.sendRandom(A, 20);
    const p1 = await lab.tag(A);
    await lab.waitApplied(A);
    const pause = path.join(lab.dataDir, 'volumes', A, 'apply.paused');
    fs.writeFileSync(pause, '');
    const held = lab.volumes.get(A)?.seq ?? 0;
    lab.sendRandom(A, 60);
    await lab.waitDurable(A);
    // Restart, so that apply reads the change sets from the spool (not from memory), and damage
    // one after the receiver has opened and checked the spool.
    await lab.stop();
    await lab.start();
    await lab.connect();
    const victim = spoolRecords(lab, A).find((r) => r.first > held + 5);
    expect(victim).toBeDefined();
    if (!victim) return;
    flipByte(victim.file, victim.bodyOffset + 3);
    fs.rmSync(pause);
    // Apply trips over it, the volume is opened again, the damage reported and skipped.
    const repair = await lab.repairRequest(A).catch(async () => {
      await lab.connect();
      return lab.repairRequest(A);
    });
    expect(repair.ranges ?? []).toEqual([]);
    if (lab.conn?.error) await lab.connect();
    await lab.waitApplied(A);
    expect(lab.rx?.output()).toMatch(/volume opened again after damage appeared/);
    await expectExact(lab, A, p1);
    await lab.stop();
  });

  it('checkpoint: with both slots damaged the applied seq is recovered from journal and spool, and every point still exports exact', async () => {
    const lab = newLab('corrupt-checkpoint', 14);
    lab.volume(A, SIZE);
    await lab.start();
    await lab.connect();
    const points: Array<{ pointId: number; seq: number }> = [];
    for (let i = 0; i < 5; i++) {
      lab.sendRandom(A, 30);
      points.push(await lab.tag(A));
    }
    await lab.waitApplied(A);
    // Some change sets stay unapplied, so recovery has both undo and redo to do.
    fs.writeFileSync(path.join(lab.dataDir, 'volumes', A, 'apply.paused'), '');
    lab.sendRandom(A, 40);
    points.push(await lab.tag(A));
    await lab.waitDurable(A);
    await lab.kill9();
    const cp = path.join(lab.dataDir, 'volumes', A, 'checkpoint');
    flipByte(cp, 9);
    flipByte(cp, 512 + 9);
    const before = lab.verify(A);
    expect(before.status).toBe(8);
    expect(before.report.volumes[0].damage.filter((d) => d.kind === 'checkpoint')).toHaveLength(2);

    fs.rmSync(path.join(lab.dataDir, 'volumes', A, 'apply.paused'));
    const rx = await lab.start();
    const durable = await lab.connect();
    expect(durable.get(A)).toBe(lab.volumes.get(A)?.seq);
    await lab.waitApplied(A);
    expect(rx.output()).toMatch(/both checkpoint slots are damaged; the applied seq was recovered/);
    for (const p of points) await expectExact(lab, A, p);
    await lab.stop();
    expect(lab.verify(A).status).toBe(0);
  });

  it('catalog: a point whose row fails its checksum is shown damaged and never exported; latest skips it', async () => {
    const lab = newLab('corrupt-catalog', 15);
    lab.volume(A, SIZE);
    await lab.start();
    await lab.connect();
    lab.sendRandom(A, 20);
    const p1 = await lab.tag(A);
    lab.sendRandom(A, 20);
    const p2 = await lab.tag(A);
    lab.sendRandom(A, 20);
    const p3 = await lab.tag(A);
    await lab.waitApplied(A);
    await lab.stop();
    // A flipped bit in the stored seq of p3 (what moves a point), written the way a bad
    // sector would: behind SQLite's back, the row's checksum unchanged.
    const db = new Database(path.join(lab.dataDir, 'catalog.db'));
    db.prepare('UPDATE points SET seq = seq + 4 WHERE id = ?').run(p3.pointId);
    db.close();
    const listed = JSON.parse(runFerry(['points', '--data', lab.dataDir, '--volume', A, '--json']).stdout) as Array<{ id: number; damaged?: string }>;
    expect(listed.find((p) => p.id === p3.pointId)?.damaged).toMatch(/fails its checksum/);
    expect(listed.find((p) => p.id === p2.pointId)?.damaged).toBeUndefined();
    await expectRefused(lab, A, p3.pointId, /fails its checksum/);
    const latest = await lab.exportPoint(A, 'latest');
    expect(latest.status).toBe(0);
    expect(latest.sha).toBe(lab.expectedSha(A, p2.seq));
    await expectExact(lab, A, p1);
    const v = lab.verify();
    expect(v.status).toBe(8);
    expect(v.report.catalog.damage.some((d) => /point .* fails its checksum/.test(d.detail))).toBe(true);
    // The receiver starts and goes on with the volume.
    await lab.start();
    await lab.connect();
    lab.sendRandom(A, 5);
    const p4 = await lab.tag(A);
    await lab.waitApplied(A);
    await expectExact(lab, A, p4);
    await lab.stop();
  });
});

/** A volume streamed with eight points, applied, and the receiver stopped (its files at rest). */
async function eightPointsStopped(name: string, seed: number): Promise<{ lab: FaultLab; points: Array<{ pointId: number; seq: number }> }> {
  const lab = newLab(name, seed);
  lab.volume(A, SIZE);
  await lab.start();
  await lab.connect();
  const points: Array<{ pointId: number; seq: number }> = [];
  for (let i = 0; i < 8; i++) {
    lab.sendRandom(A, 25);
    points.push(await lab.tag(A));
  }
  await lab.waitApplied(A);
  await lab.stop();
  return { lab, points };
}

describe('undo journal: damage in the journal', () => {
  useJournal('undo');
  it('journal: points that need a damaged undo record refuse to export, newer points export exact', async () => {
    const { lab, points } = await eightPointsStopped('corrupt-journal', 13);
    const journalDir = path.join(lab.dataDir, 'volumes', A, 'journal');
    const records = segmentFiles(journalDir, 'jnl').flatMap((file) => segmentRecords(file, 24).map((r) => ({ ...r, file, seq: Number(r.meta.readBigUInt64LE(0)) })));
    const withData = records.filter((r) => r.bodyLength > 4096 && r.seq > points[2].seq && r.seq <= points[4].seq);
    expect(withData.length).toBeGreaterThan(0);
    const victim = withData[0];
    flipByte(victim.file, victim.bodyOffset + victim.bodyLength - 7);
    const v = lab.verify(A);
    expect(v.status).toBe(8);
    expect(v.report.volumes[0].damage).toContainEqual(expect.objectContaining({ kind: 'journal', file: victim.file, offset: victim.offset, seqFrom: victim.seq }));

    await lab.start();
    await lab.connect();
    for (const p of points) {
      if (p.seq < victim.seq) await expectRefused(lab, A, p.pointId, new RegExp(`damaged undo journal.*${path.basename(victim.file)}`));
      else await expectExact(lab, A, p);
    }
    // Replication goes on: a new point exports exact.
    lab.sendRandom(A, 10);
    const fresh = await lab.tag(A);
    await lab.waitApplied(A);
    await expectExact(lab, A, fresh);
    await lab.stop();
  });
});

describe('redo journal: damage in a retained spool record', () => {
  useJournal('redo');

  it('a flipped byte in a retained (applied) change set is found by verify, points that show its versions refuse naming the file, the receiver asks the agent, later points are exact', async () => {
    const { lab, points } = await eightPointsStopped('corrupt-retained', 14);
    // Under redo the applied change sets stay in the spool: they are the retention.
    const victim = spoolRecords(lab, A).find((r) => r.first > points[2].seq && r.last <= points[4].seq && r.bodyLength > 4096);
    expect(victim, 'a retained change set between points 2 and 4').toBeDefined();
    if (!victim) return;
    flipByte(victim.file, victim.bodyOffset + Math.floor(victim.bodyLength / 2));
    const v = lab.verify(A);
    expect(v.status).toBe(8);
    expect(v.report.volumes[0].damage).toContainEqual(expect.objectContaining({ kind: 'spool', file: victim.file, offset: victim.offset }));

    const rx = await lab.start();
    await lab.connect();
    // Points before the damaged change set do not need it.
    for (const p of points.filter((x) => x.seq < victim.first)) await expectExact(lab, A, p);
    // The first point after it shows its versions: refused, naming the file; none is exported wrong.
    const after = points.filter((x) => x.seq >= victim.last);
    await expectRefused(lab, A, after[0].pointId, new RegExp(path.basename(victim.file)));
    for (const p of after.slice(1)) {
      const r = await lab.exportPoint(A, p.pointId);
      if (r.status === 0) expect(r.sha, `point ${p.pointId}`).toBe(lab.expectedSha(A, p.seq));
      else await expectRefused(lab, A, p.pointId, new RegExp(path.basename(victim.file)));
    }
    // The receiver asks the agent to send the volume again where it differs; later points are exact.
    const repair = await lab.repairRequest(A);
    const through = lab.answerRepair(repair);
    await lab.waitApplied(A, through);
    const fresh = await lab.tag(A);
    await lab.waitApplied(A);
    await expectExact(lab, A, fresh);
    expect(rx.output()).toMatch(/repair requested from the agent/);
    await lab.stop();
  });
});

describe.each(JOURNALS)('replica damage (%s journal)', (journal) => {
  useJournal(journal);

  it('replica: a flipped byte is found by verify and by export, the receiver asks the agent to repair it, and later points are exact', async () => {
    const lab = newLab('corrupt-replica', 16);
    const big = 8 * 1024 * 1024;
    lab.volume(A, big);
    await lab.start();
    await lab.connect();
    const marker = 6 * 1024 * 1024;
    lab.send(A, [{ kind: 'write', offset: marker, length: 65536, captureTimeUs: lab.nextTimeUs(), data: Buffer.alloc(65536, 0x5a) }]);
    // Random writes stay in the first half: the marker block is written once.
    lab.send(A, randomRecords(lab.rand, 30, 4 * 1024 * 1024, () => lab.nextTimeUs()));
    await lab.waitApplied(A);
    await lab.stop();
    // Retention ages out everything so far (redo: the replica is advanced to hold the marker,
    // no retained version covers it), then a point is cut there.
    await lab.start(AGE_OUT_ALL);
    await lab.connect();
    const p1 = await lab.tag(A);
    await lab.waitApplied(A);
    await lab.stop();
    const damagedAt = marker + 3 * 4096 + 100;
    flipByte(path.join(lab.dataDir, 'volumes', A, 'replica.img'), damagedAt);
    await expectRefused(lab, A, p1.pointId, REPLICA_MISMATCH);

    const rx = await lab.start();
    await lab.connect();
    const v = lab.verify(A);
    expect(v.status).toBe(8);
    const found = v.report.volumes[0].damage.find((d) => d.kind === 'replica');
    expect(found?.volumeOffset).toBe(marker + 3 * 4096);
    // verify recorded it; the running receiver asks the agent for those blocks.
    const repair = await lab.repairRequest(A);
    expect((repair.ranges ?? []).map((r) => Number(r.offset))).toContain(marker + 3 * 4096);
    const through = lab.answerRepair(repair);
    await lab.waitApplied(A, through);
    const p2 = await lab.tag(A);
    await lab.waitApplied(A);
    await expectExact(lab, A, p2);
    // The old point needed the damaged bytes as they were: its history there is lost.
    await expectRefused(lab, A, p1.pointId, REPLICA_MISMATCH);
    // Undo rewrote the replica block at the repair; redo keeps the repair's version in the
    // spool and the damaged block in the replica until the base passes the repair.
    if (journal === 'undo') expect(lab.verify(A).status).toBe(0);
    expect(rx.output()).toMatch(/repair requested from the agent/);
    await lab.stop();
    // Once retention ages out the points before the repair, nothing damaged is left.
    await lab.start(AGE_OUT_ALL);
    await lab.stop();
    const clean = lab.verify(A);
    expect(clean.status, JSON.stringify(clean.report)).toBe(0);
  });
});
