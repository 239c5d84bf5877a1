// Journal design evaluation (issue 15 part 2): the receiver's undo journal against a redo-style
// retention journal (the receiver's receiver/redo/, driven by bench/journal-design/redo-production.ts), the same workload through both on
// real files, next to a raw sequential write + fsync of the same bytes measured in the same run.
// Usage: node dist/bench/journal-design.js [--volume-mib 512] [--churn-mib 512] [--write-kib 64]
//          [--hot-fraction 0.2] [--hot-mib N] [--advance-mib N] [--dir DIR] [--no-crash-check] [--json]

import * as fs from 'fs';
import * as path from 'path';
import { formatTable, integerOption, mbPerSecond, MiB, parseBenchArgs, progressTo, requireFreeSpace, runBench, seededRandom, timeSync, UsageError, warmPageCache, withWorkDir } from './common';
import { RedoResult, runRedo, runUndo, UndoResult } from './journal-design/designs';
import { Phase } from './journal-design/io-counter';
import { MixedPool, setEndSeq, totalWrites, WorkloadSpec } from './journal-design/workload';

const NAME = 'journal-design bench';
const USAGE =
  'usage: node dist/bench/journal-design.js [--volume-mib 512] [--churn-mib 512] [--write-kib 64] [--hot-fraction 0.2] [--hot-mib N] [--advance-mib N] [--dir DIR] [--no-crash-check] [--json]\n' +
  '  --volume-mib N     volume size in MiB (default 512)\n' +
  '  --churn-mib N      data written by the workload in MiB (default 512)\n' +
  '  --write-kib N      size of each write in KiB, a multiple of 4 (default 64)\n' +
  '  --hot-fraction F   share of writes that go to the hot set, 0..1 (default 0.2)\n' +
  '  --hot-mib N        size of the hot set in MiB (default: volume / 16)\n' +
  '  --advance-mib N    redo: churn aged out per advance, in MiB (default: all of it in one advance)\n' +
  '  --dir DIR          parent of the temporary work directory (default: the OS temp dir)\n' +
  '  --no-crash-check   skip the redo crash-mid-advance check\n' +
  '  --json             print the figures as one JSON object\n' +
  '  --help             print this text';

const BASELINE_RUNS = 3;
/** The newer half of the churn is the retention window: its oldest point is the export's "oldest". */
const RETAINED_SHARE = 0.5;
const DAY_SECONDS = 86_400;
const CHURN_RATES_MBPS = [1, 10];

interface Options {
  spec: WorkloadSpec;
  /** Redo: source bytes aged out per advance; 0: everything in one advance. */
  advanceBytes: number;
  dir: string | undefined;
  crashCheck: boolean;
  json: boolean;
  help: boolean;
}

function fractionOption(raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(value) || value < 0 || value > 1) throw new UsageError(`--hot-fraction must be a number from 0 to 1, got ${JSON.stringify(raw)}`);
  return value;
}

function parseOptions(argv: string[]): Options {
  const { values, json, help, flags } = parseBenchArgs(argv, ['volume-mib', 'churn-mib', 'write-kib', 'hot-fraction', 'hot-mib', 'advance-mib', 'dir'], ['no-crash-check']);
  const volumeMiB = integerOption('volume-mib', values['volume-mib'], 512, 1, 65536);
  const writeKiB = integerOption('write-kib', values['write-kib'], 64, 4, 1024);
  if (writeKiB % 4 !== 0) throw new UsageError('--write-kib must be a multiple of 4 (the prototype index works in 4 KiB blocks)');
  const hotMiB = integerOption('hot-mib', values['hot-mib'], Math.max(1, Math.floor(volumeMiB / 16)), 1, volumeMiB);
  const dir = values.dir;
  if (dir !== undefined && dir.trim() === '') throw new UsageError('--dir must not be empty');
  const spec: WorkloadSpec = {
    volumeBytes: volumeMiB * MiB,
    churnBytes: integerOption('churn-mib', values['churn-mib'], 512, 1, 65536) * MiB,
    writeBytes: writeKiB * 1024,
    hotFraction: fractionOption(values['hot-fraction'], 0.2),
    hotBytes: hotMiB * MiB,
  };
  if (spec.writeBytes > spec.volumeBytes || spec.writeBytes > spec.churnBytes) throw new UsageError('--write-kib must not exceed --volume-mib or --churn-mib');
  const advanceBytes = integerOption('advance-mib', values['advance-mib'], 0, 0, 65536) * MiB;
  return { spec, advanceBytes, dir, crashCheck: !flags.has('no-crash-check'), json, help };
}

// ---- baseline -------------------------------------------------------------------------------

/** Seconds to write `bytes` in 1 MiB writeSync calls and one fsync, median of BASELINE_RUNS. */
function baseline(file: string, bytes: number): number {
  const chunk = Buffer.alloc(MiB);
  const random = seededRandom(7);
  for (let i = 0; i < MiB; i += 4) chunk.writeUInt32LE((random() * 2 ** 32) >>> 0, i);
  const runs = Array.from({ length: BASELINE_RUNS }, () => {
    const fd = fs.openSync(file, 'w', 0o600);
    try {
      return timeSync(() => {
        for (let off = 0; off < bytes; off += MiB) fs.writeSync(fd, chunk, 0, Math.min(MiB, bytes - off), off);
        fs.fsyncSync(fd);
      });
    } finally {
      fs.closeSync(fd);
      fs.rmSync(file, { force: true });
    }
  });
  return runs.sort((a, b) => a - b)[Math.floor(BASELINE_RUNS / 2)];
}

// ---- figures --------------------------------------------------------------------------------

interface DesignFigures {
  ingestMBps: number;
  applyMBps: number;
  /** Per source byte on the hot path (apply, plus the amortized age-out), syscall bytes. */
  writtenPerByte: number;
  readPerByte: number;
  diskWrittenPerByte: number;
  diskReadPerByte: number;
  ingestWrittenPerByte: number;
  exportLatestSeconds: number;
  exportOldestSeconds: number;
  historyPerSourceByte: number;
  spaceGB24h: number[];
}

interface Figures {
  date: string;
  advanceBytes: number;
  dir: string;
  fsType: string;
  spec: WorkloadSpec & { writes: number; oldestSeq: number; newestSeq: number };
  baselineMBps: number;
  undo: DesignFigures & { oldDataLz4Ratio: number };
  redo: DesignFigures & {
    indexOnlyMBps: number;
    /** The apply path alone (index updates), per source byte: what ingest waits behind. */
    applyPathWrittenPerByte: number;
    applyPathReadPerByte: number;
    ageOutMBps: number;
    replicaWritesPerAgedByte: number;
    reopenSeconds: number;
    reopenSecondsPerGBRetained: number;
    reopenSameIndex: boolean;
    indexBytesPerWrite: number;
    indexGB24h: number[];
    crashCheck: RedoResult['crashCheck'];
  };
  sameImages: { latest: boolean; oldest: boolean };
}

/** Hot-path cost per source byte: the apply over all of the churn, the age-out over what it aged. */
function perByte(apply: Phase, ageOut: Phase, churn: number, aged: number, key: keyof Phase): number {
  return apply[key] / churn + (aged > 0 ? ageOut[key] / aged : 0);
}

function designFigures(r: UndoResult | RedoResult, spec: WorkloadSpec, amortizeAgeOut: boolean): DesignFigures {
  const churn = spec.churnBytes;
  const aged = amortizeAgeOut ? r.agedSourceBytes : 0;
  const secondsPerByte = r.apply.seconds / churn + (aged > 0 ? r.ageOut.seconds / aged : 0);
  const historyPerSourceByte = r.retainedDiskBytes / r.retainedSourceBytes;
  return {
    ingestMBps: mbPerSecond(churn, r.ingest.seconds),
    applyMBps: 1 / secondsPerByte / 1e6,
    writtenPerByte: perByte(r.apply, r.ageOut, churn, aged, 'syscallWritten'),
    readPerByte: perByte(r.apply, r.ageOut, churn, aged, 'syscallRead'),
    diskWrittenPerByte: perByte(r.apply, r.ageOut, churn, aged, 'diskWritten'),
    diskReadPerByte: perByte(r.apply, r.ageOut, churn, aged, 'diskRead'),
    ingestWrittenPerByte: r.ingest.syscallWritten / churn,
    exportLatestSeconds: r.exportLatest.seconds,
    exportOldestSeconds: r.exportOldest.seconds,
    historyPerSourceByte,
    spaceGB24h: CHURN_RATES_MBPS.map((rate) => (rate * 1e6 * DAY_SECONDS * historyPerSourceByte) / 1e9),
  };
}

function buildFigures(options: Options, dir: string, fsType: string, baselineSeconds: number, oldestSeq: number, undo: UndoResult, redo: RedoResult): Figures {
  const { spec } = options;
  const u = designFigures(undo, spec, false);
  const r = designFigures(redo, spec, true);
  const lz4Ratio = undo.oldDataBytes > 0 ? undo.oldDataLz4Bytes / undo.oldDataBytes : 1;
  const index = redo.index;
  const indexBytesPerWrite = index.diskBytes / Math.max(1, index.extents);
  const retainedGB = redo.retainedDiskBytes / 1e9;
  return {
    date: new Date().toISOString(),
    advanceBytes: options.advanceBytes,
    dir,
    fsType,
    spec: { ...spec, writes: totalWrites(spec), oldestSeq, newestSeq: totalWrites(spec) },
    baselineMBps: mbPerSecond(spec.churnBytes, baselineSeconds),
    undo: {
      ...u,
      oldDataLz4Ratio: lz4Ratio,
    },
    redo: {
      ...r,
      indexOnlyMBps: mbPerSecond(spec.churnBytes, redo.apply.seconds),
      applyPathWrittenPerByte: redo.apply.syscallWritten / spec.churnBytes,
      applyPathReadPerByte: redo.apply.syscallRead / spec.churnBytes,
      ageOutMBps: mbPerSecond(redo.agedSourceBytes, redo.ageOut.seconds),
      replicaWritesPerAgedByte: redo.ageOut.syscallWritten / redo.agedSourceBytes,
      reopenSeconds: redo.reopenSeconds,
      reopenSecondsPerGBRetained: retainedGB > 0 ? redo.reopenSeconds / retainedGB : 0,
      reopenSameIndex: redo.reopenSameIndex,
      indexBytesPerWrite,
      indexGB24h: CHURN_RATES_MBPS.map((rate) => (((rate * 1e6 * DAY_SECONDS) / spec.writeBytes) * indexBytesPerWrite) / 1e9),
      crashCheck: redo.crashCheck,
    },
    sameImages: { latest: undo.latestHash === redo.latestHash, oldest: undo.oldestHash === redo.oldestHash },
  };
}

// ---- report ---------------------------------------------------------------------------------

const f1 = (n: number): string => n.toFixed(1);
const f2 = (n: number): string => n.toFixed(2);
const ratio = (a: number, b: number): string => (b > 0 ? `${(a / b).toFixed(2)}x` : '-');

function formatReport(f: Figures): string {
  const { undo: u, redo: r, spec } = f;
  const base = f.baselineMBps;
  const rates = CHURN_RATES_MBPS.map((x) => `${x} MB/s`);
  const rows: string[][] = [
    ['baseline: 1 MiB writes + one fsync (MB/s)', f1(base), f1(base), ''],
    ['ingest: intake + spool append + fsync (MB/s)', f1(u.ingestMBps), f1(r.ingestMBps), ratio(r.ingestMBps, u.ingestMBps)],
    ['apply, steady state incl. age-out (MB/s)', f1(u.applyMBps), f1(r.applyMBps), ratio(r.applyMBps, u.applyMBps)],
    ['  x baseline', ratio(u.applyMBps, base), ratio(r.applyMBps, base), ''],
    ['  redo: index update only (MB/s)', '', f1(r.indexOnlyMBps), ''],
    ['  redo: age-out, per aged source MB (MB/s)', '', f1(r.ageOutMBps), ''],
    ['  redo: apply path alone, written / read per source byte', '', `${f2(r.applyPathWrittenPerByte)} / ${f2(r.applyPathReadPerByte)}`, ''],
    ['target written per source byte (syscalls)', f2(u.writtenPerByte), f2(r.writtenPerByte), ratio(r.writtenPerByte, u.writtenPerByte)],
    ['target read per source byte (syscalls)', f2(u.readPerByte), f2(r.readPerByte), ratio(r.readPerByte, u.readPerByte)],
    ['  written per source byte (block layer)', f2(u.diskWrittenPerByte), f2(r.diskWrittenPerByte), ''],
    ['  read per source byte (block layer)', f2(u.diskReadPerByte), f2(r.diskReadPerByte), ''],
    ['  + ingest written per source byte (both)', f2(u.ingestWrittenPerByte), f2(r.ingestWrittenPerByte), ''],
    ['export `latest`, cold cache (s)', f2(u.exportLatestSeconds), f2(r.exportLatestSeconds), ratio(r.exportLatestSeconds, u.exportLatestSeconds)],
    ['export oldest point, cold cache (s)', f2(u.exportOldestSeconds), f2(r.exportOldestSeconds), ratio(r.exportOldestSeconds, u.exportOldestSeconds)],
    ['history on disk per retained source byte', f2(u.historyPerSourceByte), f2(r.historyPerSourceByte), ratio(r.historyPerSourceByte, u.historyPerSourceByte)],
    ...rates.map((rate, i) => [`history for 24 h at ${rate} (GB)`, f1(u.spaceGB24h[i]), f1(r.spaceGB24h[i]), ratio(r.spaceGB24h[i], u.spaceGB24h[i])]),
    ...rates.map((rate, i) => [`  redo index on disk, 24 h at ${rate} (GB)`, '', f2(r.indexGB24h[i]), '']),
  ];
  const crash = r.crashCheck;
  return [
    `Ferry journal design bench (${f.date}): ${spec.volumeBytes / MiB} MiB volume (filled), ${spec.churnBytes / MiB} MiB churn in ${spec.writeBytes / 1024} KiB writes, ` +
      `${Math.round(spec.hotFraction * 100)}% to a ${spec.hotBytes / MiB} MiB hot set`,
    `redo age-out: ${f.advanceBytes > 0 ? `one advance per ${f.advanceBytes / MiB} MiB of churn` : 'the whole aged range in one advance'}; ` +
      `dir ${f.dir} (${f.fsType}); data half incompressible, half text-like; MB = 10^6 bytes; retention = the newer ${RETAINED_SHARE * 100}% of the churn (oldest point seq ${spec.oldestSeq} of ${spec.newestSeq})`,
    ...(f.fsType === 'tmpfs' ? ['warning: tmpfs ignores fsync, these figures say nothing about a disk'] : []),
    '',
    formatTable(['measure', 'undo', 'redo', 'redo/undo'], rows),
    '',
    `undo old data: the journal stores it lz4-compressed where that saves 1/8 or more; lz4 per record makes it ${f2(u.oldDataLz4Ratio)}x its size`,
    `redo index (SQLite, on disk): ${f1(r.indexBytesPerWrite)} bytes per retained write (index files incl. WAL / extents, whole churn retained)`,
    `redo reopen (replays the spool after the index checkpoint, cold cache): ${f2(r.reopenSeconds)} s, ${f2(r.reopenSecondsPerGBRetained)} s per GB retained; same index: ${r.reopenSameIndex ? 'yes' : 'NO'}`,
    crash ? `redo crash mid-advance to seq ${crash.toSeq}, reopen (${f2(crash.reopenSeconds)} s) finishes it: image of the new oldest point ${crash.sameImage ? 'identical' : 'DIFFERS'}` : 'redo crash check: skipped',
    `images: latest ${f.sameImages.latest ? 'identical' : 'DIFFER'} in both designs, oldest point ${f.sameImages.oldest ? 'identical' : 'DIFFER'}`,
  ].join('\n');
}

// ---- main -----------------------------------------------------------------------------------

const progress = progressTo(NAME);

function checkFreeSpace(dir: string, spec: WorkloadSpec): string {
  return requireFreeSpace(dir, 3 * spec.volumeBytes + 2 * spec.churnBytes + 256 * MiB, dir, 'this run');
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  if (options.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const { spec } = options;
  const oldestSeq = setEndSeq(spec, Math.floor(totalWrites(spec) * (1 - RETAINED_SHARE)));
  const figures = await withWorkDir(options.dir, 'ferry-bench-journal-', async (dir) => {
    const fsType = checkFreeSpace(dir, spec);
    const pool = new MixedPool();
    progress('warm-up');
    warmPageCache(path.join(dir, 'warm-up'), 2 * spec.volumeBytes, (i) => pool.slice(i, MiB));
    progress('baseline');
    const baselineSeconds = baseline(path.join(dir, 'baseline'), spec.churnBytes);
    const advanceSeqs = options.advanceBytes > 0 ? Math.max(1, Math.floor(options.advanceBytes / spec.writeBytes)) : oldestSeq;
    const ctx = { dir, spec, pool, oldestSeq, advanceSeqs, progress };
    const undo = await runUndo(ctx);
    const redo = await runRedo(ctx, options.crashCheck);
    return buildFigures(options, dir, fsType, baselineSeconds, oldestSeq, undo, redo);
  });
  process.stdout.write(options.json ? `${JSON.stringify(figures, null, 2)}\n` : `${formatReport(figures)}\n`);
}

runBench(NAME, USAGE, main);
