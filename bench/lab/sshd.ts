// Local peers that tests and benchmarks start for real: an OpenSSH server on 127.0.0.1 with a
// private config in a temp folder, stopped by pid (push-install tests; rsync over ssh, the
// resync benchmark's encrypted baseline).
import { ChildProcess, execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Waits until `marker` appears in the child's output (or it exits). */
function waitForOutput(child: ChildProcess, marker: RegExp, what: string, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not become ready within ${timeoutMs} ms:\n${out}`)), timeoutMs);
    const onData = (c: Buffer): void => {
      out += c.toString();
      if (marker.test(out)) {
        clearTimeout(timer);
        resolve(out);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code}) before it was ready:\n${out}`));
    });
  });
}

export function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

export interface KeyPair {
  privateFile: string;
  publicLine: string;
}

export function makeKey(file: string): KeyPair {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ferry-test', '-f', file]);
  return { privateFile: file, publicLine: fs.readFileSync(`${file}.pub`, 'utf8').trim() };
}

export interface Sshd {
  port: number;
  /** `type base64` of the server's host key. */
  hostKey: string;
  /** Authorizes a public key for a user (AuthorizedKeysFile is DIR/authorized_keys/%u). */
  authorize: (user: string, publicLine: string) => void;
  knownHostsLine: (host: string) => string;
  output: () => string;
  stop: () => Promise<void>;
}

export async function startSshd(dir: string): Promise<Sshd> {
  fs.mkdirSync(dir, { recursive: true });
  // OpenSSH refuses to start without its privilege separation folder.
  fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const hostKey = makeKey(path.join(dir, 'ssh_host_ed25519_key'));
  const keysDir = path.join(dir, 'authorized_keys');
  fs.mkdirSync(keysDir, { mode: 0o755 });
  const port = await freePort();
  const config = path.join(dir, 'sshd_config');
  fs.writeFileSync(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey.privateFile}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      'UsePAM no',
      'StrictModes no',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PermitRootLogin prohibit-password',
      `AuthorizedKeysFile ${keysDir}/%u`,
      'Subsystem sftp internal-sftp',
      'LogLevel VERBOSE',
      '',
    ].join('\n'),
  );
  const child = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  await waitForOutput(child, new RegExp(`Server listening on 127\\.0\\.0\\.1 port ${port}`), 'sshd');
  const [type, blob] = hostKey.publicLine.split(' ');
  return {
    port,
    hostKey: `${type} ${blob}`,
    authorize: (user, publicLine) => fs.appendFileSync(path.join(keysDir, user), `${publicLine}\n`),
    knownHostsLine: (host) => `[${host}]:${port} ${type} ${blob}`,
    output: () => out,
    stop: () => stopChild(child),
  };
}
