import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const FERRY_BIN = path.join(REPO_ROOT, 'bin', 'ferry');

export interface ReceiverProcess {
  child: ChildProcess;
  port: number;
  url: string;
  fingerprint: string;
  output: () => string;
  /** Resolves when the process has exited. */
  exited: Promise<number | null>;
  kill9: () => Promise<void>;
  stop: () => Promise<void>;
}

/** Starts `ferry receiver run` as a real process and waits until it prints its address. */
export function startReceiverProcess(dataDir: string, passphraseFile: string, extraArgs: string[] = [], env: Record<string, string> = {}): Promise<ReceiverProcess> {
  const child = spawn(
    process.execPath,
    [FERRY_BIN, 'receiver', 'run', '--data', dataDir, '--listen', '127.0.0.1:0', '--passphrase-file', passphraseFile, ...extraArgs],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FERRY_LOG_LEVEL: process.env.FERRY_LOG_LEVEL ?? 'warn', ...env } },
  );
  let out = '';
  let err = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      out += chunk.toString();
      const port = /listening on wss:\/\/[^:]+:(\d+)/.exec(out);
      const fp = /fingerprint: ([0-9A-F:]+)/.exec(out);
      if (port && fp) {
        child.stdout?.off('data', onData);
        resolve({
          child,
          port: Number(port[1]),
          url: `wss://127.0.0.1:${port[1]}`,
          fingerprint: fp[1],
          output: () => out + err,
          exited,
          kill9: async () => {
            child.kill('SIGKILL');
            await exited;
          },
          stop: async () => {
            if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
            await exited;
          },
        });
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
    void exited.then((code) => reject(new Error(`receiver exited early (code ${code}):\n${out}${err}`)));
  });
}

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function runFerry(args: string[], timeoutMs = 120_000): CliResult {
  const r = spawnSync(process.execPath, [FERRY_BIN, ...args], { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs the CLI without blocking the event loop (so the test can keep replicating meanwhile). */
export function runFerryAsync(args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [FERRY_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('exit', (status) => resolve({ status, stdout, stderr }));
  });
}

export function makeTempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(process.env.FERRY_TEST_TMP ?? '/tmp', `ferry-${prefix}-`));
}

export function writePassphrase(dir: string, passphrase = 'correct horse battery staple'): { file: string; passphrase: string } {
  const file = path.join(dir, 'passphrase');
  fs.writeFileSync(file, `${passphrase}\n`, { mode: 0o600 });
  return { file, passphrase };
}
