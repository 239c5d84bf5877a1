import { execFile } from 'node:child_process';
import { TargetError } from './target';

/** The `virsh` CLI on one libvirt URI, run directly (never through a shell). */

export class VirshError extends Error {
  constructor(
    message: string,
    /** virsh itself is missing. */
    readonly notInstalled: boolean,
  ) {
    super(message);
    this.name = 'VirshError';
  }
}

/** virsh's words for "no such domain/network" and "it is not running". */
export const NOT_FOUND = /failed to get (domain|network)|not found|no (domain|network) with matching name/i;
export const NOT_RUNNING = /not running|not active/i;

export class Virsh {
  constructor(
    readonly uri: string,
    private readonly binary: string,
    private readonly defaultTimeoutMs: number,
  ) {}

  /** Runs `virsh -c URI ARGS...` and resolves with its output; rejects with VirshError carrying virsh's own message. */
  run(args: string[], timeoutMs = this.defaultTimeoutMs): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(this.binary, ['-c', this.uri, ...args], { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const e = err as NodeJS.ErrnoException & { killed?: boolean };
        if (e.code === 'ENOENT') return reject(new VirshError(`virsh not found (${this.binary}; install libvirt-clients)`, true));
        const said = stderr.replace(/^error: /gm, '').trim().split('\n').filter(Boolean).join('; ');
        const why = e.killed ? `timed out after ${timeoutMs} ms` : said || e.message;
        reject(new VirshError(`virsh ${args[0]}: ${why}`, false));
      });
    });
  }

  /** Runs a command whose errors matching any of `harmless` count as done (e.g. destroying what is already gone). */
  async tolerate(args: string[], ...harmless: RegExp[]): Promise<void> {
    try {
      await this.run(args);
    } catch (err) {
      const message = (err as Error).message;
      if (!harmless.some((r) => r.test(message))) throw new TargetError(message);
    }
  }

  async domainExists(name: string): Promise<boolean> {
    try {
      await this.run(['domstate', name]);
      return true;
    } catch (err) {
      if (NOT_FOUND.test((err as Error).message)) return false;
      throw err;
    }
  }
}
