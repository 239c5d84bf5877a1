import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildChangeSet, ChangeRecord } from '../../agent/transport/change-set';
import { ConnectionError, ReceiverConnection } from '../../agent/transport/receiver-connection';
import { encodeFrame, ferry } from '../../proto/frames';
import { Limits } from '../../proto/limits';
import { loggedInConnection, registeredConnection, sendRecords } from '../helpers/agent-session';
import { makeTempDir, ReceiverProcess, runFerry, startReceiverProcess, writePassphrase } from '../helpers/receiver-process';
import { sha256 } from '../helpers/volume-model';

const VOL_A = 'vol-a';
const VOL_B = 'vol-b';
const SIZE = 4 * 1024 * 1024;

function write(offset: number, length: number, fill: number, t = Date.now() * 1000): ChangeRecord {
  return { kind: 'write', offset, length, captureTimeUs: t, data: Buffer.alloc(length, fill) };
}

/** Everything on disk that a bad frame must not change. */
function snapshot(dataDir: string): Record<string, string> {
  const result: Record<string, string> = {};
  const walk = (dir: string): void => {
    for (const name of fs.readdirSync(dir).sort()) {
      const full = path.join(dir, name);
      if (fs.statSync(full).isDirectory()) walk(full);
      else if (name !== 'lock') result[path.relative(dataDir, full)] = sha256(fs.readFileSync(full));
    }
  };
  walk(path.join(dataDir, 'volumes'));
  result.points = runFerry(['points', '--data', dataDir, '--json']).stdout;
  return result;
}

async function refused(conn: ReceiverConnection): Promise<ConnectionError> {
  try {
    await conn.waitFor(() => undefined, 20_000, 'the refusal');
  } catch (err) {
    return err as ConnectionError;
  }
  throw new Error('not refused');
}

describe('bad input is refused with a clear code and changes nothing', () => {
  const dir = makeTempDir('badinput');
  const dataDir = path.join(dir, 'data');
  const { file: passFile, passphrase } = writePassphrase(dir);
  let rx: ReceiverProcess;
  let agentA: { agentId: string; credential: Buffer };
  let agentB: { agentId: string; credential: Buffer };
  let bystander: ReceiverConnection;
  let seqA = 0;
  let before: Record<string, string>;

  /** A fresh logged-in session of agent A with its volume declared. */
  const sessionA = async (): Promise<ReceiverConnection> => {
    const conn = await loggedInConnection(rx, agentA.agentId, agentA.credential);
    await conn.declareVolume(VOL_A, SIZE, 4096);
    return conn;
  };

  const expectRefusal = async (conn: ReceiverConnection, code: string): Promise<ConnectionError> => {
    const err = await refused(conn);
    expect(err.code, err.message).toBe(code);
    expect(err.message.length).toBeGreaterThan(code.length + 20);
    return err;
  };

  beforeAll(async () => {
    rx = await startReceiverProcess(dataDir, passFile);
    const a = await registeredConnection(rx, passphrase, 'host-a');
    agentA = { agentId: a.agentId, credential: a.credential };
    await a.conn.declareVolume(VOL_A, SIZE, 4096);
    seqA = sendRecords(a.conn, VOL_A, 1, [write(0, 65536, 1), write(8192, 4096, 2)]);
    await a.conn.tag({ kind: ferry.Tag.Kind.CRASH, groupId: 'base', timeUs: Date.now() * 1000, cuts: [{ volumeId: VOL_A, seq: seqA, accuracy: ferry.Accuracy.EXACT }] });
    await a.conn.waitForProgress(VOL_A, seqA, 'appliedSeq');
    await a.conn.close();

    const b = await registeredConnection(rx, passphrase, 'host-b');
    agentB = { agentId: b.agentId, credential: b.credential };
    await b.conn.declareVolume(VOL_B, SIZE, 4096);
    bystander = b.conn;
    // Let the checkpoint settle so the snapshot is stable.
    await bystander.waitForProgress(VOL_B, 0, 'appliedSeq');
    before = snapshot(dataDir);
  });

  afterAll(async () => {
    await bystander?.close();
    await rx?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('refuses registration with a wrong passphrase (AUTH_FAILED)', async () => {
    const conn = await ReceiverConnection.connect(rx.url, { fingerprint: rx.fingerprint });
    await expect(conn.register('not the passphrase', 'intruder')).rejects.toMatchObject({ code: 'AUTH_FAILED' });
  });

  it('refuses login with a wrong or garbage credential (AUTH_FAILED)', async () => {
    const wrong = await ReceiverConnection.connect(rx.url, { fingerprint: rx.fingerprint });
    await expect(wrong.login(agentA.agentId, crypto.randomBytes(32))).rejects.toMatchObject({ code: 'AUTH_FAILED' });
    const unknown = await ReceiverConnection.connect(rx.url, { fingerprint: rx.fingerprint });
    await expect(unknown.login('agent-0000000000000000', crypto.randomBytes(32))).rejects.toMatchObject({ code: 'AUTH_FAILED' });
    const malformed = await ReceiverConnection.connect(rx.url, { fingerprint: rx.fingerprint });
    await expect(malformed.login('../../etc', Buffer.alloc(3))).rejects.toMatchObject({ code: 'AUTH_FAILED' });
  });

  it('refuses data before login (NOT_AUTHENTICATED)', async () => {
    const conn = await ReceiverConnection.connect(rx.url, { fingerprint: rx.fingerprint });
    conn.send({ changeSet: buildChangeSet(VOL_A, seqA + 1, [write(0, 4096, 9)], 'exact') });
    await expectRefusal(conn, 'NOT_AUTHENTICATED');
  });

  it('refuses garbage bytes, text messages and truncated frames (BAD_FRAME)', async () => {
    const garbage = await sessionA();
    garbage.sendRaw(Buffer.alloc(64, 0xff));
    await expectRefusal(garbage, 'BAD_FRAME');

    const text = await sessionA();
    text.sendRaw('hello');
    await expectRefusal(text, 'BAD_FRAME');

    const truncated = await sessionA();
    const frame = encodeFrame({ changeSet: buildChangeSet(VOL_A, seqA + 1, [write(0, 8192, 7)], 'exact') });
    truncated.sendRaw(frame.subarray(0, frame.length - 100));
    await expectRefusal(truncated, 'BAD_FRAME');
  });

  it('refuses an unsupported protocol version (UNSUPPORTED_VERSION)', async () => {
    const conn = await ReceiverConnection.connect(rx.url, { fingerprint: rx.fingerprint });
    conn.sendRaw(Buffer.from(ferry.Frame.encode({ version: 99, hello: { intent: ferry.Hello.Intent.REGISTER, agentName: 'x' } }).finish()));
    await expectRefusal(conn, 'UNSUPPORTED_VERSION');
  });

  it('refuses an oversized frame (TOO_LARGE)', async () => {
    const conn = await sessionA();
    const cs = buildChangeSet(VOL_A, seqA + 1, [write(0, 4096, 3)], 'exact');
    conn.sendRaw(encodeFrame({ changeSet: { ...cs, payload: Buffer.alloc(Limits.maxFrameBytes + 16, 1) } }));
    await expectRefusal(conn, 'TOO_LARGE');
  });

  it('refuses a payload whose checksum does not match (CHECKSUM_MISMATCH)', async () => {
    const conn = await sessionA();
    const cs = buildChangeSet(VOL_A, seqA + 1, [write(0, 4096, 5)], 'exact');
    conn.send({ changeSet: { ...cs, payloadCrc32: ((cs.payloadCrc32 ?? 0) ^ 1) >>> 0 } });
    await expectRefusal(conn, 'CHECKSUM_MISMATCH');
  });

  it('refuses a corrupted lz4 payload (DECOMPRESS_FAILED)', async () => {
    const conn = await sessionA();
    const cs = buildChangeSet(VOL_A, seqA + 1, [write(0, 65536, 6)], 'exact');
    expect(cs.compression).toBe(ferry.Compression.LZ4_BLOCK);
    const payload = Buffer.from(cs.payload as Uint8Array);
    payload.fill(0xee, 0, Math.min(8, payload.length));
    conn.send({ changeSet: { ...cs, payload } });
    await expectRefusal(conn, 'DECOMPRESS_FAILED');
  });

  it('refuses a seq gap (SEQ_GAP)', async () => {
    const conn = await sessionA();
    conn.send({ changeSet: buildChangeSet(VOL_A, seqA + 5, [write(0, 4096, 8)], 'exact') });
    await expectRefusal(conn, 'SEQ_GAP');
  });

  it('acknowledges a replayed seq again without applying it twice', async () => {
    const conn = await sessionA();
    sendRecords(conn, VOL_A, 1, [write(0, 65536, 1), write(8192, 4096, 2)]);
    const progress = await conn.waitForProgress(VOL_A, seqA, 'durableSeq');
    expect(progress.durableSeq).toBe(seqA);
    expect(conn.error).toBeUndefined();
    await conn.close();
  });

  it('refuses writes past the end of the volume (OUT_OF_RANGE)', async () => {
    const conn = await sessionA();
    conn.send({ changeSet: buildChangeSet(VOL_A, seqA + 1, [write(SIZE - 4096, 8192, 4)], 'exact') });
    await expectRefusal(conn, 'OUT_OF_RANGE');
    const discard = await sessionA();
    discard.send({ changeSet: buildChangeSet(VOL_A, seqA + 1, [{ kind: 'discard', offset: SIZE, length: 512, captureTimeUs: 1 }], 'exact') });
    await expectRefusal(discard, 'OUT_OF_RANGE');
  });

  it('refuses an undeclared volume (UNKNOWN_VOLUME)', async () => {
    const conn = await sessionA();
    conn.send({ changeSet: buildChangeSet('nobody', 1, [write(0, 4096, 4)], 'exact') });
    await expectRefusal(conn, 'UNKNOWN_VOLUME');
  });

  it("refuses another agent's volume (FORBIDDEN_VOLUME)", async () => {
    const declare = await loggedInConnection(rx, agentB.agentId, agentB.credential);
    declare.send({ volumeInfo: { volumeId: VOL_A, sizeBytes: SIZE, blockSize: 4096 } });
    await expectRefusal(declare, 'FORBIDDEN_VOLUME');
    const write1 = await loggedInConnection(rx, agentB.agentId, agentB.credential);
    write1.send({ changeSet: buildChangeSet(VOL_A, seqA + 1, [write(0, 4096, 4)], 'exact') });
    await expectRefusal(write1, 'FORBIDDEN_VOLUME');
    const tag = await loggedInConnection(rx, agentB.agentId, agentB.credential);
    tag.send({ tag: { kind: ferry.Tag.Kind.CRASH, groupId: 'steal', cuts: [{ volumeId: VOL_A, seq: 1, accuracy: ferry.Accuracy.EXACT }] } });
    await expectRefusal(tag, 'FORBIDDEN_VOLUME');
  });

  it('refuses path-traversal and malformed volume ids (BAD_VOLUME_ID)', async () => {
    for (const id of ['../../etc/passwd', '..', 'a/b', '.hidden', 'x'.repeat(200), '']) {
      const conn = await sessionA();
      conn.send({ volumeInfo: { volumeId: id, sizeBytes: SIZE, blockSize: 4096 } });
      await expectRefusal(conn, 'BAD_VOLUME_ID');
    }
    expect(fs.readdirSync(path.join(dataDir, 'volumes')).sort()).toEqual([VOL_A, VOL_B]);
  });

  it('refuses a volume re-declared with another size (VOLUME_MISMATCH) and a tag past the data (BAD_TAG)', async () => {
    const conn = await loggedInConnection(rx, agentA.agentId, agentA.credential);
    conn.send({ volumeInfo: { volumeId: VOL_A, sizeBytes: SIZE * 2, blockSize: 4096 } });
    await expectRefusal(conn, 'VOLUME_MISMATCH');
    const tag = await sessionA();
    tag.send({ tag: { kind: ferry.Tag.Kind.CRASH, groupId: 'future', cuts: [{ volumeId: VOL_A, seq: seqA + 100, accuracy: ferry.Accuracy.EXACT }] } });
    await expectRefusal(tag, 'BAD_TAG');
  });

  it('answers hash requests for whole blocks of its own volume only (BAD_FRAME, TOO_LARGE, OUT_OF_RANGE, FORBIDDEN_VOLUME)', async () => {
    const ok = await sessionA();
    ok.send({ hashRequest: { volumeId: VOL_A, offset: 0, blockSize: 65536, count: 2, requestId: 7 } });
    const answer = await ok.waitFor((f) => f.blockHashes ?? undefined, 20_000, 'block hashes');
    const expected = Buffer.alloc(2 * 65536);
    expected.fill(1, 0, 65536);
    expected.fill(2, 8192, 12288);
    const own = (b: Buffer): string => crypto.createHash('sha256').update(b).digest().subarray(0, 16).toString('hex');
    expect(Buffer.from(answer.hashes ?? []).toString('hex')).toBe(own(expected.subarray(0, 65536)) + own(expected.subarray(65536)));
    expect(answer.requestId).toBe(7);
    await ok.close();
    const cases: Array<[ferry.IHashRequest, string]> = [
      [{ volumeId: VOL_A, offset: 0, blockSize: 3000, count: 1 }, 'BAD_FRAME'],
      [{ volumeId: VOL_A, offset: 512, blockSize: 4096, count: 1 }, 'BAD_FRAME'],
      [{ volumeId: VOL_A, offset: 0, blockSize: 4096, count: Limits.maxHashBlocks + 1 }, 'TOO_LARGE'],
      [{ volumeId: VOL_A, offset: SIZE, blockSize: 4096, count: 1 }, 'OUT_OF_RANGE'],
    ];
    for (const [request, code] of cases) {
      const conn = await sessionA();
      conn.send({ hashRequest: request });
      await expectRefusal(conn, code);
    }
    const foreign = await loggedInConnection(rx, agentB.agentId, agentB.credential);
    foreign.send({ hashRequest: { volumeId: VOL_A, offset: 0, blockSize: 4096, count: 1 } });
    await expectRefusal(foreign, 'FORBIDDEN_VOLUME');
  });

  it('left replica, journal, spool and catalog unchanged and kept serving other agents', async () => {
    expect(snapshot(dataDir)).toEqual(before);
    expect(bystander.error).toBeUndefined();
    const last = sendRecords(bystander, VOL_B, 1, [write(4096, 4096, 0x42)]);
    await bystander.waitForProgress(VOL_B, last, 'appliedSeq');
    const points = await bystander.tag({ kind: ferry.Tag.Kind.CRASH, groupId: 'b1', timeUs: Date.now() * 1000, cuts: [{ volumeId: VOL_B, seq: last, accuracy: ferry.Accuracy.EXACT }] });
    const out = path.join(dir, 'b.img');
    expect(runFerry(['export', '--data', dataDir, '--volume', VOL_B, '--point', String(points[0]), '--out', out]).status).toBe(0);
    const expected = Buffer.alloc(SIZE);
    expected.fill(0x42, 4096, 8192);
    expect(sha256(fs.readFileSync(out))).toBe(sha256(expected));
  });
});
