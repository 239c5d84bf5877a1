/**
 * One machine of a protection group in the VM lab (test/vm/group-rounds.test.ts): runs the real
 * agent (capture: kernel) on a dm-ferry device against the receiver on the host, then a member of
 * the causal writer ring (test/helpers/causal-ring.js) whose tokens travel through a relay on the
 * host to the other machine. The host adds the machine to the group when it is protected
 * (`ready`) and answers `rounds` once enough group rounds are done; the driver then stops the
 * writer, waits until everything captured is durable at the receiver, and stops the agent.
 * Usage: node group-driver.js <params.json>; prints `FERRY-RESULT {...}`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { AgentStatus } from '../../../agent/status';

interface Params {
  repo: string;
  receiverUrl: string;
  fingerprint: string;
  passphraseFile: string;
  name: string;
  role: number;
  device: string;
  relay: string;
  hostctl: string;
  maxK: number;
}

const p = JSON.parse(fs.readFileSync(process.argv[2], 'utf8')) as Params;
const work = '/run/ferry-group';
const failures: string[] = [];
const facts: Record<string, unknown> = {};

async function host(action: string, arg = ''): Promise<string> {
  const res = await fetch(`${p.hostctl}/${action}?arg=${encodeURIComponent(arg)}`, { signal: AbortSignal.timeout(600_000) });
  const text = (await res.text()).trim();
  if (res.status !== 200) throw new Error(`host action ${action} failed: ${text}`);
  return text;
}

async function waitFor<T>(what: string, check: () => T | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function status(pid: number | undefined): AgentStatus | undefined {
  try {
    const s = JSON.parse(fs.readFileSync(path.join(work, 'state', 'status.json'), 'utf8')) as AgentStatus;
    return s.pid === pid ? s : undefined;
  } catch {
    return undefined;
  }
}

async function main(): Promise<void> {
  fs.mkdirSync(work, { recursive: true });
  const volumeId = `${p.name}-data`;
  const configFile = path.join(work, 'agent.json');
  fs.writeFileSync(
    configFile,
    JSON.stringify({
      receiver: { url: p.receiverUrl, fingerprint: p.fingerprint },
      name: p.name,
      stateDir: path.join(work, 'state'),
      passphraseFile: p.passphraseFile,
      capture: 'kernel',
      volumes: [{ id: volumeId, path: p.device }],
      tags: { crashIntervalMs: 3_600_000 },
    }),
  );
  const log = fs.openSync(path.join(work, 'agent.log'), 'a');
  const agent = spawn(process.execPath, [path.join(p.repo, 'bin', 'ferry'), 'agent', 'run', '--config', configFile], { stdio: ['ignore', log, log], env: { ...process.env, FERRY_LOG_LEVEL: 'info' } });
  const caughtUp = (): AgentStatus | undefined => {
    const s = status(agent.pid);
    return s && s.connected && s.volumes.every((v) => v.state === 'protected' && v.backlogBytes === 0 && v.durableSeq === v.capturedSeq) ? s : undefined;
  };
  let writer: ChildProcess | undefined;
  try {
    await waitFor('the initial resync', caughtUp, 600_000);
    await host('ready', p.name);
    writer = spawn(process.execPath, [path.join(p.repo, 'test', 'helpers', 'causal-ring.js'), String(p.role), p.device, String(p.maxK), p.relay], { stdio: ['ignore', 'ignore', 'inherit'] });
    facts.rounds = await host('rounds', p.name);
    writer.kill('SIGKILL');
    await new Promise((r) => writer?.once('exit', r));
    const s = await waitFor('everything captured durable at the receiver', caughtUp, 300_000);
    facts.rounds_seen_by_agent = s.rounds;
    await host('stopped', p.name);
  } catch (err) {
    failures.push((err as Error).message);
  } finally {
    writer?.kill('SIGKILL');
    agent.kill('SIGTERM');
    await new Promise((r) => agent.once('exit', r));
    facts.agentLogTail = fs.readFileSync(path.join(work, 'agent.log'), 'utf8').split('\n').slice(-15);
  }
  console.log(`FERRY-RESULT ${JSON.stringify({ failures, facts })}`);
}

void main();
