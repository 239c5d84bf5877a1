// Real peers for the push-install tests: an OpenSSH server (bench/lab/sshd.ts, shared with the
// benchmarks) and a Samba server on 127.0.0.1, each with a private config in a temp folder.
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { freePort, stopChild } from '../../bench/lab/sshd';

export { freePort, makeKey, startSshd } from '../../bench/lab/sshd';
export type { KeyPair, Sshd } from '../../bench/lab/sshd';

export interface Smbd {
  port: number;
  shareDir: string;
  user: string;
  password: string;
  stop: () => Promise<void>;
}

/** smbd with SMB3 as the minimum and signing mandatory; share ADMIN$ is a temp folder. */
export async function startSmbd(dir: string, password: string): Promise<Smbd> {
  const sub = (name: string): string => {
    const p = path.join(dir, name);
    fs.mkdirSync(p, { recursive: true });
    return p;
  };
  const shareDir = sub('share');
  fs.mkdirSync(path.join(shareDir, 'Temp'));
  const port = await freePort();
  const conf = path.join(dir, 'smb.conf');
  fs.writeFileSync(
    conf,
    [
      '[global]',
      '  server role = standalone server',
      `  smb ports = ${port}`,
      '  interfaces = 127.0.0.1',
      '  bind interfaces only = yes',
      `  private dir = ${sub('private')}`,
      `  lock directory = ${sub('lock')}`,
      `  state directory = ${sub('state')}`,
      `  cache directory = ${sub('cache')}`,
      `  pid directory = ${sub('pid')}`,
      `  ncalrpc dir = ${sub('ncalrpc')}`,
      `  log file = ${sub('log')}/%m.log`,
      `  passdb backend = tdbsam:${path.join(dir, 'private', 'passdb.tdb')}`,
      '  server min protocol = SMB3_00',
      '  server signing = mandatory',
      '  disable netbios = yes',
      '  load printers = no',
      '  printing = bsd',
      '  printcap name = /dev/null',
      '  disable spoolss = yes',
      '[ADMIN$]',
      `  path = ${shareDir}`,
      '  read only = no',
      '',
    ].join('\n'),
  );
  execFileSync('pdbedit', ['-s', conf, '-a', '-u', 'root', '-t'], { input: `${password}\n${password}\n`, stdio: ['pipe', 'ignore', 'pipe'] });
  // Its own session and process group: smbd signals its whole process group (kill(0, ...)) when it
  // exits, which must not reach the test runner.
  const child = spawn('/usr/sbin/smbd', ['--foreground', '--no-process-group', '-s', conf, '--debug-stdout', '-d', '1'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  await waitForPort(port, child, 'smbd');
  return {
    port,
    shareDir,
    user: 'root',
    password,
    stop: async () => {
      await stopChild(child);
      // smbd starts samba-dcerpcd on demand for svcctl; it records its pid in our pid folder.
      const pidFile = path.join(dir, 'pid', 'samba-dcerpcd.pid');
      if (fs.existsSync(pidFile)) {
        const pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
        if (pid > 1) await killAndWait(pid);
      }
    },
  };
}

function waitForPort(port: number, child: ChildProcess, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    let exited = false;
    child.once('exit', (code) => {
      exited = true;
      reject(new Error(`${what} exited (${code}) before listening on ${port}`));
    });
    const attempt = (): void => {
      if (exited) return;
      const sock = net.connect({ host: '127.0.0.1', port });
      sock.once('connect', () => {
        sock.destroy();
        resolve();
      });
      sock.once('error', () => {
        sock.destroy();
        if (Date.now() > deadline) reject(new Error(`${what} is not listening on ${port} after ${timeoutMs} ms`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** SIGTERM a process we started indirectly, then wait for it to go (polling its pid). */
async function killAndWait(pid: number, timeoutMs = 10_000): Promise<void> {
  if (!alive(pid)) return;
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + timeoutMs;
  while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (alive(pid)) process.kill(pid, 'SIGKILL');
}

/** A TCP listener that accepts and never speaks (an SSH handshake that times out). */
export function silentServer(): Promise<{ port: number; close: () => Promise<void> }> {
  return new Promise((resolve) => {
    const sockets = new Set<net.Socket>();
    const srv = net.createServer((s) => {
      sockets.add(s);
      s.on('error', () => undefined);
    });
    srv.listen(0, '127.0.0.1', () => {
      resolve({
        port: (srv.address() as net.AddressInfo).port,
        close: () =>
          new Promise<void>((r) => {
            for (const s of sockets) s.destroy();
            srv.close(() => r());
          }),
      });
    });
  });
}
