import { execFile } from 'child_process';
import { log } from '../../common/log';

/**
 * Runs an application hook (e.g. a database's "prepare for snapshot" script) with one
 * argument, the phase. Resolves when it exits 0; rejects with its output otherwise or when it
 * runs past `timeoutMs` (it is then killed).
 */
export function runHook(script: string, phase: 'pre' | 'post', timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(script, [phase], { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1024 * 1024 }, (err, stdout, stderr) => {
      const output = `${stdout}${stderr}`.trim().slice(-2000);
      if (!err) {
        log.info('hook finished', { script, phase, output });
        return resolve();
      }
      const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
      const why = e.killed ? `timed out after ${timeoutMs} ms` : typeof e.code === 'number' ? `exited with code ${e.code}` : `could not run (${String(e.code ?? e.message)})`;
      reject(new Error(`${phase}-hook ${script} ${why}${output ? `: ${output}` : ''}`));
    });
  });
}
