/**
 * Runs inside the VM lab guest (as root): the real agent (`node bin/ferry agent run`,
 * capture: ebpf) protects a mounted ext4 partition (/dev/vda1) live while a writer process
 * writes files into it, against a receiver on the host. test/vm/ebpf-capture.test.ts transpiles
 * this file and runs `node ebpf-capture-driver.js <params.json>` once the partition is mounted.
 *
 * Two app-consistent points (freeze, read back what was written since the last drain, cut,
 * thaw): one while the receiver is stopped, so that the settle waits and the freeze lasts long
 * enough to hash the partition while it is frozen (the export must equal that hash); one in
 * ordinary running, whose freeze time is the figure an operator sees. Prints one line
 * `FERRY-RESULT {"failures": [...], "facts": {...}}`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as Addon from '../../../native/addon';
import type { AgentStatus } from '../../../agent/status';
import type * as ControlModule from '../../../agent/control';

const REPO = process.env.FERRY_REPO ?? '';
const HOSTCTL = process.env.HOSTCTL ?? '';
const FERRY = path.join(REPO, 'bin', 'ferry');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const addon = require(path.join(REPO, 'dist', 'native', 'addon')) as typeof Addon;
// eslint-disable-next-line @typescript-eslint/no-require-imports
const control = require(path.join(REPO, 'dist', 'agent', 'control')) as typeof ControlModule;

const MiB = 1024 * 1024;

interface Params {
  receiverUrl: string;
  fingerprint: string;
  passphraseFile: string;
  workDir: string;
  stateDir: string;
  volumeId: string;
  device: string;
  mount: string;
}

interface PointFact {
  name: string;
  pointId: number;
  kind: string;
  accuracy: string;
  frozenMs?: number;
  sha256?: string;
}

const failures: string[] = [];
const points: PointFact[] = [];
const facts: Record<string, unknown> = { points };

function check(cond: boolean, message: string): void {
  if (!cond) failures.push(message);
}

function note(message: string): void {
  process.stdout.write(`driver: ${message}\n`);
}

async function waitFor<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 300_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

async function host(action: string): Promise<void> {
  const res = await fetch(`${HOSTCTL}/${action}`, { signal: AbortSignal.timeout(60_000) });
  if (res.status !== 200) throw new Error(`host action ${action} failed (${res.status}): ${(await res.text()).trim()}`);
}

class Agent {
  readonly configFile: string;
  readonly logFile: string;
  private child: ChildProcess | undefined;
  private exit: Promise<number | null> = Promise.resolve(null);

  constructor(private readonly p: Params) {
    this.configFile = path.join(p.workDir, 'agent.json');
    this.logFile = path.join(p.workDir, 'agent.log');
    const config = {
      receiver: { url: p.receiverUrl, fingerprint: p.fingerprint },
      name: 'vm-ebpf',
      stateDir: p.stateDir,
      capture: 'ebpf',
      passphraseFile: p.passphraseFile,
      volumes: [{ id: p.volumeId, path: p.device, mount: p.mount }],
      // Small windows: with the receiver stopped, reading back stops after 1 MiB.
      scan: { maxPendingBytes: '1MiB' },
      pipeline: { windowBytes: '1MiB' },
      tags: { crashIntervalMs: 1000, freezeTimeoutMs: 30_000 },
    };
    fs.writeFileSync(this.configFile, JSON.stringify(config, null, 2));
  }

  start(): void {
    const out = fs.openSync(this.logFile, 'a');
    const child = spawn(process.execPath, [FERRY, 'agent', 'run', '--config', this.configFile], { stdio: ['ignore', out, out], env: { ...process.env, FERRY_LOG_LEVEL: 'info' } });
    fs.closeSync(out);
    this.child = child;
    this.exit = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async stop(): Promise<number | null> {
    if (this.running) this.child?.kill('SIGTERM');
    return this.exit;
  }

  log(): string {
    return fs.existsSync(this.logFile) ? fs.readFileSync(this.logFile, 'utf8') : '';
  }

  status(): AgentStatus | undefined {
    try {
      const s = JSON.parse(fs.readFileSync(path.join(this.p.stateDir, 'status.json'), 'utf8')) as AgentStatus;
      return s.pid === this.child?.pid ? s : undefined;
    } catch {
      return undefined;
    }
  }

  async waitStatus(what: string, pred: (v: AgentStatus['volumes'][number], s: AgentStatus) => boolean): Promise<AgentStatus> {
    return waitFor(what, () => {
      if (!this.running) throw new Error(`the agent exited while waiting for ${what}:\n${this.log().split('\n').slice(-30).join('\n')}`);
      const s = this.status();
      return s && s.volumes[0] && pred(s.volumes[0], s) ? s : undefined;
    });
  }

  /** An app-consistent tag through the control socket (what `ferry agent tag --app` asks). */
  async appTag(name: string): Promise<PointFact> {
    const reply = await control.controlRequest(path.join(this.p.stateDir, 'agent.sock'), { cmd: 'tag', app: true, name }, 120_000);
    if (!reply.ok || !reply.tag) throw new Error(`tag ${name} failed: ${reply.ok ? 'no tag in the reply' : reply.error}`);
    const t = reply.tag;
    note(`tag ${name}: point ${t.pointIds[0]} ${t.kind} ${t.accuracy}, frozen ${t.frozenMs} ms${t.reason ? ` (${t.reason})` : ''}`);
    return { name, pointId: t.pointIds[0], kind: t.kind, accuracy: t.accuracy, frozenMs: t.frozenMs };
  }
}

/** Files of 4-64 KiB written and fsync'd one after the other, each listed once complete. */
const WRITER = `
const fs = require('fs'), crypto = require('crypto'), path = require('path');
const [mount, done] = process.argv.slice(2);
for (let i = 0; i < 500; i++) {
  const name = 'f' + String(i).padStart(4, '0');
  const data = crypto.randomBytes(4096 * (1 + (i % 16)));
  const fd = fs.openSync(path.join(mount, name), 'w');
  fs.writeSync(fd, data);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.appendFileSync(done, crypto.createHash('sha256').update(data).digest('hex') + '  ' + name + '\\n');
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
}
`;

function procState(pid: number): string {
  try {
    // pid (comm) S ...: the state follows the last ')'.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return '';
  }
}

/** The probe waits for the filesystem's thaw (sb_start_write's percpu rwsem), not for anything else. */
function blockedByFreeze(pid: number): boolean {
  if (procState(pid) !== 'D') return false;
  const waitsOnFreeze = /percpu_rwsem|percpu_down_read|sb_start_write/;
  for (const file of [`/proc/${pid}/stack`, `/proc/${pid}/wchan`]) {
    try {
      if (waitsOnFreeze.test(fs.readFileSync(file, 'utf8'))) return true;
    } catch {
      // not there on this kernel: the other one may be
    }
  }
  return false;
}

/**
 * Waits until the filesystem is frozen: a small write started now stays blocked (state D, in
 * sb_start_write) instead of finishing. Returns the blocked writer; it finishes at the thaw.
 */
async function waitFrozen(mount: string): Promise<ChildProcess> {
  return waitFor('the filesystem to be frozen', async () => {
    const probe = spawn('sh', ['-c', `echo x >> ${mount}/.probe`], { stdio: 'ignore' });
    const exited = new Promise<boolean>((resolve) => probe.once('exit', () => resolve(true)));
    const blocked = await waitFor('the probe write to finish or block', async () => (probe.exitCode !== null ? 'done' : blockedByFreeze(probe.pid ?? 0) ? 'blocked' : undefined), 30_000, 20);
    if (blocked === 'blocked') return probe;
    await exited;
    return undefined;
  }, 60_000, 20);
}

async function sha256Partition(device: string, sizeBytes: number): Promise<string> {
  const h = crypto.createHash('sha256');
  for (let off = 0; off < sizeBytes; off += 4 * MiB) h.update(await addon.readDirect(device, off, Math.min(4 * MiB, sizeBytes - off)));
  return h.digest('hex');
}

async function scenario(p: Params): Promise<void> {
  const sizeBytes = Number(fs.readFileSync(`/sys/class/block/${path.basename(p.device)}/size`, 'utf8').trim()) * 512;
  const done = path.join(p.workDir, 'files.done');
  fs.writeFileSync(done, '');
  const writerScript = path.join(p.workDir, 'writer.js');
  fs.writeFileSync(writerScript, WRITER);
  const agent = new Agent(p);
  agent.start();
  let writer: ChildProcess | undefined;
  let writerExit: Promise<number | null> = Promise.resolve(null);
  try {
    // The agent's start takes a minute or more under TCG (node compiles the whole CLI).
    const started = await agent.waitStatus('the initial resync to be durable', (v, s) => s.connected && v.resync?.finished === true);
    const w = spawn(process.execPath, [writerScript, p.mount, done], { stdio: 'inherit' });
    writer = w;
    writerExit = new Promise((resolve) => w.once('exit', (code) => resolve(code)));
    facts.capture = started.capture;
    facts.captureReason = started.captureReason;
    facts.initialResync = { kind: started.volumes[0].resync?.kind, sentBytes: started.volumes[0].resync?.sentBytes };
    check(started.capture === 'ebpf', `the agent captures with ebpf: ${started.capture} (${started.captureReason})`);
    const lines = (): number => fs.readFileSync(done, 'utf8').split('\n').length - 1;
    await waitFor('the writer to write some files', () => lines() > 20);

    // (1) The receiver stops: reading back stops at 1 MiB unacknowledged, so the settle of the
    // app point waits and the filesystem stays frozen while the partition is hashed here.
    await host('stop-receiver-process');
    const before = lines();
    await waitFor('more than 1 MiB written since the receiver stopped', () => lines() > before + 40);
    const heldTag = agent.appTag('app-held');
    const probe = await waitFrozen(p.mount);
    const sha256 = await sha256Partition(p.device, sizeBytes);
    check(probe.exitCode === null && blockedByFreeze(probe.pid ?? 0), 'the filesystem stayed frozen while it was hashed');
    await host('continue-receiver-process');
    const held = await heldTag;
    check(held.kind === 'app' && held.accuracy === 'exact', `the held app point is app-consistent and exact: ${held.kind} ${held.accuracy}`);
    points.push({ ...held, sha256 });

    // (2) An ordinary app point while the writer runs: files complete before it must be in it.
    facts.busyFiles = fs.readFileSync(done, 'utf8');
    const busy = await agent.appTag('app-busy');
    check(busy.kind === 'app' && busy.accuracy === 'exact', `the app point during writes is app-consistent and exact: ${busy.kind} ${busy.accuracy}`);
    points.push(busy);
    const logged = /ebpf app point: frozen (\d+) ms, read back (\d+) bytes/g;
    facts.appPointLog = [...agent.log().matchAll(logged)].map((m) => ({ frozenMs: Number(m[1]), readBackBytes: Number(m[2]) }));
    check((facts.appPointLog as unknown[]).length === 2, `the agent logs each ebpf app point's freeze: ${JSON.stringify(facts.appPointLog)}`);
    const status = agent.status();
    facts.modes = status?.volumes.map((v) => v.mode);
  } finally {
    writer?.kill('SIGTERM');
    await writerExit;
    check((await agent.stop()) === 0, 'the agent stops cleanly');
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
    const log = fs.existsSync(path.join(p.workDir, 'agent.log')) ? fs.readFileSync(path.join(p.workDir, 'agent.log'), 'utf8') : '';
    process.stdout.write(`--- agent log (tail) ---\n${log.split('\n').slice(-60).join('\n')}\n`);
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
