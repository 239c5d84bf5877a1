import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../../common/errors';
import { buildChangeSet, ChangeRecord } from '../../agent/transport/change-set';
import { ConnectionError, ReceiverConnection } from '../../agent/transport/receiver-connection';
import { ferry } from '../../proto/frames';
import { Catalog } from '../../receiver/catalog';
import { waitFor } from '../helpers/agent-lab';
import { openTcp, openTls, RawWss, within } from '../helpers/raw-client';
import { makeTempDir, ReceiverProcess, runFerryAsync, startReceiverProcess, writePassphrase } from '../helpers/receiver-process';
import { sha256 } from '../helpers/volume-model';

/**
 * Hostile and broken clients against a real `ferry receiver run`: stalls at every step of the
 * handshake, big frames before login, too many connections, passphrase guessing, absurd times.
 * Each is refused with its code (or, before there is a WebSocket, just closed) and none of them
 * changes the data directory or stops a well-behaved agent that streams all along.
 */

const HANDSHAKE_MS = 4000;
const IDLE_MS = 5000;
const PER_PEER = 4;
const TOTAL = 24;
const LOCKOUT_AFTER = 3;
/** Long enough for a CLI run to start on a busy machine while the address is still locked. */
const LOCKOUT_S = 8;
const FAILED_REGISTRATIONS_PER_S = 3;
const RECEIVER_ARGS = [
  '--handshake-timeout', `${HANDSHAKE_MS}ms`,
  '--idle-timeout', `${IDLE_MS}ms`,
  '--max-connections-per-peer', String(PER_PEER),
  '--max-connections', String(TOTAL),
  '--auth-lockout-after', String(LOCKOUT_AFTER),
  '--auth-lockout', `${LOCKOUT_S}s`,
  '--auth-lockout-max', `${4 * LOCKOUT_S}s`,
  '--failed-registrations-per-second', String(FAILED_REGISTRATIONS_PER_S),
];
/** Generous deadlines for "within the configured bound": a loaded 2-core machine is slow, never stuck. */
const HANDSHAKE_DEADLINE_MS = HANDSHAKE_MS + 10_000;
const IDLE_DEADLINE_MS = IDLE_MS + 10_000;

/** The well-behaved agents dial from here; 127.0.0.1 is left for the CLI, which cannot pick its address. */
const GOOD = '127.0.0.2';
const VICTIM = '127.0.0.3';
const VOL_A = 'vol-a';
const VOL_GOOD = 'vol-good';
const VOL_GOOD2 = 'vol-good2';
const SIZE = 4 * 1024 * 1024;
const MiB = 1024 * 1024;
/** 2^64-1 on the wire: protobufjs takes a {low, high} pair for a uint64 beyond 2^53. */
const MAX_U64 = { low: 0xffffffff, high: 0xffffffff, unsigned: true } as unknown as number;

function write(offset: number, length: number, fill: number, t = Date.now() * 1000): ChangeRecord {
  return { kind: 'write', offset, length, captureTimeUs: t, data: Buffer.alloc(length, fill) };
}

/**
 * Replica, journal, spool, checkpoint and points of every volume but the streaming agents' own.
 * The CLI runs asynchronously throughout this suite: a blocked event loop would starve the
 * streaming agent of its heartbeats.
 */
async function snapshot(dataDir: string): Promise<Record<string, string>> {
  const result: Record<string, string> = {};
  const walk = (dir: string): void => {
    for (const name of fs.readdirSync(dir).sort()) {
      const full = path.join(dir, name);
      if (fs.statSync(full).isDirectory()) walk(full);
      else if (name !== 'lock') result[path.relative(dataDir, full)] = sha256(fs.readFileSync(full));
    }
  };
  for (const volume of fs.readdirSync(path.join(dataDir, 'volumes')).sort()) {
    if (volume !== VOL_GOOD && volume !== VOL_GOOD2) walk(path.join(dataDir, 'volumes', volume));
  }
  const points = JSON.parse((await runFerryAsync(['points', '--data', dataDir, '--json'])).stdout) as Array<{ volumeId: string; exportable: boolean }>;
  result.points = JSON.stringify(points.filter((p) => p.volumeId !== VOL_GOOD && p.volumeId !== VOL_GOOD2));
  return result;
}

/** Resolves with the error that ended the session (an Error frame's code, or a close). */
async function refusal(conn: ReceiverConnection, deadlineMs = 20_000): Promise<ConnectionError> {
  try {
    await conn.waitFor(() => undefined, deadlineMs, 'the refusal');
  } catch (err) {
    return err as ConnectionError;
  }
  throw new Error('not refused');
}

/** The resident and peak resident memory of a process, from /proc. */
function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kib('VmRSS'), hwm: kib('VmHWM') };
}

/**
 * A well-behaved agent session for the whole suite: like the real agent it sends a heartbeat
 * every 500 ms, and it streams a small change set at a time, waiting for each ack. Any failure
 * ends it and is kept for the checks.
 */
class Streamer {
  acks = 0;
  error: Error | undefined;
  private running = true;
  private seq = 0;
  private readonly done: Promise<void>;
  private readonly heartbeat: NodeJS.Timeout;

  constructor(private readonly conn: ReceiverConnection) {
    this.heartbeat = setInterval(() => {
      if (conn.isOpen) conn.send({ heartbeat: { timeUs: Date.now() * 1000, pendingSinceUs: 0 } });
    }, 500);
    this.done = this.loop();
  }

  private async loop(): Promise<void> {
    try {
      while (this.running) {
        const last = this.seq + 1;
        this.conn.send({ changeSet: buildChangeSet(VOL_GOOD, last, [write((last % 64) * 4096, 4096, last & 0xff)], 'exact') });
        await this.conn.waitForProgress(VOL_GOOD, last, 'durableSeq', 30_000);
        this.seq = last;
        this.acks++;
        // Pacing, not synchronization: a steady trickle like a real agent's.
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    } catch (err) {
      this.error = err as Error;
    }
  }

  /** Waits for acks beyond `since`: the session is alive and durable writes keep coming back. */
  async ackedAfter(since: number): Promise<number> {
    await waitFor('the streaming agent to get another ack', () => this.error ?? this.acks > since, 30_000);
    if (this.error) throw this.error;
    return this.acks;
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
    clearInterval(this.heartbeat);
    await this.conn.close();
  }
}

describe('hostile clients are refused with a clear code, hold nothing for long and change nothing', () => {
  const dir = makeTempDir('hostile');
  const dataDir = path.join(dir, 'data');
  const { file: passFile, passphrase } = writePassphrase(dir);
  let rx: ReceiverProcess;
  let agentA: { agentId: string; credential: Buffer };
  let good2: { agentId: string; credential: Buffer };
  let streamer: Streamer;
  let acksSeen = 0;
  let before: Record<string, string>;
  let seqA = 0;
  let peers = 0;
  /** A fresh peer address no earlier case used (their counts and lockouts stay apart). */
  const freshPeer = (): string => {
    const n = peers++;
    return `127.1.${Math.floor(n / 250)}.${1 + (n % 250)}`;
  };

  const connect = (from: string): Promise<ReceiverConnection> => ReceiverConnection.connect(rx.url, { fingerprint: rx.fingerprint }, 10_000, from);
  const register = async (from: string, name: string, pass = passphrase): Promise<{ conn: ReceiverConnection; agentId: string; credential: Buffer }> => {
    const conn = await connect(from);
    return { conn, ...(await conn.register(pass, name)) };
  };
  const login = async (from: string, who: { agentId: string; credential: Buffer }): Promise<ReceiverConnection> => {
    const conn = await connect(from);
    await conn.login(who.agentId, who.credential);
    return conn;
  };
  /** The code a registration ends with ('ok' when it succeeds). */
  const registrationOutcome = async (from: string, pass: string): Promise<{ code: string; message: string }> => {
    try {
      const { conn } = await register(from, 'guess', pass);
      await conn.close();
      return { code: 'ok', message: '' };
    } catch (err) {
      return { code: (err as ConnectionError).code ?? 'none', message: (err as Error).message };
    }
  };

  beforeAll(async () => {
    rx = await startReceiverProcess(dataDir, passFile, RECEIVER_ARGS);
    const a = await register(VICTIM, 'host-a');
    agentA = { agentId: a.agentId, credential: a.credential };
    await a.conn.declareVolume(VOL_A, SIZE, 4096);
    seqA = 2;
    a.conn.send({ changeSet: buildChangeSet(VOL_A, 1, [write(0, 65536, 1), write(8192, 4096, 2)], 'exact') });
    await a.conn.tag({ kind: ferry.Tag.Kind.CRASH, groupId: 'base', timeUs: Date.now() * 1000, cuts: [{ volumeId: VOL_A, seq: seqA, accuracy: ferry.Accuracy.EXACT }] });
    await a.conn.waitForProgress(VOL_A, seqA, 'appliedSeq');
    await a.conn.close();

    const g2 = await register(GOOD, 'good-2');
    good2 = { agentId: g2.agentId, credential: g2.credential };
    await g2.conn.declareVolume(VOL_GOOD2, SIZE, 4096);
    await g2.conn.close();

    const g = await register(GOOD, 'good');
    await g.conn.declareVolume(VOL_GOOD, SIZE, 4096);
    streamer = new Streamer(g.conn);
    acksSeen = await streamer.ackedAfter(0);
    // The victim's checkpoint has settled: from here on nothing of it may change.
    await waitFor('a stable snapshot', async () => {
      const s = JSON.stringify(await snapshot(dataDir));
      return s === JSON.stringify(await snapshot(dataDir)) ? s : undefined;
    });
    before = await snapshot(dataDir);
  });

  afterEach(async () => {
    // After every case: the well-behaved agent is still streaming and getting acks.
    if (streamer) acksSeen = await streamer.ackedAfter(acksSeen);
  });

  afterAll(async () => {
    await streamer?.stop();
    await rx?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('closes a TCP, TLS or HTTP stall and refuses a WebSocket stall with HANDSHAKE_TIMEOUT', async () => {
    const target = (localAddress: string): { port: number; localAddress: string } => ({ port: rx.port, localAddress });
    const tcp = await openTcp(target(freshPeer()));
    const tlsOnly = await openTls(target(freshPeer()));
    const slowloris = await openTls(target(freshPeer()));
    slowloris.socket.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n');
    const noHello = await connect(freshPeer());
    const noProof = await connect(freshPeer());
    noProof.send({ hello: { intent: ferry.Hello.Intent.LOGIN, agentId: agentA.agentId } });
    await noProof.waitFor((f) => f.challenge ?? undefined, 10_000, 'the challenge');

    await within(Promise.all([tcp.closed, tlsOnly.closed, slowloris.closed]), HANDSHAKE_DEADLINE_MS, 'the stalled connections to be closed');
    for (const conn of [noHello, noProof]) {
      const err = await refusal(conn, HANDSHAKE_DEADLINE_MS);
      expect(err.code, err.message).toBe('HANDSHAKE_TIMEOUT');
      expect(err.message).toMatch(/no login within 4 s of connecting/);
    }
  });

  it('closes a logged-in session that goes silent (IDLE_TIMEOUT)', async () => {
    const conn = await login(VICTIM, agentA);
    await conn.declareVolume(VOL_A, SIZE, 4096);
    const err = await refusal(conn, IDLE_DEADLINE_MS);
    expect(err.code, err.message).toBe('IDLE_TIMEOUT');
    expect(err.message).toMatch(/nothing received for/);
  });

  it('refuses more than a small amount of data before login (TOO_LARGE)', async () => {
    const beforeHello = await connect(freshPeer());
    beforeHello.sendRaw(Buffer.alloc(MiB, 7));
    const err = await refusal(beforeHello);
    expect(err.code, err.message).toBe('TOO_LARGE');
    expect(err.message).toMatch(/before login; at most 65536 are accepted/);

    const afterHello = await connect(freshPeer());
    afterHello.send({ hello: { intent: ferry.Hello.Intent.LOGIN, agentId: agentA.agentId } });
    await afterHello.waitFor((f) => f.challenge ?? undefined, 10_000, 'the challenge');
    // Random data: lz4 cannot shrink it below the cap.
    afterHello.send({ changeSet: buildChangeSet(VOL_A, seqA + 1, [{ kind: 'write', offset: 0, length: MiB, captureTimeUs: Date.now() * 1000, data: randomBytes(MiB) }], 'exact') });
    expect((await refusal(afterHello)).code).toBe('TOO_LARGE');
  });

  it('keeps its memory bounded while 8 strangers each start a 70 MiB frame', async () => {
    const pid = rx.child.pid as number;
    // Reset the peak resident set (VmHWM), so that it measures this case alone.
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    const baseline = memoryOf(pid).rss;
    const chunk = Buffer.alloc(256 * 1024, 0x5a);
    const clients = await Promise.all(Array.from({ length: 8 }, () => RawWss.open({ port: rx.port, localAddress: freshPeer() })));
    await Promise.all(
      clients.map(async (client) => {
        client.startFrame(70 * MiB);
        return client.stream(70 * MiB, chunk);
      }),
    );
    for (const client of clients) {
      const err = await within(client.nextError(), 20_000, 'the refusal');
      expect(err?.code, err?.message).toBe('TOO_LARGE');
    }
    await within(Promise.all(clients.map((c) => c.closed)), 20_000, 'the refused clients to be closed');
    const peak = memoryOf(pid).hwm;
    expect(peak - baseline, `peak ${peak} vs baseline ${baseline}`).toBeLessThan(100 * MiB);
  });

  it('caps connections per peer address (TOO_MANY_CONNECTIONS)', async () => {
    const peer = freshPeer();
    const holders = await Promise.all(Array.from({ length: PER_PEER }, () => connect(peer)));
    const extra = await connect(peer);
    const err = await refusal(extra);
    expect(err.code, err.message).toBe('TOO_MANY_CONNECTIONS');
    expect(err.message).toMatch(new RegExp(`${PER_PEER} connections from ${peer.replace(/\./g, '\\.')} are open already \\(cap ${PER_PEER} per address\\): retry later`));
    // Another address is not held back by this one's cap.
    const other = await login(VICTIM, agentA);
    await other.close();
    await Promise.all(holders.map((h) => h.close()));
  });

  it('caps connections in total (TOO_MANY_CONNECTIONS)', async () => {
    // More connections than the cap at once, never more than the per-address cap from one address.
    const addresses = Array.from({ length: Math.ceil((TOTAL + 4) / PER_PEER) }, freshPeer);
    const holders = await Promise.all(Array.from({ length: addresses.length * PER_PEER }, (_, i) => connect(addresses[i % addresses.length])));
    try {
      // Admitted connections get a challenge; those over the cap get an Error instead.
      const outcomes = await Promise.all(
        holders.map((conn) => {
          if (conn.error) return Promise.resolve(conn.error);
          conn.send({ hello: { intent: ferry.Hello.Intent.LOGIN, agentId: agentA.agentId } });
          return conn.waitFor((f) => f.challenge ?? undefined, 10_000, 'the challenge').then(
            () => undefined,
            (err: ConnectionError) => err,
          );
        }),
      );
      const refused = outcomes.filter((e): e is ConnectionError => e !== undefined);
      expect(refused.length).toBeGreaterThanOrEqual(4);
      expect(holders.length - refused.length).toBeLessThanOrEqual(TOTAL - 1);
      for (const err of refused) {
        expect(err.code, err.message).toBe('TOO_MANY_CONNECTIONS');
        expect(err.message).toMatch(new RegExp(`the receiver has ${TOTAL} connections open \\(cap ${TOTAL}\\): retry later`));
      }
    } finally {
      await Promise.all(holders.map((h) => h.close()));
    }
  });

  it('locks out an address after failed registrations, for a doubling time, without stopping agents elsewhere (AUTH_LOCKED)', async () => {
    const wrong = path.join(dir, 'wrong-passphrase');
    fs.writeFileSync(wrong, 'not the passphrase\n');
    const config = path.join(dir, 'cli-agent.json');
    fs.writeFileSync(path.join(dir, 'cli.img'), Buffer.alloc(1024 * 1024));
    const volumes = [{ id: 'cli-vol', path: './cli.img' }];
    fs.writeFileSync(config, JSON.stringify({ receiver: { url: rx.url, fingerprint: rx.fingerprint }, name: 'cli', stateDir: './cli-state', capture: 'scan', volumes }));
    const cliRegister = (pass: string): Promise<{ status: number | null; stderr: string }> =>
      runFerryAsync(['agent', 'register', '--config', config, '--passphrase-file', pass]);

    // The CLI dials from 127.0.0.1: its first failures are plain AUTH_FAILED (exit 5)...
    for (let i = 0; i < LOCKOUT_AFTER; i++) {
      const r = await cliRegister(wrong);
      expect(r.status, r.stderr).toBe(ExitCode.auth);
      expect(r.stderr).toMatch(/passphrase proof does not match/);
    }
    // ...then the address is locked out, even with the right passphrase: exit 4, and when to retry.
    const locked = await cliRegister(passFile);
    expect(locked.status, locked.stderr).toBe(ExitCode.notReady);
    expect(locked.stderr).toMatch(/AUTH_LOCKED: 3 failed logins or registrations from 127\.0\.0\.1: locked out until \S+Z \(retry in \d s\)/);
    expect(locked.stderr).not.toMatch(/\n\s+at /);
    expect(fs.existsSync(path.join(dir, 'cli-state', 'credential.json'))).toBe(false);

    // Meanwhile an agent on another address logs in and streams.
    const conn = await login(GOOD, good2);
    const progress = await conn.declareVolume(VOL_GOOD2, SIZE, 4096);
    const last = progress.durableSeq + 1;
    conn.send({ changeSet: buildChangeSet(VOL_GOOD2, last, [write(0, 4096, 9)], 'exact') });
    await conn.waitForProgress(VOL_GOOD2, last, 'durableSeq');
    await conn.close();

    // Once the lockout is over, one more failure locks the address out for twice as long.
    const again = await waitFor('the lockout to end', async () => {
      const r = await cliRegister(wrong);
      return r.status === ExitCode.notReady ? undefined : r;
    });
    expect(again.status, again.stderr).toBe(ExitCode.auth);
    const doubled = await cliRegister(wrong);
    expect(doubled.status, doubled.stderr).toBe(ExitCode.notReady);
    const retryS = Number(/4 failed logins or registrations from 127\.0\.0\.1: locked out until \S+ \(retry in (\d+) s\)/.exec(doubled.stderr)?.[1]);
    // The second lockout is twice the first: more than the first could ever show.
    expect(retryS, doubled.stderr).toBeGreaterThan(LOCKOUT_S);
  });

  it('locks out an address after failed logins with wrong credentials (AUTH_LOCKED)', async () => {
    const peer = freshPeer();
    for (let i = 0; i < LOCKOUT_AFTER; i++) {
      const conn = await connect(peer);
      await expect(conn.login(agentA.agentId, Buffer.alloc(32, i))).rejects.toMatchObject({ code: 'AUTH_FAILED' });
    }
    // Locked: even the right credential from this address is refused before it is looked at.
    const conn = await connect(peer);
    await expect(conn.login(agentA.agentId, agentA.credential)).rejects.toMatchObject({ code: 'AUTH_LOCKED' });
    const elsewhere = await login(VICTIM, agentA);
    await elsewhere.close();
  });

  it('pauses registrations from every address beyond a budget of failures, but never logins (AUTH_LOCKED)', async () => {
    // A spread-out guesser: wrong passphrases from ever new addresses, 6 at a time.
    let attacking = true;
    const seen: string[] = [];
    const attack = (async () => {
      while (attacking) {
        const round = await Promise.all(Array.from({ length: 6 }, () => registrationOutcome(freshPeer(), 'a wrong guess')));
        seen.push(...round.map((r) => (r.code === 'AUTH_LOCKED' ? r.message : r.code)));
      }
    })();
    try {
      await waitFor('registrations to pause', () => seen.some((s) => /registrations are paused/.test(s)), 30_000);
      // While the budget is spent: a registration with the right passphrase waits its turn. It is
      // tried alongside more wrong guesses, so that a slow machine cannot let the budget refill
      // between the guesses and the try.
      let paused = { code: '', message: '' };
      for (let tries = 0; tries < 20 && paused.code !== 'AUTH_LOCKED'; tries++) {
        const [good] = await Promise.all([registrationOutcome(freshPeer(), passphrase), ...Array.from({ length: 5 }, () => registrationOutcome(freshPeer(), 'a wrong guess'))]);
        paused = { code: good.code, message: good.code === 'AUTH_LOCKED' ? good.message : good.code };
      }
      expect(paused.code, paused.message).toBe('AUTH_LOCKED');
      expect(paused.message).toMatch(/registrations are paused: more than 3 failed registrations per second from all addresses \(retry in \d+ s\)/);
      // ...and agents that hold a credential log in and stream as usual.
      const conn = await login(GOOD, good2);
      const progress = await conn.declareVolume(VOL_GOOD2, SIZE, 4096);
      conn.send({ changeSet: buildChangeSet(VOL_GOOD2, progress.durableSeq + 1, [write(4096, 4096, 10)], 'exact') });
      await conn.waitForProgress(VOL_GOOD2, progress.durableSeq + 1, 'durableSeq');
      await conn.close();
      expect(seen.filter((s) => s === 'AUTH_FAILED').length).toBeGreaterThan(0);
    } finally {
      attacking = false;
      await attack;
    }
    // Once the guessing stops, registrations resume.
    await waitFor('registrations to resume', async () => (await registrationOutcome(freshPeer(), passphrase)).code === 'ok', 30_000);
  });

  it('refuses capture, tag and heartbeat times outside 2000-01-01 .. now + 1 day (BAD_TIME)', async () => {
    const now = Date.now() * 1000;
    const dayUs = 24 * 3600e6;
    const session = async (): Promise<ReceiverConnection> => {
      const conn = await login(VICTIM, agentA);
      await conn.declareVolume(VOL_A, SIZE, 4096);
      return conn;
    };
    const cases: Array<[string, ferry.Frame.$Properties]> = [
      ['capture time 2^64-1', { changeSet: buildChangeSet(VOL_A, seqA + 1, [write(0, 4096, 5, MAX_U64)], 'exact') }],
      ['capture time in 1970', { changeSet: buildChangeSet(VOL_A, seqA + 1, [write(0, 4096, 5, 1)], 'exact') }],
      ['capture time two days ahead', { changeSet: buildChangeSet(VOL_A, seqA + 1, [write(0, 4096, 5, now + 2 * dayUs)], 'exact') }],
      ['pending-since 2^64-1', { changeSet: { ...buildChangeSet(VOL_A, seqA + 1, [write(0, 4096, 5)], 'exact'), pendingSinceUs: MAX_U64 } }],
      ['tag time 2^64-1', { tag: { kind: ferry.Tag.Kind.CRASH, groupId: 'max', timeUs: MAX_U64, cuts: [{ volumeId: VOL_A, seq: seqA, accuracy: ferry.Accuracy.EXACT }] } }],
      ['tag time in 1999', { tag: { kind: ferry.Tag.Kind.CRASH, groupId: 'y2k', timeUs: Date.UTC(1999, 11, 31) * 1000, cuts: [{ volumeId: VOL_A, seq: seqA, accuracy: ferry.Accuracy.EXACT }] } }],
      ['heartbeat time 2^64-1', { heartbeat: { timeUs: MAX_U64, pendingSinceUs: 0 } }],
    ];
    for (const [what, frame] of cases) {
      const conn = await session();
      conn.send(frame);
      const err = await refusal(conn);
      expect(err.code, `${what}: ${err.message}`).toBe('BAD_TIME');
      expect(err.message).toMatch(/is outside the accepted range 2000-01-01T00:00:00.000Z \.\. \S+ \(the receiver's clock plus the allowed skew\): check the clock/);
    }
  });

  it('left replica, journal, spool and points unchanged through every hostile case', async () => {
    expect(await snapshot(dataDir)).toEqual(before);
    expect(streamer.error).toBeUndefined();
  });

  it('lists and exports points whatever time is stored (times from before they were bounded)', async () => {
    const listed = async (...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> => runFerryAsync(['points', '--data', dataDir, '--volume', VOL_A, ...args]);
    const pointsBefore = (JSON.parse((await listed('--json')).stdout) as unknown[]).length;
    // A catalog written before times were bounded may hold anything a uint64 could carry (the
    // rows get their checksums when a newer receiver first opens the catalog).
    const catalog = Catalog.open(path.join(dataDir, 'catalog.db'));
    const row = { volumeId: VOL_A, seq: seqA, kind: 'crash' as const, accuracy: 'exact' as const, origin: 'tag' as const, name: '' };
    const huge = catalog.addPoint({ ...row, timeUs: 18446744073709551615, groupId: 'huge' });
    catalog.addPoint({ ...row, timeUs: -1, groupId: 'negative' });
    catalog.close();

    const table = await listed();
    expect(table.status, table.stderr).toBe(0);
    expect(table.stdout).toMatch(new RegExp(`^${huge}\\s+${VOL_A}\\s+out-of-range time \\(18446744073709552000 us\\)`, 'm'));
    expect(table.stdout).toMatch(/1969-12-31T23:59:59\.999Z/);
    const json = await listed('--json');
    expect(json.status, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toHaveLength(pointsBefore + 2);

    const out = path.join(dir, 'a.img');
    const byId = await runFerryAsync(['export', '--data', dataDir, '--volume', VOL_A, '--point', String(huge), '--out', out]);
    expect(byId.status, byId.stderr).toBe(0);
    expect(byId.stdout).toMatch(/out-of-range time/);
    const expected = Buffer.alloc(SIZE);
    expected.fill(1, 0, 65536);
    expected.fill(2, 8192, 12288);
    expect(sha256(fs.readFileSync(out))).toBe(sha256(expected));
    const byTime = await runFerryAsync(['export', '--data', dataDir, '--volume', VOL_A, '--point', new Date().toISOString(), '--out', out]);
    expect(byTime.status, byTime.stderr).toBe(0);
    const latest = await runFerryAsync(['export', '--data', dataDir, '--volume', VOL_A, '--point', 'latest', '--out', out]);
    expect(latest.status, latest.stderr).toBe(0);
  });
});
