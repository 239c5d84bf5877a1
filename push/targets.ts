// Push-install targets: `user@host[:port]` for SSH, `//host[:port]/share` for SMB, and the
// hosts file that lists many of them with per-host install options.
import * as fs from 'node:fs';
import * as os from 'node:os';
import { ExitCode, FerryError } from '../common/errors';

export interface SshTarget {
  kind: 'ssh';
  /** As written by the operator; prefixes output lines and names the host in results. */
  label: string;
  user: string;
  host: string;
  port: number;
  /** install.sh options for this host only (from the hosts file), appended to the shared ones. */
  extraArgs: string[];
}

export interface SmbTarget {
  kind: 'smb';
  label: string;
  host: string;
  port: number;
  share: string;
}

const HOST_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*\.?|\d{1,3}(?:\.\d{1,3}){3})$/;
const USER_RE = /^[A-Za-z_][A-Za-z0-9._-]{0,31}$/;
const SHARE_RE = /^[A-Za-z0-9_.$-][A-Za-z0-9 _.$-]{0,79}$/;

function parsePort(text: string | undefined, fallback: number, what: string): number {
  if (text === undefined) return fallback;
  const port = Number(text);
  if (!/^\d{1,5}$/.test(text) || port < 1 || port > 65535) throw new FerryError(`${what}: port ${text} is not 1-65535`, ExitCode.usage);
  return port;
}

/** Splits `host:port`, `[v6]:port`, `host` or `[v6]`. */
function splitHostPort(text: string, what: string): { host: string; portText?: string } {
  const v6 = /^\[([0-9A-Fa-f:.]+)\](?::(\d+))?$/.exec(text);
  if (v6) return { host: v6[1], portText: v6[2] };
  const m = /^([^:[\]]+)(?::([^:]*))?$/.exec(text);
  if (!m) throw new FerryError(`${what}: expected HOST or HOST:PORT`, ExitCode.usage);
  if (!HOST_RE.test(m[1])) throw new FerryError(`${what}: ${JSON.stringify(m[1])} is not a valid host name or address`, ExitCode.usage);
  return { host: m[1], portText: m[2] };
}

/** Parses `[user@]host[:port]` (IPv6 as `[addr]:port`); the user defaults to the local user. */
export function parseSshTarget(text: string, extraArgs: string[] = []): SshTarget {
  const what = `SSH target ${JSON.stringify(text)}`;
  const at = text.lastIndexOf('@');
  const user = at >= 0 ? text.slice(0, at) : os.userInfo().username;
  if (!USER_RE.test(user)) throw new FerryError(`${what}: ${JSON.stringify(user)} is not a valid user name`, ExitCode.usage);
  const { host, portText } = splitHostPort(text.slice(at + 1), what);
  return { kind: 'ssh', label: text, user, host, port: parsePort(portText, 22, what), extraArgs };
}

/** Parses `//host[:port]/share` (a UNC-style path; backslashes are accepted too). */
export function parseSmbTarget(text: string): SmbTarget {
  const what = `SMB target ${JSON.stringify(text)}`;
  const m = /^(?:\/\/|\\\\)([^/\\]+)[/\\]([^/\\]+)[/\\]?$/.exec(text);
  if (!m) throw new FerryError(`${what}: expected //HOST[:PORT]/SHARE, e.g. //winsrv01/ADMIN$`, ExitCode.usage);
  const { host, portText } = splitHostPort(m[1], what);
  if (!SHARE_RE.test(m[2])) throw new FerryError(`${what}: ${JSON.stringify(m[2])} is not a valid share name`, ExitCode.usage);
  return { kind: 'smb', label: text, host, port: parsePort(portText, 445, what), share: m[2] };
}

/**
 * install.sh options a hosts-file line may set for its host alone. Receiver, trust and passphrase
 * stay global: one push talks to one receiver.
 */
const PER_HOST_OPTIONS = new Set(['--volume', '--name', '--capture', '--prefix', '--config-dir', '--state-dir', '--systemd-dir', '--bin-dir']);
const PER_HOST_FLAGS = new Set(['--no-start', '--no-register', '--no-systemctl', '--reregister']);

/**
 * Reads a hosts file: one target per line, `#` comments, then optional install.sh options for
 * that host, e.g. `root@web01 --volume web01-root=/dev/vg0/root:/ --name web01`.
 * Values cannot contain spaces.
 */
export function parseHostsFile(text: string, file: string): SshTarget[] {
  const targets: SshTarget[] = [];
  text.split('\n').forEach((raw, index) => {
    const line = raw.replace(/#.*$/, '').trim();
    if (line === '') return;
    const where = `${file}:${index + 1}`;
    const [target, ...rest] = line.split(/\s+/);
    for (let i = 0; i < rest.length; i++) {
      const opt = rest[i];
      if (PER_HOST_FLAGS.has(opt)) continue;
      if (!PER_HOST_OPTIONS.has(opt)) {
        throw new FerryError(`${where}: ${JSON.stringify(opt)} cannot be set per host (allowed: ${[...PER_HOST_OPTIONS, ...PER_HOST_FLAGS].join(', ')})`, ExitCode.usage);
      }
      if (i + 1 >= rest.length || rest[i + 1].startsWith('--')) throw new FerryError(`${where}: ${opt} needs a value`, ExitCode.usage);
      i++;
    }
    try {
      targets.push(parseSshTarget(target, rest));
    } catch (err) {
      throw new FerryError(`${where}: ${(err as Error).message}`, ExitCode.usage);
    }
  });
  const seen = new Set<string>();
  for (const t of targets) {
    const key = `${t.label} ${t.extraArgs.join(' ')}`;
    if (seen.has(key)) throw new FerryError(`${file}: ${t.label} is listed twice with the same options`, ExitCode.usage);
    seen.add(key);
  }
  if (targets.length === 0) throw new FerryError(`${file}: no targets (one user@host[:port] per line)`, ExitCode.usage);
  return targets;
}

export function readHostsFile(file: string): SshTarget[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new FerryError(`cannot read hosts file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, ExitCode.usage);
  }
  return parseHostsFile(text, file);
}
