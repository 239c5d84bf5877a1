import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir, runFerry } from './helpers/receiver-process';

const dir = makeTempDir('cli');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function expectCleanFailure(args: string[], status: number, message: RegExp): void {
  const r = runFerry(args, 30_000);
  expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(status);
  expect(r.stderr).toMatch(message);
  // An operator sees one clear line, never a stack trace.
  expect(r.stderr).not.toMatch(/\n\s+at .+:\d+:\d+/);
}

describe('ferry CLI', () => {
  it('prints help for every command with exit 0', () => {
    const commands = [
      ['--help'],
      ['receiver', '--help'],
      ['receiver', 'run', '--help'],
      ['receiver', 'status', '--help'],
      ['points', '--help'],
      ['export', '--help'],
      ['agent', '--help'],
      ['agent', 'run', '--help'],
      ['agent', 'register', '--help'],
      ['agent', 'status', '--help'],
      ['agent', 'tag', '--help'],
      ['agent', 'protect', '--help'],
      ['agent', 'unprotect', '--help'],
      ['quickstart', '--help'],
      ['push-install', '--help'],
    ];
    for (const args of commands) {
      const r = runFerry(args);
      expect(r.status, args.join(' ')).toBe(0);
      expect(r.stdout).toMatch(/Usage: ferry/);
    }
  });

  it('shows every default in --help as an operator types it: no raw millisecond or byte count, no JSON', () => {
    // Walk the whole command tree from `ferry --help`, so that a new subcommand is checked too.
    const defaults: string[] = [];
    const visit = (args: string[]): void => {
      const r = runFerry([...args, '--help']);
      expect(r.status, args.join(' ')).toBe(0);
      const help = r.stdout.replace(/\s+/g, ' ');
      for (const m of help.matchAll(/\(default: ([^)]*)\)/g)) defaults.push(`${args.join(' ')}: ${m[1]}`);
      const commands = /\nCommands:\n([\s\S]*?)(?:\n\n|$)/.exec(r.stdout)?.[1] ?? '';
      for (const line of commands.split('\n')) {
        const name = /^ {2}([a-z][a-z-]*)/.exec(line)?.[1];
        if (name && name !== 'help') visit([...args, name]);
      }
    };
    visit([]);
    expect(defaults.length).toBeGreaterThan(10);
    for (const d of defaults) {
      const value = d.slice(d.indexOf(': ') + 2);
      expect(value, d).not.toMatch(/^-?\d{3,}(\.\d+)?$/); // 86400000, 1073741824, 600
      expect(value, d).not.toMatch(/^["{[]/); // "raw", {"host":...}, []
    }
    expect(defaults).toEqual(expect.arrayContaining(['receiver run: 24h', 'receiver run: 0.0.0.0:7443', 'receiver run: 1GiB', 'agent tag: 2m']));
  });

  it('refuses bad arguments with exit 2 and a clear message', () => {
    expectCleanFailure(['frobnicate'], 2, /unknown command/);
    expectCleanFailure(['receiver', 'run'], 2, /required option '--data <dir>'/);
    expectCleanFailure(['receiver', 'run', '--data', dir, '--listen', 'nonsense'], 2, /expected HOST:PORT/);
    expectCleanFailure(['receiver', 'run', '--data', dir, '--retention', 'forever'], 2, /expected a duration/);
    expectCleanFailure(['receiver', 'run', '--data', dir, '--spool-cap', 'lots'], 2, /expected a size/);
    expectCleanFailure(['receiver', 'run', '--data', dir, '--tls-cert', '/etc/hostname'], 2, /--tls-cert and --tls-key go together/);
    expectCleanFailure(['receiver', 'run', '--data', dir, '--passphrase-file', path.join(dir, 'missing')], 2, /cannot read passphrase file/);
    expectCleanFailure(['export', '--data', dir, '--volume', 'v', '--point', 'latest', '--out', 'x', '--format', 'zip'], 2, /expected raw or vhd/);
    expectCleanFailure(['points', '--data', dir, '--volume', '../../etc'], 2, /not a valid volume id/);
    expectCleanFailure(['agent', 'run'], 2, /required option '--config <file>'/);
    expectCleanFailure(['agent', 'tag', '--config', 'x', '--timeout', 'never'], 2, /expected a duration/);
    expectCleanFailure(['quickstart', '--size', 'huge'], 2, /expected a size/);
  });

  it('reports missing data with exit 3', () => {
    expectCleanFailure(['points', '--data', path.join(dir, 'nope')], 3, /not a receiver data directory/);
    expectCleanFailure(['export', '--data', path.join(dir, 'nope'), '--volume', 'v', '--point', 'latest', '--out', path.join(dir, 'o')], 3, /not a receiver data directory/);
    expectCleanFailure(['receiver', 'status', '--data', path.join(dir, 'nope')], 3, /no receiver data directory/);
  });

  it('refuses a certificate file that is not PEM', () => {
    const key = path.join(dir, 'key.pem');
    fs.writeFileSync(key, 'not a key');
    expectCleanFailure(['receiver', 'run', '--data', path.join(dir, 'd2'), '--listen', '127.0.0.1:0', '--tls-cert', key, '--tls-key', key], 2, /not a valid PEM certificate/);
  });
});
