import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ferry } from '../../proto/frames';
import { vhdChecksum } from '../../receiver/vhd';
import { registeredConnection, sendRecords } from '../helpers/agent-session';
import { makeTempDir, ReceiverProcess, runFerry, runFerryAsync, startReceiverProcess, writePassphrase } from '../helpers/receiver-process';
import { prng, randomRecords, sha256, VolumeModel } from '../helpers/volume-model';
import type { ReceiverConnection } from '../../agent/transport/receiver-connection';

const VOLUME = 'vol-a';
const SIZE = 8 * 1024 * 1024;

interface PointsRow {
  id: number;
  volumeId: string;
  seq: number;
  timeUs: number;
  kind: string;
  accuracy: string;
  origin: string;
  exportable: boolean;
}

function listPoints(dataDir: string): PointsRow[] {
  const r = runFerry(['points', '--data', dataDir, '--volume', VOLUME, '--json']);
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as PointsRow[];
}

describe('receiver replication: random overlapping writes, tags, exports', () => {
  const dir = makeTempDir('replication');
  const dataDir = path.join(dir, 'data');
  const { file: passFile, passphrase } = writePassphrase(dir);
  const seed = Number(process.env.FERRY_SEED ?? Date.now() % 100000);
  const rand = prng(seed);
  const model = new VolumeModel(SIZE);
  let rx: ReceiverProcess;
  let conn: ReceiverConnection;
  let seq = 0;
  // Capture times advance 5 ms per record from a fixed start: auto points every ~200 records.
  let clockUs = Date.now() * 1000 - 3600e6;
  const tick = (): number => (clockUs += 5000);
  const tagged: Array<{ pointId: number; seq: number; hash: string }> = [];

  const writeBatches = async (batches: number, tagEvery: number): Promise<void> => {
    for (let b = 0; b < batches; b++) {
      const records = randomRecords(rand, 1 + Math.floor(rand() * 40), SIZE, tick);
      records.forEach((rec, i) => model.add(seq + 1 + i, rec));
      seq = sendRecords(conn, VOLUME, seq + 1, records);
      if (b % tagEvery === tagEvery - 1) {
        const kind = tagged.length % 2 === 0 ? ferry.Tag.Kind.CRASH : ferry.Tag.Kind.APP;
        const [pointId] = await conn.tag({ kind, groupId: `g-${seq}`, timeUs: clockUs, cuts: [{ volumeId: VOLUME, seq, accuracy: ferry.Accuracy.EXACT }] });
        tagged.push({ pointId, seq, hash: sha256(model.imageAt(seq)) });
      }
    }
  };

  beforeAll(async () => {
    rx = await startReceiverProcess(dataDir, passFile);
    ({ conn } = await registeredConnection(rx, passphrase));
    const state = await conn.declareVolume(VOLUME, SIZE, 4096);
    expect(state).toEqual({ durableSeq: 0, appliedSeq: 0 });
  });

  afterAll(async () => {
    await conn?.close();
    await rx?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it(`exports every tagged point byte-exact (seed ${seed})`, async () => {
    await writeBatches(60, 10);
    await conn.waitForProgress(VOLUME, seq, 'appliedSeq');
    const points = listPoints(dataDir);
    for (const t of tagged) {
      const row = points.find((p) => p.id === t.pointId);
      expect(row, `point ${t.pointId}`).toMatchObject({ seq: t.seq, accuracy: 'exact', origin: 'tag' });
      const out = path.join(dir, `point-${t.pointId}.img`);
      const r = runFerry(['export', '--data', dataDir, '--volume', VOLUME, '--point', String(t.pointId), '--out', out]);
      expect(r.status, r.stderr).toBe(0);
      expect(sha256(fs.readFileSync(out)), `point ${t.pointId} at seq ${t.seq}`).toBe(t.hash);
      fs.rmSync(out);
    }
    expect(points.filter((p) => p.origin === 'tag').map((p) => p.kind)).toContain('app');
  });

  it('creates a crash-consistent point at least once per second of write-ordered stream, each exact', () => {
    const auto = listPoints(dataDir).filter((p) => p.origin === 'auto');
    // The stream spans (records * 5 ms); there must be a point for every second of it.
    const streamSeconds = (seq * 5000) / 1e6;
    expect(auto.length).toBeGreaterThanOrEqual(Math.floor(streamSeconds) - 1);
    for (let i = 1; i < auto.length; i++) expect(auto[i].timeUs - auto[i - 1].timeUs).toBeLessThanOrEqual(1_000_000 + 40 * 5000);
    const sample = auto[Math.floor(auto.length / 2)];
    const out = path.join(dir, 'auto.img');
    const r = runFerry(['export', '--data', dataDir, '--volume', VOLUME, '--point', String(sample.id), '--out', out]);
    expect(r.status, r.stderr).toBe(0);
    expect(sha256(fs.readFileSync(out))).toBe(sha256(model.imageAt(sample.seq)));
  });

  it('exports a point while replication keeps writing, and resolves latest and ISO times', async () => {
    const target = tagged[1];
    const out = path.join(dir, 'concurrent.img');
    const exporting = runFerryAsync(['export', '--data', dataDir, '--volume', VOLUME, '--point', String(target.pointId), '--out', out]);
    await writeBatches(30, 10);
    const r = await exporting;
    expect(r.status, r.stderr).toBe(0);
    expect(sha256(fs.readFileSync(out))).toBe(target.hash);
    await conn.waitForProgress(VOLUME, seq, 'appliedSeq');

    const latestTag = tagged[tagged.length - 1];
    const points = listPoints(dataDir);
    const latest = points.reduce((a, b) => (b.seq > a.seq ? b : a));
    const outLatest = path.join(dir, 'latest.img');
    expect(runFerry(['export', '--data', dataDir, '--volume', VOLUME, '--point', 'latest', '--out', outLatest]).status).toBe(0);
    expect(sha256(fs.readFileSync(outLatest))).toBe(sha256(model.imageAt(latest.seq)));

    const atTime = points.find((p) => p.id === latestTag.pointId) as PointsRow;
    const iso = new Date(Math.floor(atTime.timeUs / 1000) + 0.5).toISOString();
    const outTime = path.join(dir, 'time.img');
    const rt = runFerry(['export', '--data', dataDir, '--volume', VOLUME, '--point', iso, '--out', outTime]);
    expect(rt.status, rt.stderr).toBe(0);
    const chosen = points.filter((p) => p.timeUs <= Date.parse(iso) * 1000).reduce((a, b) => (b.timeUs > a.timeUs || (b.timeUs === a.timeUs && b.seq > a.seq) ? b : a));
    expect(sha256(fs.readFileSync(outTime))).toBe(sha256(model.imageAt(chosen.seq)));
  });

  it('writes a fixed VHD whose data equals the raw image and whose footer checks out', () => {
    const t = tagged[0];
    const out = path.join(dir, 'point.vhd');
    const r = runFerry(['export', '--data', dataDir, '--volume', VOLUME, '--point', String(t.pointId), '--out', out, '--format', 'vhd']);
    expect(r.status, r.stderr).toBe(0);
    const vhd = fs.readFileSync(out);
    expect(vhd.length).toBe(SIZE + 512);
    expect(sha256(vhd.subarray(0, SIZE))).toBe(t.hash);
    const footer = vhd.subarray(SIZE);
    expect(footer.subarray(0, 8).toString('ascii')).toBe('conectix');
    expect(footer.readUInt32BE(60)).toBe(2);
    expect(Number(footer.readBigUInt64BE(48))).toBe(SIZE);
    expect(footer.readUInt32BE(64)).toBe(vhdChecksum(footer));
  });

  it('reports RPO and apply lag per volume in receiver status', async () => {
    // The receiver rewrites its status file every second: read it until it has caught up with
    // what was acknowledged.
    let status: { running: boolean; volumes: Array<Record<string, unknown>> } | undefined;
    let vol: Record<string, unknown> | undefined;
    const deadline = Date.now() + 10_000;
    for (;;) {
      const r = await runFerryAsync(['receiver', 'status', '--data', dataDir, '--json']);
      expect(r.status, r.stderr).toBe(0);
      status = JSON.parse(r.stdout) as { running: boolean; volumes: Array<Record<string, unknown>> };
      vol = status.volumes.find((v) => v.volumeId === VOLUME);
      if (vol?.durableSeq === seq || Date.now() > deadline) break;
    }
    expect(status.running).toBe(true);
    expect(vol).toMatchObject({ connected: true, durableSeq: seq });
    expect(typeof vol?.rpoSeconds).toBe('number');
    expect(typeof vol?.applyLagSeconds).toBe('number');
  });
});
