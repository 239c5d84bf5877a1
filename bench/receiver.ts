// Receiver apply benchmark: how fast VolumeStore applies spooled change sets to a replica with
// the undo journal (FERRY_JOURNAL=undo), and with the redo journal (the default: apply = index
// update; then the retention age-out, pruneJournalThroughAsync as core.ts runs it, that writes
// them to the replica), compared with a plain sequential write to the same disk in the same run.
// Usage: node dist/bench/receiver.js [--mib N] [--dir DIR] [--json]

import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { buildChangeSet, ChangeRecord } from '../agent/transport/change-set';
import { tuneMemoryForIngest } from '../common/memory';
import { decodeFrame, encodeFrame } from '../proto/frames';
import { VolumeSpec } from '../proto/types';
import { validateChangeSet } from '../proto/validate';
import { DataLayout } from '../receiver/layout';
import { JournalKind, VolumeStore } from '../receiver/volume-store';
import {
  formatTable,
  integerOption,
  mbPerSecond,
  MiB,
  parseBenchArgs,
  progressTo,
  requireFreeSpace,
  runBench,
  seededRandom,
  timeAsync,
  timeSync,
  UsageError,
  warmPageCache,
  withWorkDir,
} from './common';

const NAME = 'receiver bench';
const USAGE = 'usage: node dist/bench/receiver.js [--mib N] [--dir DIR] [--json]\n' +
  '  --mib N    volume size and data per pass in MiB (default 512, 1..65536)\n' +
  '  --dir DIR  parent of the temporary work directory (default: the OS temp dir)\n' +
  '  --json     print the figures as one JSON object instead of a table\n' +
  '  --help     print this text';

const DEFAULT_MIB = 512;
const SEQ_WRITE_BYTES = MiB;
const RANDOM_WRITE_BYTES = 64 * 1024;
const RANDOM_WRITES_PER_SET = 16;
const BASELINE_SYNC_EVERY = 16 * MiB;
/** Shared virtual disks vary a lot from run to run; the baseline is every ratio's denominator. */
const BASELINE_RUNS = 3;
/** Scenarios vary as much: each runs this many times in a fresh directory; the median counts. */
const SCENARIO_RUNS = 3;
/** Change sets spooled per group commit while ingesting, like a pipelining agent. */
const INGEST_WINDOW = 16;
/** Random data reused across writes; far larger than lz4's 64 KiB window, so still incompressible. */
const MAX_POOL_BYTES = 64 * MiB;
const TARGET_RATIO = 0.5;
/** Page cache to warm before measuring, in volumes: a scenario holds replica, spool and journal. */
const WARM_UP_VOLUMES = 8;
const VOLUME_ID = 'bench-vol';
/** Resync hash requests as the kernel walker asks them: 64 KiB blocks, 256 MiB a request. */
const HASH_BLOCK_BYTES = 64 * 1024;
const HASH_REQUEST_BYTES = 256 * MiB;
/** The retained history hashed through: scattered 4 KiB writes, 1024 to a change set (4 MiB). */
const SCATTERED_WRITE_BYTES = 4096;
const SCATTERED_WRITES_PER_SET = 1024;
/** Scattered bytes written before hashing, per volume byte. */
const SCATTERED_SHARE = 1 / 8;

interface Options {
  mib: number;
  dir: string | undefined;
  json: boolean;
  help: boolean;
}

function parseOptions(argv: string[]): Options {
  const { values, json, help } = parseBenchArgs(argv, ['mib', 'dir']);
  const { mib, dir } = values;
  if (dir !== undefined && dir.trim() === '') throw new UsageError('--dir must not be empty');
  return { mib: integerOption('mib', mib, DEFAULT_MIB, 1, 65536), dir, json, help };
}

/** Incompressible data, generated once before anything is timed. */
class RandomPool {
  private readonly data: Buffer;

  constructor(bytes: number) {
    this.data = randomBytes(bytes + SEQ_WRITE_BYTES);
  }

  /** A pseudo-randomly placed slice: `salt` makes passes over the same offsets differ. */
  slice(index: number, length: number, salt = 0): Buffer {
    const start = ((index + salt * 7919) * 1_000_003) % (this.data.length - length);
    return this.data.subarray(start, start + length);
  }
}

// ---- baseline -------------------------------------------------------------------------------

/** Seconds to write `totalBytes` in 1 MiB writeSync calls plus fsyncs; the file is removed. */
function baselineWrite(file: string, totalBytes: number, pool: RandomPool, syncEvery: number | undefined): number {
  const fd = fs.openSync(file, 'w', 0o600);
  try {
    return timeSync(() => {
      for (let offset = 0; offset < totalBytes; offset += SEQ_WRITE_BYTES) {
        const chunk = pool.slice(offset / SEQ_WRITE_BYTES, SEQ_WRITE_BYTES);
        fs.writeSync(fd, chunk, 0, chunk.length, offset);
        const written = offset + SEQ_WRITE_BYTES;
        if (syncEvery !== undefined && written % syncEvery === 0 && written < totalBytes) fs.fdatasyncSync(fd);
      }
      if (syncEvery === undefined) fs.fsyncSync(fd);
      else fs.fdatasyncSync(fd);
    });
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
}

/** Median seconds of BASELINE_RUNS baseline writes. */
function medianBaseline(file: string, totalBytes: number, pool: RandomPool, syncEvery: number | undefined): number {
  const runs = Array.from({ length: BASELINE_RUNS }, () => baselineWrite(file, totalBytes, pool, syncEvery));
  return median(runs);
}

// ---- workloads ------------------------------------------------------------------------------

type Workload = 'sequential' | 'random';

function writeRecord(offset: number, data: Buffer): ChangeRecord {
  return { kind: 'write', offset, length: data.length, captureTimeUs: Date.now() * 1000, data };
}

/** The records of each change set of one pass over the volume. */
function* changeSets(workload: Workload, volumeBytes: number, pool: RandomPool, salt: number): Generator<ChangeRecord[]> {
  if (workload === 'sequential') {
    for (let offset = 0; offset < volumeBytes; offset += SEQ_WRITE_BYTES) {
      yield [writeRecord(offset, pool.slice(offset / SEQ_WRITE_BYTES, SEQ_WRITE_BYTES, salt))];
    }
    return;
  }
  yield* randomSets(volumeBytes, volumeBytes, RANDOM_WRITE_BYTES, RANDOM_WRITES_PER_SET, pool, salt);
}

/** Change sets of `perSet` writes of `writeBytes` at random aligned offsets, `totalBytes` in all. */
function* randomSets(volumeBytes: number, totalBytes: number, writeBytes: number, perSet: number, pool: RandomPool, salt: number): Generator<ChangeRecord[]> {
  const random = seededRandom(salt);
  const slots = volumeBytes / writeBytes;
  let index = 0;
  for (let done = 0; done < totalBytes; done += perSet * writeBytes) {
    const records: ChangeRecord[] = [];
    for (let i = 0; i < perSet; i++) {
      const offset = Math.floor(random() * slots) * writeBytes;
      records.push(writeRecord(offset, pool.slice(index++, writeBytes, salt)));
    }
    yield records;
  }
}

// ---- ingest and apply -----------------------------------------------------------------------

/**
 * Spools one pass of change sets. Frames are built untimed; the returned seconds cover only
 * the receiver side, as in receiver/session.ts: decode, validate, ingest until durable.
 */
async function ingestPass(store: VolumeStore, sets: Iterable<ChangeRecord[]>): Promise<number> {
  let seconds = 0;
  let window: Buffer[] = [];
  const ingestWindow = async (): Promise<void> => {
    const frames = window;
    window = [];
    seconds += await timeAsync(async () => {
      await Promise.all(frames.map((raw) => ingestFrame(store, raw)));
    });
  };
  let nextSeq = store.acceptedSeq + 1;
  for (const records of sets) {
    window.push(encodeFrame({ changeSet: buildChangeSet(VOLUME_ID, nextSeq, records, 'exact') }));
    nextSeq += records.length;
    if (window.length === INGEST_WINDOW) await ingestWindow();
  }
  if (window.length > 0) await ingestWindow();
  return seconds;
}

async function ingestFrame(store: VolumeStore, raw: Buffer): Promise<void> {
  const frame = decodeFrame(raw);
  if (!frame.changeSet) throw new Error('bench frame holds no change set');
  const batch = validateChangeSet(frame.changeSet, store.spec.sizeBytes);
  if ((await store.ingest(raw, batch)) !== 'stored') throw new Error(`change set ${batch.firstSeq}..${batch.lastSeq} was not stored`);
}

/** Applies everything spooled and makes it durable; returns the seconds taken. */
function applyPass(store: VolumeStore): number {
  return timeSync(() => {
    while (store.hasWork()) {
      if (!store.applyNext()) throw new Error(`apply stalled at seq ${store.appliedSeq}`);
    }
    store.saveCheckpoint();
  });
}

// ---- scenarios ------------------------------------------------------------------------------

interface Scenario {
  key: string;
  label: string;
  workload: Workload;
  /** Fill the replica with non-zero data (untimed) first, so every undo record holds old data. */
  prefill: boolean;
}

const SCENARIOS: readonly Scenario[] = [
  { key: 'a', label: '(a) seq 1 MiB, fresh replica', workload: 'sequential', prefill: false },
  { key: 'b', label: '(b) seq 1 MiB, filled replica', workload: 'sequential', prefill: true },
  { key: 'c', label: '(c) random 64 KiB x16/set, filled', workload: 'random', prefill: true },
];

interface ScenarioResult {
  key: string;
  label: string;
  ingestSeconds: number;
  /** Undo: journal + replica writes. Redo: the index update only. */
  applySeconds: number;
  /** Redo: the retention advance that ages the whole pass out to the replica (0 for undo). */
  ageOutSeconds: number;
}

/**
 * Ages out every point of the pass as core.ts's retention does, through the store's sliced
 * advance (redo: the replica is written to the newest applied seq; undo: journal segments go).
 */
async function ageOutPass(store: VolumeStore): Promise<number> {
  return timeAsync(async () => {
    await store.pruneJournalThroughAsync(store.appliedSeq);
  });
}

/** One run of a scenario through VolumeStore with the given journal, in a fresh directory. */
async function runScenario(workDir: string, journal: JournalKind, scenario: Scenario, run: number, volumeBytes: number, pool: RandomPool): Promise<ScenarioResult> {
  const root = path.join(workDir, `${journal}-${scenario.key}-${run}`);
  const spec: VolumeSpec = { volumeId: VOLUME_ID, sizeBytes: volumeBytes, blockSize: 4096 };
  const store = VolumeStore.open(new DataLayout(root), spec, 0, undefined, journal);
  try {
    if (scenario.prefill) {
      await ingestPass(store, changeSets('sequential', volumeBytes, pool, 1));
      applyPass(store);
      await store.pruneJournalThroughAsync(store.appliedSeq);
    }
    const ingestSeconds = await ingestPass(store, changeSets(scenario.workload, volumeBytes, pool, 2));
    const applySeconds = applyPass(store);
    const ageOutSeconds = journal === 'redo' ? await ageOutPass(store) : 0;
    return { key: scenario.key, label: scenario.label, ingestSeconds, applySeconds, ageOutSeconds };
  } finally {
    store.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
}

/**
 * Seconds to answer resync hash requests over the whole volume (a hash-compare resync), in
 * the kernel walker's requests, once scattered writes were applied: under redo they are
 * retained history that every request reads through the index.
 */
async function hashRequestSeconds(workDir: string, journal: JournalKind, run: number, volumeBytes: number, pool: RandomPool): Promise<number> {
  const root = path.join(workDir, `${journal}-hashes-${run}`);
  const store = VolumeStore.open(new DataLayout(root), { volumeId: VOLUME_ID, sizeBytes: volumeBytes, blockSize: 4096 }, 0, undefined, journal);
  try {
    await ingestPass(store, randomSets(volumeBytes, volumeBytes * SCATTERED_SHARE, SCATTERED_WRITE_BYTES, SCATTERED_WRITES_PER_SET, pool, 5));
    applyPass(store);
    return await timeAsync(async () => {
      for (let offset = 0; offset < volumeBytes; offset += HASH_REQUEST_BYTES) {
        const blocks = Math.ceil(Math.min(HASH_REQUEST_BYTES, volumeBytes - offset) / HASH_BLOCK_BYTES);
        await store.replicaHashesAsync(offset, HASH_BLOCK_BYTES, blocks);
      }
    });
  } finally {
    store.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
}

async function medianHashSeconds(workDir: string, journal: JournalKind, volumeBytes: number, pool: RandomPool): Promise<number> {
  const runs: number[] = [];
  for (let i = 0; i < SCENARIO_RUNS; i++) runs.push(await hashRequestSeconds(workDir, journal, i, volumeBytes, pool));
  return median(runs);
}

/** SCENARIO_RUNS runs of a scenario; each figure is the median of its runs. */
async function medianScenario(workDir: string, journal: JournalKind, scenario: Scenario, volumeBytes: number, pool: RandomPool): Promise<ScenarioResult> {
  const runs: ScenarioResult[] = [];
  for (let i = 0; i < SCENARIO_RUNS; i++) runs.push(await runScenario(workDir, journal, scenario, i, volumeBytes, pool));
  return {
    key: scenario.key,
    label: scenario.label,
    ingestSeconds: median(runs.map((r) => r.ingestSeconds)),
    applySeconds: median(runs.map((r) => r.applySeconds)),
    ageOutSeconds: median(runs.map((r) => r.ageOutSeconds)),
  };
}

function median(values: number[]): number {
  return [...values].sort((x, y) => x - y)[Math.floor(values.length / 2)];
}

// ---- report ---------------------------------------------------------------------------------

interface Figures {
  mib: number;
  dir: string;
  fsType: string;
  data: string;
  baseline: { fsyncOnceMBps: number; fdatasyncEvery16MiBMBps: number };
  scenarios: Array<{ key: string; label: string; ingestMBps: number; applyMBps: number; applySeconds: number; applyRatio: number; ingestRatio: number }>;
  redo: Array<{ key: string; label: string; ingestMBps: number; applyMBps: number; applyRatio: number; withAgeOutMBps: number; withAgeOutRatio: number }>;
  target: { description: string; ratio: number; sequentialApplyRatio: number; pass: boolean };
  redoTargets: Array<{ description: string; ratio: number; measured: number; pass: boolean }>;
  /** Seconds to answer hash requests over the volume with scattered writes retained (median). */
  hashRequests: { undoSeconds: number; redoSeconds: number };
}

/** Issue 15 part 2's targets for the redo store (apply incl. age-out, filled replica). */
const REDO_TARGETS = [
  { key: 'b', description: 'redo: seq 1 MiB over a filled replica, apply incl. age-out >= 0.6x baseline', ratio: 0.6 },
  { key: 'c', description: 'redo: random 64 KiB, filled replica, apply incl. age-out >= 0.4x baseline', ratio: 0.4 },
];

function ratio(value: number, baseline: number): number {
  return baseline > 0 ? value / baseline : 0;
}

function buildFigures(options: Options, dir: string, fsType: string, baselineSeconds: [number, number], results: ScenarioResult[], redoResults: ScenarioResult[], hashRequests: Figures['hashRequests']): Figures {
  const bytes = options.mib * MiB;
  const base = mbPerSecond(bytes, baselineSeconds[0]);
  const scenarios = results.map((r) => {
    const ingestMBps = mbPerSecond(bytes, r.ingestSeconds);
    const applyMBps = mbPerSecond(bytes, r.applySeconds);
    return { key: r.key, label: r.label, ingestMBps, applyMBps, applySeconds: r.applySeconds, applyRatio: ratio(applyMBps, base), ingestRatio: ratio(ingestMBps, base) };
  });
  const sequentialApplyRatio = Math.min(...scenarios.filter((s) => s.key !== 'c').map((s) => s.applyRatio));
  const redo = redoResults.map((r) => {
    const applyMBps = mbPerSecond(bytes, r.applySeconds);
    const withAgeOutMBps = mbPerSecond(bytes, r.applySeconds + r.ageOutSeconds);
    return { key: r.key, label: r.label, ingestMBps: mbPerSecond(bytes, r.ingestSeconds), applyMBps, applyRatio: ratio(applyMBps, base), withAgeOutMBps, withAgeOutRatio: ratio(withAgeOutMBps, base) };
  });
  const redoTargets = REDO_TARGETS.map((t) => {
    const measured = redo.find((r) => r.key === t.key)?.withAgeOutRatio ?? 0;
    return { description: t.description, ratio: t.ratio, measured, pass: measured >= t.ratio };
  });
  return {
    mib: options.mib,
    dir,
    fsType,
    data: 'crypto.randomBytes (incompressible: lz4 leaves payloads raw)',
    baseline: { fsyncOnceMBps: base, fdatasyncEvery16MiBMBps: mbPerSecond(bytes, baselineSeconds[1]) },
    scenarios,
    redo,
    redoTargets,
    hashRequests,
    target: { description: 'sequential apply (worst of a, b) >= 0.5x baseline', ratio: TARGET_RATIO, sequentialApplyRatio, pass: sequentialApplyRatio >= TARGET_RATIO },
  };
}

function tableRow(label: string, mbps: number, baseline: number): string[] {
  return [label, mbps.toFixed(1), `${ratio(mbps, baseline).toFixed(2)}x`];
}

function formatReport(f: Figures): string {
  const base = f.baseline.fsyncOnceMBps;
  const rows = [
    tableRow(`baseline: 1 MiB writes, one fsync (median of ${BASELINE_RUNS})`, base, base),
    tableRow(`baseline: 1 MiB writes, fdatasync every 16 MiB (median of ${BASELINE_RUNS})`, f.baseline.fdatasyncEvery16MiBMBps, base),
    ...f.scenarios.flatMap((s) => [tableRow(`${s.label}: apply (median of ${SCENARIO_RUNS})`, s.applyMBps, base), tableRow(`${s.label}: ingest`, s.ingestMBps, base)]),
    ...f.redo.flatMap((s) => [
      tableRow(`redo ${s.label}: apply = index update (median of ${SCENARIO_RUNS})`, s.applyMBps, base),
      tableRow(`redo ${s.label}: apply + age-out (sliced advance of the pass)`, s.withAgeOutMBps, base),
      tableRow(`redo ${s.label}: ingest`, s.ingestMBps, base),
    ]),
  ];
  const verdict = f.target.pass ? 'PASS' : 'MISS';
  return [
    `Ferry receiver apply benchmark: ${f.mib} MiB volume, ${f.mib} MiB per pass, undo and redo journals, both through VolumeStore`,
    `dir ${f.dir} (${f.fsType}); data ${f.data}; MB = 10^6 bytes`,
    ...(f.fsType === 'tmpfs' ? ['warning: tmpfs ignores fsync, these figures say nothing about a disk'] : []),
    '',
    formatTable(['measure', 'MB/s', 'x baseline'], rows),
    '',
    `resync hash requests over the volume (${HASH_BLOCK_BYTES / 1024} KiB blocks, ${HASH_REQUEST_BYTES / MiB} MiB a request) after ${Math.round(f.mib * SCATTERED_SHARE)} MiB of scattered ${SCATTERED_WRITE_BYTES / 1024} KiB writes ` +
      `(${SCATTERED_WRITES_PER_SET} a change set; median of ${SCENARIO_RUNS}): redo ${f.hashRequests.redoSeconds.toFixed(2)} s (read through the index), ` +
      `undo ${f.hashRequests.undoSeconds.toFixed(2)} s (the replica alone): ${ratio(f.hashRequests.redoSeconds, f.hashRequests.undoSeconds).toFixed(2)}x`,
    '',
    `target (undo): sequential apply >= ${TARGET_RATIO}x baseline: ${verdict} (worst of a, b: ${f.target.sequentialApplyRatio.toFixed(2)}x)`,
    ...f.redoTargets.map((t) => `target ${t.description}: ${t.pass ? 'PASS' : 'MISS'} (${t.measured.toFixed(2)}x)`),
  ].join('\n');
}

// ---- main -----------------------------------------------------------------------------------

const progress = progressTo(NAME);

function checkFreeSpace(dir: string, volumeBytes: number): string {
  // Peak use: replica + spool + undo journal of one pass, plus spool segments not yet pruned.
  return requireFreeSpace(dir, WARM_UP_VOLUMES * volumeBytes + 256 * MiB, path.dirname(dir), `--mib ${volumeBytes / MiB}`);
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  if (options.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  // This process applies as the receiver's does, so its heap and malloc are set up the same way.
  tuneMemoryForIngest();
  const volumeBytes = options.mib * MiB;
  const figures = await withWorkDir(options.dir, 'ferry-bench-receiver-', async (dir) => {
    const fsType = checkFreeSpace(dir, volumeBytes);
    const pool = new RandomPool(Math.min(volumeBytes, MAX_POOL_BYTES));
    progress('warm-up');
    warmPageCache(path.join(dir, 'warm-up'), WARM_UP_VOLUMES * volumeBytes, (i) => pool.slice(i, SEQ_WRITE_BYTES));
    progress('baseline');
    const baseline: [number, number] = [
      medianBaseline(path.join(dir, 'baseline-fsync'), volumeBytes, pool, undefined),
      medianBaseline(path.join(dir, 'baseline-fdatasync'), volumeBytes, pool, BASELINE_SYNC_EVERY),
    ];
    const results: ScenarioResult[] = [];
    for (const scenario of SCENARIOS) {
      progress(scenario.label);
      results.push(await medianScenario(dir, 'undo', scenario, volumeBytes, pool));
    }
    const redoResults: ScenarioResult[] = [];
    for (const scenario of SCENARIOS) {
      progress(`redo ${scenario.label}`);
      redoResults.push(await medianScenario(dir, 'redo', scenario, volumeBytes, pool));
    }
    progress('resync hash requests, undo and redo');
    const hashRequests = { undoSeconds: await medianHashSeconds(dir, 'undo', volumeBytes, pool), redoSeconds: await medianHashSeconds(dir, 'redo', volumeBytes, pool) };
    return buildFigures(options, dir, fsType, baseline, results, redoResults, hashRequests);
  });
  process.stdout.write(options.json ? `${JSON.stringify(figures, null, 2)}\n` : `${formatReport(figures)}\n`);
}

runBench(NAME, USAGE, main);
