import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ferry } from '../../proto/frames';
import type { ReceiverConnection } from '../../agent/transport/receiver-connection';
import type { ChangeRecord } from '../../agent/transport/change-set';
import { loggedInConnection, registeredConnection, sendRecords } from '../helpers/agent-session';
import { makeTempDir, ReceiverProcess, runFerry, startReceiverProcess, writePassphrase } from '../helpers/receiver-process';
import { prng, randomRecords, sha256, VolumeModel } from '../helpers/volume-model';

const VOLUME = 'crash-vol';
const SIZE = 16 * 1024 * 1024;
const TRIALS = Number(process.env.FERRY_CRASH_TRIALS ?? 12);

describe('receiver killed with SIGKILL during ingest and apply', () => {
  const dir = makeTempDir('crash');
  const dataDir = path.join(dir, 'data');
  const { file: passFile, passphrase } = writePassphrase(dir);
  const seed = Number(process.env.FERRY_SEED ?? Date.now() % 100000);
  const rand = prng(seed);
  const model = new VolumeModel(SIZE);
  const sent = new Map<number, ChangeRecord>();
  const ackedPoints: Array<{ pointId: number; seq: number }> = [];
  let seq = 0;
  let lastAcked = 0;
  let rollForwards = 0;
  let rolledBackRecords = 0;
  let clockUs = Date.now() * 1000 - 600e6;

  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** Sends the records the receiver does not have durably, as the agent would after a restart. */
  const resendFrom = (conn: ReceiverConnection, durable: number): void => {
    // Sometimes start a few seqs early: a replay of durable seqs must be harmless.
    let next = Math.max(1, durable + 1 - (rand() < 0.5 ? Math.floor(rand() * 5) : 0));
    while (next <= seq) {
      const batch: ChangeRecord[] = [];
      for (let s = next; s <= seq && batch.length < 25; s++) batch.push(sent.get(s) as ChangeRecord);
      next = sendRecords(conn, VOLUME, next, batch) + 1;
    }
  };

  const sendNew = (conn: ReceiverConnection, batches: number): Promise<unknown>[] => {
    const tags: Promise<unknown>[] = [];
    for (let b = 0; b < batches; b++) {
      const records = randomRecords(rand, 1 + Math.floor(rand() * 30), SIZE, () => (clockUs += 3000));
      records.forEach((rec, i) => {
        model.add(seq + 1 + i, rec);
        sent.set(seq + 1 + i, rec);
      });
      seq = sendRecords(conn, VOLUME, seq + 1, records);
      if (rand() < 0.25) {
        const cut = seq;
        tags.push(
          conn
            .tag({ kind: ferry.Tag.Kind.CRASH, groupId: `t-${cut}`, timeUs: clockUs, cuts: [{ volumeId: VOLUME, seq: cut, accuracy: ferry.Accuracy.EXACT }] })
            .then(([pointId]) => ackedPoints.push({ pointId, seq: cut }))
            .catch(() => undefined),
        );
      }
    }
    return tags;
  };

  it(`keeps every acknowledged seq and point across ${TRIALS} kills (seed ${seed})`, async () => {
    let credentials: { agentId: string; credential: Buffer } | undefined;
    for (let trial = 0; trial < TRIALS; trial++) {
      const rx: ReceiverProcess = await startReceiverProcess(dataDir, passFile, ['--segment-size', '1MiB'], { FERRY_LOG_LEVEL: 'info' });
      let conn: ReceiverConnection;
      if (!credentials) {
        const r = await registeredConnection(rx, passphrase);
        conn = r.conn;
        credentials = { agentId: r.agentId, credential: r.credential };
      } else {
        conn = await loggedInConnection(rx, credentials.agentId, credentials.credential);
      }
      const pointsBefore = ackedPoints.length;
      const state = await conn.declareVolume(VOLUME, SIZE, 4096);
      // Invariant 1: nothing acknowledged before the kill is lost.
      expect(state.durableSeq, `trial ${trial}: durable seq after restart`).toBeGreaterThanOrEqual(lastAcked);
      resendFrom(conn, state.durableSeq);

      // Kill at a random moment: right away, after some acks, or while apply lags behind ingest.
      const mode = trial % 3;
      const tags = sendNew(conn, 5 + Math.floor(rand() * 30));
      if (mode === 1) await conn.waitForProgress(VOLUME, Math.max(1, seq - Math.floor(rand() * 50)), 'durableSeq').catch(() => undefined);
      if (mode === 2) await conn.waitForProgress(VOLUME, Math.floor(seq / 2), 'appliedSeq').catch(() => undefined);
      const acked = conn.volumeProgress(VOLUME)?.durableSeq ?? 0;
      await rx.kill9();
      await Promise.all(tags);
      lastAcked = acked;
      for (const m of rx.output().matchAll(/^.*"volume recovered".*$/gm)) {
        const line = m[0];
        const durable = Number(/"durableSeq":(\d+)/.exec(line)?.[1]);
        const checkpoint = Number(/"checkpointSeq":(\d+)/.exec(line)?.[1]);
        if (durable > checkpoint) rollForwards++;
        rolledBackRecords += Number(/"rolledBackRecords":(\d+)/.exec(line)?.[1] ?? 0);
      }
      expect(ackedPoints.length).toBeGreaterThanOrEqual(pointsBefore);
    }

    // Final run: everything still owed is sent, applied, and every acknowledged point exports exact.
    // The session sends no heartbeats while every point is exported (minutes on a busy machine):
    // a long idle bound keeps the receiver from closing it meanwhile.
    const rx = await startReceiverProcess(dataDir, passFile, ['--segment-size', '1MiB', '--idle-timeout', '1h'], { FERRY_LOG_LEVEL: 'info' });
    try {
      const conn = await loggedInConnection(rx, credentials?.agentId ?? '', credentials?.credential ?? Buffer.alloc(0));
      const state = await conn.declareVolume(VOLUME, SIZE, 4096);
      expect(state.durableSeq).toBeGreaterThanOrEqual(lastAcked);
      // The kills must have hit an apply in progress, or this test proves little.
      expect(rollForwards, `roll-forwards seen (rolled back ${rolledBackRecords} undo records)`).toBeGreaterThan(0);
      resendFrom(conn, state.durableSeq);
      await conn.waitForProgress(VOLUME, seq, 'appliedSeq');
      const points = JSON.parse(runFerry(['points', '--data', dataDir, '--volume', VOLUME, '--json']).stdout) as Array<{ id: number; seq: number }>;
      expect(ackedPoints.length).toBeGreaterThan(0);
      for (const p of ackedPoints) {
        expect(points.find((row) => row.id === p.pointId), `acked point ${p.pointId}`).toMatchObject({ seq: p.seq });
        const out = path.join(dir, 'p.img');
        const r = runFerry(['export', '--data', dataDir, '--volume', VOLUME, '--point', String(p.pointId), '--out', out]);
        expect(r.status, r.stderr).toBe(0);
        expect(sha256(fs.readFileSync(out)), `point ${p.pointId} at seq ${p.seq}`).toBe(sha256(model.imageAt(p.seq)));
      }
      // The replica itself equals the source after the last seq.
      const latest = path.join(dir, 'final.img');
      await conn.tag({ kind: ferry.Tag.Kind.CRASH, groupId: 'final', timeUs: clockUs + 1, cuts: [{ volumeId: VOLUME, seq, accuracy: ferry.Accuracy.EXACT }] });
      await conn.waitForProgress(VOLUME, seq, 'appliedSeq');
      expect(runFerry(['export', '--data', dataDir, '--volume', VOLUME, '--point', 'latest', '--out', latest]).status).toBe(0);
      expect(sha256(fs.readFileSync(latest))).toBe(sha256(model.imageAt(seq)));
      await conn.close();
    } finally {
      await rx.stop();
    }
  });
});
