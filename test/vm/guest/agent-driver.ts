/**
 * Runs inside the VM lab guest (as root): drives the real agent (`node bin/ferry agent run`,
 * capture: kernel) against a receiver on the host, with real writers (fio, or random-writer.c
 * when fio is missing) on a dm-ferry device. test/vm/kernel-capture.test.ts transpiles this file and
 * runs `node agent-driver.js <scenario> <params.json>` after its dmsetup steps.
 *
 * The driver asks the host to act at precise points through the host-control endpoint
 * (HOSTCTL). It prints one line `FERRY-RESULT {"failures": [...], "facts": {...}}`; the host
 * then exports every recorded point and compares it with the SHA-256 recorded here while no
 * writer ran.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as Addon from '../../../native/addon';
import type { AgentStatus } from '../../../agent/status';
import type * as ControlModule from '../../../agent/control';

const REPO = process.env.FERRY_REPO ?? '';
const HOSTCTL = process.env.HOSTCTL ?? '';
const FERRY = path.join(REPO, 'bin', 'ferry');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const addon = require(path.join(REPO, 'dist', 'native', 'addon')) as typeof Addon;

const KiB = 1024;
const MiB = 1024 * KiB;

interface Params {
  receiverUrl: string;
  fingerprint: string;
  passphraseFile: string;
  /** Writable directory of the guest for configs, logs and scratch files. */
  workDir: string;
  stateDir: string;
  volumeId: string;
  device: string;
  mount?: string;
  windowBytes?: string;
  crashIntervalMs?: number;
  /** Extra numbers a scenario uses (offsets, seeds...). */
  seed: number;
}

interface PointFact {
  name: string;
  pointId: number;
  kind: string;
  accuracy: string;
  /** SHA-256 of the device right after the cut, no writer running (exact points only). */
  sha256?: string;
}

const failures: string[] = [];
const facts: Record<string, unknown> = {};
const points: PointFact[] = [];
facts.points = points;

function check(cond: boolean, message: string): void {
  if (!cond) failures.push(message);
}

function note(message: string): void {
  process.stdout.write(`driver: ${message}\n`);
}

function sleepUntil(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `probe` every `everyMs` until it returns a value, or fails after `timeoutMs`. */
async function waitFor<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 240_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleepUntil(everyMs);
  }
}

async function host(action: string, arg = ''): Promise<string> {
  const res = await fetch(`${HOSTCTL}/${action}?arg=${encodeURIComponent(arg)}`, { signal: AbortSignal.timeout(120_000) });
  const text = (await res.text()).trim();
  if (res.status !== 200) throw new Error(`host action ${action} failed (${res.status}): ${text}`);
  return text;
}

interface RunResult {
  code: number | null;
  out: string;
}

function run(cmd: string, args: string[], opts: { env?: Record<string, string> } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, out }));
  });
}

async function runOk(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.out.trim()}`);
  return r.out;
}

// ---- the agent -----------------------------------------------------------------------------

class AgentProc {
  readonly configFile: string;
  readonly logFile: string;
  readonly stateDir: string;
  private child: ChildProcess | undefined;
  private exit: Promise<number | null> = Promise.resolve(null);
  runs = 0;

  constructor(private readonly p: Params) {
    this.configFile = path.join(p.workDir, 'agent.json');
    this.logFile = path.join(p.workDir, 'agent.log');
    this.stateDir = p.stateDir;
    const config = {
      receiver: { url: p.receiverUrl, fingerprint: p.fingerprint },
      name: 'vm-guest',
      stateDir: p.stateDir,
      capture: 'kernel',
      passphraseFile: p.passphraseFile,
      volumes: [{ id: p.volumeId, path: p.device, ...(p.mount ? { mount: p.mount } : {}) }],
      pipeline: p.windowBytes ? { windowBytes: p.windowBytes } : undefined,
      tags: { crashIntervalMs: p.crashIntervalMs ?? 3_600_000 },
    };
    fs.writeFileSync(this.configFile, JSON.stringify(config, null, 2));
  }

  start(): void {
    const out = fs.openSync(this.logFile, 'a');
    this.child = spawn(process.execPath, [FERRY, 'agent', 'run', '--config', this.configFile], {
      stdio: ['ignore', out, out],
      env: { ...process.env, FERRY_LOG_LEVEL: 'info' },
    });
    fs.closeSync(out);
    const child = this.child;
    this.exit = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    this.runs++;
    note(`agent started (pid ${child.pid})`);
  }

  get pid(): number {
    return this.child?.pid ?? 0;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async stop(): Promise<number | null> {
    if (this.running) this.child?.kill('SIGTERM');
    return this.exit;
  }

  async kill9(): Promise<void> {
    if (this.running) this.child?.kill('SIGKILL');
    await this.exit;
  }

  log(): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  status(): AgentStatus | undefined {
    try {
      const s = JSON.parse(fs.readFileSync(path.join(this.p.stateDir, 'status.json'), 'utf8')) as AgentStatus;
      return s.pid === this.pid ? s : undefined;
    } catch {
      return undefined;
    }
  }

  volume(): AgentStatus['volumes'][number] | undefined {
    return this.status()?.volumes[0];
  }

  /** Waits for `pred` on the volume's status; fails early if the agent died. */
  async waitVolume(what: string, pred: (v: AgentStatus['volumes'][number], s: AgentStatus) => boolean, timeoutMs = 240_000): Promise<AgentStatus['volumes'][number]> {
    return waitFor(
      what,
      () => {
        if (!this.running) throw new Error(`the agent exited while waiting for ${what}:\n${this.log().split('\n').slice(-30).join('\n')}`);
        const s = this.status();
        const v = s?.volumes[0];
        return v && s && pred(v, s) ? v : undefined;
      },
      timeoutMs,
    );
  }

  /** The resync finished and everything captured is durable at the receiver. */
  async waitCaughtUp(what: string, timeoutMs = 240_000): Promise<AgentStatus['volumes'][number]> {
    const control = await addon.FerryControl.open();
    try {
      return await this.waitVolume(
        `${what}: caught up`,
        (v, s) => {
          if (!s.connected || v.state !== 'protected' || v.backlogBytes !== 0 || v.durableSeq !== v.capturedSeq) return false;
          return v.resync === undefined || v.resync.finished;
        },
        timeoutMs,
      ).then(async (v) => {
        // Nothing left in the kernel either (every record committed, no dirty bits).
        await waitFor(`${what}: kernel ring empty`, async () => {
          const dev = (await control.list()).find((d) => d.name === path.basename(this.p.device));
          return dev !== undefined && dev.ringUsed === 0 && dev.dirtyBits === 0 && dev.modeName === 'data';
        });
        return this.volume() ?? v;
      });
    } finally {
      await control.close();
    }
  }
}

// ---- tags, hashes, writers -----------------------------------------------------------------

interface TagOutcome {
  ok: boolean;
  pointId: number;
  kind: string;
  accuracy: string;
  out: string;
}

function parseTag(r: RunResult): TagOutcome {
  const m = /point\(s\) (\d+)[^:]*: (\w+), (\w+)/.exec(r.out);
  // Exit 7: an app tag recorded as a crash point (e.g. no mount point to freeze); the kind says so.
  if ((r.code !== 0 && r.code !== 7) || !m) return { ok: false, pointId: 0, kind: '', accuracy: '', out: r.out.trim() };
  return { ok: true, pointId: Number(m[1]), kind: m[2], accuracy: m[3], out: r.out.trim() };
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
const control = require(path.join(REPO, 'dist', 'agent', 'control')) as typeof ControlModule;

/**
 * Asks the agent for a tag: through `ferry agent tag` (the CLI), or straight through its control
 * socket (the same request the CLI makes; a CLI start costs seconds under TCG).
 */
async function tagRequest(agent: AgentProc, name: string, opts: { app?: boolean; cli?: boolean } = {}): Promise<TagOutcome> {
  const app = opts.app === true;
  if (opts.cli) return parseTag(await run(process.execPath, [FERRY, 'agent', 'tag', '--config', agent.configFile, '--name', name, ...(app ? ['--app'] : [])]));
  const reply = await control.controlRequest(path.join(agent.stateDir, 'agent.sock'), { cmd: 'tag', app, name }, 120_000);
  if (!reply.ok) return { ok: false, pointId: 0, kind: '', accuracy: '', out: `tag failed: ${reply.error}` };
  const t = reply.tag;
  if (!t) return { ok: false, pointId: 0, kind: '', accuracy: '', out: 'the agent answered without a tag' };
  return { ok: true, pointId: t.pointIds[0], kind: t.kind, accuracy: t.accuracy, out: `point(s) ${t.pointIds.join(', ')}: ${t.kind}, ${t.accuracy}` };
}

async function tag(agent: AgentProc, name: string, opts: { app?: boolean; cli?: boolean } = {}): Promise<TagOutcome> {
  const t = await tagRequest(agent, name, opts);
  if (!t.ok) throw new Error(`tag ${name} failed: ${t.out}`);
  note(`tag ${name}: point ${t.pointId} ${t.kind} ${t.accuracy}`);
  return t;
}

async function sha256Device(device: string): Promise<string> {
  const control = await addon.FerryControl.open();
  let size: number;
  try {
    size = (await control.list()).find((d) => d.name === path.basename(device))?.sizeBytes ?? 0;
  } finally {
    await control.close();
  }
  if (size === 0) throw new Error(`${device} is not a ferry device`);
  const h = crypto.createHash('sha256');
  for (let off = 0; off < size; off += 4 * MiB) h.update(await addon.readDirect(device, off, Math.min(4 * MiB, size - off)));
  return h.digest('hex');
}

/** A tag cut while no writer runs, with the device's hash at that moment. */
async function exactPoint(agent: AgentProc, p: Params, name: string, opts: { app?: boolean; cli?: boolean } = {}): Promise<PointFact> {
  const t = await tag(agent, name, opts);
  const fact: PointFact = { name, pointId: t.pointId, kind: t.kind, accuracy: t.accuracy, sha256: await sha256Device(p.device) };
  points.push(fact);
  return fact;
}

// FERRY_VM_NO_FIO=1 (passed through by the test) exercises the node writer on a host with fio.
const haveFio = !process.env.FERRY_VM_NO_FIO && fs.existsSync('/usr/bin/fio');
if (!haveFio && !fs.existsSync(process.env.FERRY_VM_WRITER ?? '')) throw new Error('neither fio nor FERRY_VM_WRITER (test/vm/guest/random-writer.c, built) is there');

/**
 * Random-pattern writes of `bytes` in all (block sizes 4-64 KiB, random offsets aligned to the
 * smallest size) with fio, or with test/vm/guest/random-writer.c (FERRY_VM_WRITER, O_DIRECT,
 * one write at a time) when fio is missing. `rateKiBps` paces them. `bytes` must stay below the
 * region's size (see the random map below).
 */
async function randomWrites(device: string, bytes: number, seed: number, opts: { bs?: string; rateKiBps?: number; region?: { offset: number; size: number } } = {}): Promise<void> {
  const region = opts.region;
  const bs = opts.bs ?? '4k-64k';
  if (haveFio) {
    const args = [
      `--name=w${seed}`,
      `--filename=${device}`,
      '--rw=randwrite',
      bs.includes('-') ? `--bsrange=${bs}` : `--bs=${bs}`,
      '--direct=1',
      '--ioengine=libaio',
      '--iodepth=8',
      `--io_size=${bytes}`,
      `--randseed=${seed}`,
      '--refill_buffers',
      // fio's random map writes each block at most once per pass (io_size stays below the
      // region): no two writes in flight overlap. Overlapping writes in flight together land in
      // an order the block layer does not define: dm-ferry reads their overlap back, which
      // makes the points around them approximate (the overlap scenario covers that).
      '--minimal',
      ...(region ? [`--offset=${region.offset}`, `--size=${region.size}`] : []),
      ...(opts.rateKiBps ? [`--rate=${opts.rateKiBps}k`] : []),
    ];
    await runOk('fio', args);
    return;
  }
  const [lo, hi] = bs.split('-').map((v) => String(parseInt(v, 10)));
  const writer = process.env.FERRY_VM_WRITER ?? '';
  await runOk(writer, [device, String(bytes), String(seed), lo, hi ?? lo, String(region?.offset ?? 0), String(region?.size ?? 0), String(opts.rateKiBps ?? 0)]);
}

/**
 * Random writes that overlap while in flight together: fio without its random map
 * (`--norandommap`), many writes in flight (libaio, O_DIRECT), blocks of `bs` (a size or a
 * range) on 4 KiB boundaries in a small region, fresh random data in every write. The disk may
 * apply two overlapping writes in flight in either order; the replica must end up with what it
 * holds. Returns how many writes fio made.
 */
async function overlappingWrites(device: string, bytes: number, seed: number, opts: { bs: string; iodepth: number; region: { offset: number; size: number } }): Promise<number> {
  const out = await runOk('fio', [
    `--name=o${seed}`,
    `--filename=${device}`,
    '--rw=randwrite',
    opts.bs.includes('-') ? `--bsrange=${opts.bs}` : `--bs=${opts.bs}`,
    '--blockalign=4k',
    '--norandommap',
    '--direct=1',
    '--ioengine=libaio',
    `--iodepth=${opts.iodepth}`,
    `--io_size=${bytes}`,
    `--offset=${opts.region.offset}`,
    `--size=${opts.region.size}`,
    `--randseed=${seed}`,
    '--refill_buffers',
    '--output-format=json',
  ]);
  const doc = JSON.parse(out.slice(out.indexOf('{'))) as { jobs: Array<{ write: { total_ios: number } }> };
  return doc.jobs[0].write.total_ios;
}

async function kernelStats(): Promise<Addon.ControlStats> {
  const control = await addon.FerryControl.open();
  try {
    return await control.stats();
  } finally {
    await control.close();
  }
}

async function deviceInfo(device: string): Promise<Addon.DeviceInfo> {
  const control = await addon.FerryControl.open();
  try {
    const dev = (await control.list()).find((d) => d.name === path.basename(device));
    if (!dev) throw new Error(`${device} is not a ferry device`);
    return dev;
  } finally {
    await control.close();
  }
}

/**
 * Starts a tag that cannot finish yet (the pipeline is held up), waits until the kernel cut it
 * (its TAG counter moved), runs `release`, and returns the tag's outcome.
 */
async function tagWhileHeld(agent: AgentProc, name: string, release: () => Promise<unknown>): Promise<TagOutcome> {
  const before = (await kernelStats()).tagsOk;
  const pending = tagRequest(agent, name);
  await waitFor(`the kernel to cut tag ${name}`, async () => (await kernelStats()).tagsOk > before, 120_000, 50);
  await release();
  const t = await pending;
  note(`tag ${name}: ${t.ok ? `point ${t.pointId} ${t.kind} ${t.accuracy}` : t.out}`);
  return t;
}

// ---- scenarios -------------------------------------------------------------------------------

/**
 * (a) The initial full resync runs while fio writes; a tag cut during it is unusable; later
 * rounds of writes each end with an exact crash or app point whose hash is recorded.
 */
async function stream(p: Params): Promise<void> {
  const agent = new AgentProc(p);
  agent.start();
  // Writes from the start on: they land before, during and after the resync's marks.
  const during = randomWrites(p.device, 8 * MiB, p.seed, { rateKiBps: 2048 });
  // Hold the receiver: the resync cannot finish, so a tag now is cut in the middle of it.
  await agent.waitVolume('the resync to start', (v) => v.state === 'resyncing' && (v.resync?.doneBytes ?? 0) > 0);
  await host('stop-receiver-process');
  const mid = await tagWhileHeld(agent, 'during-resync', () => host('continue-receiver-process'));
  facts.duringResync = mid;
  check(mid.ok && mid.accuracy === 'none', `a tag cut during the resync must be unusable (none): ${mid.out}`);
  await during;
  const first = await agent.waitCaughtUp('the initial resync');
  facts.initialResync = first.resync;
  check(first.resync?.kind === 'full', `the first resync must be full: ${JSON.stringify(first.resync)}`);
  for (let round = 1; round <= 4; round++) {
    await randomWrites(p.device, 3 * MiB, p.seed + round);
    // Round 2 goes through the CLI (`ferry agent tag --app`), the others through the socket.
    await exactPoint(agent, p, `round-${round}`, { app: round % 2 === 0, cli: round === 2 });
  }
  // A tag cut while fio writes (the kernel holds new writes for the cut): it must not fail.
  const busy = randomWrites(p.device, 6 * MiB, p.seed + 99, { rateKiBps: 3072 });
  const t = await tag(agent, 'busy');
  check(t.accuracy === 'exact', `a tag during writes after the resync is exact: ${t.out}`);
  await busy;
  await agent.waitCaughtUp('the last writes');
  await exactPoint(agent, p, 'final');
  check((await agent.stop()) === 0, 'the agent stops cleanly');
}

/**
 * (b) A tiny pool and ring (module parameters): held up by a paused receiver the device goes
 * to METADATA (a tag then is approximate), then to BITMAP (a tag is refused), drains (a tag
 * is unusable), and comes back to DATA (exact, and equal to the device).
 */
async function degrade(p: Params): Promise<void> {
  const agent = new AgentProc(p);
  agent.start();
  await agent.waitCaughtUp('the initial resync');
  await exactPoint(agent, p, 'healthy');

  // METADATA: more data than the pool and the agent's window, fewer writes than the ring. The
  // paused apply throttles the agent, so the DIRTY records stay in the kernel, unread.
  const dirtyBefore = (await deviceInfo(p.device)).counters.dirtyRecords;
  await host('pause-apply');
  await randomWrites(p.device, 12 * MiB, p.seed + 1, { bs: '64k' });
  const meta = await deviceInfo(p.device);
  facts.metadataPhase = { dirtyRecords: meta.counters.dirtyRecords - dirtyBefore, bitmapWrites: meta.counters.bitmapWrites };
  check(meta.counters.dirtyRecords > dirtyBefore && meta.counters.bitmapWrites === 0, `the pool overflowed into METADATA mode, the ring did not: ${JSON.stringify(facts.metadataPhase)}`);
  const approx = await tagWhileHeld(agent, 'metadata', () => host('resume-apply'));
  facts.metadataTag = approx;
  check(approx.ok && approx.accuracy === 'approximate', `a tag cut before read-backs of METADATA writes is approximate: ${approx.out}`);
  await agent.waitCaughtUp('after METADATA');
  await exactPoint(agent, p, 'after-metadata');

  // BITMAP: the receiver stops answering (SIGSTOP), so nothing is committed and the ring fills.
  await host('pause-apply');
  await host('stop-receiver-process');
  await randomWrites(p.device, 16 * MiB, p.seed + 2, { bs: '4k' });
  const bm = await deviceInfo(p.device);
  facts.bitmapPhase = { mode: bm.modeName, dirtyBits: bm.dirtyBits, bitmapWrites: bm.counters.bitmapWrites };
  check(bm.modeName === 'bitmap' && bm.counters.bitmapWrites > 0, `the ring overflowed into BITMAP mode: ${JSON.stringify(facts.bitmapPhase)}`);
  const refused = await tagRequest(agent, 'in-bitmap', { cli: true });
  facts.bitmapTag = refused.out;
  check(!refused.ok && /bitmap mode/.test(refused.out), `a tag in BITMAP mode is refused with a clear reason: ${refused.out}`);
  // The receiver answers again but its apply stays paused: it takes about a spool cap (4 MiB)
  // more, enough commits for the device to start draining, then throttles the agent while the
  // dirty regions (some 3500 bits of 4 KiB) are still being read back.
  await host('continue-receiver-process');
  await waitFor('the device to start draining its bitmap', async () => (await deviceInfo(p.device)).modeName === 'draining', 120_000, 20);
  const draining = await tagWhileHeld(agent, 'draining', () => host('resume-apply'));
  facts.drainingTag = draining;
  check(draining.ok && draining.accuracy === 'none', `a tag cut before the bitmap is drained is unusable: ${draining.out}`);
  await agent.waitCaughtUp('after BITMAP');
  await exactPoint(agent, p, 'recovered');
  const log = agent.log();
  facts.modesLogged = ['pool full', 'dirty bitmap', 'back to full data'].filter((m) => log.includes(m));
  check(agent.volume()?.mode === 'exact', 'the agent reports exact capture again');
  check((await agent.stop()) === 0, 'the agent stops cleanly');
}

/** (c, first boot) Full resync; then a clean teardown with changes pending gives a delta. */
async function teardown(p: Params): Promise<void> {
  let agent = new AgentProc(p);
  agent.start();
  const full = await agent.waitCaughtUp('the initial resync');
  facts.fullResync = full.resync;
  check(full.resync?.kind === 'full', `first resync is full: ${JSON.stringify(full.resync)}`);
  await exactPoint(agent, p, 'after-full');
  check((await agent.stop()) === 0, 'the agent stops cleanly');

  // Writes the agent never saw, then a clean teardown: they become the saved dirty bits.
  const written = 2 * MiB;
  await randomWrites(p.device, written, p.seed + 1, { bs: '64k', region: { offset: 8 * MiB, size: 16 * MiB } });
  facts.deltaWritten = written;
  await runOk('dmsetup', ['remove', path.basename(p.device)]);
  await runOk('dmsetup', ['create', path.basename(p.device), '--table', process.env.FERRY_TABLE ?? '']);
  const info = await deviceInfo(p.device);
  facts.reloaded = { start: info.startStateName, dirtyBits: info.dirtyBits, generation: info.generation };
  check(info.startStateName === 'clean' && info.dirtyBits > 0, `the re-created device starts clean with dirty bits: ${JSON.stringify(facts.reloaded)}`);

  agent = new AgentProc(p);
  agent.start();
  const delta = await agent.waitCaughtUp('the delta resync');
  facts.deltaResync = delta.resync;
  check(delta.resync?.kind === 'delta', `after a clean teardown the resync is a delta: ${JSON.stringify(delta.resync)}`);
  await exactPoint(agent, p, 'after-delta');

  // Crash: the agent dies, more writes happen, the machine goes down without a teardown.
  await agent.kill9();
  await randomWrites(p.device, 1 * MiB, p.seed + 2, { bs: '64k', region: { offset: 32 * MiB, size: 16 * MiB } });
  facts.crashWritten = 1 * MiB;
  // The script powers off with `poweroff -f -n` right after this program exits.
}

/** (c, second boot) The device comes back DIRTY: a hash-compare resync sends only what differs. */
async function afterCrash(p: Params): Promise<void> {
  const info = await deviceInfo(p.device);
  facts.restarted = { start: info.startStateName, generation: info.generation };
  check(info.startStateName === 'dirty', `after a crash the device starts dirty: ${info.startStateName}`);
  const agent = new AgentProc(p);
  agent.start();
  const v = await agent.waitCaughtUp('the hash-compare resync');
  facts.compareResync = v.resync;
  check(v.resync?.kind === 'hash-compare', `after a crash the resync is a hash-compare: ${JSON.stringify(v.resync)}`);
  await exactPoint(agent, p, 'after-crash');
  check((await agent.stop()) === 0, 'the agent stops cleanly');
}

/** (d) The receiver goes away under churn and comes back on the same port: nothing is lost. */
async function outage(p: Params): Promise<void> {
  const agent = new AgentProc(p);
  agent.start();
  await agent.waitCaughtUp('the initial resync');
  await exactPoint(agent, p, 'before-outage');
  const churn = randomWrites(p.device, 16 * MiB, p.seed + 1, { rateKiBps: 4096 });
  await host('stop-receiver');
  await agent.waitVolume('the agent to notice the outage', (v, s) => !s.connected && v.state === 'disconnected');
  await churn;
  const during = await deviceInfo(p.device);
  facts.duringOutage = { mode: during.modeName, ringUsed: during.ringUsed, dirtyBits: during.dirtyBits };
  await host('start-receiver');
  const v = await agent.waitCaughtUp('after the outage');
  facts.afterOutage = { durableSeq: v.durableSeq, mode: v.mode };
  await exactPoint(agent, p, 'after-outage');
  const s = agent.status();
  check((s?.points.tagsSent ?? 0) > 2, `crash tags kept being cut: ${s?.points.tagsSent}`);

  // The agent dies with batches handed out but not committed (the receiver is frozen, so some
  // reach it and none is acknowledged). The kernel hands them out again to the next agent, which
  // must give them the stream seqs they had: the receiver keeps what it has and takes the rest.
  const resetsBefore = (await kernelStats()).resets;
  await host('stop-receiver-process');
  await randomWrites(p.device, 4 * MiB, p.seed + 2);
  await waitFor('batches handed out and not committed', async () => (await deviceInfo(p.device)).ringHandedOut > 0);
  await agent.kill9();
  await host('continue-receiver-process');
  facts.resets = (await kernelStats()).resets - resetsBefore;
  check(facts.resets === 1, `closing the control device voided the uncommitted batches: ${facts.resets}`);
  agent.start();
  const again = await agent.waitCaughtUp('after the agent restart');
  facts.afterRestart = { resync: again.resync ?? null, durableSeq: again.durableSeq };
  check(again.resync === undefined, `the restarted agent continues the stream without a resync: ${JSON.stringify(again.resync)}`);
  check(/the stream continues where it stopped/.test(agent.log()), 'the restarted agent says it continues the stream');
  await exactPoint(agent, p, 'after-restart');
  check((await agent.stop()) === 0, 'the agent stops cleanly');
}

/**
 * (e) ext4 on dm-ferry, files written all along: app-consistent points (freeze + tag) while the
 * writer runs and once it stopped. The host checks the images with fsck and the files' hashes.
 */
async function ext4(p: Params): Promise<void> {
  const mount = p.mount as string;
  const agent = new AgentProc(p);
  agent.start();
  await agent.waitCaughtUp('the initial resync');
  const done = path.join(p.workDir, 'files.done');
  fs.writeFileSync(done, '');
  let stop = false;
  // At most 400 files of 4-64 KiB (13 MiB): the filesystem never fills up.
  const writer = (async () => {
    for (let i = 0; !stop && i < 400; i++) {
      const name = `f${String(i).padStart(4, '0')}`;
      const data = crypto.randomBytes(4 * KiB * (1 + (i % 16)));
      const file = path.join(mount, name);
      const fd = fs.openSync(file, 'w');
      fs.writeSync(fd, data);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fs.appendFileSync(done, `${crypto.createHash('sha256').update(data).digest('hex')}  ${name}\n`);
      await new Promise((r) => setImmediate(r));
    }
  })();
  writer.catch(() => undefined); // awaited below
  await waitFor('the writer to write some files', () => fs.readFileSync(done, 'utf8').split('\n').length > 20);
  // Files complete (fsync'd) before the freeze must be in the point, with their content.
  const before = fs.readFileSync(done, 'utf8');
  const busy = await tag(agent, 'app-busy', { app: true, cli: true });
  check(busy.kind === 'app' && busy.accuracy === 'exact', `an app tag while files are written is app-consistent and exact: ${busy.out}`);
  points.push({ name: 'app-busy', pointId: busy.pointId, kind: busy.kind, accuracy: busy.accuracy });
  facts.busyFiles = before;
  stop = true;
  await writer;
  await runOk('sync', []);
  facts.files = fs.readFileSync(done, 'utf8');
  await agent.waitCaughtUp('after the writer');
  const quiet = await tag(agent, 'app-quiet', { app: true, cli: true });
  check(quiet.kind === 'app' && quiet.accuracy === 'exact', `an app tag on a quiet filesystem is app-consistent and exact: ${quiet.out}`);
  points.push({ name: 'app-quiet', pointId: quiet.pointId, kind: quiet.kind, accuracy: quiet.accuracy });
  check((await agent.stop()) === 0, 'the agent stops cleanly');
}

/**
 * (f) Overlapping writes in flight (raw I/O, as a database on a raw device does): fio writes
 * 4-32 KiB blocks at queue depth 48, then 4 KiB blocks at 64, into small regions without a
 * random map while the agent replicates. The test puts a device below dm-ferry on which such
 * writes complete in another order than they land. The kernel counts the overlaps it saw (they
 * must have happened, or this proves nothing) and reads each one back after both writes
 * completed; once the agent has drained, a point is cut and its export must equal the device.
 */
async function overlap(p: Params): Promise<void> {
  if (!haveFio) throw new Error('the overlap scenario needs fio (apt-get install fio)');
  const agent = new AgentProc(p);
  agent.start();
  await agent.waitCaughtUp('the initial resync');
  const before = (await deviceInfo(p.device)).counters;
  facts.fioWrites =
    (await overlappingWrites(p.device, 24 * MiB, p.seed, { bs: '4k-32k', iodepth: 48, region: { offset: MiB, size: 2 * MiB } })) +
    // a second pass with single 4 KiB blocks at a deeper queue: whole-block overlaps
    (await overlappingWrites(p.device, 8 * MiB, p.seed + 1, { bs: '4k', iodepth: 64, region: { offset: 4 * MiB, size: MiB } }));
  await agent.waitCaughtUp('after the overlapping writes');
  const after = await deviceInfo(p.device);
  facts.overlaps = after.counters.overlaps - before.overlaps;
  facts.overlapDirty = after.counters.overlapDirty - before.overlapDirty;
  facts.dirtyRecords = after.counters.dirtyRecords - before.dirtyRecords;
  facts.writes = after.counters.writes - before.writes;
  facts.bitmapWrites = after.counters.bitmapWrites - before.bitmapWrites;
  note(`overlap: ${JSON.stringify({ fioWrites: facts.fioWrites, overlaps: facts.overlaps, overlapDirty: facts.overlapDirty, dirtyRecords: facts.dirtyRecords, writes: facts.writes, bitmapWrites: facts.bitmapWrites })}`);
  check((facts.overlaps as number) > 0, `fio made overlapping writes in flight together: ${facts.overlaps}`);
  await exactPoint(agent, p, 'after-overlaps');
  check((await agent.stop()) === 0, 'the agent stops cleanly');
}

const SCENARIOS: Record<string, (p: Params) => Promise<void>> = { stream, degrade, teardown, 'after-crash': afterCrash, outage, ext4, overlap };

async function main(): Promise<void> {
  const [scenario, paramsFile] = process.argv.slice(2);
  const fn = SCENARIOS[scenario];
  if (!fn || !paramsFile) throw new Error(`usage: agent-driver.js <${Object.keys(SCENARIOS).join('|')}> <params.json>`);
  const p = JSON.parse(fs.readFileSync(paramsFile, 'utf8')) as Params;
  fs.mkdirSync(p.workDir, { recursive: true });
  facts.fio = haveFio;
  let agentLog = '';
  try {
    await fn(p);
  } catch (err) {
    failures.push(`${scenario}: ${(err as Error).stack ?? String(err)}`);
  } finally {
    try {
      agentLog = fs.readFileSync(path.join(p.workDir, 'agent.log'), 'utf8');
    } catch {
      agentLog = '';
    }
  }
  if (failures.length > 0) process.stdout.write(`--- agent log (tail) ---\n${agentLog.split('\n').slice(-60).join('\n')}\n`);
  process.stdout.write(`FERRY-RESULT ${JSON.stringify({ scenario, failures, facts })}\n`);
}

void main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stdout.write(`driver failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(2);
  },
);
