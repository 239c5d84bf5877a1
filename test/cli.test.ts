import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { makeTempDir, runFerry } from './helpers/receiver-process';

const dir = makeTempDir('cli');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function expectCleanFailure(args: string[], status: number, message: RegExp): void {
  const r = runFerry(args, 30_000);
  expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(status);
  expect(r.stderr).toMatch(message);
  // An operator sees one clear line, never a stack trace.
  expect(r.stderr).not.toMatch(/\n\s+at .+:\d+:\d+/);
  expect(r.stderr.trimEnd().split('\n'), r.stderr).toHaveLength(1);
}

const FP = Array.from({ length: 32 }, () => 'AB').join(':');

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
      ['agent', 'configure', '--help'],
      ['agent', 'show-config', '--help'],
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

  it('refuses an unknown command at any level with exit 2 and one line naming it, also with --help', () => {
    const cases: [string[], string][] = [
      [['frobnicate'], `ferry: unknown command 'frobnicate' (see 'ferry --help')`],
      [['frobnicate', 'create', '--help'], `ferry: unknown command 'frobnicate' (see 'ferry --help')`],
      [['--help', 'frobnicate'], `ferry: unknown command 'frobnicate' (see 'ferry --help')`],
      [['help', 'frobnicate'], `ferry: unknown command 'frobnicate' (see 'ferry --help')`],
      [['agent', 'frobnicate'], `ferry: unknown command 'agent frobnicate' (see 'ferry agent --help')`],
      [['agent', 'frobnicate', '--help'], `ferry: unknown command 'agent frobnicate' (see 'ferry agent --help')`],
      [['agent', 'help', 'frobnicate'], `ferry: unknown command 'agent frobnicate' (see 'ferry agent --help')`],
      [['receiver', 'stop', '-h'], `ferry: unknown command 'receiver stop' (see 'ferry receiver --help')`],
    ];
    for (const [args, line] of cases) {
      const r = runFerry(args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stdout, args.join(' ')).toBe('');
      expect(r.stderr, args.join(' ')).toBe(`${line}\n`);
    }
    // Known commands keep their help; a leaf command's operands are not commands.
    expect(runFerry(['help', 'agent']).status).toBe(0);
    expect(runFerry(['agent', 'help', 'run']).stdout).toMatch(/Usage: ferry agent run/);
  });

  it('agent configure writes a config the agent loads, atomically and 0640; show-config reads it back', () => {
    const image = path.join(dir, 'disk.img');
    fs.writeFileSync(image, Buffer.alloc(4096));
    const mount = path.join(dir, 'mnt');
    fs.mkdirSync(mount, { recursive: true });
    const file = path.join(dir, 'conf', 'agent.yaml');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const args = ['agent', 'configure', '--config', file, '--receiver', 'wss://rx.example:7443', '--fingerprint', FP, '--volume', `data=${image}:${mount}`, '--volume', `raw=${image}`, '--name', 'web01', '--state-dir', path.join(dir, 'state'), '--capture', 'scan'];
    const check = runFerry([...args, '--check']);
    expect(check.status, check.stderr).toBe(0);
    expect(fs.existsSync(file)).toBe(false);
    const r = runFerry(args);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(`wrote ${file}\n`);
    const text = fs.readFileSync(file, 'utf8');
    expect(text).toBe(check.stdout);
    expect(fs.statSync(file).mode & 0o777).toBe(0o640);
    // No temporary file left; beside the config, its parsed form for the short commands (agent/config-cache.ts).
    expect(fs.readdirSync(path.dirname(file)).sort()).toEqual(['.agent.yaml.cache.json', 'agent.yaml']);
    expect(YAML.parse(text)).toEqual({
      receiver: { url: 'wss://rx.example:7443', fingerprint: FP },
      name: 'web01',
      stateDir: path.join(dir, 'state'),
      capture: 'scan',
      volumes: [
        { id: 'data', path: image, mount },
        { id: 'raw', path: image },
      ],
    });
    const url = runFerry(['agent', 'show-config', '--config', file, '--field', 'receiver.url']);
    expect(url.stdout).toBe('wss://rx.example:7443\n');
    const all = JSON.parse(runFerry(['agent', 'show-config', '--config', file]).stdout) as { scan: { intervalMs: number } };
    expect(all.scan.intervalMs).toBe(1000);

    // JSON for a .json file (install.ps1), with the Windows volume forms.
    const json = runFerry(['agent', 'configure', '--config', path.join(dir, 'agent.json'), '--receiver', 'wss://rx:1', '--fingerprint', FP, '--volume', 'c=C:', '--volume', 'g=\\\\?\\Volume{12345678-1234-1234-1234-123456789abc}\\', '--check']);
    expect(json.status, json.stderr).toBe(0);
    expect((JSON.parse(json.stdout) as { volumes: unknown }).volumes).toEqual([
      { id: 'c', path: '\\\\.\\C:', mount: 'C:\\' },
      { id: 'g', path: '\\\\?\\Volume{12345678-1234-1234-1234-123456789abc}' },
    ]);
  });

  it('agent configure refuses bad input with exit 2 and one line, and leaves the file alone', () => {
    const image = path.join(dir, 'disk2.img');
    fs.writeFileSync(image, Buffer.alloc(4096));
    const file = path.join(dir, 'bad', 'agent.yaml');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, 'old\n');
    const base = ['agent', 'configure', '--config', file, '--receiver', 'wss://rx:1'];
    const cases: [string[], RegExp][] = [
      [[...base, '--fingerprint', FP], /give at least one --volume/],
      [[...base, '--volume', `v=${image}`], /--receiver needs --fingerprint FP or --ca-file FILE/],
      [[...base, '--fingerprint', 'AB:CD', '--volume', `v=${image}`], /--fingerprint must be a SHA-256 fingerprint/],
      [['agent', 'configure', '--config', file, '--receiver', 'ws://rx:1', '--fingerprint', FP, '--volume', `v=${image}`], /--receiver must use wss:\/\//],
      [['agent', 'configure', '--config', file, '--receiver', 'not a url', '--fingerprint', FP, '--volume', `v=${image}`], /--receiver "not a url" is not a URL/],
      [[...base, '--ca-file', image, '--volume', `v=${image}`], /--ca-file .* holds no PEM certificate/],
      [[...base, '--ca-file', path.join(dir, 'missing.pem'), '--volume', `v=${image}`], /--ca-file .* is not readable/],
      [[...base, '--fingerprint', FP, '--volume', 'bad id=/dev/x'], /volume id "bad id" must be 1-64 letters/],
      [[...base, '--fingerprint', FP, '--volume', 'a..b=/dev/x'], /volume id "a\.\.b" must be .*no '\.\.'/],
      [[...base, '--fingerprint', FP, '--volume', 'novalue'], /expected ID=PATH\[:MOUNT\]/],
      [[...base, '--fingerprint', FP, '--volume', 'v=relative/disk'], /the path must be absolute/],
      [[...base, '--fingerprint', FP, '--volume', `v=${image}`, '--volume', `v=${image}`], /volume id "v" is given twice/],
      [[...base, '--fingerprint', FP, '--volume', `v=${path.join(dir, 'nope.img')}`], /is neither a block device nor a file/],
      [[...base, '--fingerprint', FP, '--volume', `v=${image}:${path.join(dir, 'nomount')}`], /mount point .* is not a folder/],
      [[...base, '--fingerprint', FP, '--volume', `v=${image}`, '--name', '../x'], /--name "\.\.\/x" must be/],
      [[...base, '--fingerprint', FP, '--volume', `v=${image}`, '--capture', 'magic'], /expected auto, kernel, ebpf or scan/],
      [['agent', 'configure', '--config', file, '--fingerprint', FP, '--volume', `v=${image}`], /required option '--receiver <url>'/],
    ];
    for (const [args, message] of cases) {
      expectCleanFailure(args, 2, message);
      expect(fs.readFileSync(file, 'utf8')).toBe('old\n');
    }
    expect(fs.readdirSync(path.dirname(file))).toEqual(['agent.yaml']);
    expectCleanFailure(['agent', 'show-config', '--config', file, '--field', 'nope'], 2, /config .* cannot parse|must be a mapping|unknown key|receiver\.url is required/);
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
