/**
 * One protected machine of the recovery scenario (test/vm/recovery.test.ts), in its own VM-lab
 * guest (dm-ferry's change stream has one owner per kernel: one agent per machine): the real
 * agent (capture: kernel) protects a whole bootable Debian disk through dm-ferry, its root
 * partition mounted through dm-linear inside the dm-ferry device (test/vm/bootable/guest-mount.sh).
 * The driver walks the scenario with the host (`host(action)` answers once every machine asked
 * and the host has acted once for all of them):
 *  1. both initial resyncs; `ready` (the host groups the machines and writes the plan);
 *  2. a marker file in both root file systems before each of three group rounds (`round`);
 *  3. `test-failover` at round 2 while the driver keeps writing; then m4 (and the churn switch
 *     for the recovered machines) and a round the host exports and checks (`check`);
 *  4. m5, then a planned failover (`failover`): both agents are refused from then on;
 *  5. failback: the disks are unmounted and unwrapped, `failback-prepare`, `ferry agent failback`
 *     on each plain disk while the recovered machines run and write, `failback-run` (the host
 *     stops them: final pass), the disks' hashes for the host to compare;
 *  6. re-protection: dm-ferry again, the agents again (a whole-volume compare: only differences
 *     travel), `reprotected` (the host exports a new round and checks its markers and churn).
 * Usage: node recovery-driver.js <params.json>; prints `FERRY-RESULT {...}`.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import type { AgentStatus } from '../../../agent/status';

interface MachineParams {
  name: string;
  /** The plain disk (/dev/vda) and its dm-ferry metadata device. */
  disk: string;
  meta: string;
}

interface Params {
  repo: string;
  receiverUrl: string;
  fingerprint: string;
  passphraseFile: string;
  hostctl: string;
  diskSectors: number;
  partStartSector: number;
  partSectors: number;
  churnMiB: number;
  machine: MachineParams;
}

const p = JSON.parse(fs.readFileSync(process.argv[2], 'utf8')) as Params;
const GUEST_MOUNT = path.join(p.repo, 'test', 'vm', 'bootable', 'guest-mount.sh');
const failures: string[] = [];
const facts: Record<string, unknown> = {};

/** Asks the host to act; answers when it has (a failover takes minutes: no client-side timeout, unlike fetch's 5 min for headers). */
function host(action: string, arg = ''): Promise<string> {
  return new Promise((resolve, reject) => {
    // A fresh connection each time: a kept-alive one may be closed by the host just as it is reused.
    const req = http.get(`${p.hostctl}/${action}?arg=${encodeURIComponent(`${p.machine.name}|${arg}`)}`, { agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => (res.statusCode === 200 ? resolve(text.trim()) : reject(new Error(`host action ${action} failed: ${text.trim()}`))));
      res.on('error', reject);
    });
    req.on('error', (err) => reject(new Error(`host action ${action}: ${err.message}`)));
  });
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

function sh(script: string): string {
  return execFileSync('bash', ['-c', `set -euo pipefail\n. ${GUEST_MOUNT}\n${script}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** fsync of a file and its directory: once this returns, the next point holds it. */
function durable(file: string): void {
  for (const f of [file, path.dirname(file)]) {
    const fd = fs.openSync(f, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }
}

class Machine {
  readonly work: string;
  readonly mount: string;
  readonly volumeId: string;
  private agent: ChildProcess | undefined;

  constructor(readonly m: MachineParams) {
    this.work = `/run/ferry-${m.name}`;
    this.mount = `/run/mnt-${m.name}`;
    this.volumeId = `${m.name}-disk`;
  }

  get device(): string {
    return `/dev/mapper/ferry-${this.m.name}`;
  }

  get configFile(): string {
    return path.join(this.work, 'agent.json');
  }

  /** dm-ferry over the whole disk, the root partition mounted inside it. */
  wrap(): void {
    sh(`dmsetup create ferry-${this.m.name} --table "0 ${p.diskSectors} ferry ${this.m.disk} ${this.m.meta}"
mount_root_partition ${this.device} ${p.partStartSector} ${p.partSectors} ${this.mount}`);
  }

  unwrap(): void {
    sh(`umount_root_partition ${this.mount}\ndmsetup remove ferry-${this.m.name}`);
  }

  start(): void {
    fs.mkdirSync(this.work, { recursive: true });
    fs.writeFileSync(
      this.configFile,
      JSON.stringify({
        receiver: { url: p.receiverUrl, fingerprint: p.fingerprint },
        name: this.m.name,
        stateDir: path.join(this.work, 'state'),
        passphraseFile: p.passphraseFile,
        capture: 'kernel',
        // The root file system is frozen for application-consistent points (a planned failover's last one).
        volumes: [{ id: this.volumeId, path: this.device, mount: this.mount }],
        tags: { crashIntervalMs: 3_600_000 },
      }),
    );
    const log = fs.openSync(path.join(this.work, 'agent.log'), 'a');
    this.agent = spawn(process.execPath, [path.join(p.repo, 'bin', 'ferry'), 'agent', 'run', '--config', this.configFile], { stdio: ['ignore', log, log], env: { ...process.env, FERRY_LOG_LEVEL: 'info' } });
  }

  status(): AgentStatus | undefined {
    try {
      const s = JSON.parse(fs.readFileSync(path.join(this.work, 'state', 'status.json'), 'utf8')) as AgentStatus;
      return s.pid === this.agent?.pid ? s : undefined;
    } catch {
      return undefined;
    }
  }

  caughtUp(): AgentStatus | undefined {
    const s = this.status();
    return s && s.connected && s.volumes.every((v) => v.state === 'protected' && v.backlogBytes === 0 && v.durableSeq === v.capturedSeq) ? s : undefined;
  }

  mark(marker: string): void {
    const dir = path.join(this.mount, 'var', 'lib', 'ferry-markers');
    fs.mkdirSync(dir, { recursive: true });
    const f = path.join(dir, marker);
    fs.writeFileSync(f, `${marker} ${randomBytes(8).toString('hex')}\n`);
    durable(f);
  }

  /** The recovered machine writes this many MiB at each boot (ferry-churn.service). */
  churnAtBoot(mib: number): void {
    const f = path.join(this.mount, 'etc', 'ferry-churn');
    fs.writeFileSync(f, `${mib}\n`);
    durable(f);
  }

  async stop(): Promise<void> {
    if (!this.agent || this.agent.exitCode !== null) return;
    const exited = new Promise((r) => this.agent?.once('exit', r));
    this.agent.kill('SIGTERM');
    await exited;
  }

  /** `ferry agent failback` on the plain disk: resolves with its JSON summary. */
  failback(): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [path.join(p.repo, 'bin', 'ferry'), 'agent', 'failback', '--config', this.configFile, '--volume', `${this.volumeId}=${this.m.disk}`, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.once('exit', (code) => {
        facts.failbackLog = err.split('\n').slice(-8);
        if (code === 0) resolve(JSON.parse(out));
        else reject(new Error(`ferry agent failback of ${this.m.name} exited ${code}: ${err.slice(-2000)}`));
      });
    });
  }

  diskHash(): string {
    return execFileSync('sha256sum', [this.m.disk], { encoding: 'utf8' }).split(' ')[0];
  }

  logTail(): string[] {
    try {
      return fs.readFileSync(path.join(this.work, 'agent.log'), 'utf8').split('\n').slice(-12);
    } catch {
      return [];
    }
  }
}

/** Writes while the host runs the test failover: replication must go on underneath it. */
async function churn(machines: Machine[], stop: { done: boolean }): Promise<number> {
  let n = 0;
  while (!stop.done) {
    for (const m of machines) {
      const f = path.join(m.mount, 'var', 'tmp', 'ferry-churn.bin');
      fs.writeFileSync(f, randomBytes(256 * 1024));
      durable(f);
    }
    n++;
    await new Promise((r) => setTimeout(r, 500));
  }
  return n;
}

async function main(): Promise<void> {
  const machines = [new Machine(p.machine)];
  try {
    for (const m of machines) m.wrap();
    for (const m of machines) m.start();
    for (const m of machines) await waitFor(`the initial resync of ${m.m.name}`, () => m.caughtUp(), 1_500_000);
    await host('ready', p.machine.name);
    const rounds: number[] = [];
    for (let k = 1; k <= 3; k++) {
      for (const m of machines) m.mark(`m${k}`);
      rounds.push(Number(await host('round')));
    }
    facts.rounds = rounds;

    const stop = { done: false };
    const writing = churn(machines, stop);
    facts.testFailover = await host('test-failover', String(rounds[1]));
    stop.done = true;
    facts.churnPasses = await writing;
    for (const m of machines) {
      m.mark('m4');
      m.churnAtBoot(p.churnMiB);
    }
    facts.after = await host('check', await host('round'));

    // The last write before a planned failover must be on the recovered machines (no data loss).
    for (const m of machines) m.mark('m5');
    facts.failover = await host('failover');
    for (const m of machines) {
      const s = await waitFor(`${m.m.name}'s stream refused after the failover`, () => {
        const st = m.status();
        return st && !st.connected && /failed over/.test(st.lastError ?? '') ? st : undefined;
      }, 300_000);
      facts.refusal = s.lastError;
    }
    for (const m of machines) await m.stop();

    // Failback: the original disks, not in use, pull what differs while the recovered machines run.
    for (const m of machines) m.unwrap();
    await host('failback-prepare');
    const pulls = machines.map((m) => m.failback());
    pulls.forEach((pull) => pull.catch(() => undefined));
    facts.failbackRun = await host('failback-run');
    facts.failbackSummary = (await Promise.all(pulls))[0];
    facts.diskHash = machines[0].diskHash();
    await host('disks-compared');

    // Re-protection in the original direction: the agents compare their whole volume.
    for (const m of machines) {
      m.wrap();
      m.start();
    }
    for (const m of machines) {
      const s = await waitFor(`${m.m.name} protected again`, () => {
        const st = m.caughtUp();
        return st && st.volumes.every((v) => v.repair?.finished === true && /failback/.test(v.repair.reason)) ? st : undefined;
      }, 1_500_000);
      facts.reprotected = s.volumes[0];
    }
    facts.reprotectedCheck = await host('reprotected', await host('round'));
  } catch (err) {
    failures.push((err as Error).message);
    // The other machine's driver waits for this one at the host: tell the host to let it go.
    await host('failed', (err as Error).message).catch(() => undefined);
  } finally {
    for (const m of machines) {
      await m.stop();
      facts.agentLogTail = m.logTail();
    }
  }
  console.log(`FERRY-RESULT ${JSON.stringify({ failures, facts })}`);
}

void main();
