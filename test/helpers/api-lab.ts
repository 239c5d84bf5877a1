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
