import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ChangeRecord } from '../../agent/transport/change-set';
import type { ReceiverConnection } from '../../agent/transport/receiver-connection';
import { ferry } from '../../proto/frames';
import { loggedInConnection, registeredConnection, sendRecords } from './agent-session';
import { ReceiverProcess, runFerry, runFerryAsync, startReceiverProcess, writePassphrase } from './receiver-process';
import { prng, randomRecords, sha256, VolumeModel } from './volume-model';

/** One volume as the test's own agent streams it: every record kept so any seq can be rebuilt. */
export class StreamedVolume {
  readonly model: VolumeModel;
  seq = 0;
  readonly records = new Map<number, ChangeRecord>();

  constructor(
    readonly id: string,
    readonly sizeBytes: number,
  ) {
    this.model = new VolumeModel(sizeBytes);
  }

  add(records: ChangeRecord[]): { first: number; last: number } {
    const first = this.seq + 1;
    records.forEach((r, i) => {
      this.model.add(first + i, r);
      this.records.set(first + i, r);
    });
    this.seq += records.length;
    return { first, last: this.seq };
  }
}

export interface ExportOutcome {
  status: number | null;
  stdout: string;
  stderr: string;
  sha?: string;
}

/**
 * A receiver process and one test agent speaking the real protocol, with an independent model
 * of each volume: what the tests of faults at rest and full disks build on.
 */
export class FaultLab {
  readonly dataDir: string;
  readonly passFile: string;
  readonly passphrase: string;
  rx: ReceiverProcess | undefined;
  conn: ReceiverConnection | undefined;
  private credentials: { agentId: string; credential: Buffer } | undefined;
  readonly volumes = new Map<string, StreamedVolume>();
  /** Error codes the receiver ended sessions with, in order. */
  readonly refusals: string[] = [];
  /** Highest durable seq the receiver acknowledged, per volume (what must never be lost). */
  readonly acked = new Map<string, number>();
  /** Points the receiver acknowledged. */
  readonly points: Array<{ volumeId: string; pointId: number; seq: number }> = [];
  /** Every RepairRequest the receiver sent, in order. */
  readonly repairRequests: ferry.IRepairRequest[] = [];
  readonly rand: () => number;
  private clockUs = Date.now() * 1000 - 3_600_000_000;

  constructor(
    readonly dir: string,
    readonly receiverArgs: string[] = [],
    seed = 1,
    dataDir?: string,
  ) {
    this.dataDir = dataDir ?? path.join(dir, 'data');
    const pass = writePassphrase(dir);
    this.passFile = pass.file;
    this.passphrase = pass.passphrase;
    this.rand = prng(seed);
  }

  volume(id: string, sizeBytes: number): StreamedVolume {
    let v = this.volumes.get(id);
    if (!v) {
      v = new StreamedVolume(id, sizeBytes);
      this.volumes.set(id, v);
    }
    return v;
  }

  nextTimeUs(): number {
    this.clockUs += 2000;
    return this.clockUs;
  }

  async start(extraArgs: string[] = []): Promise<ReceiverProcess> {
    const rx = await startReceiverProcess(this.dataDir, this.passFile, [...this.receiverArgs, ...extraArgs], { FERRY_LOG_LEVEL: 'info' });
    this.rx = rx;
    // FERRY_TEST_LOGS=DIR keeps every receiver's log for a look after a failure.
    const logs = process.env.FERRY_TEST_LOGS;
    if (logs) void rx.exited.then(() => fs.writeFileSync(path.join(logs, `receiver-${path.basename(this.dir)}-${rx.child.pid}.log`), rx.output()));
    return rx;
  }

  /** Logs in (registering the first time) and declares every volume; returns where each stands. */
  async connect(): Promise<Map<string, number>> {
    const rx = this.rx as ReceiverProcess;
    if (!this.credentials) {
      const r = await registeredConnection(rx, this.passphrase, 'fault-agent');
      this.conn = r.conn;
      this.credentials = { agentId: r.agentId, credential: r.credential };
    } else {
      this.conn = await loggedInConnection(rx, this.credentials.agentId, this.credentials.credential);
    }
    const conn = this.conn;
    conn.on('frame', (f: ferry.Frame) => {
      if (f.repairRequest) this.repairRequests.push(f.repairRequest);
    });
    conn.on('progress', (volumeId: string, p: { durableSeq: number }) => {
      if (conn === this.conn) this.acked.set(volumeId, Math.max(this.acked.get(volumeId) ?? 0, p.durableSeq));
    });
    conn.on('failed', (err: { code?: string }) => {
      if (err.code) this.refusals.push(err.code);
    });
    // An agent heartbeats every second, held, waiting or not (the receiver closes silent sessions).
    const beat = setInterval(() => {
      if (conn !== this.conn || conn.error) return clearInterval(beat);
      try {
        conn.send({ heartbeat: { timeUs: Date.now() * 1000, pendingSinceUs: 0 } });
      } catch {
        clearInterval(beat);
      }
    }, 1000);
    beat.unref();
    const durable = new Map<string, number>();
    for (const v of this.volumes.values()) durable.set(v.id, (await this.conn.declareVolume(v.id, v.sizeBytes, 4096)).durableSeq);
    return durable;
  }

  /** Random records for a volume, sent as change sets of up to `perSet`; returns the last seq. */
  sendRandom(volumeId: string, count: number, perSet = 20): number {
    const v = this.volumes.get(volumeId) as StreamedVolume;
    let left = count;
    while (left > 0) {
      const n = Math.min(perSet, left);
      const recs = randomRecords(this.rand, n, v.sizeBytes, () => this.nextTimeUs());
      const { first } = v.add(recs);
      sendRecords(this.conn as ReceiverConnection, volumeId, first, recs);
      left -= n;
    }
    return v.seq;
  }

  /** Sends records as one change set. */
  send(volumeId: string, records: ChangeRecord[]): number {
    const v = this.volumes.get(volumeId) as StreamedVolume;
    const { first } = v.add(records);
    sendRecords(this.conn as ReceiverConnection, volumeId, first, records);
    return v.seq;
  }

  /** Sends again every record after `durable` (what an agent does after reconnecting). */
  resend(volumeId: string, durable: number): void {
    const v = this.volumes.get(volumeId) as StreamedVolume;
    let next = durable + 1;
    while (next <= v.seq) {
      const batch: ChangeRecord[] = [];
      for (let s = next; s <= v.seq && batch.length < 20; s++) batch.push(v.records.get(s) as ChangeRecord);
      next = sendRecords(this.conn as ReceiverConnection, volumeId, next, batch) + 1;
    }
  }

  /** The first RepairRequest for `volumeId` (already received, or the next one). */
  async repairRequest(volumeId: string, timeoutMs = 60_000): Promise<ferry.IRepairRequest> {
    const seen = this.repairRequests.find((r) => r.volumeId === volumeId);
    if (seen) return seen;
    return (this.conn as ReceiverConnection).waitFor((f) => (f.repairRequest?.volumeId === volumeId ? f.repairRequest : undefined), timeoutMs, `a repair request for ${volumeId}`);
  }

  /**
   * Answers a repair as an agent would: the ranges (all of the volume when none) are sent again
   * from the model of the source, then RepairDone. Returns the seq it ends at.
   */
  answerRepair(request: ferry.IRepairRequest, chunk = 256 * 1024): number {
    const v = this.volumes.get(request.volumeId ?? '') as StreamedVolume;
    const image = v.model.imageAt(v.seq);
    const ranges = (request.ranges ?? []).length > 0 ? (request.ranges ?? []).map((r) => ({ offset: Number(r.offset ?? 0), length: Number(r.length ?? 0) })) : [{ offset: 0, length: v.sizeBytes }];
    for (const r of ranges) {
      for (let off = r.offset; off < r.offset + r.length; off += chunk) {
        const len = Math.min(chunk, r.offset + r.length - off);
        this.send(v.id, [{ kind: 'write', offset: off, length: len, captureTimeUs: this.nextTimeUs(), data: Buffer.from(image.subarray(off, off + len)) }]);
      }
    }
    (this.conn as ReceiverConnection).send({ repairDone: { volumeId: v.id, requestId: request.requestId, throughSeq: v.seq, sentBytes: 0 } });
    return v.seq;
  }

  async tag(volumeId: string, seq?: number): Promise<{ pointId: number; seq: number }> {
    const v = this.volumes.get(volumeId) as StreamedVolume;
    const cut = seq ?? v.seq;
    const [pointId] = await (this.conn as ReceiverConnection).tag({
      kind: ferry.Tag.Kind.CRASH,
      groupId: `t-${volumeId}-${cut}-${Math.floor(this.rand() * 1e9)}`,
      timeUs: this.nextTimeUs(),
      cuts: [{ volumeId, seq: cut, accuracy: ferry.Accuracy.EXACT }],
    });
    return { pointId, seq: cut };
  }

  async waitApplied(volumeId: string, seq?: number): Promise<void> {
    const v = this.volumes.get(volumeId) as StreamedVolume;
    await (this.conn as ReceiverConnection).waitForProgress(volumeId, seq ?? v.seq, 'appliedSeq', 120_000);
  }

  async waitDurable(volumeId: string, seq?: number): Promise<number> {
    const v = this.volumes.get(volumeId) as StreamedVolume;
    return (await (this.conn as ReceiverConnection).waitForProgress(volumeId, seq ?? v.seq, 'durableSeq', 120_000)).durableSeq;
  }

  /**
   * Streams `count` more random records of a volume the way an agent does: obeys Throttle,
   * keeps a bounded window in flight, and after a refused or lost session logs in again and
   * resends everything after the receiver's durable seq. Every `tagEvery` change sets it cuts
   * a tag. Checks on every reconnect that the receiver's durable seq did not go back below
   * what it had acknowledged. Resolves once all of it is durable.
   */
  async stream(volumeId: string, count: number, opts: { perSet?: number; windowSets?: number; tagEvery?: number; deadlineMs?: number } = {}): Promise<void> {
    const v = this.volumes.get(volumeId) as StreamedVolume;
    const perSet = opts.perSet ?? 10;
    const windowSets = opts.windowSets ?? 4;
    const target = v.seq + count;
    const deadline = Date.now() + (opts.deadlineMs ?? 240_000);
    let sets = 0;
    let resendFrom: number | undefined;
    for (;;) {
      if (Date.now() > deadline) {
        throw new Error(`streaming ${volumeId} did not finish: seq ${v.seq}/${target}, acked ${this.acked.get(volumeId) ?? 0}, last refusals ${this.refusals.slice(-5).join(',')}`);
      }
      const conn = this.conn;
      if (!conn || conn.error) {
        resendFrom = await this.reconnect(volumeId, deadline);
        continue;
      }
      if (conn.throttleDelayMs > 0) {
        await waitUntil(conn, () => conn.throttleDelayMs === 0, 1000);
        continue;
      }
      if (resendFrom !== undefined) {
        // Held change sets go out only once the receiver lets them (as an agent's pipeline does).
        try {
          this.resend(volumeId, resendFrom);
        } catch {
          // the connection failed again: reconnect
        }
        resendFrom = undefined;
        continue;
      }
      const durable = conn.volumeProgress(volumeId)?.durableSeq ?? 0;
      if (durable >= target && v.seq >= target) return;
      if (v.seq < target && v.seq - durable < windowSets * perSet) {
        const n = Math.min(perSet, target - v.seq);
        const recs = randomRecords(this.rand, n, v.sizeBytes, () => this.nextTimeUs());
        const { first } = v.add(recs);
        try {
          sendRecords(conn, volumeId, first, recs);
        } catch {
          continue; // the connection failed: the next turn reconnects and resends
        }
        sets++;
        if (opts.tagEvery && sets % opts.tagEvery === 0) {
          const cut = v.seq;
          void conn
            .tag({ kind: ferry.Tag.Kind.CRASH, groupId: `s-${volumeId}-${cut}`, timeUs: this.nextTimeUs(), cuts: [{ volumeId, seq: cut, accuracy: ferry.Accuracy.EXACT }] })
            .then(([pointId]) => this.points.push({ volumeId, pointId, seq: cut }))
            .catch(() => undefined);
        }
        continue;
      }
      await conn.waitForProgress(volumeId, Math.min(v.seq, durable + 1), 'durableSeq', 1000).catch(() => undefined);
    }
  }

  /** Logs in again until the receiver takes the session; returns its durable seq for the volume. */
  async reconnect(volumeId: string, deadline: number): Promise<number> {
    this.conn?.removeAllListeners('frame');
    await this.conn?.close().catch(() => undefined);
    this.conn = undefined;
    for (;;) {
      try {
        const durable = await this.connect();
        const d = durable.get(volumeId) ?? 0;
        const acked = this.acked.get(volumeId) ?? 0;
        if (d < acked) this.regressions.push(`${volumeId}: durable ${d} after reconnect, ${acked} acknowledged before`);
        return d;
      } catch {
        // connect() may have set a connection before it failed (TS narrowed it to undefined above).
        const failed = this.conn as ReceiverConnection | undefined;
        await failed?.close().catch(() => undefined);
        this.conn = undefined;
        if (Date.now() > deadline) throw new Error(`cannot reconnect to the receiver (last refusals: ${this.refusals.slice(-5).join(',')})`);
        await new Promise((r) => setTimeout(r, 250)); // an agent's reconnect backoff
      }
    }
  }

  /** Violations of "nothing acknowledged goes back" seen on reconnects. */
  readonly regressions: string[] = [];

  async stop(): Promise<void> {
    await this.conn?.close().catch(() => undefined);
    this.conn = undefined;
    await this.rx?.stop();
    this.rx = undefined;
  }

  async kill9(): Promise<void> {
    await this.rx?.kill9();
    this.rx = undefined;
    this.conn = undefined;
  }

  /** `ferry export` of a point (id or "latest"); the image's SHA-256 when it was written. */
  async exportPoint(volumeId: string, point: string | number): Promise<ExportOutcome> {
    const out = path.join(this.dir, `export-${volumeId}-${point}.img`);
    fs.rmSync(out, { force: true });
    const r = await runFerryAsync(['export', '--data', this.dataDir, '--volume', volumeId, '--point', String(point), '--out', out]);
    const sha = r.status === 0 ? sha256(fs.readFileSync(out)) : undefined;
    fs.rmSync(out, { force: true });
    return { ...r, sha };
  }

  expectedSha(volumeId: string, seq: number): string {
    return sha256((this.volumes.get(volumeId) as StreamedVolume).model.imageAt(seq));
  }

  verify(volumeId?: string): { status: number | null; report: VerifyJson; stderr: string } {
    const r = runFerry(['receiver', 'verify', '--data', this.dataDir, '--json', ...(volumeId ? ['--volume', volumeId] : [])]);
    let report: VerifyJson = { damageCount: -1, volumes: [], catalog: { damage: [] } };
    try {
      report = JSON.parse(r.stdout) as VerifyJson;
    } catch {
      // the status and stderr say why
    }
    return { status: r.status, report, stderr: r.stderr };
  }

  status(): StatusJson {
    return JSON.parse(runFerry(['receiver', 'status', '--data', this.dataDir, '--json']).stdout) as StatusJson;
  }

  /** Polls the receiver's status (a file it rewrites as things change) until the volume is in one of `states`. */
  async waitForState(volumeId: string, states: string[], what: string, timeoutMs = 120_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = this.status().volumes.find((x) => x.volumeId === volumeId);
      if (v && states.includes(v.state)) return v.state;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: volume is ${v?.state} (${v?.problem ?? ''})\nreceiver log:\n${this.rx?.output().slice(-4000) ?? ''}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** Resolves when `done()` holds (checked on every frame and failure) or after `maxMs`. */
function waitUntil(conn: ReceiverConnection, done: () => boolean, maxMs: number): Promise<void> {
  return new Promise((resolve) => {
    if (done() || conn.error) return resolve();
    const finish = (): void => {
      clearTimeout(timer);
      conn.off('frame', check);
      conn.off('failed', finish);
      resolve();
    };
    const check = (): void => {
      if (done()) finish();
    };
    const timer = setTimeout(finish, maxMs);
    conn.on('frame', check);
    conn.on('failed', finish);
  });
}

export interface DamageJson {
  kind: string;
  file: string;
  offset: number;
  length: number;
  seqFrom?: number;
  seqTo?: number;
  volumeOffset?: number;
  detail: string;
}

export interface VerifyJson {
  damageCount: number;
  catalog: { damage: DamageJson[] };
  volumes: Array<{ volumeId: string; damage: DamageJson[]; replicaBlocksChecked: number; tornBytes: number }>;
}

export interface StatusJson {
  running: boolean;
  alerts: Array<{ severity: string; subject: string; message: string }>;
  storage: Array<{ path: string; freeBytes: number; low: boolean }>;
  volumes: Array<{ volumeId: string; state: string; problem?: string; durableSeq: number; appliedSeq: number; damage: DamageJson[] }>;
}

/** Records of a spool or journal segment file: where each starts, its body and its meta. */
export function segmentRecords(file: string, metaBytes: number): Array<{ offset: number; bodyOffset: number; bodyLength: number; meta: Buffer }> {
  const buf = fs.readFileSync(file);
  const out: Array<{ offset: number; bodyOffset: number; bodyLength: number; meta: Buffer }> = [];
  let off = 0;
  while (off + 16 + metaBytes <= buf.length) {
    const bodyLength = buf.readUInt32LE(off + 4);
    out.push({ offset: off, bodyOffset: off + 16 + metaBytes, bodyLength, meta: buf.subarray(off + 16, off + 16 + metaBytes) });
    off += 16 + metaBytes + bodyLength;
  }
  return out;
}

/** Flips the bits of one byte of a file (what a bad sector or a stray write does). */
export function flipByte(file: string, offset: number): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, offset);
    b[0] ^= 0xff;
    fs.writeSync(fd, b, 0, 1, offset);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function segmentFiles(dir: string, ext: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((n) => n.endsWith(`.${ext}`))
    .sort()
    .map((n) => path.join(dir, n));
}
