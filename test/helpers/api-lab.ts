import { spawn } from 'node:child_process';
import { ApiRefusal } from '../../cli/api-client';
import { FERRY_BIN } from './receiver-process';

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs bin/ferry without blocking the event loop (the API under test may live in this process),
 * with extra environment (FERRY_CONFIG_DIR...) and an optional stdin.
 */
export function runCli(args: string[], env: Record<string, string>, input?: string, timeoutMs = 60_000): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [FERRY_BIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`ferry ${args.join(' ')} did not finish within ${timeoutMs} ms; stdout: ${stdout}; stderr: ${stderr}`));
    }, timeoutMs);
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('exit', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
    child.stdin.end(input ?? '');
  });
}

/** The refusal a call ends with (fails the test when the call succeeds or fails otherwise). */
export async function refusal(call: Promise<unknown>): Promise<ApiRefusal> {
  try {
    await call;
  } catch (err) {
    if (err instanceof ApiRefusal) return err;
    throw err;
  }
  throw new Error('the call was expected to be refused, and succeeded');
}

export interface LiveCli {
  /** Everything printed so far on stdout and stderr. */
  output(): string;
  /** Resolves when the output matches, rejects when the run ends first or the deadline passes. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<void>;
  done: Promise<CliRun>;
  /** Sends the run a signal (SIGINT: what Ctrl-C sends). */
  kill(signal: NodeJS.Signals): void;
}

/** Runs bin/ferry and lets the test follow its output while it runs. */
export function startCli(args: string[], env: Record<string, string>, timeoutMs = 180_000): LiveCli {
  const child = spawn(process.execPath, [FERRY_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  let finished = false;
  const watchers = new Set<() => void>();
  const changed = (): void => watchers.forEach((w) => w());
  child.stdout.on('data', (c: Buffer) => ((stdout += c.toString()), changed()));
  child.stderr.on('data', (c: Buffer) => ((stderr += c.toString()), changed()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<CliRun>((resolve) =>
    child.on('close', (status) => {
      clearTimeout(timer);
      finished = true;
      changed();
      resolve({ status, stdout, stderr });
    }),
  );
  return {
    output: () => stdout + stderr,
    done,
    kill: (signal) => child.kill(signal),
    waitForOutput: (pattern, waitMs = 120_000) =>
      new Promise<void>((resolve, reject) => {
        const deadline = setTimeout(() => finish(new Error(`no ${pattern} in the output within ${waitMs} ms:\n${stdout}\n${stderr}`)), waitMs);
        const finish = (err?: Error): void => {
          clearTimeout(deadline);
          watchers.delete(check);
          if (err) reject(err);
          else resolve();
        };
        const check = (): void => {
          if (pattern.test(stdout + stderr)) finish();
          else if (finished) finish(new Error(`ferry ended without ${pattern} in its output:\n${stdout}\n${stderr}`));
        };
        watchers.add(check);
        check();
      }),
  };
}
