// Runs commands for the install tests without blocking the event loop (peers keep logging).
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FERRY_BIN, REPO_ROOT } from '../helpers/receiver-process';

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function run(command: string, args: string[], opts: { input?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} did not finish within ${opts.timeoutMs ?? 180_000} ms\n${stdout}\n${stderr}`));
    }, opts.timeoutMs ?? 180_000);
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
    child.stdin.on('error', () => undefined); // the child may exit without reading stdin
    child.stdin.end(opts.input ?? '');
  });
}

export function ferry(args: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return run(process.execPath, [FERRY_BIN, ...args], opts);
}

export const INSTALL_SH = path.join(REPO_ROOT, 'installer', 'install.sh');
export const MAKE_PACKAGE = path.join(REPO_ROOT, 'installer', 'make-package.sh');

/** Builds the agent package once per test file (about 3 s). */
export function makePackage(outDir: string): string {
  const out = path.join(outDir, 'ferry-agent.tar.gz');
  const r = spawnSync('bash', [MAKE_PACKAGE, '--out', out], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`make-package.sh failed: ${r.stderr}`);
  return out;
}

/** Install paths under one scratch root, as install.sh / push-install options. */
export function scratchRoot(root: string): { root: string; prefix: string; config: string; state: string; unitDir: string; args: string[] } {
  const prefix = path.join(root, 'opt', 'ferry');
  const config = path.join(root, 'etc', 'ferry');
  const state = path.join(root, 'var', 'lib', 'ferry');
  const unitDir = path.join(root, 'etc', 'systemd', 'system');
  return {
    root,
    prefix,
    config,
    state,
    unitDir,
    args: ['--prefix', prefix, '--config-dir', config, '--state-dir', state, '--systemd-dir', unitDir, '--no-systemctl'],
  };
}

/** Every path under a folder (for "nothing left behind" checks). */
export function listTree(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      out.push(path.relative(dir, p));
      if (e.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out.sort();
}

/** Polls `check` until it returns a value (a marker or a state), failing after timeoutMs. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000, intervalMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export function stopProcess(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/** No stack trace in operator-facing output. */
export const STACK_TRACE = /\n\s+at .+:\d+:\d+/;
