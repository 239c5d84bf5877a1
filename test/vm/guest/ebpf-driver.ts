/**
 * Runs inside the VM lab guest (as root) for test/vm/ebpf-tracker.test.ts: opens the eBPF write
 * tracker from dist/, tracks /dev/vda (partitioned by the test's script) and /dev/nullb0, does the
 * plan's writes, discards, zero-outs and synchronous writes with dd/blkdiscard (one shell: a
 * process start costs seconds under TCG), overflows the ring and exits without unloading.
 * `node ebpf-driver.js second` is the next process (an agent restart): it opens the pinned
 * tracker, drains what was written in between and unloads it. Neither asserts anything: each
 * prints what it saw as one line, `FERRY-FIRST {...}` (DriverReport) and `FERRY-SECOND {...}`
 * (SecondReport), for the host to check.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as BpfTrackerModule from '../../../agent/capture/ebpf/bpf-tracker';
import type * as EventsModule from '../../../agent/capture/ebpf/events';
import type { TraceEvent, TrackedDisk, WriteTracker } from '../../../agent/capture/ebpf/tracker';

const REPO = process.env.FERRY_REPO ?? process.cwd();
// eslint-disable-next-line @typescript-eslint/no-require-imports
const bpf = require(path.join(REPO, 'dist', 'agent', 'capture', 'ebpf', 'bpf-tracker')) as typeof BpfTrackerModule;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { decodeEvents } = require(path.join(REPO, 'dist', 'agent', 'capture', 'ebpf', 'events')) as typeof EventsModule;

export interface Range {
  offset: number;
  bytes: number;
}

export interface DriverPlan {
  ringBytes: number;
  chunkShift: number;
  /** Direct writes on vda1 and vda2, offsets within the partition. */
  vda1Writes: Range[];
  vda2Writes: Range[];
  /** A direct read on vda2 (must report nothing). */
  vda2Read: Range;
  discard: Range;
  zeroOut: Range;
  /** O_DIRECT|O_SYNC writes: on nullb0 (FUA capable) and on vda2 (no FUA: a flush follows). */
  nullbSyncWrite: Range;
  vda2SyncWrite: Range;
  /** 4 KiB direct writes in one dd, more than the ring holds, with nobody draining. */
  overflow: { offset: number; blocks: number };
  /** A direct write on vda2 by the test's script after the first process exited. */
  betweenWrite: Range;
}

export interface SeenEvent {
  slot: number;
  sector: number;
  bytes: number;
  op: string;
  fua: boolean;
  preflush: boolean;
  error: boolean;
}

export interface SeenError {
  code?: string;
  reason?: string;
  message: string;
}

export interface DriverReport {
  bpffsBefore: boolean;
  bpffsAfter: boolean;
  badObject?: SeenError;
  notBpffs?: SeenError;
  instanceId: string;
  reused: boolean;
  vda: TrackedDisk & { slot: number; vda1Start: number; vda2Start: number };
  nullb: TrackedDisk & { slot: number; fua: string };
  vdaFua: string;
  trackedAfterTrack: Array<[number, TrackedDisk]>;
  sameSlotAgain: number;
  geometryChange?: SeenError;
  /** Events before any I/O (none expected). */
  beforeIo: SeenEvent[];
  /** Events of the I/O batch (the plan's writes, read, discard, zero-out, sync writes), in order. */
  io: SeenEvent[];
  overflow: {
    countersBefore: { events: number; overflowed: number; lost: number };
    countersAfter: { events: number; overflowed: number; lost: number };
    events: SeenEvent[];
    bitmap: { bitsBase64: string; nbits: number; chunkShift: number; dirty: number };
    dirtyAfterTake: number;
  };
  eventTimesPositive: boolean;
  /** Opening as nobody. */
  unprivileged?: SeenError;
  /** Milliseconds per step, for the log. */
  stepMs: Record<string, number>;
}

export interface SecondReport {
  reused: boolean;
  instanceId: string;
  tracked: Array<[number, TrackedDisk]>;
  /** What the ring held when the second process opened it. */
  events: SeenEvent[];
  /** Opened after its link pin was removed. */
  afterStale: { reused: boolean; instanceId: string; tracked: number };
  pinsAfterUnload: string[];
  reopen: { reused: boolean; instanceId: string; tracked: number };
  pinsAfterSecondUnload: string[];
  stepMs: Record<string, number>;
}

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}`);
  return r.stdout;
}

/** One shell for a whole batch of I/O commands: a process start costs seconds under TCG. */
function shell(lines: string[]): void {
  run('/bin/sh', ['-ec', lines.join('\n')]);
}

function ddWrite(device: string, range: Range, oflags = 'direct'): string {
  return `dd if=/dev/urandom of=${device} bs=${range.bytes} count=1 seek=${range.offset} oflag=${oflags},seek_bytes conv=notrunc status=none`;
}

function blockDisk(name: string): TrackedDisk {
  const [major, minor] = fs.readFileSync(`/sys/block/${name}/dev`, 'utf8').trim().split(':').map(Number);
  const sizeBytes = Number(fs.readFileSync(`/sys/block/${name}/size`, 'utf8').trim()) * 512;
  return { major, minor, sizeBytes, chunkShift: 0 };
}

function sysfs(file: string): string {
  return fs.readFileSync(file, 'utf8').trim();
}

const BPF_FS_MAGIC = 0xcafe4a11;

function isBpfFs(dir: string): boolean {
  return fs.statfsSync(dir).type === BPF_FS_MAGIC;
}

function seen(e: TraceEvent): SeenEvent {
  return { slot: e.slot, sector: e.sector, bytes: e.bytes, op: e.op, fua: e.fua, preflush: e.preflush, error: e.error };
}

let timesPositive = true;

/** Everything in the ring now, decoded. */
function drainAll(t: WriteTracker): SeenEvent[] {
  const out: SeenEvent[] = [];
  for (;;) {
    const buf = t.drain(1000);
    if (buf.length === 0) return out;
    for (const e of decodeEvents(buf)) {
      if (e.timeNs <= 0n) timesPositive = false;
      out.push(seen(e));
    }
  }
}

function asSeenError(err: unknown): SeenError {
  const e = err as { code?: unknown; reason?: unknown; message?: unknown };
  return {
    code: typeof e.code === 'string' ? e.code : undefined,
    reason: typeof e.reason === 'string' ? e.reason : undefined,
    message: String(e.message ?? err),
  };
}

async function expectRejection(p: Promise<WriteTracker>): Promise<SeenError | undefined> {
  try {
    const t = await p;
    t.close({ unload: true });
    return undefined;
  } catch (err) {
    return asSeenError(err);
  }
}

function pins(): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const name of fs.readdirSync(dir)) {
      const p = path.join(dir, name);
      if (fs.statSync(p).isDirectory()) walk(p);
      out.push(p);
    }
  };
  walk('/sys/fs/bpf');
  return out;
}

const stepMs: Record<string, number> = {};
let stepStart = Date.now();
function lap(name: string): void {
  const now = Date.now();
  stepMs[name] = now - stepStart;
  stepStart = now;
}

async function first(plan: DriverPlan): Promise<DriverReport> {
  const bpffsBefore = isBpfFs('/sys/fs/bpf');
  const badObject = await expectRejection(bpf.openBpfTracker({ objectPath: '/nonexistent/ferry_trace.bpf.o', ringBytes: plan.ringBytes }));
  fs.mkdirSync('/run/not-bpffs', { recursive: true });
  const notBpffs = await expectRejection(bpf.openBpfTracker({ pinDir: '/run/not-bpffs/v1', ringBytes: plan.ringBytes }));
  lap('errors');

  const t = await bpf.openBpfTracker({ ringBytes: plan.ringBytes });
  lap('load');
  const bpffsAfter = isBpfFs('/sys/fs/bpf');
  const vdaDisk = { ...blockDisk('vda'), chunkShift: plan.chunkShift };
  const nullbDisk = { ...blockDisk('nullb0'), chunkShift: plan.chunkShift };
  const vdaSlot = t.track(vdaDisk);
  const nullbSlot = t.track(nullbDisk);
  const sameSlotAgain = t.track(vdaDisk);
  let geometryChange: SeenError | undefined;
  try {
    t.track({ ...vdaDisk, chunkShift: plan.chunkShift + 1 });
  } catch (err) {
    geometryChange = asSeenError(err);
  }
  const trackedAfterTrack = [...t.tracked()];
  const vda1Start = Number(sysfs('/sys/block/vda/vda1/start'));
  const vda2Start = Number(sysfs('/sys/block/vda/vda2/start'));
  const beforeIo = drainAll(t);

  shell([
    ...plan.vda1Writes.map((w) => ddWrite('/dev/vda1', w)),
    ...plan.vda2Writes.map((w) => ddWrite('/dev/vda2', w)),
    `dd if=/dev/vda2 of=/dev/null bs=${plan.vda2Read.bytes} count=1 skip=${plan.vda2Read.offset} iflag=direct,skip_bytes status=none`,
    `blkdiscard -o ${plan.discard.offset} -l ${plan.discard.bytes} /dev/vda2`,
    `blkdiscard -z -o ${plan.zeroOut.offset} -l ${plan.zeroOut.bytes} /dev/vda2`,
    ddWrite('/dev/nullb0', plan.nullbSyncWrite, 'direct,sync'),
    ddWrite('/dev/vda2', plan.vda2SyncWrite, 'direct,sync'),
  ]);
  const io = drainAll(t);
  lap('io');

  // Nobody drains while dd writes more than the ring holds.
  const countersBefore = t.counters();
  shell([`dd if=/dev/urandom of=/dev/vda2 bs=4096 count=${plan.overflow.blocks} seek=${plan.overflow.offset} oflag=direct,seek_bytes conv=notrunc status=none`]);
  const countersAfter = t.counters();
  const overflowEvents = drainAll(t);
  const take = t.takeBitmap(vdaSlot);
  const dirtyAfterTake = t.takeBitmap(vdaSlot).dirty;
  lap('overflow');

  const instanceId = t.instanceId;
  const reused = t.reused;
  // Exits without unloading, as an agent that stops: the program keeps tracking.
  t.close({ unload: false });
  // As nobody (setuid from root drops every capability), opening must fail with a reason.
  process.setgid(65534);
  process.setuid(65534);
  const unprivileged = await expectRejection(bpf.openBpfTracker({ ringBytes: plan.ringBytes }));
  return {
    bpffsBefore,
    bpffsAfter,
    badObject,
    notBpffs,
    instanceId,
    reused,
    vda: { ...vdaDisk, slot: vdaSlot, vda1Start, vda2Start },
    nullb: { ...nullbDisk, slot: nullbSlot, fua: sysfs('/sys/block/nullb0/queue/fua') },
    vdaFua: sysfs('/sys/block/vda/queue/fua'),
    trackedAfterTrack,
    sameSlotAgain,
    geometryChange,
    beforeIo,
    io,
    overflow: {
      countersBefore,
      countersAfter,
      events: overflowEvents,
      bitmap: { bitsBase64: take.bits.toString('base64'), nbits: take.nbits, chunkShift: take.chunkShift, dirty: take.dirty },
      dirtyAfterTake,
    },
    eventTimesPositive: timesPositive,
    unprivileged,
    stepMs,
  };
}

/** The next agent: finds the pinned program and what was written while no process held it. */
async function second(plan: DriverPlan): Promise<SecondReport> {
  const t = await bpf.openBpfTracker({ ringBytes: plan.ringBytes });
  lap('open');
  const report = {
    reused: t.reused,
    instanceId: t.instanceId,
    tracked: [...t.tracked()],
    events: drainAll(t),
  };
  t.close({ unload: false });
  // An incomplete set of pins (here: no link) is not reused: it is replaced by a fresh load.
  fs.unlinkSync(path.join(bpf.DEFAULT_PIN_DIR, 'ferry_link'));
  const fresh = await bpf.openBpfTracker({ ringBytes: plan.ringBytes });
  const afterStale = { reused: fresh.reused, instanceId: fresh.instanceId, tracked: fresh.tracked().size };
  fresh.close({ unload: true });
  const pinsAfterUnload = pins();
  const again = await bpf.openBpfTracker({ ringBytes: plan.ringBytes });
  const reopen = { reused: again.reused, instanceId: again.instanceId, tracked: again.tracked().size };
  again.close({ unload: true });
  lap('unload');
  return { ...report, afterStale, pinsAfterUnload, reopen, pinsAfterSecondUnload: pins(), stepMs };
}

const plan = JSON.parse(process.env.FERRY_EBPF_PLAN ?? '{}') as DriverPlan;
const phases = { first, second } as const;
const phase = (process.argv[2] ?? 'first') as keyof typeof phases;
phases[phase](plan).then(
  (report) => process.stdout.write(`FERRY-${phase.toUpperCase()} ${JSON.stringify(report)}\n`),
  (err: unknown) => {
    process.stderr.write(`driver (${phase}) failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
