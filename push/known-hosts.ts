// OpenSSH known_hosts: lookup (plain, wildcard and hashed entries, @revoked), verdicts, appending.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface KnownHostEntry {
  keyType: string;
  key: Buffer;
  revoked: boolean;
  line: number;
}

export type HostKeyVerdict =
  | { kind: 'known' }
  | { kind: 'unknown' }
  | { kind: 'revoked'; line: number }
  | { kind: 'mismatch'; lines: number[]; expected: string[] };

interface ParsedLine {
  marker?: string;
  patterns: string;
  keyType: string;
  key: Buffer;
  line: number;
}

/** The name OpenSSH writes and matches: `host` on port 22, else `[host]:port`. */
export function knownHostName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** `SHA256:...` as `ssh-keygen -l` prints it. */
export function fingerprintSha256(key: Buffer): string {
  return `SHA256:${crypto.createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

/** The key type is the first string of the SSH public key blob. */
export function keyTypeOf(key: Buffer): string {
  if (key.length < 4) return 'unknown';
  const len = key.readUInt32BE(0);
  if (len > 64 || 4 + len > key.length) return 'unknown';
  return key.subarray(4, 4 + len).toString('latin1');
}

function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}

function hashedMatches(pattern: string, name: string): boolean {
  const m = /^\|1\|([^|]+)\|([^|]+)$/.exec(pattern);
  if (!m) return false;
  const salt = Buffer.from(m[1], 'base64');
  const expected = Buffer.from(m[2], 'base64');
  const actual = crypto.createHmac('sha1', salt).update(name).digest();
  return expected.length === actual.length && crypto.timingSafeEqual(expected, actual);
}

/** OpenSSH semantics: any negated match excludes the line; otherwise any positive match. */
function patternsMatch(patterns: string, name: string): boolean {
  if (patterns.startsWith('|')) return hashedMatches(patterns, name);
  let matched = false;
  for (const raw of patterns.split(',')) {
    const negated = raw.startsWith('!');
    const pattern = negated ? raw.slice(1) : raw;
    if (globToRegExp(pattern).test(name)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

function parseLines(text: string): ParsedLine[] {
  const out: ParsedLine[] = [];
  text.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const fields = line.split(/\s+/);
    const marker = fields[0].startsWith('@') ? fields.shift() : undefined;
    if (fields.length < 3) return;
    const key = Buffer.from(fields[2], 'base64');
    if (key.length === 0) return;
    out.push({ marker, patterns: fields[0], keyType: fields[1], key, line: index + 1 });
  });
  return out;
}

export class KnownHosts {
  private constructor(
    readonly file: string,
    private readonly lines: ParsedLine[],
  ) {}

  /** A missing file is an empty list (every host is then unknown). */
  static load(file: string): KnownHosts {
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    return new KnownHosts(file, parseLines(text));
  }

  /** Entries for this host (certificate authorities are not supported and are skipped). */
  lookup(host: string, port: number): KnownHostEntry[] {
    const name = knownHostName(host, port);
    return this.lines
      .filter((l) => l.marker !== '@cert-authority' && patternsMatch(l.patterns, name))
      .map((l) => ({ keyType: l.keyType, key: l.key, revoked: l.marker === '@revoked', line: l.line }));
  }

  /** Key types recorded for this host, to ask the server for those first. */
  keyTypes(host: string, port: number): string[] {
    return [...new Set(this.lookup(host, port).filter((e) => !e.revoked).map((e) => e.keyType))];
  }

  verify(host: string, port: number, presented: Buffer): HostKeyVerdict {
    const entries = this.lookup(host, port);
    const revoked = entries.find((e) => e.revoked && e.key.equals(presented));
    if (revoked) return { kind: 'revoked', line: revoked.line };
    const live = entries.filter((e) => !e.revoked);
    if (live.some((e) => e.key.equals(presented))) return { kind: 'known' };
    if (live.length === 0) return { kind: 'unknown' };
    return { kind: 'mismatch', lines: live.map((e) => e.line), expected: live.map((e) => `${e.keyType} ${fingerprintSha256(e.key)}`) };
  }
}

/** Appends `name type base64` in one O_APPEND write (safe with parallel pushes). */
export function appendKnownHost(file: string, host: string, port: number, key: Buffer): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  let prefix = '';
  try {
    const text = fs.readFileSync(file, 'utf8');
    if (text.length > 0 && !text.endsWith('\n')) prefix = '\n';
  } catch {
    // a new file
  }
  fs.appendFileSync(file, `${prefix}${knownHostName(host, port)} ${keyTypeOf(key)} ${key.toString('base64')}\n`, { mode: 0o600 });
}
