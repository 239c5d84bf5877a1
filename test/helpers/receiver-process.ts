import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ReceiverChild, startReceiverChild } from '../../receiver/child-process';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const FERRY_BIN = path.join(REPO_ROOT, 'bin', 'ferry');

export interface ReceiverProcess extends ReceiverChild {
  kill9: () => Promise<void>;
}

/** Starts `ferry receiver run` as a real process and waits until it prints its address. */
export async function startReceiverProcess(dataDir: string, passphraseFile: string, extraArgs: string[] = [], env: Record<string, string> = {}): Promise<ReceiverProcess> {
  const rx = await startReceiverChild(dataDir, passphraseFile, extraArgs, env);
  return {
    ...rx,
    kill9: async () => {
      rx.child.kill('SIGKILL');
      await rx.exited;
    },
  };
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
