/**
 * What a broken or hostile agent declares cannot leave the receiver in a state it cannot start
 * from or that loses later writes: a new volume's stream starts at seq 1, and a volume the
 * receiver's file system cannot hold is refused before anything of it is stored.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ConnectionError, ReceiverConnection } from '../../agent/transport/receiver-connection';
import { buildChangeSet } from '../../agent/transport/change-set';
import { Limits } from '../../proto/limits';
import { loggedInConnection, registeredConnection, sendRecords } from '../helpers/agent-session';
import { makeTempDir, ReceiverProcess, runFerry, startReceiverProcess, writePassphrase } from '../helpers/receiver-process';
import { sha256 } from '../helpers/volume-model';

const SIZE = 1024 * 1024;

async function refusal(conn: ReceiverConnection): Promise<ConnectionError> {
  try {
    await conn.waitFor(() => undefined, 20_000, 'the refusal');
  } catch (err) {
    return err as ConnectionError;
  }
  throw new Error('not refused');
}

describe('declarations that would hurt later are refused and leave nothing behind', () => {
  const dir = makeTempDir('declare');
  const dataDir = path.join(dir, 'data');
  const { file: passFile, passphrase } = writePassphrase(dir);
  let rx: ReceiverProcess | undefined;
  afterAll(async () => {
    await rx?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a new volume whose first change set is not at seq 1 is refused (SEQ_GAP), and real writes from seq 1 are stored', async () => {
    rx = await startReceiverProcess(dataDir, passFile);
    const { conn, agentId, credential } = await registeredConnection(rx, passphrase);
    await conn.declareVolume('fresh', SIZE, 4096);
    conn.send({ changeSet: buildChangeSet('fresh', Limits.maxSeq, [{ kind: 'write', offset: 0, length: 4096, captureTimeUs: Date.now() * 1000, data: Buffer.alloc(4096, 9) }], 'exact') });
    const err = await refusal(conn);
    expect(err.code, err.message).toBe('SEQ_GAP');
    expect(err.message).toMatch(/a new volume's stream starts at seq 1/);

    const again = await loggedInConnection(rx, agentId, credential);
    expect((await again.declareVolume('fresh', SIZE, 4096)).durableSeq).toBe(0);
    const last = sendRecords(again, 'fresh', 1, [{ kind: 'write', offset: 8192, length: 4096, captureTimeUs: Date.now() * 1000, data: Buffer.alloc(4096, 7) }]);
    await again.waitForProgress('fresh', last, 'appliedSeq');
    const [pointId] = await again.tag({ kind: 1, groupId: 'g', timeUs: Date.now() * 1000, cuts: [{ volumeId: 'fresh', seq: last, accuracy: 1 }] });
    const out = path.join(dir, 'fresh.img');
    expect(runFerry(['export', '--data', dataDir, '--volume', 'fresh', '--point', String(pointId), '--out', out]).status).toBe(0);
    const expected = Buffer.alloc(SIZE);
    expected.fill(7, 8192, 12288);
    expect(sha256(fs.readFileSync(out))).toBe(sha256(expected));
    await again.close();
  });

  it('a volume larger than the file system is refused (VOLUME_TOO_LARGE), no row or file stays, and the receiver restarts', async () => {
    const r = rx as ReceiverProcess;
    const volumesBefore = fs.readdirSync(path.join(dataDir, 'volumes')).sort();
    const { conn } = await registeredConnection(r, passphrase, 'big-agent');
    conn.send({ volumeInfo: { volumeId: 'huge', sizeBytes: Limits.maxVolumeBytes, blockSize: 4096 } });
    const err = await refusal(conn);
    expect(err.code, err.message).toBe('VOLUME_TOO_LARGE');
    expect(err.message).toMatch(/cannot fit on the receiver/);
    expect(fs.readdirSync(path.join(dataDir, 'volumes')).sort()).toEqual(volumesBefore);
    await r.stop();
    rx = await startReceiverProcess(dataDir, passFile);
    // No row was left: the same id can be declared with a size that fits.
    const { conn: fine } = await registeredConnection(rx, passphrase, 'big-agent-2');
    expect((await fine.declareVolume('huge', SIZE, 4096)).durableSeq).toBe(0);
    await fine.close();
  });
});
