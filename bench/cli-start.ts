// CLI start benchmark: the wall time of `ferry --help`, `ferry agent tag` (against a config
// whose agent is not running: start, config, control socket, exit) and `ferry receiver status`,
// each run pairwise with a bare `node -e 0` (alternating, so that both see the same load), as
// the median of N pairs and its ratio.
// Usage: node dist/bench/cli-start.js [--runs N] [--json]

import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { findPackageRoot } from '../native/addon';
import { formatTable, integerOption, parseBenchArgs, runBench, withWorkDir } from './common';

const NAME = 'cli-start bench';
const USAGE =
  'usage: node dist/bench/cli-start.js [--runs N] [--json]\n' +
  '  --runs N  pairs of runs per command (default 15)\n' +
  '  --json    print one JSON object instead of the table\n' +
  'needs `npm run build`';

const TARGET_RATIO = 1.5;

interface Figure {
  command: string;
  medianMs: number;
  nodeMedianMs: number;
  ratio: number;
}

function wallMs(args: string[], expectStatus: number): number {
  const start = process.hrtime.bigint();
  const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (r.status !== expectStatus) throw new Error(`node ${args.join(' ')} exited ${r.status}, expected ${expectStatus}: ${r.stderr}`);
  return ms;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main(): Promise<void> {
  const { values, json, help } = parseBenchArgs(process.argv.slice(2), ['runs']);
  if (help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const runs = integerOption('runs', values.runs, 15, 3, 1000);
  const ferry = path.join(findPackageRoot(), 'bin', 'ferry');
  const figures = await withWorkDir(undefined, 'ferry-cli-start-', async (dir) => {
    const config = path.join(dir, 'agent.yaml');
    const image = path.join(dir, 'disk.img');
    fs.writeFileSync(image, Buffer.alloc(4096));
    const fp = Array.from({ length: 32 }, () => 'AB').join(':');
    wallMs([ferry, 'agent', 'configure', '--config', config, '--receiver', 'wss://127.0.0.1:7443', '--fingerprint', fp, '--volume', `raw=${image}`, '--name', 'bench', '--state-dir', path.join(dir, 'state'), '--capture', 'scan'], 0);
    const commands: Array<[string, string[], number]> = [
      ['ferry --help', [ferry, '--help'], 0],
      // exit 4: no agent runs behind this config (the tag itself is the agent's work, not the CLI's)
      ['ferry agent tag', [ferry, 'agent', 'tag', '--config', config], 4],
      // exit 3: no data directory (what status reads is a small JSON file)
      ['ferry receiver status', [ferry, 'receiver', 'status', '--data', path.join(dir, 'none')], 3],
    ];
    const out: Figure[] = [];
    for (const [label, args, status] of commands) {
      wallMs(args, status); // warm the file cache
      const mine: number[] = [];
      const bare: number[] = [];
      for (let i = 0; i < runs; i++) {
        bare.push(wallMs(['-e', '0'], 0));
        mine.push(wallMs(args, status));
      }
      const m = median(mine);
      const b = median(bare);
      out.push({ command: label, medianMs: m, nodeMedianMs: b, ratio: m / b });
    }
    return out;
  });
  if (json) {
    process.stdout.write(`${JSON.stringify({ runs, targetRatio: TARGET_RATIO, figures })}\n`);
    return;
  }
  const rows = figures.map((f) => [f.command, `${f.medianMs.toFixed(0)} ms`, `${f.nodeMedianMs.toFixed(0)} ms`, `${f.ratio.toFixed(2)}x`, f.ratio <= TARGET_RATIO ? 'met' : 'missed']);
  process.stdout.write(`${formatTable(['command', 'wall (median)', 'node -e 0 (median)', 'ratio', `target <= ${TARGET_RATIO}x`], rows)}\n`);
  process.stdout.write(`(${runs} pairs each, alternating with the bare node run)\n`);
}

runBench(NAME, USAGE, main);
