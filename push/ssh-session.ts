// One SSH connection for a push install: TCP with TCP_NODELAY, host key checked against
// known_hosts, public-key (or ssh-agent) authentication, exec with streamed output, SFTP upload.
import * as net from 'node:net';
import { Client, ClientChannel, ConnectConfig, SFTPWrapper } from 'ssh2';
import { appendKnownHost, fingerprintSha256, keyTypeOf, KnownHosts, knownHostName } from './known-hosts';
import { LineSplitter } from './lines';
import { PushFailure } from './result';

export interface SshConnectOptions {
  host: string;
  port: number;
  user: string;
  /** Private key (PEM/OpenSSH); without it ssh-agent (SSH_AUTH_SOCK) is used. */
  privateKey?: Buffer;
  keyFile?: string;
  knownHostsFile: string;
  acceptNewHostKey: boolean;
  connectTimeoutMs: number;
  /** Called once when an unknown host key was accepted and recorded. */
  onNewHostKey?: (fingerprint: string) => void;
}

export interface ExecHandlers {
  onStdoutLine: (line: string) => void;
  onStderrLine: (line: string) => void;
  /** Sees stderr text that has no newline yet (prompts); return true once it is handled. */
  onStderrPartial?: (text: string, channel: ClientChannel) => boolean;
  onStdoutLineChannel?: (line: string, channel: ClientChannel) => void;
}

export interface ExecResult {
  code: number | null;
  signal: string | null;
}

const RSA_ALGOS = ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'];
const HOST_KEY_ALGOS = ['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', ...RSA_ALGOS];

/** Ask first for the key types known_hosts has for this host, so a known key is what we get. */
function hostKeyPreference(knownTypes: string[]): ConnectConfig['algorithms'] {
  if (knownTypes.length === 0) return undefined;
  const preferred = knownTypes.flatMap((t) => (t === 'ssh-rsa' ? RSA_ALGOS : [t])).filter((t) => HOST_KEY_ALGOS.includes(t));
  const order = [...new Set([...preferred, ...HOST_KEY_ALGOS])];
  return { serverHostKey: order as NonNullable<ConnectConfig['algorithms']>['serverHostKey'] };
}

function tcpConnect(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    socket.setNoDelay(true);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new PushFailure(`unreachable: no answer from ${host}:${port} within ${Math.round(timeoutMs / 1000)}s`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const where = `${host}:${port}`;
      switch (err.code) {
        case 'ECONNREFUSED':
          return reject(new PushFailure(`unreachable: connection refused by ${where} (no SSH server there?)`));
        case 'EHOSTUNREACH':
        case 'ENETUNREACH':
          return reject(new PushFailure(`unreachable: no route to ${where}`));
        case 'ENOTFOUND':
        case 'EAI_AGAIN':
          return reject(new PushFailure(`unreachable: cannot resolve host name ${host}`));
        default:
          return reject(new PushFailure(`unreachable: ${where}: ${err.code ?? err.message}`));
      }
    });
  });
}

export class SshSession {
  private constructor(private readonly client: Client) {}

  static async connect(opts: SshConnectOptions): Promise<SshSession> {
    if (!opts.privateKey && !process.env.SSH_AUTH_SOCK) {
      throw new PushFailure('no SSH key: pass --key FILE or run an ssh-agent (SSH_AUTH_SOCK)');
    }
    const knownHosts = KnownHosts.load(opts.knownHostsFile);
    const socket = await tcpConnect(opts.host, opts.port, opts.connectTimeoutMs);
    const client = new Client();
    let hostKeyProblem: string | undefined;
    const name = knownHostName(opts.host, opts.port);

    const hostVerifier = (key: Buffer): boolean => {
      const verdict = knownHosts.verify(opts.host, opts.port, key);
      const fp = `${keyTypeOf(key)} ${fingerprintSha256(key)}`;
      switch (verdict.kind) {
        case 'known':
          return true;
        case 'revoked':
          hostKeyProblem = `host key ${fp} of ${name} is marked @revoked in ${opts.knownHostsFile}:${verdict.line}; refusing`;
          return false;
        case 'mismatch':
          hostKeyProblem =
            `HOST KEY MISMATCH for ${name}: it presented ${fp}, ${opts.knownHostsFile} line ${verdict.lines.join(',')} expects ` +
            `${verdict.expected.join(' or ')}; refusing (a reinstalled host or a man-in-the-middle: check, then fix known_hosts)`;
          return false;
        case 'unknown':
          if (!opts.acceptNewHostKey) {
            hostKeyProblem = `unknown host key for ${name} (${fp}), not in ${opts.knownHostsFile}; check it and pass --accept-new-host-key to record it`;
            return false;
          }
          try {
            appendKnownHost(opts.knownHostsFile, opts.host, opts.port, key);
          } catch (err) {
            hostKeyProblem = `cannot record the host key in ${opts.knownHostsFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
            return false;
          }
          opts.onNewHostKey?.(fp);
          return true;
      }
    };

    await new Promise<void>((resolve, reject) => {
      const fail = (err: Error & { level?: string }): void => {
        client.removeAllListeners('ready');
        socket.destroy();
        if (hostKeyProblem) return reject(new PushFailure(hostKeyProblem));
        if (err.level === 'client-authentication') {
          const how = opts.privateKey ? `the key ${opts.keyFile ?? ''}`.trim() : 'the ssh-agent keys';
          return reject(new PushFailure(`authentication failed: ${opts.user}@${name} refused ${how}`));
        }
        if (err.level === 'client-timeout') {
          return reject(new PushFailure(`no SSH handshake from ${opts.host}:${opts.port} within ${Math.round(opts.connectTimeoutMs / 1000)}s (is it an SSH server?)`));
        }
        if (/encrypted private/i.test(err.message) || /passphrase/i.test(err.message)) {
          return reject(new PushFailure(`the key ${opts.keyFile ?? ''} is encrypted: load it into ssh-agent instead`));
        }
        if (/Cannot parse privateKey/i.test(err.message)) {
          return reject(new PushFailure(`the key ${opts.keyFile ?? ''} is not a private key ssh2 can read (${err.message})`));
        }
        reject(new PushFailure(`SSH to ${name} failed: ${err.message}`));
      };
      let settled = false;
      // ssh2 may emit more than one error (a timeout, then the lost socket): only the first counts;
      // later errors (a dropped connection) surface through the running exec or upload.
      client.on('error', (err: Error & { level?: string }) => {
        if (settled) return;
        settled = true;
        fail(err);
      });
      client.once('ready', () => {
        settled = true;
        resolve();
      });
      try {
        client.connect({
          sock: socket,
          username: opts.user,
          privateKey: opts.privateKey,
          agent: opts.privateKey ? undefined : process.env.SSH_AUTH_SOCK,
          hostVerifier,
          algorithms: hostKeyPreference(knownHosts.keyTypes(opts.host, opts.port)),
          readyTimeout: opts.connectTimeoutMs,
          keepaliveInterval: 15_000,
          keepaliveCountMax: 4,
        });
      } catch (err) {
        settled = true;
        fail(err as Error);
      }
    });
    return new SshSession(client);
  }

  /** Runs a command; resolves with its exit status once the channel closes. */
  exec(command: string, handlers: ExecHandlers, stdin?: (channel: ClientChannel) => void): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      this.client.exec(command, (err, channel) => {
        if (err) return reject(new PushFailure(`cannot run a command over SSH: ${err.message}`));
        const out = new LineSplitter((line) => {
          handlers.onStdoutLine(line);
          handlers.onStdoutLineChannel?.(line, channel);
        });
        const errLines = new LineSplitter(handlers.onStderrLine);
        channel.on('data', (chunk: Buffer) => out.push(chunk));
        channel.stderr.on('data', (chunk: Buffer) => {
          errLines.push(chunk);
          if (handlers.onStderrPartial && errLines.partial !== '' && handlers.onStderrPartial(errLines.partial, channel)) errLines.clearPartial();
        });
        let result: ExecResult = { code: null, signal: null };
        channel.on('exit', (code: number | null, signal?: string) => {
          result = { code: typeof code === 'number' ? code : null, signal: signal ?? null };
        });
        channel.on('close', () => {
          out.flush();
          errLines.flush();
          resolve(result);
        });
        channel.on('error', (e: Error) => reject(new PushFailure(`SSH channel failed: ${e.message}`)));
        if (stdin) stdin(channel);
        else channel.end();
      });
    });
  }

  /** Runs a short command and returns its stdout; fails with its stderr on a non-zero exit. */
  async capture(command: string): Promise<string> {
    let stdout = '';
    let stderr = '';
    const r = await this.exec(command, { onStdoutLine: (l) => (stdout += `${l}\n`), onStderrLine: (l) => (stderr += `${l}\n`) });
    if (r.code !== 0) throw new PushFailure(`remote command failed (${r.code ?? r.signal}): ${stderr.trim().split('\n').pop() ?? command}`);
    return stdout;
  }

  private sftp(): Promise<SFTPWrapper> {
    return new Promise((resolve, reject) => {
      this.client.sftp((err, sftp) => (err ? reject(new PushFailure(`SFTP is not available: ${err.message}`)) : resolve(sftp)));
    });
  }

  /** Uploads local files with SFTP (parallel reads/writes); mode applies to each remote file. */
  async upload(files: { local: string; remote: string; mode: number }[]): Promise<void> {
    const sftp = await this.sftp();
    try {
      for (const f of files) {
        await new Promise<void>((resolve, reject) => {
          sftp.fastPut(f.local, f.remote, { mode: f.mode, concurrency: 16, chunkSize: 256 * 1024 }, (err) =>
            err ? reject(new PushFailure(`upload of ${f.local} to ${f.remote} failed: ${err.message}`)) : resolve(),
          );
        });
      }
    } finally {
      sftp.end();
    }
  }

  close(): void {
    this.client.end();
  }
}
