import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ferry } from '../../proto/frames';
import type { ChangeRecord } from '../../agent/transport/change-set';
import { loggedInConnection, registeredConnection, sendRecords } from '../helpers/agent-session';
import { makeTempDir, runFerry, startReceiverProcess, writePassphrase } from '../helpers/receiver-process';
import { prng, sha256, VolumeModel } from '../helpers/volume-model';
import { JOURNALS, useJournal } from '../helpers/journal';
import { waitFor } from '../helpers/agent-lab';

const VOLUME = 'ret-vol';
const SIZE = 2 * 1024 * 1024;
const ARGS = ['--retention', '1h', '--segment-size', '256KiB'];

/** The files that hold a volume's history: undo journal segments, or (redo) the retained spool segments. */
function historyFiles(dataDir: string, journal: string): string[] {
  const dir = path.join(dataDir, 'volumes', VOLUME, journal === 'undo' ? 'journal' : 'spool');
  return fs.readdirSync(dir).filter((n) => n.endsWith(journal === 'undo' ? '.jnl' : '.seg'));
}

describe.each(JOURNALS)('retention (%s journal)', (journal) => {
  useJournal(journal);
  const dir = makeTempDir(`retention-${journal}`);
  const dataDir = path.join(dir, 'data');
  const { file: passFile, passphrase } = writePassphrase(dir);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('prunes points and the history older than the window (journal segments, or the spool segments the redo base passed); points inside it still export exactly', async () => {
    const rand = prng(7);
    const model = new VolumeModel(SIZE);
    let seq = 0;
    const points: Array<{ id: number; seq: number; old: boolean }> = [];
    let rx = await startReceiverProcess(dataDir, passFile, ARGS);
    const { conn, agentId, credential } = await registeredConnection(rx, passphrase);
    await conn.declareVolume(VOLUME, SIZE, 4096);

    const phase = async (startUs: number, old: boolean): Promise<void> => {
      let t = startUs;
      for (let batch = 0; batch < 12; batch++) {
        const records: ChangeRecord[] = [];
        for (let i = 0; i < 8; i++) {
          const offset = Math.floor(rand() * (SIZE / 65536)) * 65536;
          // Incompressible data: the journal stores old data lz4-compressed when that shrinks it.
          const data = Buffer.alloc(65536);
          for (let k = 0; k < data.length; k += 4) data.writeUInt32LE(Math.floor(rand() * 2 ** 32), k);
          records.push({ kind: 'write', offset, length: 65536, captureTimeUs: (t += 1000), data });
        }
        records.forEach((r, i) => model.add(seq + 1 + i, r));
        seq = sendRecords(conn, VOLUME, seq + 1, records);
        if (batch % 3 === 2) {
          const [id] = await conn.tag({ kind: ferry.Tag.Kind.CRASH, groupId: `p${seq}`, timeUs: t, cuts: [{ volumeId: VOLUME, seq, accuracy: ferry.Accuracy.EXACT }] });
          points.push({ id, seq, old });
        }
      }
    };
    await phase(Date.now() * 1000 - 3 * 3600e6, true);
    await phase(Date.now() * 1000 - 60e6, false);
    await conn.waitForProgress(VOLUME, seq, 'appliedSeq');
    await conn.close();
    await rx.stop();
    if (journal === 'redo') expect(fs.existsSync(path.join(dataDir, 'volumes', VOLUME, 'journal'))).toBe(false);
    const segmentsBefore = historyFiles(dataDir, journal).length;
    expect(segmentsBefore).toBeGreaterThan(2);

    // Retention runs at start-up (and then periodically).
    rx = await startReceiverProcess(dataDir, passFile, ARGS);
    try {
      const listed = JSON.parse(runFerry(['points', '--data', dataDir, '--volume', VOLUME, '--json']).stdout) as Array<{ id: number; origin: string }>;
      const tagIds = listed.filter((p) => p.origin === 'tag').map((p) => p.id);
      expect(tagIds).toEqual(points.filter((p) => !p.old).map((p) => p.id));
      // Segment files are deleted in the background once nothing needs them.
      await waitFor('the aged-out history to be deleted', () => historyFiles(dataDir, journal).length < segmentsBefore);

      for (const p of points.filter((x) => !x.old)) {
        const out = path.join(dir, `p${p.id}.img`);
        const r = runFerry(['export', '--data', dataDir, '--volume', VOLUME, '--point', String(p.id), '--out', out]);
        expect(r.status, r.stderr).toBe(0);
        expect(sha256(fs.readFileSync(out)), `point ${p.id}`).toBe(sha256(model.imageAt(p.seq)));
      }
      const gone = points.find((p) => p.old) as { id: number };
      const r = runFerry(['export', '--data', dataDir, '--volume', VOLUME, '--point', String(gone.id), '--out', path.join(dir, 'gone.img')]);
      expect(r.status).toBe(3);
      expect(r.stderr).toMatch(/has no point/);

      // Replication goes on after pruning.
      const again = await loggedInConnection(rx, agentId, credential);
      await again.declareVolume(VOLUME, SIZE, 4096);
      const last = sendRecords(again, VOLUME, seq + 1, [{ kind: 'write', offset: 0, length: 4096, captureTimeUs: Date.now() * 1000, data: Buffer.alloc(4096, 9) }]);
      await again.waitForProgress(VOLUME, last, 'appliedSeq');
      await again.close();
    } finally {
      await rx.stop();
    }
  });
});
