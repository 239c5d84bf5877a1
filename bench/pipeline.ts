// Pipeline benchmark: agent -> receiver over loopback, next to baselines from the same run.
// Usage: node dist/bench/pipeline.js [--stream-mib N] [--churn-mbps N] [--rpo-seconds N] [--resync-mib N] [--only rss] [--dir DIR] [--json]

import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { startReceiverChild } from '../receiver/child-process';
import { formatTable, integerOption, MiB, parseBenchArgs, progressTo, runBench, UsageError, warmPageCache, withWorkDir } from './common';
import { MandatoryWork, measureMandatoryWork } from './pipeline/mandatory-work';
import { resyncVersusRsync, ResyncFigures } from './pipeline/resync-vs-rsync';
import { CpuUse, DataPool, endToEnd, EndToEndFigures, linkLimit, rpoAtChurn, RpoFigures } from './pipeline/stream';

const NAME = 'pipeline bench';
const USAGE =
  'usage: node dist/bench/pipeline.js [--stream-mib N] [--churn-mbps N] [--rpo-seconds N] [--resync-mib N] [--only rss] [--dir DIR] [--json]\n' +
  '  --stream-mib N   data streamed for (a), in MiB (default 2048)\n' +
  '  --churn-mbps N   steady churn for (b), MB/s (default 50)\n' +
  '  --rpo-seconds N  how long (b) runs (default 10)\n' +
  '  --resync-mib N   image size for (c)/(d), MiB (default 2048; 0 skips them)\n' +
  '  --only rss       run only the agent part of (c)/(d): its peak RSS, times and CPU, no (a), (b) or rsync\n' +
  '  --dir DIR        parent of the temporary work directory (needs about 4 x resync-mib free)\n' +
  '  --json           print one JSON object instead of the table';

const PASSPHRASE = 'bench passphrase for the pipeline';
/** Page cache to warm before measuring, in multiples of the streamed data (spool, replica, journal). */
const WARM_UP_FACTOR = 3;
/** With `--only rss`, the bare TLS link streams this much for its CPU per GB (no warm-up, no timing figure). */
const ONLY_RSS_LINK_MIB = 512;

interface Options {
  streamMiB: number;
  churnMBps: number;
  rpoSeconds: number;
  resyncMiB: number;
  /** `--only rss`: just the real agent's resync and incremental cycle, for its peak RSS. */
  onlyRss: boolean;
  dir: string | undefined;
  json: boolean;
  help: boolean;
}

function parseOptions(argv: string[]): Options {
  const { values, json, help } = parseBenchArgs(argv, ['stream-mib', 'churn-mbps', 'rpo-seconds', 'resync-mib', 'only', 'dir']);
  if (values.only !== undefined && values.only !== 'rss') throw new UsageError(`--only takes rss, got ${JSON.stringify(values.only)}`);
  const onlyRss = values.only === 'rss';
  const resyncMiB = integerOption('resync-mib', values['resync-mib'], 2048, onlyRss ? 64 : 0, 65536);
  return {
    streamMiB: integerOption('stream-mib', values['stream-mib'], 2048, 64, 65536),
    churnMBps: integerOption('churn-mbps', values['churn-mbps'], 50, 1, 2000),
    rpoSeconds: integerOption('rpo-seconds', values['rpo-seconds'], 10, 1, 600),
    resyncMiB,
    onlyRss,
    dir: values.dir,
    json,
    help,
  };
}

interface StreamFigures {
  linkMBps: number;
  linkCpu: CpuUse;
  endToEnd: EndToEndFigures;
  rpo: RpoFigures;
  work: MandatoryWork;
}

interface Figures {
  /** Absent with `--only rss`. */
  stream: StreamFigures | undefined;
  resync: ResyncFigures | undefined;
  /** The bare TLS link's CPU per GB, for the resync's figures (with `--only rss` a short run of its own). */
  link: { cpu: CpuUse; bytes: number } | undefined;
}

const fmt = (n: number, digits = 1): string => n.toFixed(digits);
const cpuTotal = (c: CpuUse): number => c.sender + c.receiver;
const verdict = (ok: boolean): string => (ok ? 'PASS' : 'MISS');

function streamLines(f: StreamFigures, o: Options): string[] {
  const e2eRatio = f.endToEnd.appliedMBps / f.linkMBps;
  const rows = [
    ['(a) link limit: raw wss over TLS 1.3, 1 MiB messages, separate processes', `${fmt(f.linkMBps)} MB/s`, '1.00x'],
    ['(a) ferry end to end: captured -> lz4 -> TLS -> spooled + fsync (durable)', `${fmt(f.endToEnd.durableMBps)} MB/s`, `${fmt(f.endToEnd.durableMBps / f.linkMBps, 2)}x`],
    ['(a) ferry end to end: ... -> applied to the replica (the default journal)', `${fmt(f.endToEnd.appliedMBps)} MB/s`, `${fmt(e2eRatio, 2)}x`],
    [`(b) RPO at ${o.churnMBps} MB/s churn for ${o.rpoSeconds} s: p50 / p99 / max`, `${fmt(f.rpo.p50, 3)} / ${fmt(f.rpo.p99, 3)} / ${fmt(f.rpo.max, 3)} s`, ''],
  ];
  const gb = (o.streamMiB * MiB) / 1e9;
  const cpu = (c: CpuUse): string => `${fmt(c.sender / gb, 2)} + ${fmt(c.receiver / gb, 2)}`;
  const lines = [
    `Ferry pipeline benchmark (loopback; ${o.streamMiB} MiB streamed for (a); data: half incompressible, half text-like)`,
    '',
    formatTable(['measure', 'figure', 'x link'], rows),
    '',
    `CPU seconds per GB streamed, sending + receiving process: link ${cpu(f.linkCpu)}, ferry ${cpu(f.endToEnd.cpu)}`,
    `(both ends share this machine's ${os.cpus().length} cores: ferry's lz4, validation, fsyncs and apply come out of the same budget as TLS)`,
    `receiver during (a): ${f.endToEnd.receiverFullGcs} full garbage collections (V8 mark-compact), peak RSS ${fmt(f.endToEnd.receiverPeakRssBytes / MiB)} MiB`,
    `CPU-bound ratio: link CPU per GB / ferry CPU per GB = ${fmt(cpuTotal(f.linkCpu) / cpuTotal(f.endToEnd.cpu), 2)}x (what (a) comes to when both runs keep the cores equally busy;`,
    `  0.6x needs ferry's two ends within ${fmt(cpuTotal(f.linkCpu) / gb / 0.6, 2)} CPU s/GB, now ${fmt(cpuTotal(f.endToEnd.cpu) / gb, 2)})`,
    ...workLines(f, gb),
    '',
  ];
  lines.push(`target (a) applied >= 0.6x link limit: ${verdict(e2eRatio >= 0.6)} (${fmt(e2eRatio, 2)}x)`);
  lines.push(`target (b) RPO p99 < 1 s: ${verdict(f.rpo.p99 < 1)} (${fmt(f.rpo.p99, 3)} s)`);
  return lines;
}

/** The floor that lz4, the CRCs and TLS put under (a), measured on the same data in this run. */
function workLines(f: StreamFigures, gb: number): string[] {
  const w = f.work;
  const tls = (cpuTotal(f.linkCpu) / gb) * w.compressedRatio;
  const floor = tls + w.lz4Encode + w.lz4Decode + 2 * w.crcRaw + w.crcCompressed;
  return [
    `work any design streaming these bytes with lz4 and CRCs does, per GB (measured now): TLS on the ${fmt(w.compressedRatio * 100, 0)}% lz4 leaves ${fmt(tls, 2)}`,
    `  + lz4 ${fmt(w.lz4Encode, 2)} (compress) + ${fmt(w.lz4Decode, 2)} (check at the receiver) + the payload CRC at both ends 2 x ${fmt(w.crcRaw, 2)} + the spool record's CRC ${fmt(w.crcCompressed, 2)}`,
    `  = ${fmt(floor, 2)} CPU s/GB before any disk write: (a) cannot pass ${fmt(cpuTotal(f.linkCpu) / gb / floor, 2)}x here; ferry spends ${fmt(cpuTotal(f.endToEnd.cpu) / gb - floor, 2)} beyond it`,
  ];
}

function report(f: Figures, o: Options): string {
  const lines = f.stream ? streamLines(f.stream, o) : [`Ferry pipeline benchmark, --only rss: the real agent's resync of a ${o.resyncMiB} MiB image, no rsync peer`];
  const r = f.resync;
  if (r) {
    const sentGB = r.ferryInitialSentBytes / 1e9;
    const link = f.link;
    const linkCpu = link ? `bare TLS link (1 MiB messages, ${fmt(link.bytes / MiB, 0)} MiB): ${fmt(link.cpu.sender / (link.bytes / 1e9), 2)} + ${fmt(link.cpu.receiver / (link.bytes / 1e9), 2)}` : 'bare TLS link: not run';
    const rsync = (s: number | null): string => (s === null ? (o.onlyRss ? 'not run (--only rss)' : 'rsync not installed') : `${fmt(s, 2)} s`);
    lines.push(
      '',
      formatTable(
        ['(c)/(d) real agent process, scan capture, ' + `${r.imageMiB} MiB image`, 'ferry', 'rsync over ssh (local sshd)', 'rsync --inplace, local files'],
        [
          ['initial resync (ferry: until durable at the receiver)', `${fmt(r.ferryInitialSeconds, 2)} s`, rsync(r.rsyncSshInitialSeconds), rsync(r.rsyncInitialSeconds)],
          [`incremental after 1% random 4 KiB changes (${fmt(r.changedBytes / MiB)} MiB)`, `${fmt(r.ferryIncrementalSeconds, 2)} s`, rsync(r.rsyncSshIncrementalSeconds), rsync(r.rsyncIncrementalSeconds)],
          ['agent peak RSS', `${fmt(r.agentPeakRssBytes / MiB)} MiB`, '', ''],
        ],
      ),
      `ferry initial resync sent ${fmt(r.ferryInitialSentBytes / MiB)} MiB (zero blocks skipped); scan interval ${r.scanIntervalMs} ms`,
      `CPU seconds per GB sent, sending + receiving process: ferry initial resync ${fmt(r.agentInitialCpuSeconds / sentGB, 2)} + ${fmt(r.receiverInitialCpuSeconds / sentGB, 2)} (the agent also reads and hashes the whole image); ${linkCpu}`,
      `target (c) agent RSS < 128 MiB: ${verdict(r.agentPeakRssBytes < 128 * MiB)} (${fmt(r.agentPeakRssBytes / MiB)} MiB)`,
    );
    const ratios = (initial: number, incremental: number): string =>
      `initial: ferry takes ${fmt(r.ferryInitialSeconds / initial, 2)}x rsync's time, incremental ${fmt(r.ferryIncrementalSeconds / incremental, 2)}x`;
    if (r.rsyncSshInitialSeconds !== null && r.rsyncSshIncrementalSeconds !== null) {
      const faster = r.ferryInitialSeconds < r.rsyncSshInitialSeconds && r.ferryIncrementalSeconds < r.rsyncSshIncrementalSeconds;
      lines.push(`target (d) faster than rsync over ssh in both: ${verdict(faster)} (${ratios(r.rsyncSshInitialSeconds, r.rsyncSshIncrementalSeconds)})`);
    }
    if (r.rsyncInitialSeconds !== null && r.rsyncIncrementalSeconds !== null) {
      lines.push(`beside local rsync --inplace (no encryption, no network): ${ratios(r.rsyncInitialSeconds, r.rsyncIncrementalSeconds)}`);
    }
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  if (o.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const progress = progressTo(NAME);
  const figures = await withWorkDir(o.dir, 'ferry-bench-pipeline-', async (dir) => {
    const passphraseFile = path.join(dir, 'passphrase');
    fs.writeFileSync(passphraseFile, `${PASSPHRASE}\n`, { mode: 0o600 });
    const receiverDir = path.join(dir, 'receiver');
    // --trace-gc: (a) counts the receiver's full collections (common/memory.ts spaces them out).
    const receiver = await startReceiverChild(receiverDir, passphraseFile, [], {}, ['--trace-gc']);
    try {
      if (o.onlyRss) {
        const resync = await resyncVersusRsync(dir, receiver, passphraseFile, o.resyncMiB, progress, { peers: false });
        progress('bare TLS link, for its CPU per GB');
        const link = await linkLimit(receiverDir, new DataPool(), ONLY_RSS_LINK_MIB * MiB);
        return { stream: undefined, resync, link: { cpu: link.cpu, bytes: ONLY_RSS_LINK_MIB * MiB } };
      }
      progress('generating data, warming the page cache');
      const pool = new DataPool();
      warmPageCache(path.join(dir, 'warm-up'), WARM_UP_FACTOR * o.streamMiB * MiB, (i) => pool.message(i));
      progress('(a) link limit');
      const link = await linkLimit(receiverDir, pool, o.streamMiB * MiB);
      progress('(a) ferry end to end');
      const e2e = await endToEnd(receiver, PASSPHRASE, pool, o.streamMiB * MiB);
      progress(`(b) RPO at ${o.churnMBps} MB/s`);
      const rpo = await rpoAtChurn(receiver, PASSPHRASE, pool, o.churnMBps, o.rpoSeconds);
      progress('(a) the work lz4, the CRCs and TLS take');
      const work = measureMandatoryWork(pool, o.streamMiB * MiB);
      const resync = o.resyncMiB > 0 ? await resyncVersusRsync(dir, receiver, passphraseFile, o.resyncMiB, progress, { peers: true }) : undefined;
      return { stream: { linkMBps: link.mbps, linkCpu: link.cpu, endToEnd: e2e, rpo, work }, resync, link: { cpu: link.cpu, bytes: o.streamMiB * MiB } };
    } finally {
      await receiver.stop();
    }
  });
  process.stdout.write(o.json ? `${JSON.stringify({ ...figures.stream, resync: figures.resync, link: figures.link }, null, 2)}\n` : `${report(figures, o)}\n`);
}

runBench(NAME, USAGE, main);
