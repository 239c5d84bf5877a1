import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { findPackageRoot } from '../native/addon';

export interface ReceiverChild {
  child: ChildProcess;
  port: number;
  url: string;
  fingerprint: string;
  /** The management API (https://127.0.0.1:PORT), unless `--api-listen off` was given. */
  apiUrl: string | undefined;
  /** The generated password of the API's first operator (its file in the data directory, written on the first run only). */
  adminPassword: string | undefined;
  /** Everything the process printed so far (stdout and stderr). */
  output: () => string;
  /** Resolves with the exit code when the process has exited. */
  exited: Promise<number | null>;
  /** SIGTERM (a clean stop) and wait for the exit. */
  stop: () => Promise<void>;
}

/** The `ferry` launcher of this installation. */
export const FERRY_BIN = path.join(findPackageRoot(), 'bin', 'ferry');

/**
 * Starts `ferry receiver run` as a child process listening on 127.0.0.1 (any free port unless
 * `--listen` is among `extraArgs`) and resolves once it printed its address and fingerprint.
 * `nodeArgs` go to node before the script (a bench's `--trace-gc`).
 */
export function startReceiverChild(dataDir: string, passphraseFile: string, extraArgs: string[] = [], env: Record<string, string> = {}, nodeArgs: string[] = []): Promise<ReceiverChild> {
  const listen = extraArgs.includes('--listen') ? [] : ['--listen', '127.0.0.1:0'];
  const apiListen = extraArgs.includes('--api-listen') ? [] : ['--api-listen', '127.0.0.1:0'];
  const apiFlag = extraArgs.indexOf('--api-listen');
  const apiOff = apiFlag >= 0 && extraArgs[apiFlag + 1] === 'off';
  const child = spawn(process.execPath, [...nodeArgs, FERRY_BIN, 'receiver', 'run', '--data', dataDir, ...listen, ...apiListen, '--passphrase-file', passphraseFile, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, FERRY_LOG_LEVEL: process.env.FERRY_LOG_LEVEL ?? 'warn', ...env },
  });
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      out += chunk.toString();
      const port = /listening on wss:\/\/[^:]+:(\d+)/.exec(out);
      const fp = /fingerprint: ([0-9A-F:]+)/.exec(out);
      const api = /management API listening on (https:\/\/\S+?:(\d+))/.exec(out);
      if (!port || !fp || (!api && !apiOff)) return;
      child.stdout?.off('data', onData);
      child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
      resolve({
        child,
        port: Number(port[1]),
        url: `wss://127.0.0.1:${port[1]}`,
        fingerprint: fp[1],
        apiUrl: api ? `https://127.0.0.1:${api[2]}` : undefined,
        adminPassword: api ? firstRunPassword(dataDir) : undefined,
        output: () => out,
        exited,
        stop: async () => {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
          await exited;
        },
      });
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (c: Buffer) => (out += c.toString()));
    void exited.then((code) => reject(new Error(`receiver exited early (code ${code}):\n${out}`)));
  });
}

/** The password the management API gave `admin` on its first run, kept in the data directory. */
function firstRunPassword(dataDir: string): string | undefined {
  try {
    return fs.readFileSync(path.join(dataDir, 'admin-password'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
