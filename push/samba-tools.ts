// Samba's client tools (smbclient, net) run with SMB3 + required signing and a credentials file
// (-A) that lives 0600 in a private temp folder: credentials never appear on a command line.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PushFailure } from './result';

export interface SmbCredentials {
  /** `user`, `DOMAIN\user` or `user@REALM`. */
  user: string;
  password: string;
}

export interface SambaEndpoint {
  host: string;
  port: number;
}

export interface ToolResult {
  code: number | null;
  output: string;
}

/** A private folder holding the -A credentials file and a client smb.conf; remove() deletes it. */
export class SambaContext {
  readonly authFile: string;
  readonly confFile: string;

  private constructor(readonly dir: string) {
    this.authFile = path.join(dir, 'credentials');
    this.confFile = path.join(dir, 'smb.conf');
  }

  static create(creds: SmbCredentials): SambaContext {
    if (/[\r\n]/.test(creds.user) || /[\r\n]/.test(creds.password)) throw new PushFailure('SMB user and password must be one line each');
    const ctx = new SambaContext(fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-smb-')));
    fs.chmodSync(ctx.dir, 0o700);
    const slash = creds.user.indexOf('\\');
    const lines = slash >= 0 ? [`domain = ${creds.user.slice(0, slash)}`, `username = ${creds.user.slice(slash + 1)}`] : [`username = ${creds.user}`];
    lines.push(`password = ${creds.password}`);
    fs.writeFileSync(ctx.authFile, `${lines.join('\n')}\n`, { mode: 0o600 });
    // Our own client config: SMB3 only, signing required (also on IPC$ for svcctl), encryption when offered.
    fs.writeFileSync(
      ctx.confFile,
      ['[global]', '  client min protocol = SMB3_00', '  client max protocol = SMB3', '  client signing = required', '  client ipc signing = required', '  client smb encrypt = desired', ''].join('\n'),
      { mode: 0o600 },
    );
    return ctx;
  }

  /** Writes a secret file in the private folder (for upload); returns its path. */
  secretFile(name: string, content: string): string {
    const file = path.join(this.dir, name);
    fs.writeFileSync(file, content, { mode: 0o600 });
    return file;
  }

  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  commonArgs(endpoint: SambaEndpoint, timeoutSeconds: number): string[] {
    return ['-s', this.confFile, '-A', this.authFile, '-p', String(endpoint.port), '-t', String(timeoutSeconds)];
  }
}

/** Runs a Samba tool; never rejects for a non-zero exit (the caller reads the answer). */
export function runTool(command: string, args: string[], opts: { cwd?: string; timeoutMs: number }): Promise<ToolResult> {
  return new Promise((resolve) => {
    let output = '';
    const child = spawn(command, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    const timer = setTimeout(() => {
      output += `\n${command} did not finish within ${Math.round(opts.timeoutMs / 1000)}s\n`;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ code: err.code === 'ENOENT' ? 127 : 1, output: err.code === 'ENOENT' ? `${command} is not installed (apt-get install smbclient)` : err.message });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

const STATUS_MEANING: Record<string, string> = {
  NT_STATUS_LOGON_FAILURE: 'authentication failed (wrong user or password)',
  NT_STATUS_ACCOUNT_LOCKED_OUT: 'the account is locked out',
  NT_STATUS_ACCESS_DENIED: 'access denied (the user needs local administrator rights)',
  NT_STATUS_CONNECTION_REFUSED: 'unreachable: connection refused (no SMB server on that port)',
  NT_STATUS_IO_TIMEOUT: 'unreachable: timed out',
  NT_STATUS_HOST_UNREACHABLE: 'unreachable: no route to host',
  NT_STATUS_NETWORK_UNREACHABLE: 'unreachable: network unreachable',
  NT_STATUS_BAD_NETWORK_NAME: 'no such share',
  NT_STATUS_OBJECT_PATH_NOT_FOUND: 'folder not found on the share',
  NT_STATUS_OBJECT_NAME_NOT_FOUND: 'file not found on the share',
  NT_STATUS_DISK_FULL: 'the share is full',
  NT_STATUS_INVALID_NETWORK_RESPONSE: 'the server does not speak SMB3 with signing',
  NT_STATUS_NOT_SUPPORTED: 'the server does not support SMB3 with required signing',
  NT_STATUS_RPC_PROCNUM_OUT_OF_RANGE: 'the server does not implement this svcctl call (not a Windows SCM)',
  WERR_ACCESS_DENIED: 'access denied by the service control manager',
  WERR_SERVICE_EXISTS: 'the service already exists',
  WERR_SERVICE_DOES_NOT_EXIST: 'the service does not exist',
  WERR_SERVICE_REQUEST_TIMEOUT: 'the service did not report running in time',
};

/** The first NT_STATUS_/WERR_ code in a tool's output, with a plain explanation. */
export function explainSambaOutput(output: string): string {
  const code = /\b(NT_STATUS_[A-Z_]+|WERR_[A-Z_]+)\b/.exec(output)?.[1];
  const lines = output.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !/^(putting|getting) file/.test(l));
  const last = lines.find((l) => code !== undefined && l.includes(code)) ?? lines.pop() ?? 'no output';
  if (code === undefined) return last;
  const meaning = STATUS_MEANING[code];
  return meaning ? `${meaning} [${code}]` : last;
}
