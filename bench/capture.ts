// Capture benchmark: fio through dm-linear, the kernel's own peers (dm-log-writes, the write
// logger that also copies every payload; DRBD, a single node whose peer is away, tracking writes
// in its bitmap) and dm-ferry (with the agent draining to a receiver on the host, and with a null
// consumer), in one VM lab boot, on the same virtio disk.
// Usage: node dist/bench/capture.js [--seconds N] [--size-mib N] [--json]

import * as fs from 'fs';
import * as path from 'path';
import { findPackageRoot } from '../native/addon';
import { startReceiverChild } from '../receiver/child-process';
import { formatTable, integerOption, MiB, parseBenchArgs, runBench, withWorkDir } from './common';
import { fioCommand, JOBS, parseFio, type FioFigures } from './capture/fio';
import { loadLab } from './capture/lab-loader';

const NAME = 'capture bench';
const USAGE =
  'usage: node dist/bench/capture.js [--seconds N] [--size-mib N] [--json]\n' +
  '  --seconds N    length of each fio run (default 10)\n' +
  '  --size-mib N   size of the virtio disk written (default 256)\n' +
  '  --json         print one JSON object instead of the table\n' +
  'needs root (the VM lab), fio (apt-get install fio; the guest runs the host\'s) and `npm run build`';

const TARGET_IOPS_RATIO = 0.95;
const VOLUME = 'bench';
const STATE = '/run/ferry-state';
/** How long the agent may take to have everything durable after the last run (reported). */
const CATCH_UP_LIMIT_S = 300;
/** Resync the (all-zero) disk in 1 MiB blocks: the initial resync is not what is measured. */
const RESYNC_BLOCK = '1MiB';

interface Options {
  seconds: number;
  sizeMiB: number;
  json: boolean;
  help: boolean;
}

function parseOptions(argv: string[]): Options {
  const { values, json, help } = parseBenchArgs(argv, ['seconds', 'size-mib']);
  return {
    seconds: integerOption('seconds', values.seconds, 10, 2, 600),
    sizeMiB: integerOption('size-mib', values['size-mib'], 256, 64, 16384),
    json,
    help,
  };
}

type Phase = 'linear-1' | 'log-writes' | 'drbd' | 'ferry' | 'ferry-null' | 'linear-2';
const PHASES: readonly Phase[] = ['linear-1', 'log-writes', 'drbd', 'ferry', 'ferry-null', 'linear-2'];
/** Peers measured only when their tools are there; why one was not is reported. */
const OPTIONAL: readonly Phase[] = ['drbd'];
/** drbd-utils' tool for the kernel's DRBD 8.4 module (Debian's 6.1 kernel ships 8.4.11). */
const DRBDSETUP_84 = '/lib/drbd/drbdsetup-84';
/** dm-log-writes has no backpressure: its jobs write this much each rather than run for --seconds. */
const LOG_WRITES_IO_MIB = 256;

interface Figures {
  runs: Record<Phase, Record<string, FioFigures>>;
  /** What the device went through while fio ran on dm-ferry (kernel counters). */
  capture: { dirtyRecords: number; bitmapWrites: number; writes: number; overlaps: number; modeAtEnd: string };
  /** Seconds the agent needed after the last fio run to have everything durable. */
  agentCatchUpSeconds: number;
  /** Why an optional peer was not measured. */
  skipped: Partial<Record<Phase, string>>;
  bootMs: number | null;
  totalMs: number;
}

function guestScript(o: Options, configFile: string): string {
  const sectors = (o.sizeMiB * MiB) / 512;
  const jobs = (device: string, phase: Phase, ioSizeMiB?: number): string =>
    JOBS.map((j) => `echo "FIO-BEGIN ${phase} ${j.name}"\n${fioCommand(j, device, o.seconds, ioSizeMiB)}\necho "FIO-END"`).join('\n');
  const status = `${STATE}/status.json`;
  return `set -euo pipefail
mkdir -p ${STATE}
dmsetup create lin --table "0 ${sectors} linear /dev/vda 0"
${jobs('/dev/mapper/lin', 'linear-1')}
dmsetup remove lin

# dm-log-writes copies every write to a log device: here null_blk, which drops what it gets, so
# the figure is the logger's own cost (copy and submit), not a second disk's. It queues its
# copies without bound: a ${o.seconds} s run filled the guest's memory (OOM), so each job writes
# ${LOG_WRITES_IO_MIB} MiB instead.
modprobe null_blk nr_devices=1 gb=1024 memory_backed=0
modprobe dm-log-writes
dmsetup create lw --table "0 ${sectors} log-writes /dev/vda /dev/nullb0"
${jobs('/dev/mapper/lw', 'log-writes', LOG_WRITES_IO_MIB)}
dmsetup remove lw

# DRBD, one node, no peer (StandAlone): every write goes to the disk and marks its bitmap and
# activity log on an external metadata disk.
mkdir -p /run/lock /var/lock 2>/dev/null || true  # drbdmeta locks there
if [ -x ${DRBDSETUP_84} ] && modprobe drbd 2>/tmp/drbd.err; then
  if drbdmeta --force 0 v08 /dev/vdc flex-external create-md >/tmp/drbd.err 2>&1 &&
    ${DRBDSETUP_84} new-resource r0 >>/tmp/drbd.err 2>&1 &&
    ${DRBDSETUP_84} new-minor r0 0 0 >>/tmp/drbd.err 2>&1 &&
    ${DRBDSETUP_84} attach 0 /dev/vda /dev/vdc flexible >>/tmp/drbd.err 2>&1 &&
    ${DRBDSETUP_84} primary 0 --force >>/tmp/drbd.err 2>&1; then
    echo "DRBD-STATE $(cat /proc/drbd | tr '\n' ' ')"
${jobs('/dev/drbd0', 'drbd')}
    echo "DRBD-STATE $(cat /proc/drbd | tr '\n' ' ')"
    ${DRBDSETUP_84} down r0 || true
  else
    echo "SKIPPED drbd: setup failed: $(tail -3 /tmp/drbd.err | tr '\n' ' ')"
  fi
else
  echo "SKIPPED drbd: $( [ -x ${DRBDSETUP_84} ] && echo "modprobe drbd failed: $(cat /tmp/drbd.err)" || echo "no ${DRBDSETUP_84} (apt-get install drbd-utils)")"
fi

dmsetup create fb --table "0 ${sectors} ferry /dev/vda /dev/vdb"
node bin/ferry agent run --config ${configFile} > /run/agent.log 2>&1 &
AGENT=$!
# the initial resync (an all-zero disk: no data to send) is not measured
until grep -q '"finished": true' ${status} 2>/dev/null && grep -q '"state": "protected"' ${status}; do
  kill -0 $AGENT 2>/dev/null || { echo "AGENT-DIED"; tail -30 /run/agent.log; exit 1; }
  sleep 0.5
done
${jobs('/dev/mapper/fb', 'ferry')}
node -e '
const a = require("./dist/native/addon");
a.FerryControl.open().then(async (c) => {
  const d = (await c.list()).find((x) => x.name === "fb");
  console.log("CAPTURE " + JSON.stringify({ dirtyRecords: d.counters.dirtyRecords, bitmapWrites: d.counters.bitmapWrites, writes: d.counters.writes, overlaps: d.counters.overlaps, modeAtEnd: d.modeName }));
  await c.close();
});'
start=$(date +%s%N)
# bounded: a device that fell into BITMAP mode must drain all of its dirty regions first
while ! { grep -q '"backlogBytes": 0' ${status} && grep -q '"state": "protected"' ${status} && [ "$(dmsetup status fb | awk '{print $7}' | cut -d/ -f1)" = 0 ]; }; do
  kill -0 $AGENT 2>/dev/null || { echo "AGENT-DIED"; tail -30 /run/agent.log; exit 1; }
  [ $(( ($(date +%s%N) - start) / 1000000000 )) -ge ${CATCH_UP_LIMIT_S} ] && break
  sleep 0.2
done
echo "CATCHUP-MS $(( ($(date +%s%N) - start) / 1000000 ))"
kill $AGENT && wait $AGENT || true

# the same device with a consumer that only takes and commits batches: the module's own cost
node -e '
const a = require("./dist/native/addon");
(async () => {
  const c = await a.FerryControl.open();
  const dev = (await c.list()).find((x) => x.name === "fb");
  for (;;) {
    const b = await c.getChanges();
    // batches like the agent does (it seals change sets every 50 ms): no ioctl spin
    if (b.batchId !== 0) { await c.commit(b.batchId); await new Promise((r) => setTimeout(r, 20)); continue; }
    const info = (await c.stats(dev.index)).device;
    if (info.dirtyBits > 0 && info.modeName === "draining") {
      const bm = await c.readBitmap(dev.index);
      await c.clearBitmap(dev.index, bm.epoch, 0, bm.nbits).catch(() => 0);
      continue;
    }
    await c.wait(100);
  }
})();' &
NULL=$!
until [ "$(dmsetup status fb | awk '{print $4}')" = data ]; do kill -0 $NULL || exit 1; sleep 0.2; done
${jobs('/dev/mapper/fb', 'ferry-null')}
kill $NULL; wait $NULL || true
dmsetup remove fb

dmsetup create lin --table "0 ${sectors} linear /dev/vda 0"
${jobs('/dev/mapper/lin', 'linear-2')}
dmsetup remove lin
`;
}

function parseOutput(output: string): Pick<Figures, 'runs' | 'capture' | 'agentCatchUpSeconds' | 'skipped'> {
  const runs = Object.fromEntries(PHASES.map((p) => [p, {}])) as Record<Phase, Record<string, FioFigures>>;
  const skipped: Partial<Record<Phase, string>> = {};
  for (const m of output.matchAll(/^SKIPPED (\S+): (.*)$/gm)) skipped[m[1] as Phase] = m[2];
  const blocks = output.split('FIO-BEGIN ').slice(1);
  for (const block of blocks) {
    const [head, ...rest] = block.split('\n');
    const [phase, job] = head.trim().split(' ') as [Phase, string];
    runs[phase][job] = parseFio(rest.join('\n').split('FIO-END')[0]);
  }
  for (const phase of PHASES) {
    if (OPTIONAL.includes(phase) && skipped[phase] !== undefined) continue;
    for (const j of JOBS) if (!runs[phase][j.name]) throw new Error(`no fio result for ${phase} ${j.name}`);
  }
  const capture = /^CAPTURE (.*)$/m.exec(output);
  const catchUp = /^CATCHUP-MS (\d+)$/m.exec(output);
  if (!capture || !catchUp) throw new Error('the guest printed no capture figures');
  return { runs, capture: JSON.parse(capture[1]) as Figures['capture'], agentCatchUpSeconds: Number(catchUp[1]) / 1000, skipped };
}

async function measure(o: Options, repoRoot: string, work: string): Promise<Figures> {
  const { prepareLab, killAllLabProcesses } = loadLab(repoRoot);
  try {
    const lab = await prepareLab();
    const ko = await lab.buildModule(path.join(repoRoot, 'native', 'linux'));
    const passphraseFile = path.join(work, 'passphrase');
    fs.writeFileSync(passphraseFile, 'capture bench passphrase\n', { mode: 0o600 });
    const rx = await startReceiverChild(path.join(work, 'receiver'), passphraseFile);
    try {
      const configFile = path.join(work, 'agent.json');
      fs.writeFileSync(
        configFile,
        JSON.stringify({
          receiver: { url: `wss://10.0.2.2:${rx.port}`, fingerprint: rx.fingerprint },
          name: 'capture-bench',
          stateDir: STATE,
          capture: 'kernel',
          passphraseFile,
          volumes: [{ id: VOLUME, path: '/dev/mapper/fb' }],
          resync: { blockSize: RESYNC_BLOCK },
        }),
      );
      const r = await lab.run({
        script: guestScript(o, configFile),
        disks: [
          { path: path.join(work, 'data.img'), sizeBytes: o.sizeMiB * MiB },
          { path: path.join(work, 'meta.img'), sizeBytes: 4 * MiB },
          { path: path.join(work, 'drbd-meta.img'), sizeBytes: 32 * MiB },
        ],
        modules: [ko],
        env: {},
        timeoutMs: (o.seconds * 12 + CATCH_UP_LIMIT_S + 300) * 1000,
        cpus: 2,
      });
      if (r.kernelProblems.length > 0) throw new Error(`the guest kernel reported problems (run dir ${r.runDir}): ${r.kernelProblems[0]}`);
      if (r.exitCode !== 0) throw new Error(`the guest script failed (exit ${r.exitCode}, run dir ${r.runDir}): ${r.output.split('\n').slice(-15).join(' | ')}`);
      return { ...parseOutput(r.output), bootMs: r.timings.bootMs, totalMs: r.timings.totalMs };
    } finally {
      await rx.stop();
    }
  } finally {
    await killAllLabProcesses();
  }
}

const fmt = (n: number, digits = 0): string => n.toFixed(digits);

function baseline(f: Figures, job: string, pick: (x: FioFigures) => number): number {
  return (pick(f.runs['linear-1'][job]) + pick(f.runs['linear-2'][job])) / 2;
}

function report(f: Figures, o: Options): string {
  const rows: string[][] = [];
  const add = (label: string, job: string, pick: (x: FioFigures) => number, unit: string, digits = 0): void => {
    const base = baseline(f, job, pick);
    const cell = (phase: Phase): string => {
      const run = f.runs[phase][job];
      return run ? `${fmt(pick(run), digits)}${unit} (${(pick(run) / base).toFixed(2)}x)` : 'not measured';
    };
    rows.push([label, `${fmt(pick(f.runs['linear-1'][job]), digits)} / ${fmt(pick(f.runs['linear-2'][job]), digits)}${unit}`, cell('log-writes'), cell('drbd'), cell('ferry-null'), cell('ferry')]);
  };
  add('4k random write, qd16: IOPS', 'rand4k', (x) => x.iops, '');
  add('4k random write, qd16: throughput', 'rand4k', (x) => x.bytesPerSecond / 1e6, ' MB/s', 1);
  add('4k random write, qd16: p99 latency', 'rand4k', (x) => x.p99LatencyUs, ' us');
  add('1M sequential write, qd16: IOPS', 'seq1m', (x) => x.iops, '');
  add('1M sequential write, qd16: throughput', 'seq1m', (x) => x.bytesPerSecond / 1e6, ' MB/s', 1);
  add('1M sequential write, qd16: p99 latency', 'seq1m', (x) => x.p99LatencyUs, ' us');
  const ratio = (phase: Phase): number => (f.runs[phase].rand4k ? f.runs[phase].rand4k.iops / baseline(f, 'rand4k', (x) => x.iops) : NaN);
  const verdict = (r: number): string => `${r.toFixed(2)}x ${r >= TARGET_IOPS_RATIO ? 'PASS' : 'MISS'}`;
  const peers = (['log-writes', 'drbd'] as Phase[]).filter((p) => f.runs[p].rand4k);
  const worstPeer = Math.min(...peers.map(ratio));
  const peerVerdict = peers.length === 0 ? 'no peer measured' : `${ratio('ferry').toFixed(2)}x against ${peers.map((p) => `${p} ${ratio(p).toFixed(2)}x`).join(', ')}: ${ratio('ferry') >= worstPeer ? 'PASS' : 'MISS'}`;
  return [
    `capture bench: fio ${o.seconds} s per run on a ${o.sizeMiB} MiB virtio disk, one VM boot (qemu TCG, 2 vCPUs), in this order:`,
    `  dm-linear; dm-log-writes (log device: null_blk, so the logger's own copy-and-submit cost; ${LOG_WRITES_IO_MIB} MiB per job: it queues`,
    '  its copies without bound, and a timed run ran the guest out of memory); DRBD 8.4, one node,',
    '  no peer (bitmap and activity log on an external metadata disk); dm-ferry with the agent draining to a receiver',
    '  on the host; the same dm-ferry device with a null consumer (takes and commits a batch every 20 ms, sends',
    '  nothing: the module\'s own cost); dm-linear again.',
    'TCG distorts absolute figures; compare the ratios (x = figure / mean of the two dm-linear runs, both shown).',
    '',
    formatTable(['', 'dm-linear (before / after)', 'dm-log-writes', 'DRBD', 'dm-ferry, null consumer', 'dm-ferry + agent'], rows),
    ...Object.entries(f.skipped).map(([p, why]) => `${p} not measured: ${why}`),
    '',
    `target: dm-ferry + agent 4k IOPS ratio >= the kernel peers': ${peerVerdict}`,
    `target: dm-ferry >= ${TARGET_IOPS_RATIO}x dm-linear 4k IOPS: with the agent ${verdict(ratio('ferry'))}; module alone (null consumer) ${verdict(ratio('ferry-null'))}`,
    `capture while the agent ran: ${f.capture.writes} writes with data, ${f.capture.dirtyRecords} without (pool full or overlapped whole: read back), ${f.capture.bitmapWrites} bitmap-only (ring full), ${f.capture.overlaps} overlapping writes in flight together (fio --norandommap); mode at the end: ${f.capture.modeAtEnd}`,
    f.agentCatchUpSeconds >= CATCH_UP_LIMIT_S
      ? `the agent did not have everything durable at the receiver within ${CATCH_UP_LIMIT_S} s of its last fio run (it was still draining)`
      : `the agent had everything durable at the receiver ${f.agentCatchUpSeconds.toFixed(1)} s after its last fio run`,
    `VM: boot ${f.bootMs ?? '?'} ms, whole run ${(f.totalMs / 1000).toFixed(0)} s`,
  ].join('\n');
}

function checkHost(): void {
  if (process.getuid?.() !== 0) throw new Error('needs root: the VM lab shares the host root through virtiofsd');
  if (!['/usr/bin/fio', '/usr/local/bin/fio'].some((f) => fs.existsSync(f))) {
    throw new Error('fio is missing: apt-get install fio (the guest runs the host\'s fio through the shared root)');
  }
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  if (o.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  checkHost();
  const repoRoot = findPackageRoot(__dirname);
  if (!fs.existsSync(path.join(repoRoot, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is missing: run `npm run build` first');
  const figures = await withWorkDir(undefined, 'ferry-capture-bench-', (dir) => measure(o, repoRoot, dir));
  if (o.json) process.stdout.write(`${JSON.stringify({ options: { seconds: o.seconds, sizeMiB: o.sizeMiB }, targetIopsRatio: TARGET_IOPS_RATIO, ...figures }, null, 2)}\n`);
  else process.stdout.write(`${report(figures, o)}\n`);
}

runBench(NAME, USAGE, main);
