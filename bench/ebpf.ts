// eBPF capture benchmark, one VM lab boot: fio 4k random writes (qd16) on a plain partition
// without tracing and with the eBPF write tracker loaded (IOPS ratio); the agent's CPU seconds
// at the same fixed churn with the ebpf source and with the scan source; and the freeze time of
// app-consistent points (ext4 on a second partition, a writer running) with each source.
// Usage: node dist/bench/ebpf.js [--seconds N] [--size-mib N] [--rate-iops N] [--json]

import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { findPackageRoot } from '../native/addon';
import { startReceiverChild } from '../receiver/child-process';
import { formatTable, integerOption, MiB, parseBenchArgs, runBench, withWorkDir } from './common';
import { fioCommand, parseFio, type FioFigures } from './capture/fio';
import { loadLab } from './capture/lab-loader';

const NAME = 'ebpf bench';
const USAGE =
  'usage: node dist/bench/ebpf.js [--seconds N] [--size-mib N] [--rate-iops N] [--json]\n' +
  '  --seconds N    length of each fio run (default 10)\n' +
  '  --size-mib N   size of the partition fio writes (default 64)\n' +
  '  --rate-iops N  the fixed churn of the CPU runs, 4 KiB writes per second (default 500)\n' +
  '  --json         print one JSON object instead of the table\n' +
  'needs root (the VM lab), fio (apt-get install fio), `npm run build` and the BPF tracker built (npm install with clang and libbpf-dev)';

const APP_POINTS = 2;
const EXT4_MIB = 32;
const RAND4K = { name: 'rand4k', rw: 'randwrite' as const, bs: '4k', iodepth: 16 };

interface Options {
  seconds: number;
  sizeMiB: number;
  rateIops: number;
  json: boolean;
  help: boolean;
}

function parseOptions(argv: string[]): Options {
  const { values, json, help } = parseBenchArgs(argv, ['seconds', 'size-mib', 'rate-iops']);
  return {
    seconds: integerOption('seconds', values.seconds, 10, 2, 600),
    sizeMiB: integerOption('size-mib', values['size-mib'], 64, 32, 16384),
    rateIops: integerOption('rate-iops', values['rate-iops'], 500, 10, 100000),
    json,
    help,
  };
}

type Source = 'ebpf' | 'scan';

interface Figures {
  fio: { baseline1: FioFigures; traced: FioFigures; baseline2: FioFigures };
  /** Per source: agent CPU seconds over the fixed-churn run, that run's IOPS, app point freezes (ms). */
  agents: Record<Source, { cpuSeconds: number; churnIops: number; frozenMs: number[]; readBackBytes: number[] }>;
  bootMs: number | null;
  totalMs: number;
}

/** A script that loads the tracker, tracks /dev/vda1's disk and drains it every 50 ms until SIGTERM, then unloads it. */
const tracerScript = (repoRoot: string): string => `
const { openBpfTracker } = require(${JSON.stringify(path.join(repoRoot, 'dist/agent/capture/ebpf/bpf-tracker'))});
const { readGeometry } = require(${JSON.stringify(path.join(repoRoot, 'dist/agent/capture/ebpf/geometry'))});
openBpfTracker().then((t) => {
  const g = readGeometry('/dev/vda1');
  t.track({ major: g.disk.major, minor: g.disk.minor, chunkShift: 16, sizeBytes: g.disk.sizeBytes });
  const timer = setInterval(() => { while (t.drain(4096).length === 4096 * 32); }, 50);
  require('fs').writeFileSync('/run/tracer.ready', '');
  process.once('SIGTERM', () => { clearInterval(timer); console.log('TRACER ' + JSON.stringify(t.counters())); t.close({ unload: true }); process.exit(0); });
});`;

/**
 * Asks the agent for an app point through its control socket (what `ferry agent tag --app`
 * does, without loading the whole CLI: that takes a minute under TCG) and prints the outcome.
 */
const tagScript = (repoRoot: string): string => `
const { controlRequest } = require(${JSON.stringify(path.join(repoRoot, 'dist/agent/control'))});
const [source, socket] = process.argv.slice(2);
controlRequest(socket, { cmd: 'tag', app: true, name: '' }, 120000).then((r) => {
  const t = r.tag;
  console.log('TAG ' + source + ' ' + (r.ok && t ? t.kind + ' ' + t.accuracy + ' frozen ' + t.frozenMs : 'failed ' + r.error));
});`;

function guestScript(o: Options, configs: Record<Source, string>, tracer: string, tagger: string): string {
  const fio = (phase: string, extra = ''): string => `echo "FIO-BEGIN ${phase}"\n${fioCommand(RAND4K, '/dev/vda1', o.seconds)} ${extra}\necho "FIO-END"`;
  const agent = (source: Source): string => {
    const state = `/run/state-${source}`;
    return `mkdir -p ${state}
node bin/ferry agent run --config ${configs[source]} > /run/agent-${source}.log 2>&1 &
A=$!
until [ "$(grep -c '"finished": true' ${state}/status.json 2>/dev/null)" = 2 ]; do
  kill -0 $A 2>/dev/null || { echo "AGENT-DIED ${source}"; tail -30 /run/agent-${source}.log; exit 1; }
  sleep 0.5
done
C0=$(awk '{print $14 + $15}' /proc/$A/stat)
${fio(`churn-${source}`, `--rate_iops=${o.rateIops}`)}
C1=$(awk '{print $14 + $15}' /proc/$A/stat)
echo "CPU ${source} $(( C1 - C0 )) $(getconf CLK_TCK)"
( i=0; while :; do dd if=/dev/urandom of=/run/m/w$(( i % 64 )) bs=16k count=1 conv=fsync status=none; i=$(( i + 1 )); done ) &
W=$!
for n in $(seq ${APP_POINTS}); do
  node ${tagger} ${source} ${state}/agent.sock
done
kill $W; wait $W || true
grep -o 'ebpf app point: frozen [0-9]* ms, read back [0-9]* bytes' /run/agent-${source}.log | sed 's/^/READBACK /' || true
kill $A; wait $A || true`;
  };
  return `set -euo pipefail
mkdir -p /run/m
mkfs.ext4 -q -F /dev/vda2
mount /dev/vda2 /run/m
${fio('baseline-1')}
node ${tracer} &
T=$!
until [ -e /run/tracer.ready ]; do kill -0 $T 2>/dev/null || { echo "TRACER-DIED"; exit 1; }; sleep 0.2; done
${fio('traced')}
kill $T; wait $T || true
${fio('baseline-2')}
${agent('ebpf')}
${agent('scan')}
umount /run/m
`;
}

function section(output: string, phase: string): FioFigures {
  const block = output.split(`FIO-BEGIN ${phase}\n`)[1];
  if (block === undefined) throw new Error(`no fio result for ${phase}`);
  return parseFio(block.split('FIO-END')[0]);
}

function parseOutput(output: string): Pick<Figures, 'fio' | 'agents'> {
  const agents = {} as Figures['agents'];
  for (const source of ['ebpf', 'scan'] as const) {
    const cpu = new RegExp(`^CPU ${source} (\\d+) (\\d+)$`, 'm').exec(output);
    if (!cpu) throw new Error(`the guest printed no CPU figure for the ${source} agent`);
    const frozenMs = [...output.matchAll(new RegExp(`^TAG ${source} \\w+ \\w+ frozen (\\d+)`, 'gm'))].map((m) => Number(m[1]));
    const readBackBytes = source === 'ebpf' ? [...output.matchAll(/^READBACK ebpf app point: frozen \d+ ms, read back (\d+) bytes/gm)].map((m) => Number(m[1])) : [];
    agents[source] = { cpuSeconds: Number(cpu[1]) / Number(cpu[2]), churnIops: section(output, `churn-${source}`).iops, frozenMs, readBackBytes };
  }
  return { fio: { baseline1: section(output, 'baseline-1'), traced: section(output, 'traced'), baseline2: section(output, 'baseline-2') }, agents };
}

async function measure(o: Options, repoRoot: string, work: string): Promise<Figures> {
  const { prepareLab, killAllLabProcesses } = loadLab(repoRoot);
  try {
    const lab = await prepareLab();
    const passphraseFile = path.join(work, 'passphrase');
    fs.writeFileSync(passphraseFile, 'ebpf bench passphrase\n', { mode: 0o600 });
    const rx = await startReceiverChild(path.join(work, 'receiver'), passphraseFile);
    try {
      const configs = {} as Record<Source, string>;
      for (const source of ['ebpf', 'scan'] as const) {
        configs[source] = path.join(work, `agent-${source}.json`);
        fs.writeFileSync(
          configs[source],
          JSON.stringify({
            receiver: { url: `wss://10.0.2.2:${rx.port}`, fingerprint: rx.fingerprint },
            name: `bench-${source}`,
            stateDir: `/run/state-${source}`,
            capture: source,
            passphraseFile,
            volumes: [
              { id: `${source}-raw`, path: '/dev/vda1' },
              { id: `${source}-fs`, path: '/dev/vda2', mount: '/run/m' },
            ],
            // Long enough for scan's settle (a pass over both volumes) under TCG.
            tags: { crashIntervalMs: 1000, freezeTimeoutMs: 60_000 },
          }),
        );
      }
      const tracer = path.join(work, 'tracer.js');
      fs.writeFileSync(tracer, tracerScript(repoRoot));
      const tagger = path.join(work, 'tag.js');
      fs.writeFileSync(tagger, tagScript(repoRoot));
      const disk = path.join(work, 'vda.img');
      const sizeBytes = (o.sizeMiB + EXT4_MIB + 2) * MiB;
      fs.writeFileSync(disk, '');
      fs.truncateSync(disk, sizeBytes);
      const table = `label: dos\nstart=2048, size=${(o.sizeMiB * MiB) / 512}, type=83\nstart=${2048 + (o.sizeMiB * MiB) / 512}, type=83\n`;
      const sf = spawnSync('sfdisk', ['--quiet', disk], { input: table, encoding: 'utf8' });
      if (sf.status !== 0) throw new Error(`sfdisk failed: ${sf.stderr.trim()}`);
      const r = await lab.run({
        script: guestScript(o, configs, tracer, tagger),
        disks: [{ path: disk, sizeBytes }],
        modules: [],
        env: {},
        timeoutMs: (o.seconds * 6 + 1200) * 1000,
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

const median = (xs: number[]): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

function report(f: Figures, o: Options): string {
  const base = (f.fio.baseline1.iops + f.fio.baseline2.iops) / 2;
  const e = f.agents.ebpf;
  const s = f.agents.scan;
  const rows = [
    ['4k random write qd16, IOPS', `${f.fio.baseline1.iops.toFixed(0)} / ${f.fio.baseline2.iops.toFixed(0)}`, `${f.fio.traced.iops.toFixed(0)} (${(f.fio.traced.iops / base).toFixed(2)}x)`],
    ['4k random write qd16, p99 latency', `${f.fio.baseline1.p99LatencyUs.toFixed(0)} / ${f.fio.baseline2.p99LatencyUs.toFixed(0)} us`, `${f.fio.traced.p99LatencyUs.toFixed(0)} us`],
  ];
  const agentRows = [
    [`agent CPU seconds over ${o.seconds} s of ${o.rateIops} writes/s`, `${s.cpuSeconds.toFixed(2)} (${s.churnIops.toFixed(0)} IOPS)`, `${e.cpuSeconds.toFixed(2)} (${e.churnIops.toFixed(0)} IOPS)`, `${(e.cpuSeconds / Math.max(s.cpuSeconds, 0.01)).toFixed(2)}x`],
    [`app point freeze, median of ${APP_POINTS} (ms)`, `${median(s.frozenMs)} [${s.frozenMs.join(', ')}]`, `${median(e.frozenMs)} [${e.frozenMs.join(', ')}]`, `${(median(e.frozenMs) / Math.max(median(s.frozenMs), 1)).toFixed(2)}x`],
  ];
  return [
    `ebpf bench: one VM boot (qemu TCG, 2 vCPUs); fio ${o.seconds} s per run on a ${o.sizeMiB} MiB partition (/dev/vda1);`,
    `ext4 on a ${EXT4_MIB} MiB second partition for the app points (a writer running). TCG distorts absolute figures: compare ratios.`,
    '',
    formatTable(['', 'no tracing (before / after)', 'tracker loaded'], rows),
    '',
    formatTable(['', 'scan source (baseline)', 'ebpf source', 'ebpf / scan'], agentRows),
    `ebpf app points read back ${e.readBackBytes.join(', ') || '?'} bytes while frozen; scan's settle reads both volumes whole (${o.sizeMiB + EXT4_MIB} MiB)`,
    `VM: boot ${f.bootMs ?? '?'} ms, whole run ${(f.totalMs / 1000).toFixed(0)} s`,
  ].join('\n');
}

function checkHost(repoRoot: string): void {
  if (process.getuid?.() !== 0) throw new Error('needs root: the VM lab shares the host root through virtiofsd');
  if (!['/usr/bin/fio', '/usr/local/bin/fio'].some((f) => fs.existsSync(f))) throw new Error('fio is missing: apt-get install fio');
  for (const built of ['dist/cli/main.js', 'dist/agent/capture/ebpf/bpf-tracker.js', 'build/Release/ferry_bpf.node', 'build/Release/ferry_trace.bpf.o']) {
    if (!fs.existsSync(path.join(repoRoot, built))) throw new Error(`${built} is missing: build the tree first`);
  }
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  if (o.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const repoRoot = findPackageRoot(__dirname);
  checkHost(repoRoot);
  const figures = await withWorkDir(undefined, 'ferry-ebpf-bench-', (dir) => measure(o, repoRoot, dir));
  if (o.json) process.stdout.write(`${JSON.stringify({ options: o, ...figures }, null, 2)}\n`);
  else process.stdout.write(`${report(figures, o)}\n`);
}

runBench(NAME, USAGE, main);
