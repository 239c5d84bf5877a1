// push/known-hosts against files written and hashed by OpenSSH's own ssh-keygen.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { appendKnownHost, fingerprintSha256, KnownHosts } from '../../push/known-hosts';
import { parseHostsFile, parseSmbTarget, parseSshTarget } from '../../push/targets';
import { makeTempDir } from '../helpers/receiver-process';
import { makeKey } from './peers';

const work = makeTempDir('known-hosts');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

function blob(publicLine: string): Buffer {
  return Buffer.from(publicLine.split(' ')[1], 'base64');
}

describe('known_hosts', () => {
  const a = makeKey(path.join(work, 'a'));
  const b = makeKey(path.join(work, 'b'));

  it('matches plain, [host]:port, wildcard and ssh-keygen -H hashed entries; flags mismatches and @revoked', () => {
    const file = path.join(work, 'known_hosts');
    const [type, key] = a.publicLine.split(' ');
    fs.writeFileSync(file, [`web01,10.0.0.5 ${type} ${key}`, `[web02]:2222 ${type} ${key}`, `*.lab.example ${type} ${key}`, `@revoked old.example ${b.publicLine}`, ''].join('\n'));
    execFileSync('ssh-keygen', ['-H', '-f', file], { stdio: 'ignore' });
    const text = fs.readFileSync(file, 'utf8');
    expect(text).toMatch(/^\|1\|/m); // hashed by OpenSSH
    const kh = KnownHosts.load(file);
    expect(kh.verify('web01', 22, blob(a.publicLine))).toEqual({ kind: 'known' });
    expect(kh.verify('10.0.0.5', 22, blob(a.publicLine))).toEqual({ kind: 'known' });
    expect(kh.verify('web02', 2222, blob(a.publicLine))).toEqual({ kind: 'known' });
    expect(kh.verify('web02', 22, blob(a.publicLine))).toEqual({ kind: 'unknown' });
    expect(kh.verify('db.lab.example', 22, blob(a.publicLine))).toEqual({ kind: 'known' });
    const mismatch = kh.verify('web01', 22, blob(b.publicLine));
    expect(mismatch.kind).toBe('mismatch');
    if (mismatch.kind === 'mismatch') expect(mismatch.expected[0]).toBe(`ssh-ed25519 ${fingerprintSha256(blob(a.publicLine))}`);
    expect(kh.verify('old.example', 22, blob(b.publicLine)).kind).toBe('revoked');
    expect(kh.verify('nowhere', 22, blob(a.publicLine))).toEqual({ kind: 'unknown' });
  });

  it('appends entries that OpenSSH itself finds, with the same fingerprint', () => {
    const file = path.join(work, 'appended');
    appendKnownHost(file, '127.0.0.1', 2200, blob(a.publicLine));
    appendKnownHost(file, 'web09', 22, blob(b.publicLine));
    expect(execFileSync('ssh-keygen', ['-F', '[127.0.0.1]:2200', '-f', file], { encoding: 'utf8' })).toContain(a.publicLine.split(' ')[1]);
    expect(execFileSync('ssh-keygen', ['-F', 'web09', '-f', file], { encoding: 'utf8' })).toContain(b.publicLine.split(' ')[1]);
    const printed = execFileSync('ssh-keygen', ['-l', '-f', `${a.privateFile}.pub`], { encoding: 'utf8' });
    expect(printed).toContain(fingerprintSha256(blob(a.publicLine)));
  });
});

describe('targets', () => {
  it('parses SSH and SMB targets and hosts files, refusing bad ones with a clear message', () => {
    expect(parseSshTarget('admin@web01.example:2222')).toMatchObject({ user: 'admin', host: 'web01.example', port: 2222 });
    expect(parseSshTarget('root@[::1]:22')).toMatchObject({ user: 'root', host: '::1', port: 22 });
    expect(parseSmbTarget('//winsrv01/ADMIN$')).toMatchObject({ host: 'winsrv01', port: 445, share: 'ADMIN$' });
    expect(parseSmbTarget('\\\\10.1.2.3:4450\\C$')).toMatchObject({ host: '10.1.2.3', port: 4450, share: 'C$' });
    expect(() => parseSshTarget('root@web 01')).toThrow(/not a valid host name/);
    expect(() => parseSshTarget('ro;ot@web01')).toThrow(/not a valid user name/);
    const hosts = parseHostsFile('# comment\nroot@web01 --volume a=/dev/sda --no-start\n\nadmin@web02:2222\n', 'hosts');
    expect(hosts.map((h) => [h.label, h.extraArgs])).toEqual([
      ['root@web01', ['--volume', 'a=/dev/sda', '--no-start']],
      ['admin@web02:2222', []],
    ]);
    expect(() => parseHostsFile('root@web01 --receiver wss://x:1\n', 'hosts')).toThrow(/hosts:1: "--receiver" cannot be set per host/);
    expect(() => parseHostsFile('root@web01 --volume\n', 'hosts')).toThrow(/hosts:1: --volume needs a value/);
    expect(() => parseHostsFile('# nothing\n', 'hosts')).toThrow(/no targets/);
  });
});
