import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FailbackSink } from '../../agent/failback-sink';
import { buildChangeSet } from '../../agent/transport/change-set';
import { blockHashes } from '../../common/block-hash';
import { ErrorCode, ProtocolError } from '../../proto/errors';
import { decodeFrame, DecodedFrame, encodeFrame, ferry, OutgoingFrame } from '../../proto/frames';
import { validateHello } from '../../proto/validate';
import { validateFailbackState, validateFailbackVolume } from '../../proto/validate-failback';
import { admitFailback, FailbackAccess, FailbackProgress, FailbackSession, FailbackSessions } from '../../receiver/failback-sender';
import { makeTempDir } from '../helpers/receiver-process';

const KiB = 1024;
const SIZE = 1024 * KiB;

let dir: string;
let disk: string;
let fd: number;

beforeEach(() => {
  dir = makeTempDir('failback-sink');
  disk = path.join(dir, 'disk.img');
  fs.writeFileSync(disk, crypto.randomBytes(SIZE));
  fd = fs.openSync(disk, 'r+');
});

afterEach(() => {
  fs.closeSync(fd);
  fs.rmSync(dir, { recursive: true, force: true });
});

function sha(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function refusedWith(code: ErrorCode, run: () => unknown): string {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(ProtocolError);
    expect(ErrorCode[(err as ProtocolError).code]).toBe(ErrorCode[code]);
    return (err as Error).message;
  }
  throw new Error('not refused');
}

describe("the agent's failback sink", () => {
  it('writes a valid change set and acks its last seq; hashes what the disk holds', () => {
    const sink = new FailbackSink({ volumeId: 'vol1', fd, sizeBytes: SIZE });
    const data = Buffer.alloc(8 * KiB, 7);
    const cs = buildChangeSet('vol1', 1, [
      { kind: 'write', offset: 64 * KiB, length: 8 * KiB, captureTimeUs: 0, data },
      { kind: 'write', offset: SIZE - 4 * KiB, length: 4 * KiB, captureTimeUs: 0, data: data.subarray(0, 4 * KiB) },
    ], 'none');
    expect(sink.apply(cs)).toBe(2);
    const now = fs.readFileSync(disk);
    expect(now.subarray(64 * KiB, 72 * KiB).equals(data)).toBe(true);
    expect(sink.bytesWritten).toBe(12 * KiB);
    const answer = sink.hashes({ volumeId: 'vol1', offset: 0, blockSize: 64 * KiB, count: 16, requestId: 5 });
    expect(Buffer.from(answer.hashes as Uint8Array).equals(blockHashes(now, 64 * KiB))).toBe(true);
    expect(answer.requestId).toBe(5);
  });

  it('refuses a change set with a bad CRC and writes nothing', () => {
    const sink = new FailbackSink({ volumeId: 'vol1', fd, sizeBytes: SIZE });
    const before = sha(disk);
    const cs = buildChangeSet('vol1', 1, [{ kind: 'write', offset: 0, length: 64 * KiB, captureTimeUs: 0, data: Buffer.alloc(64 * KiB, 3) }], 'none');
    // Through the wire, as the agent receives it.
    const frame = decodeFrame(encodeFrame({ changeSet: { ...cs, payloadCrc32: ((cs.payloadCrc32 ?? 0) ^ 0x5a5a) >>> 0 } }));
    expect(refusedWith(ErrorCode.CHECKSUM_MISMATCH, () => sink.apply(frame.changeSet as ferry.IChangeSet))).toMatch(/CRC-32/);
    expect(sha(disk)).toBe(before);
    expect(sink.lastDurableSeq).toBe(0);
  });

  it('refuses a seq gap, a write past the end, a discard and a foreign volume, writing nothing', () => {
    const sink = new FailbackSink({ volumeId: 'vol1', fd, sizeBytes: SIZE });
    const before = sha(disk);
    const block = Buffer.alloc(4 * KiB, 1);
    const write = (offset: number) => ({ kind: 'write' as const, offset, length: 4 * KiB, captureTimeUs: 0, data: block });
    expect(refusedWith(ErrorCode.SEQ_GAP, () => sink.apply(buildChangeSet('vol1', 2, [write(0)], 'none')))).toMatch(/expected 1/);
    expect(refusedWith(ErrorCode.OUT_OF_RANGE, () => sink.apply(buildChangeSet('vol1', 1, [write(SIZE)], 'none')))).toMatch(/past the volume end/);
    expect(refusedWith(ErrorCode.BAD_EXTENTS, () => sink.apply(buildChangeSet('vol1', 1, [write(0), { kind: 'discard', offset: 0, length: 4 * KiB, captureTimeUs: 0 }], 'none')))).toMatch(/discard/);
    expect(refusedWith(ErrorCode.UNKNOWN_VOLUME, () => sink.apply(buildChangeSet('vol2', 1, [write(0)], 'none')))).toMatch(/vol2/);
    expect(refusedWith(ErrorCode.OUT_OF_RANGE, () => sink.hashes({ volumeId: 'vol1', offset: SIZE, blockSize: 4 * KiB, count: 1 }))).toMatch(/past the volume end/);
    expect(sha(disk)).toBe(before);
  });
});

describe('failback frames and admission', () => {
  it('a failback Hello logs in; it cannot register', () => {
    expect(validateHello({ intent: ferry.Hello.Intent.LOGIN, agentId: 'agent-1', failback: true }).failback).toBe(true);
    expect(validateHello({ intent: ferry.Hello.Intent.LOGIN, agentId: 'agent-1' }).failback).toBe(false);
    expect(() => validateHello({ intent: ferry.Hello.Intent.REGISTER, agentName: 'x', failback: true })).toThrow(/cannot register/);
  });

  it('checks FailbackVolume and FailbackState', () => {
    expect(validateFailbackVolume({ volumeId: 'vol1', sizeBytes: SIZE + 512, blockSize: 65536 })).toEqual({ volumeId: 'vol1', sizeBytes: SIZE + 512, blockSize: 65536 });
    expect(() => validateFailbackVolume({ volumeId: 'vol1', sizeBytes: SIZE + 1, blockSize: 65536 })).toThrow(/multiple of 512/);
    expect(() => validateFailbackVolume({ volumeId: 'vol1', sizeBytes: SIZE, blockSize: 3000 })).toThrow(/power of two/);
    expect(() => validateFailbackVolume({ volumeId: '../x', sizeBytes: SIZE, blockSize: 65536 })).toThrow();
    expect(() => validateFailbackState({ volumeId: 'vol1', pass: 1, state: 0 })).toThrow(/not copying, in-sync or done/);
    expect(() => validateFailbackState({ volumeId: 'vol1', pass: 0, state: ferry.FailbackState.State.DONE })).toThrow(/pass 0/);
  });

  const access: FailbackAccess = { disk: () => ({ ok: false, reason: 'x' }), sourceStopped: () => false, report: () => undefined };

  it('admits a failback only with a recovery service, for a machine that is failed over', () => {
    expect(() => admitFailback('agent-1', undefined, 'failed over')).toThrow(/no recovery service/);
    expect(() => admitFailback('agent-1', access, undefined)).toThrow(/agent-1 is not failed over/);
    expect(admitFailback('agent-1', access, 'failed over')).toBe(access);
  });
});

/**
 * The receiver's FailbackSession and the agent's sink, joined by encoded frames in memory: the
 * passes, the window and the final pass without a network (the real one: test/agent/failback.test.ts).
 */
describe('a failback session against a sink', () => {
  function join(recovered: string, stopped: () => boolean, reports: FailbackProgress[]) {
    const sink = new FailbackSink({ volumeId: 'vol1', fd, sizeBytes: SIZE });
    const states: ferry.IFailbackState[] = [];
    let failure: unknown;
    const errors: ferry.IError[] = [];
    const access: FailbackAccess = {
      disk: (_agent, volumeId) => (volumeId === 'vol1' ? { ok: true, path: recovered, sizeBytes: fs.statSync(recovered).size } : { ok: false, reason: `no recovered disk for ${volumeId}` }),
      sourceStopped: stopped,
      report: (_agent, _volume, p) => reports.push(p),
    };
    let session: FailbackSession;
    const toAgent = (out: OutgoingFrame): void => {
      const frame = decodeFrame(encodeFrame(out));
      // Answers go back on a later tick, as over a socket.
      setImmediate(() => {
        try {
          if (frame.hashRequest) reply({ blockHashes: sink.hashes(frame.hashRequest) });
          if (frame.changeSet) reply({ ack: { volumes: [{ volumeId: 'vol1', durableSeq: sink.apply(frame.changeSet) }] } });
          if (frame.failbackState) states.push(frame.failbackState);
          if (frame.error) errors.push(frame.error);
        } catch (err) {
          failure = err;
        }
      });
    };
    const reply = (out: OutgoingFrame): void => {
      const frame: DecodedFrame = decodeFrame(encodeFrame(out));
      try {
        session.onFrame(frame);
      } catch (err) {
        failure = err;
      }
    };
    const owners: Record<string, string> = { vol1: 'agent-1', vol9: 'agent-2' };
    session = new FailbackSession('agent-1', access, { send: toAgent, fail: (err) => (failure = err) }, (volumeId) => owners[volumeId], { pauseMs: 20, chunkBytes: 256 * KiB, changeSetBytes: 64 * KiB, window: 2 });
    return {
      session,
      states,
      errors,
      failure: () => failure,
      declare: (sizeBytes = SIZE, volumeId = 'vol1') => reply({ failbackVolume: { volumeId, sizeBytes, blockSize: 16 * KiB } }),
    };
  }

  async function until(what: string, check: () => boolean): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  it('copies what differs, pass after pass, and ends equal after the pass that began with the source stopped', async () => {
    const recovered = path.join(dir, 'recovered.img');
    const image = fs.readFileSync(disk);
    for (const at of [0, 192 * KiB, 704 * KiB]) image.fill(0xab, at, at + 16 * KiB);
    fs.writeFileSync(recovered, image);
    let stopped = false;
    const reports: FailbackProgress[] = [];
    const j = join(recovered, () => stopped, reports);
    j.declare();
    await until('pass 1 to end', () => j.states.some((s) => s.state === ferry.FailbackState.State.IN_SYNC));
    const first = j.states.find((s) => s.state === ferry.FailbackState.State.IN_SYNC) as ferry.IFailbackState;
    expect(first.sentBytes).toBe(48 * KiB);
    expect(first.differingBlocks).toBe(3);
    // The "VM" writes again; a later pass picks it up.
    const fdr = fs.openSync(recovered, 'r+');
    fs.writeSync(fdr, Buffer.alloc(16 * KiB, 0xcd), 0, 16 * KiB, 512 * KiB);
    fs.closeSync(fdr);
    await until('a pass to send the new block', () => j.states.some((s) => (s.sentBytes ?? 0) === 64 * KiB && s.state === ferry.FailbackState.State.IN_SYNC));
    stopped = true;
    await until('done', () => j.states.some((s) => s.state === ferry.FailbackState.State.DONE));
    expect(j.failure()).toBeUndefined();
    const done = j.states.find((s) => s.state === ferry.FailbackState.State.DONE) as ferry.IFailbackState;
    expect(done.final).toBe(true);
    expect(done.sentBytes).toBe(64 * KiB);
    expect(sha(disk)).toBe(sha(recovered));
    expect(reports.at(-1)).toMatchObject({ state: 'done', sentBytes: 64 * KiB, differingBlocks: 4, sizeBytes: SIZE });
    j.session.close();
  });

  it("refuses another agent's volume and one never replicated here", () => {
    const recovered = path.join(dir, 'recovered.img');
    fs.writeFileSync(recovered, Buffer.alloc(SIZE));
    const foreign = join(recovered, () => true, []);
    foreign.declare(SIZE, 'vol9');
    expect((foreign.failure() as ProtocolError).codeName).toBe('FORBIDDEN_VOLUME');
    const unknown = join(recovered, () => true, []);
    unknown.declare(SIZE, 'vol7');
    expect((unknown.failure() as ProtocolError).message).toMatch(/vol7 was never replicated to this receiver/);
  });

  it("a machine's newer failback session takes over from an older one, which stops without reporting", () => {
    const recovered = path.join(dir, 'recovered.img');
    fs.writeFileSync(recovered, Buffer.alloc(SIZE));
    const reports: FailbackProgress[] = [];
    const access: FailbackAccess = { disk: () => ({ ok: true, path: recovered, sizeBytes: SIZE }), sourceStopped: () => false, report: (_a, _v, p) => reports.push(p) };
    const failures: unknown[] = [];
    const sent: OutgoingFrame[] = [];
    const peer = { send: (f: OutgoingFrame) => sent.push(f), fail: (err: unknown) => failures.push(err) };
    const registry = new FailbackSessions();
    const older = new FailbackSession('agent-1', access, peer, () => 'agent-1');
    registry.open('agent-1', older);
    older.onFrame(decodeFrame(encodeFrame({ failbackVolume: { volumeId: 'vol1', sizeBytes: SIZE, blockSize: 64 * KiB } })));
    expect(sent.some((f) => f.hashRequest)).toBe(true);
    const reported = reports.length;
    registry.open('agent-1', new FailbackSession('agent-1', access, peer, () => 'agent-1'));
    expect(failures).toHaveLength(1);
    expect((failures[0] as ProtocolError).message).toMatch(/a newer failback session of machine agent-1 took over/);
    expect(reports).toHaveLength(reported);
    registry.closed('agent-1', older);
  });

  it('refuses a volume whose size differs from the recovered disk, before anything is compared', async () => {
    const recovered = path.join(dir, 'recovered.img');
    fs.writeFileSync(recovered, Buffer.alloc(SIZE * 2));
    const before = sha(disk);
    const j = join(recovered, () => true, []);
    j.declare();
    const err = j.failure() as ProtocolError;
    expect(err).toBeInstanceOf(ProtocolError);
    expect(err.codeName).toBe('FAILBACK_REFUSED');
    expect(err.message).toMatch(/original disk is 1048576 bytes, the recovered disk 2097152: sizes must match exactly/);
    expect(sha(disk)).toBe(before);
  });
});
