// ferry push-install over SSH against a real OpenSSH server on 127.0.0.1, into scratch prefixes,
// with a real receiver: the pushed agent registers, replicates an image file, and the export of a
// recovery point equals the source. Failure cases: wrong key, host-key mismatch, unknown host key,
// unreachable and silent hosts, install.sh failing mid-way (rolled back), all in one run.
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, ReceiverProcess, startReceiverProcess, writePassphrase } from '../helpers/receiver-process';
import { ferry, listTree, makePackage, RunResult, scratchRoot, STACK_TRACE, stopProcess, waitFor } from './cli-run';
import { freePort, KeyPair, makeKey, silentServer, Sshd, startSshd } from './peers';

const work = makeTempDir('push-ssh');
let pkg: string;
let sshd: Sshd;
let clientKey: KeyPair;
let wrongKey: KeyPair;
let knownHosts: string;
let rx: ReceiverProcess;
let passphrase: { file: string; passphrase: string };
let agent: ChildProcess | undefined;

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function sshArgs(): string[] {
  return ['--key', clientKey.privateFile, '--known-hosts', knownHosts, '--package', pkg];
}

function target(host = '127.0.0.1', user = 'root', port = sshd.port): string {
  return `${user}@${host}:${port}`;
}

/** The closing result line of one host. */
function resultLine(r: RunResult, label: string): string {
  const line = r.stdout.split('\n').find((l) => l.startsWith(`${label} `) && /\s(ok|failed): /.test(l));
  if (!line) throw new Error(`no result line for ${label} in:\n${r.stdout}\n${r.stderr}`);
  return line;
}

beforeAll(async () => {
  pkg = makePackage(work);
  fs.mkdirSync(path.join(work, 'keys'));
  clientKey = makeKey(path.join(work, 'keys', 'id_ed25519'));
  wrongKey = makeKey(path.join(work, 'keys', 'wrong_ed25519'));
  sshd = await startSshd(path.join(work, 'sshd'));
  sshd.authorize('root', clientKey.publicLine);
  // 127.0.0.1 carries the server's real key; "localhost" on the same port a different one.
  const [type, blob] = wrongKey.publicLine.split(' ');
  knownHosts = path.join(work, 'known_hosts');
  fs.writeFileSync(knownHosts, `${sshd.knownHostsLine('127.0.0.1')}\n[localhost]:${sshd.port} ${type} ${blob}\n`);
  passphrase = writePassphrase(work);
  rx = await startReceiverProcess(path.join(work, 'rx'), passphrase.file);
});

afterAll(async () => {
  await stopProcess(agent);
  await rx?.stop();
  await sshd?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('push-install over SSH', () => {
  it('installs an agent that registers and replicates; a recovery point exports byte-exact', async () => {
    const image = path.join(work, 'e2e.img');
    fs.writeFileSync(image, crypto.randomBytes(8 * 1024 * 1024));
    const s = scratchRoot(path.join(work, 'e2e'));
    const pushDirs = (): string[] => fs.readdirSync('/tmp').filter((n) => n.startsWith('ferry-push.'));
    const dirsBefore = pushDirs();
    const r = await ferry([
      'push-install',
      '--ssh',
      target(),
      ...sshArgs(),
      '--receiver',
      rx.url,
      '--fingerprint',
      rx.fingerprint,
      '--passphrase-file',
      passphrase.file,
      '--volume',
      `e2e-vol=${image}`,
      '--name',
      'e2e-agent',
      '--capture',
      'scan',
      ...s.args,
    ]);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    const label = target();
    expect(resultLine(r, label)).toMatch(/ ok: agent 0\.1\.0 in .*capture scan/);
    // Output streamed and prefixed by host; the passphrase never shows.
    expect(r.stdout).toContain(`[${label}] ==> register with the receiver`);
    expect(r.stdout).toMatch(/registered as/);
    expect(r.stdout + r.stderr).not.toContain(passphrase.passphrase);
    // The remote temp folder is gone.
    expect(pushDirs()).toEqual(dirsBefore);

    // No systemd here: run exactly the unit's ExecStart, as systemd would.
    const unit = fs.readFileSync(path.join(s.unitDir, 'ferry-agent.service'), 'utf8');
    const execStart = /^ExecStart=(.+)$/m.exec(unit)?.[1].split(' ') ?? [];
    expect(execStart[0]).toBe(path.join(s.prefix, 'bin', 'ferry'));
    const config = path.join(s.config, 'agent.yaml');
    expect(execStart.slice(1)).toEqual(['agent', 'run', '--config', config]);
    agent = spawn(execStart[0], execStart.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, FERRY_LOG_LEVEL: 'warn' } });
    let agentLog = '';
    agent.stderr?.on('data', (c: Buffer) => (agentLog += c.toString()));

    interface VolumeStatusJson { volumeId: string; state: string; durableSeq: number; capturedSeq: number; backlogBytes: number; resync?: { finished: boolean } }
    const volumeStatus = async (): Promise<VolumeStatusJson | undefined> => {
      const st = await ferry(['agent', 'status', '--config', config, '--json'], { timeoutMs: 20_000 });
      if (st.status !== 0) return undefined;
      return (JSON.parse(st.stdout) as { volumes: VolumeStatusJson[] }).volumes.find((v) => v.volumeId === 'e2e-vol');
    };
    const synced = await waitFor(
      `the initial resync (agent log: ${agentLog})`,
      async () => {
        const v = await volumeStatus();
        return v && v.state === 'protected' && v.resync?.finished !== false && v.backlogBytes === 0 ? v : undefined;
      },
      90_000,
    );

    // A change after the initial sync reaches the receiver too.
    const fd = fs.openSync(image, 'r+');
    fs.writeSync(fd, crypto.randomBytes(64 * 1024), 0, 64 * 1024, 3 * 1024 * 1024);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    await waitFor('the change to be durable on the receiver', async () => {
      const v = await volumeStatus();
      return v && v.durableSeq > synced.durableSeq && v.durableSeq >= v.capturedSeq && v.backlogBytes === 0 ? v : undefined;
    });

    const tag = await ferry(['agent', 'tag', '--config', config], { timeoutMs: 60_000 });
    expect(tag.status, tag.stderr).toBe(0);
    const pointId = /point\(s\) ([^:,\s]+)/.exec(tag.stdout)?.[1];
    expect(pointId, tag.stdout).toBeDefined();
    const out = path.join(work, 'export.img');
    const exported = await waitFor('the point to be applied and exported', async () => {
      const e = await ferry(['export', '--data', path.join(work, 'rx'), '--volume', 'e2e-vol', '--point', String(pointId), '--out', out]);
      if (e.status === 4) return undefined;
      return e;
    });
    expect(exported.status, exported.stderr).toBe(0);
    expect(sha256(out)).toBe(sha256(image));
  });

  it('reports each failing host clearly, installs the healthy one, and leaves nothing on the failed ones', async () => {
    const image = path.join(work, 'multi.img');
    fs.writeFileSync(image, Buffer.alloc(1024 * 1024));
    const good = scratchRoot(path.join(work, 'multi-good'));
    const broken = scratchRoot(path.join(work, 'multi-broken'));
    const mismatch = scratchRoot(path.join(work, 'multi-mismatch'));
    // install.sh fails mid-way on this host: its state folder cannot be created (a file is in the way),
    // after the agent files are already in place; everything must be rolled back.
    fs.mkdirSync(broken.root, { recursive: true });
    fs.writeFileSync(path.join(broken.root, 'blocker'), 'not a folder');
    const brokenArgs = broken.args.map((a) => (a === broken.state ? path.join(broken.root, 'blocker', 'state') : a));
    const closedPort = await freePort();
    const silent = await silentServer();
    try {
      const hosts = path.join(work, 'hosts');
      const opts = (args: string[]): string => args.join(' ');
      fs.writeFileSync(
        hosts,
        [
          '# label                          per-host install.sh options',
          `${target()} ${opts(good.args)} --volume good=${image} --no-register`,
          `${target('localhost')} ${opts(mismatch.args)} --volume mm=${image} --no-register`,
          `${target('127.0.0.1', 'root', closedPort)} --volume closed=${image}`,
          `${target('127.0.0.1', 'root', silent.port)} --volume silent=${image}`,
          `${target('127.0.0.1', 'nobody')} --volume nobody=${image}`,
          `${target()} ${opts(brokenArgs)} --volume broken=${image} --no-register`,
          '',
        ].join('\n'),
      );
      const r = await ferry(['push-install', '--hosts', hosts, '--parallel', '3', '--connect-timeout', '3s', ...sshArgs(), '--receiver', rx.url, '--fingerprint', rx.fingerprint, '--passphrase-file', passphrase.file]);
      expect(r.status, r.stdout + r.stderr).toBe(1);
      expect(r.stdout + r.stderr).not.toMatch(STACK_TRACE);
      const lines = r.stdout.split('\n').filter((l) => /\s(ok|failed): /.test(l) && !l.startsWith('['));
      expect(lines).toHaveLength(6);
      expect(lines[0]).toMatch(/^root@127\.0\.0\.1:\d+\s+ok: agent 0\.1\.0/);
      expect(lines[1]).toMatch(/^root@localhost:\d+\s+failed: HOST KEY MISMATCH for \[localhost\]:\d+/);
      expect(lines[2]).toMatch(new RegExp(`failed: unreachable: connection refused by 127\\.0\\.0\\.1:${closedPort}`));
      expect(lines[3]).toMatch(/failed: no SSH handshake from 127\.0\.0\.1:\d+ within 3s/);
      expect(lines[4]).toMatch(/^nobody@127\.0\.0\.1:\d+\s+failed: authentication failed: nobody@\[127\.0\.0\.1\]:\d+ refused the key/);
      expect(lines[5]).toMatch(/failed: install\.sh: cannot create .*blocker\/state \(exit 1\)/);
      expect(r.stdout).toContain('1 of 6 host(s) installed, 5 failed');

      // The healthy host is installed; the failed ones have nothing.
      expect(fs.existsSync(path.join(good.prefix, 'bin', 'ferry'))).toBe(true);
      expect(fs.existsSync(path.join(good.config, 'agent.yaml'))).toBe(true);
      expect(fs.existsSync(mismatch.root)).toBe(false);
      expect(listTree(broken.root)).toEqual(['blocker']);
      expect(r.stdout).toMatch(/rolling back/);
      // The mismatched key was not "fixed" into known_hosts.
      expect(fs.readFileSync(knownHosts, 'utf8').split('\n').filter((l) => l.startsWith('[localhost]'))).toHaveLength(1);
    } finally {
      await silent.close();
    }
  });

  it('refuses an unknown host key unless --accept-new-host-key, which records it', async () => {
    const fresh = path.join(work, 'known_hosts_fresh');
    const s = scratchRoot(path.join(work, 'tofu'));
    const image = path.join(work, 'tofu.img');
    fs.writeFileSync(image, Buffer.alloc(1024 * 1024));
    const base = ['push-install', '--ssh', target(), '--key', clientKey.privateFile, '--known-hosts', fresh, '--package', pkg, '--no-register', '--receiver', rx.url, '--fingerprint', rx.fingerprint, '--volume', `tofu=${image}`, ...s.args];
    const refused = await ferry(base);
    expect(refused.status).toBe(1);
    expect(resultLine(refused, target())).toMatch(/failed: unknown host key for \[127\.0\.0\.1\]:\d+ \(ssh-ed25519 SHA256:[A-Za-z0-9+/]+\), not in .*--accept-new-host-key/);
    expect(fs.existsSync(s.root)).toBe(false);

    const accepted = await ferry([...base, '--accept-new-host-key']);
    expect(accepted.status, accepted.stdout + accepted.stderr).toBe(0);
    expect(accepted.stdout).toMatch(/recorded new host key ssh-ed25519 SHA256:/);
    expect(fs.readFileSync(fresh, 'utf8').trim()).toBe(sshd.knownHostsLine('127.0.0.1'));

    // Now known: a second push (an upgrade in place) needs no flag.
    const again = await ferry(base);
    expect(again.status, again.stdout + again.stderr).toBe(0);
    expect(resultLine(again, target())).toMatch(/ ok: agent 0\.1\.0/);
  });

  it('fails cleanly with a key the server does not accept', async () => {
    const s = scratchRoot(path.join(work, 'wrongkey'));
    const r = await ferry(['push-install', '--ssh', target(), '--key', wrongKey.privateFile, '--known-hosts', knownHosts, '--package', pkg, '--no-register', ...s.args]);
    expect(r.status).toBe(1);
    expect(resultLine(r, target())).toMatch(/failed: authentication failed: root@\[127\.0\.0\.1\]:\d+ refused the key .*wrong_ed25519/);
    expect(r.stdout + r.stderr).not.toMatch(STACK_TRACE);
    expect(fs.existsSync(s.root)).toBe(false);
  });

  it('rolls the host back when registration is refused (wrong passphrase)', async () => {
    const s = scratchRoot(path.join(work, 'badpass'));
    const image = path.join(work, 'badpass.img');
    fs.writeFileSync(image, Buffer.alloc(1024 * 1024));
    const wrong = path.join(work, 'wrong-passphrase');
    fs.writeFileSync(wrong, 'not the passphrase\n', { mode: 0o600 });
    const r = await ferry(['push-install', '--ssh', target(), ...sshArgs(), '--receiver', rx.url, '--fingerprint', rx.fingerprint, '--passphrase-file', wrong, '--volume', `badpass=${image}`, ...s.args]);
    expect(r.status).toBe(1);
    expect(resultLine(r, target())).toMatch(/failed: install\.sh: registration refused: the receiver did not accept the passphrase \(exit 5\)/);
    expect(fs.existsSync(s.root)).toBe(false);
  });

  it('installs as a non-root user through sudo: -n with NOPASSWD, -S with a password sent over the channel', async () => {
    const hasSudo = spawnSync('sh', ['-c', 'command -v sudo && command -v useradd']).status === 0;
    if (!hasSudo) {
      if (process.env.CI === 'true') throw new Error('sudo is not installed (CI must install it, see .ci/run)');
      return;
    }
    const users = ['ferrypush1', 'ferrypush2'];
    const sudoers = '/etc/sudoers.d/ferry-push-test';
    const sudoPassword = 'sudo-pw-Ferry2';
    try {
      for (const u of users) {
        spawnSync('userdel', [u]);
        const add = spawnSync('useradd', ['-M', '-s', '/bin/bash', u], { encoding: 'utf8' });
        expect(add.status, add.stderr).toBe(0);
        sshd.authorize(u, clientKey.publicLine);
      }
      // sshd reads authorized_keys as the user: let it through the (0700) temp folder.
      fs.chmodSync(work, 0o711);
      // sshd (UsePAM no) refuses locked accounts: ferrypush1 gets no usable password, not a lock.
      expect(spawnSync('usermod', ['-p', '*', 'ferrypush1']).status).toBe(0);
      expect(spawnSync('chpasswd', [], { input: `ferrypush2:${sudoPassword}\n` }).status).toBe(0);
      fs.writeFileSync(sudoers, 'ferrypush1 ALL=(root) NOPASSWD: ALL\nferrypush2 ALL=(root) ALL\n', { mode: 0o440 });
      expect(spawnSync('visudo', ['-c', '-f', sudoers]).status).toBe(0);
      const image = path.join(work, 'sudo.img');
      fs.writeFileSync(image, Buffer.alloc(1024 * 1024));
      const push = (user: string, root: string, extra: string[]): Promise<RunResult> =>
        ferry(['push-install', '--ssh', target('127.0.0.1', user), ...sshArgs(), '--no-register', '--receiver', rx.url, '--fingerprint', rx.fingerprint, '--volume', `${user}=${image}`, ...scratchRoot(path.join(work, root)).args, ...extra]);

      const nopw = await push('ferrypush1', 'sudo-n', []);
      expect(nopw.status, nopw.stdout + nopw.stderr).toBe(0);
      expect(nopw.stdout).toContain('running install.sh as root (sudo)');
      expect(fs.statSync(path.join(work, 'sudo-n', 'opt', 'ferry', 'bin', 'ferry')).uid).toBe(0);

      const needsPw = await push('ferrypush2', 'sudo-needs', []);
      expect(needsPw.status).toBe(1);
      expect(resultLine(needsPw, target('127.0.0.1', 'ferrypush2'))).toMatch(/failed: sudo needs a password for ferrypush2: pass --sudo-password-file/);

      const badFile = path.join(work, 'sudo-pw-wrong');
      fs.writeFileSync(badFile, 'wrong\n', { mode: 0o600 });
      const bad = await push('ferrypush2', 'sudo-bad', ['--sudo-password-file', badFile]);
      expect(bad.status).toBe(1);
      expect(resultLine(bad, target('127.0.0.1', 'ferrypush2'))).toMatch(/failed: sudo refused the password for ferrypush2/);
      expect(fs.existsSync(path.join(work, 'sudo-bad'))).toBe(false);

      const goodFile = path.join(work, 'sudo-pw-right');
      fs.writeFileSync(goodFile, `${sudoPassword}\n`, { mode: 0o600 });
      const good = await push('ferrypush2', 'sudo-S', ['--sudo-password-file', goodFile]);
      expect(good.status, good.stdout + good.stderr).toBe(0);
      expect(good.stdout + good.stderr).not.toContain(sudoPassword);
      expect(fs.existsSync(path.join(work, 'sudo-S', 'opt', 'ferry', 'bin', 'ferry'))).toBe(true);
    } finally {
      fs.rmSync(sudoers, { force: true });
      for (const u of users) spawnSync('userdel', [u]);
    }
  });

  it('refuses bad arguments with exit 2 and one line', async () => {
    const cases: [string[], RegExp][] = [
      [['push-install'], /name at least one target/],
      [['push-install', '--ssh', 'root@bad host'], /not a valid host name/],
      [['push-install', '--ssh', 'root@h:99999'], /port 99999 is not 1-65535/],
      [['push-install', '--ssh', 'root@h', '--key', '/nonexistent/key', '--no-register'], /cannot read --key \/nonexistent\/key: ENOENT/],
      [['push-install', '--ssh', 'root@h', '--key', clientKey.privateFile, '--receiver', 'http://x', '--fingerprint', 'AB'], /--receiver must use wss:\/\//],
      [['push-install', '--ssh', 'root@h', '--key', clientKey.privateFile, '--receiver', 'wss://x:1', '--fingerprint', 'AB'], /SHA-256 fingerprint/],
      [['push-install', '--ssh', 'root@h', '--key', clientKey.privateFile, '--receiver', 'wss://x:1', '--fingerprint', rx.fingerprint, '--volume', 'v=relative'], /the path must be absolute/],
      [['push-install', '--ssh', 'root@h', '--key', clientKey.privateFile, '--receiver', 'wss://x:1', '--fingerprint', rx.fingerprint, '--volume', 'a..b=/dev/x'], /volume id "a\.\.b" must be/],
      [['push-install', '--ssh', 'root@h', '--key', clientKey.privateFile, '--receiver', 'wss://x:1', '--fingerprint', rx.fingerprint, '--volume', 'c=C:'], /for Linux use ID=PATH\[:MOUNT\]/],
      [['push-install', '--ssh', 'root@h', '--capture', 'magic'], /expected auto, kernel, ebpf or scan/],
      [['push-install', '--ssh', 'root@h', '--smb', '//h/C$'], /separate runs/],
    ];
    for (const [args, message] of cases) {
      const r = await ferry(args, { timeoutMs: 30_000 });
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).not.toMatch(STACK_TRACE);
    }
  });
});
