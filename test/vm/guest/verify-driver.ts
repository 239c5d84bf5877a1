/**
 * Runs inside the VM lab guest (as root) for test/vm/kernel-verify.test.ts: the real agent
 * (`node bin/ferry agent run`, capture: kernel) on a dm-ferry device, a receiver on the host.
 * It runs `ferry agent verify` (through the agent's control socket, as the CLI does) while fio
 * writes, then after the host damaged replica blocks, then once more; it cuts a point with no
 * writer running and records the device's SHA-256 for the host to compare with the export.
 * Prints one line `FERRY-RESULT {"failures": [...], "facts": {...}}`.
 */
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as Addon from '../../../native/addon';
import type * as ControlModule from '../../../agent/control';
import type { AgentStatus } from '../../../agent/status';
import type { VolumeVerifyReport } from '../../../agent/verify/verifier';

const REPO = process.env.FERRY_REPO ?? '';
const HOSTCTL = process.env.HOSTCTL ?? '';
const FERRY = path.join(REPO, 'bin', 'ferry');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const addon = require(path.join(REPO, 'dist', 'native', 'addon')) as typeof Addon;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const control = require(path.join(REPO, 'dist', 'agent', 'control')) as typeof ControlModule;

const MiB = 1024 * 1024;
const BLOCK = 64 * 1024;

interface Params {
  receiverUrl: string;
  fingerprint: string;
  passphraseFile: string;
  workDir: string;
  stateDir: string;
  volumeId: string;
  device: string;
  /** Byte offsets the host damages in the replica (block-aligned). */
  damage: number[];
  seed: number;
}

const failures: string[] = [];
const facts: Record<string, unknown> = {};

function check(cond: boolean, message: string): void {
  if (!cond) failures.push(message);
}

function note(message: string): void {
  process.stdout.write(`driver: ${message}\n`);
}

async function waitFor<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 300_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function host(action: string, arg = ''): Promise<string> {
  const res = await fetch(`${HOSTCTL}/${action}?arg=${encodeURIComponent(arg)}`, { signal: AbortSignal.timeout(120_000) });
  const text = (await res.text()).trim();
  if (res.status !== 200) throw new Error(`host action ${action} failed (${res.status}): ${text}`);
  return text;
}

function run(cmd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, out }));
  });
}

/** fio random writes (4-64 KiB, O_DIRECT) paced at `rateKiBps`. */
async function randomWrites(device: string, bytes: number, seed: number, rateKiBps: number): Promise<void> {
  const r = await run('fio', [
    `--name=w${seed}`,
    `--filename=${device}`,
    '--rw=randwrite',
    '--bsrange=4k-64k',
    '--direct=1',
    '--ioengine=libaio',
    '--iodepth=4',
    `--io_size=${bytes}`,
    `--randseed=${seed}`,
    '--refill_buffers',
    '--minimal',
    `--rate=${rateKiBps}k`,
  ]);
  if (r.code !== 0) throw new Error(`fio exited ${r.code}: ${r.out}`);
}

function status(p: Params): AgentStatus | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(p.stateDir, 'status.json'), 'utf8')) as AgentStatus;
  } catch {
    return undefined;
  }
}

/** Protected, connected, nothing left to send, the kernel ring empty. */
async function caughtUp(p: Params, pid: number, what: string): Promise<void> {
  await waitFor(`${what}: caught up`, () => {
    const s = status(p);
    const v = s?.volumes[0];
    return s?.pid === pid && s.connected && v?.state === 'protected' && v.backlogBytes === 0 && v.durableSeq === v.capturedSeq && (v.resync?.finished ?? true);
  });
  const ctl = await addon.FerryControl.open();
  try {
    await waitFor(`${what}: kernel ring empty`, async () => {
      const dev = (await ctl.list()).find((d) => d.name === path.basename(p.device));
      return dev !== undefined && dev.ringUsed === 0 && dev.dirtyBits === 0 && dev.modeName === 'data';
    });
  } finally {
    await ctl.close();
  }
}

/** `ferry agent verify --json` as the CLI asks it; a refusal for want of a session is retried. */
async function verify(p: Params, repair: boolean): Promise<VolumeVerifyReport> {
  const socket = path.join(p.stateDir, 'agent.sock');
  for (;;) {
    const reply = await control.controlRequest(socket, { cmd: 'verify', repair }, 900_000);
    if (reply.ok && reply.verify) return reply.verify.volumes[0];
    if (!reply.ok && reply.exitCode === 4 && /no session/.test(reply.error)) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      continue;
    }
    throw new Error(`verify failed: ${reply.ok ? 'no report' : reply.error}`);
  }
}

async function sha256Device(device: string, size: number): Promise<string> {
  const h = crypto.createHash('sha256');
  for (let off = 0; off < size; off += 4 * MiB) h.update(await addon.readDirect(device, off, Math.min(4 * MiB, size - off)));
  return h.digest('hex');
}

async function scenario(p: Params): Promise<void> {
  const config = path.join(p.workDir, 'agent.json');
  fs.writeFileSync(
    config,
    JSON.stringify({
      receiver: { url: p.receiverUrl, fingerprint: p.fingerprint },
      name: 'vm-verify',
      stateDir: p.stateDir,
      capture: 'kernel',
      passphraseFile: p.passphraseFile,
      volumes: [{ id: p.volumeId, path: p.device }],
      tags: { crashIntervalMs: 3_600_000 },
    }),
  );
  const log = fs.openSync(path.join(p.workDir, 'agent.log'), 'a');
  const agent = spawn(process.execPath, [FERRY, 'agent', 'run', '--config', config], { stdio: ['ignore', log, log], env: { ...process.env, FERRY_LOG_LEVEL: 'info' } });
  fs.closeSync(log);
  const exited = new Promise<number | null>((resolve) => agent.once('exit', (code) => resolve(code)));
  const pid = agent.pid ?? 0;
  try {
    await caughtUp(p, pid, 'the initial resync');

    // 1. Verify while fio writes: no false alarm.
    const writes = randomWrites(p.device, 24 * MiB, p.seed, 2048);
    const busy = await verify(p, true);
    await writes;
    facts.underWrites = busy;
    note(`verify under writes: ${JSON.stringify(busy)}`);
    check(busy.divergedBlocks === 0, `verify under writes found divergence: ${JSON.stringify(busy)}`);
    await caughtUp(p, pid, 'the writes');

    // 2. The host damages replica blocks behind the receiver's back: verify finds exactly those and repairs them.
    note(`host: ${await host('damage', p.damage.join(','))}`);
    const found = await verify(p, true);
    facts.afterDamage = found;
    note(`verify after damage: ${JSON.stringify(found)}`);
    check(JSON.stringify(found.divergedOffsets) === JSON.stringify(p.damage), `verify must find exactly the damaged blocks ${p.damage.join(',')}: ${JSON.stringify(found)}`);
    check(found.repaired && found.repairSentBytes === p.damage.length * BLOCK, `the damaged blocks must be repaired: ${JSON.stringify(found)}`);

    // 3. Nothing left; a point cut now exports to the device.
    const again = await verify(p, true);
    facts.again = again;
    check(again.divergedBlocks === 0 && again.busyBlocks === 0, `a second verify must find nothing: ${JSON.stringify(again)}`);
    const reply = await control.controlRequest(path.join(p.stateDir, 'agent.sock'), { cmd: 'tag', app: false, name: 'after-repair' }, 120_000);
    if (!reply.ok || !reply.tag) throw new Error(`tag failed: ${reply.ok ? 'no tag' : reply.error}`);
    facts.point = { name: 'after-repair', pointId: reply.tag.pointIds[0], accuracy: reply.tag.accuracy, sha256: await sha256Device(p.device, busy.sizeBytes) };
  } finally {
    agent.kill('SIGTERM');
    check((await exited) === 0, 'the agent stops cleanly');
  }
}

async function main(): Promise<void> {
  const p = JSON.parse(fs.readFileSync(process.argv[2], 'utf8')) as Params;
  fs.mkdirSync(p.workDir, { recursive: true });
  try {
    await scenario(p);
  } catch (err) {
    failures.push((err as Error).stack ?? String(err));
  }
  if (failures.length > 0) {
    const agentLog = fs.existsSync(path.join(p.workDir, 'agent.log')) ? fs.readFileSync(path.join(p.workDir, 'agent.log'), 'utf8') : '';
    process.stdout.write(`--- agent log (tail) ---\n${agentLog.split('\n').slice(-60).join('\n')}\n`);
  }
  process.stdout.write(`FERRY-RESULT ${JSON.stringify({ failures, facts })}\n`);
}

void main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stdout.write(`driver failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(2);
  },
);
