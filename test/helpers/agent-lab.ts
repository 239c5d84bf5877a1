import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { agentNodeFlags } from '../../agent/node-flags';
import type { AgentStatus } from '../../agent/status';
import { FERRY_BIN, makeTempDir, ReceiverProcess, runFerry, runFerryAsync, startReceiverProcess, writePassphrase } from './receiver-process';
import { prng, sha256 } from './volume-model';

export interface AgentProcess {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
  kill9: () => Promise<void>;
  stop: () => Promise<number | null>;
}

/** Polls `check` until it returns a value (not undefined/false) or the deadline passes. */
export async function waitFor<T>(what: string, check: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 60_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export function startAgentProcess(configFile: string, env: Record<string, string> = {}): AgentProcess {
  const child = spawn(process.execPath, [...agentNodeFlags(), FERRY_BIN, 'agent', 'run', '--config', configFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, FERRY_LOG_LEVEL: process.env.FERRY_LOG_LEVEL ?? 'info', ...env },
  });
  let out = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    output: () => out,
    exited,
    kill9: async () => {
      child.kill('SIGKILL');
      await exited;
    },
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

/** Writes random 4 KiB-aligned blocks into an image file (real writes, fsync'd); returns bytes written. */
export function churn(file: string, bytes: number, seed: number, blockBytes = 4096): number {
  const random = prng(seed);
  const size = fs.statSync(file).size;
  const fd = fs.openSync(file, 'r+');
  try {
    let done = 0;
    while (done < bytes) {
      const len = blockBytes * (1 + Math.floor(random() * 16));
      const offset = Math.floor(random() * ((size - len) / 4096)) * 4096;
      const data = Buffer.alloc(len);
      for (let i = 0; i < len; i += 4) data.writeUInt32LE((random() * 2 ** 32) >>> 0, i);
      fs.writeSync(fd, data, 0, len, offset);
      done += len;
    }
    fs.fsyncSync(fd);
    return done;
  } finally {
    fs.closeSync(fd);
  }
}

export interface AgentConfigOptions {
  volumes?: Array<{ id: string; path: string; mount?: string }>;
  scan?: Record<string, unknown>;
  pipeline?: Record<string, unknown>;
  tags?: Record<string, unknown>;
  metrics?: Record<string, unknown>;
  fingerprint?: string;
  url?: string;
}

/**
 * A receiver process, an agent config and a sample volume in one temp directory: the fixture
 * of the agent tests. Everything runs as real processes over real TLS.
 */
export class AgentLab {
  readonly dir: string;
  readonly receiverDir: string;
  readonly passphraseFile: string;
  readonly configFile: string;
  receiver!: ReceiverProcess;
  port = 0;
  readonly agents: AgentProcess[] = [];

  constructor(name: string) {
    this.dir = makeTempDir(name);
    this.receiverDir = path.join(this.dir, 'receiver');
    this.passphraseFile = writePassphrase(this.dir).file;
    this.configFile = path.join(this.dir, 'agent.json');
  }

  /** Starts the receiver; later restarts reuse its port so the agent's URL stays valid. */
  async startReceiver(extraArgs: string[] = []): Promise<ReceiverProcess> {
    const listen = this.port > 0 ? ['--listen', `127.0.0.1:${this.port}`] : [];
    this.receiver = await startReceiverProcess(this.receiverDir, this.passphraseFile, [...listen, ...extraArgs]);
    this.port = this.receiver.port;
    return this.receiver;
  }

  /** An image whose first `randomFraction` is random data and the rest zeroes (zero blocks must replicate too). */
  volumeImage(name: string, sizeBytes: number, seed: number, randomFraction = 0.5): string {
    const file = path.join(this.dir, name);
    const random = prng(seed);
    const buf = Buffer.alloc(sizeBytes);
    for (let i = 0; i < Math.floor((sizeBytes * randomFraction) / 4) * 4; i += 4) buf.writeUInt32LE((random() * 2 ** 32) >>> 0, i);
    fs.writeFileSync(file, buf);
    return file;
  }

  writeConfig(opts: AgentConfigOptions = {}): string {
    const config = {
      receiver: { url: opts.url ?? this.receiver.url, fingerprint: opts.fingerprint ?? this.receiver.fingerprint },
      name: 'test-agent',
      stateDir: './agent-state',
      capture: 'scan',
      volumes: opts.volumes ?? [],
      scan: { intervalMs: 200, ...opts.scan },
      pipeline: opts.pipeline,
      tags: { crashIntervalMs: 500, ...opts.tags },
      metrics: opts.metrics,
    };
    fs.writeFileSync(this.configFile, JSON.stringify(config, null, 2));
    return this.configFile;
  }

  get statusFile(): string {
    return path.join(this.dir, 'agent-state', 'status.json');
  }

  register(): void {
    const r = runFerry(['agent', 'register', '--config', this.configFile, '--passphrase-file', this.passphraseFile]);
    if (r.status !== 0) throw new Error(`register failed (${r.status}): ${r.stderr}`);
  }

  startAgent(): AgentProcess {
    const agent = startAgentProcess(this.configFile);
    this.agents.push(agent);
    return agent;
  }

  /** The agent's status file once it describes a running agent whose pid is `pid`. */
  status(pid?: number): AgentStatus | undefined {
    try {
      const s = JSON.parse(fs.readFileSync(this.statusFile, 'utf8')) as AgentStatus;
      return pid === undefined || s.pid === pid ? s : undefined;
    } catch {
      return undefined;
    }
  }

  volumeStatus(volumeId: string, pid?: number): AgentStatus['volumes'][number] | undefined {
    return this.status(pid)?.volumes.find((v) => v.volumeId === volumeId);
  }

  /** Waits until the volume is protected with nothing left to send. */
  waitProtected(volumeId: string, pid: number, timeoutMs = 60_000): Promise<AgentStatus['volumes'][number]> {
    return waitFor(
      `${volumeId} protected and caught up`,
      () => {
        const v = this.volumeStatus(volumeId, pid);
        return v && v.state === 'protected' && v.backlogBytes === 0 && v.resync?.finished !== false ? v : undefined;
      },
      timeoutMs,
    );
  }

  /**
   * Cuts a point after a full scan pass (`ferry agent tag --app`: with nothing to freeze it
   * still settles the streams, and records a crash point: exit 7, "no mount point"), waits
   * until it is applied, exports it and returns the bytes.
   */
  async tagAndExport(volumeId: string, expectAccuracy = 'approximate'): Promise<{ image: Buffer; pointId: number }> {
    const tag = await runFerryAsync(['agent', 'tag', '--config', this.configFile, '--app', '--name', 'check']);
    const downgradedForNoMount = tag.status === 7 && /not application-consistent: no mount point is configured/.test(tag.stderr) && !tag.stderr.includes(';');
    if (tag.status !== 0 && !downgradedForNoMount) throw new Error(`tag failed (${tag.status}): ${tag.stderr}`);
    const m = /point\(s\) (\d+)/.exec(tag.stdout);
    if (!m) throw new Error(`tag printed no point id: ${tag.stdout}`);
    if (!tag.stdout.includes(expectAccuracy)) throw new Error(`tag is not ${expectAccuracy}: ${tag.stdout}`);
    const pointId = Number(m[1]);
    const out = path.join(this.dir, `export-${pointId}.img`);
    await waitFor(`point ${pointId} exported`, async () => {
      const r = await runFerryAsync(['export', '--data', this.receiverDir, '--volume', volumeId, '--point', String(pointId), '--out', out]);
      if (r.status === 4) return undefined; // not applied yet
      if (r.status !== 0) throw new Error(`export failed (${r.status}): ${r.stderr}`);
      return true;
    });
    return { image: fs.readFileSync(out), pointId };
  }

  async cleanup(): Promise<void> {
    for (const a of this.agents) await a.stop();
    await this.receiver?.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export function fileHash(file: string): string {
  return sha256(fs.readFileSync(file));
}
