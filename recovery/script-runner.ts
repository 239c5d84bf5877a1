import { spawn } from 'child_process';
import * as fs from 'fs';

/**
 * Runs a plan's script on the receiver's side: `sh -c COMMAND` in its own process group, its
 * output appended to a log file, killed (the whole group) at its time bound or when aborted.
 */

export interface ScriptResult {
  ok: boolean;
  /** "exit 0", "exit 3", "timed out after 300 s", "cancelled", "cannot start: ..." */
  detail: string;
}

export function runScript(command: string, options: { env: Record<string, string>; timeoutMs: number; logFile: string; cwd: string; signal?: AbortSignal }): Promise<ScriptResult> {
  return new Promise((resolve) => {
    let out: number;
    try {
      out = fs.openSync(options.logFile, 'a');
    } catch (err) {
      resolve({ ok: false, detail: `cannot open its log ${options.logFile}: ${(err as Error).message}` });
      return;
    }
    const child = spawn('/bin/sh', ['-c', command], { cwd: options.cwd, env: { ...process.env, ...options.env }, stdio: ['ignore', out, out], detached: true });
    fs.closeSync(out);
    let ended: string | undefined;
    const killGroup = (why: string): void => {
      ended ??= why;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => killGroup(`timed out after ${Math.round(options.timeoutMs / 1000)} s`), options.timeoutMs);
    const onAbort = (): void => killGroup('cancelled');
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const finish = (r: ScriptResult): void => {
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      resolve(r);
    };
    child.once('error', (err) => finish({ ok: false, detail: `cannot start: ${err.message}` }));
    child.once('exit', (code, sig) => {
      if (ended) finish({ ok: false, detail: ended });
      else if (code === 0) finish({ ok: true, detail: 'exit 0' });
      else finish({ ok: false, detail: code !== null ? `exit ${code}` : `killed by ${sig}` });
    });
  });
}
