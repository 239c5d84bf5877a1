// Group-round benchmark: how long a group-consistent point holds the members' writes and takes
// end to end, with 1 (the baseline: the same round with nobody to wait for), 2 and 3 agents, all
// real processes (receiver with its control plane, agents with scan capture of their own image).
// Usage: node dist/bench/group-rounds.js [--rounds N] [--mib N] [--dir DIR] [--json]

import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { ApiClient } from '../cli/api-client';
import { agentNodeFlags } from '../agent/node-flags';
import type { GroupRound, Machine } from '../control/model';
import { FERRY_BIN, startReceiverChild } from '../receiver/child-process';
import { formatTable, integerOption, MiB, parseBenchArgs, runBench, until, withWorkDir } from './common';

const NAME = 'group-rounds bench';
const USAGE =
  'usage: node dist/bench/group-rounds.js [--rounds N] [--mib N] [--dir DIR] [--json]\n' +
  '  --rounds N  rounds per group size (default 40)\n' +
  '  --mib N     each agent\'s volume in MiB (default 16; a scan round reads it whole)\n' +
  '  --dir DIR   parent of the temporary work directory\n' +
  '  --json      print one JSON object instead of the table';
const MACHINES = 3;

interface Figures {
  agents: number;
  rounds: number;
  aborted: number;
  holdP50Ms: number;
  holdP99Ms: number;
  totalP50Ms: number;
  totalP99Ms: number;
}

function percentile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

async function main(): Promise<void> {
  const args = parseBenchArgs(process.argv.slice(2), ['rounds', 'mib', 'dir']);
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const rounds = integerOption('--rounds', args.values.rounds, 40, 1, 10_000);
  const mib = integerOption('--mib', args.values.mib, 16, 1, 4096);
  await withWorkDir(args.values.dir, 'ferry-bench-rounds-', async (dir) => {
    const passphraseFile = path.join(dir, 'passphrase');
    fs.writeFileSync(passphraseFile, 'bench passphrase for group rounds\n', { mode: 0o600 });
    const rx = await startReceiverChild(path.join(dir, 'rx'), passphraseFile);
    const agents: ChildProcess[] = [];
    try {
      if (!rx.apiUrl || !rx.adminPassword) throw new Error('the receiver did not start its management API');
      const login = new ApiClient({ url: rx.apiUrl, fingerprint: rx.fingerprint });
      const { token } = await login.call<{ token: string }>('POST', '/api/v1/tokens', { name: 'admin', password: rx.adminPassword });
      const api = new ApiClient({ url: rx.apiUrl, fingerprint: rx.fingerprint, token });
      for (let i = 0; i < MACHINES; i++) {
        const image = path.join(dir, `m${i}.img`);
        fs.writeFileSync(image, Buffer.alloc(0));
        fs.truncateSync(image, mib * MiB);
        const config = path.join(dir, `m${i}.json`);
        fs.writeFileSync(
          config,
          JSON.stringify({
            receiver: { url: rx.url, fingerprint: rx.fingerprint },
            name: `m${i}`,
            stateDir: path.join(dir, `state-${i}`),
            passphraseFile,
            capture: 'scan',
            volumes: [{ id: `m${i}-data`, path: image }],
            tags: { crashIntervalMs: 3_600_000 },
          }),
        );
        agents.push(spawn(process.execPath, [...agentNodeFlags(), FERRY_BIN, 'agent', 'run', '--config', config], { stdio: 'ignore', env: { ...process.env, FERRY_LOG_LEVEL: 'warn' } }));
      }
      const machines = await until(
        'three protected machines',
        async () => {
          const list = (await api.get<{ machines: Machine[] }>('/api/v1/machines')).machines;
          return list.length === MACHINES && list.every((m) => m.state === 'protected') ? list.sort((a, b) => a.name.localeCompare(b.name)) : undefined;
        },
        300_000,
      );
      await api.call('POST', '/api/v1/groups', { name: 'bench', policy: { multiMachineConsistency: true, crashConsistentIntervalMs: 24 * 3600 * 1000, appConsistentIntervalMs: 0 } });
      const figures: Figures[] = [];
      for (const m of machines) {
        await api.call('POST', '/api/v1/groups/bench/members', { machineId: m.id });
        const results: GroupRound[] = [];
        for (let r = 0; r < rounds; r++) {
          try {
            results.push(await api.call<GroupRound>('POST', '/api/v1/groups/bench/rounds', {}));
          } catch {
            results.push({ state: 'aborted' } as GroupRound);
          }
        }
        const done = results.filter((r) => r.state === 'done');
        const holds = done.map((r) => r.holdMs ?? 0);
        const totals = done.map((r) => (r.finishedMs ?? r.startedMs) - r.startedMs);
        figures.push({
          agents: figures.length + 1,
          rounds: done.length,
          aborted: results.length - done.length,
          holdP50Ms: percentile(holds, 0.5),
          holdP99Ms: percentile(holds, 0.99),
          totalP50Ms: percentile(totals, 0.5),
          totalP99Ms: percentile(totals, 0.99),
        });
      }
      if (args.json) {
        process.stdout.write(`${JSON.stringify({ mib, figures })}\n`);
        return;
      }
      const base = figures[0];
      const ratio = (v: number, b: number): string => (b > 0 ? `${(v / b).toFixed(2)}x` : '-');
      process.stdout.write(
        `${formatTable(
          ['group round (scan capture, ' + `${mib} MiB volumes)`, 'done', 'aborted', 'hold p50', 'hold p99', 'round p50', 'round p99', 'hold p50 x baseline'],
          figures.map((f) => [
            f.agents === 1 ? 'baseline: 1 agent (nobody to wait for)' : `${f.agents} agents`,
            String(f.rounds),
            String(f.aborted),
            `${f.holdP50Ms} ms`,
            `${f.holdP99Ms} ms`,
            `${f.totalP50Ms} ms`,
            `${f.totalP99Ms} ms`,
            ratio(f.holdP50Ms, base.holdP50Ms),
          ]),
        )}\n`,
      );
    } finally {
      for (const a of agents) a.kill('SIGTERM');
      await Promise.all(agents.map((a) => new Promise((r) => (a.exitCode !== null ? r(undefined) : a.once('exit', r)))));
      await rx.stop();
    }
  });
}

runBench(NAME, USAGE, main);
