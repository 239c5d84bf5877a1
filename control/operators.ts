import Database from 'better-sqlite3';
import { createHash, randomBytes, scrypt, timingSafeEqual } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { ensureDir, writeFileAtomic } from '../common/fsutil';
import { ControlError } from './contract';

/**
 * Operator accounts of the management API and their bearer tokens, in their own SQLite file
 * (`<data>/operators.db`, mode 0600). Credentials live apart from the recovery-point catalog:
 * the catalog has one owner (receiver/catalog.ts) and its own verify and repair, and a file that
 * holds only secrets can keep the strictest mode whatever tooling reads the catalog.
 *
 * Passwords: scrypt (N=2^15, r=8, p=1) with a per-account 16-byte salt. Tokens: 32 random bytes,
 * given out once, stored as their SHA-256 (a token carries 256 bits of entropy, so a fast hash
 * is enough; a slow one would only slow every request).
 */

export interface Operator {
  name: string;
  createdMs: number;
}

export interface TokenInfo {
  id: string;
  operator: string;
  createdMs: number;
  /** null: does not expire. */
  expiresMs: number | null;
}

export interface IssuedToken extends TokenInfo {
  /** The bearer token itself: shown once, never stored. */
  token: string;
}

export const ADMIN_OPERATOR = 'admin';
export const MIN_PASSWORD_LENGTH = 12;
export const MAX_PASSWORD_LENGTH = 1024;
export const OPERATOR_NAME_PATTERN = '^[a-z][a-z0-9._-]{0,63}$';
const OPERATOR_NAME = new RegExp(OPERATOR_NAME_PATTERN);

const SCRYPT = { N: 1 << 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 } as const;
const KEY_BYTES = 32;

interface OperatorRow {
  name: string;
  salt: Buffer;
  hash: Buffer;
  created_ms: number;
}

interface TokenRow {
  id: string;
  operator: string;
  created_ms: number;
  expires_ms: number | null;
}

/** Each derivation takes 32 MiB for ~0.1 s: a flood of logins waits its turn instead of taking the memory. */
const MAX_CONCURRENT_DERIVATIONS = 2;
let derivations = 0;
const waiting: Array<() => void> = [];

async function derive(password: string, salt: Buffer): Promise<Buffer> {
  // A finished derivation hands its slot straight to the next waiter.
  if (derivations >= MAX_CONCURRENT_DERIVATIONS) await new Promise<void>((resolve) => waiting.push(resolve));
  else derivations++;
  try {
    return await new Promise<Buffer>((resolve, reject) => scrypt(password, salt, KEY_BYTES, SCRYPT, (err, key) => (err ? reject(err) : resolve(key))));
  } finally {
    const next = waiting.shift();
    if (next) next();
    else derivations--;
  }
}

function tokenHash(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

/** The operator-name rule, as a refusal naming the field; undefined when the name is fine. */
export function operatorNameProblem(name: string): string | undefined {
  return OPERATOR_NAME.test(name) ? undefined : `operator name ${JSON.stringify(name.slice(0, 80))} must be 1-64 lower-case letters, digits, '.', '_' or '-', starting with a letter`;
}

export function passwordProblem(password: string): string | undefined {
  if (password.length < MIN_PASSWORD_LENGTH) return `password must be at least ${MIN_PASSWORD_LENGTH} characters`;
  if (password.length > MAX_PASSWORD_LENGTH) return `password must be at most ${MAX_PASSWORD_LENGTH} characters`;
  return undefined;
}

export class OperatorStore {
  /** Compared against when the name is unknown, so that a wrong name costs as long as a wrong password. */
  private readonly decoySalt = randomBytes(16);

  private constructor(
    private readonly db: Database.Database,
    private readonly now: () => number,
  ) {}

  static open(file: string, now: () => number = Date.now): OperatorStore {
    ensureDir(path.dirname(file));
    if (!fs.existsSync(file)) fs.closeSync(fs.openSync(file, 'a', 0o600));
    fs.chmodSync(file, 0o600);
    const db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.exec(`
      CREATE TABLE IF NOT EXISTS operators (
        name TEXT PRIMARY KEY,
        salt BLOB NOT NULL,
        hash BLOB NOT NULL,
        created_ms INTEGER NOT NULL
      );
      CREATE TABLE IF NOT EXISTS tokens (
        id TEXT PRIMARY KEY,
        hash BLOB NOT NULL UNIQUE,
        operator TEXT NOT NULL REFERENCES operators(name) ON DELETE CASCADE,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER
      );
    `);
    // The WAL and shared-memory files hold the same secrets.
    for (const extra of [`${file}-wal`, `${file}-shm`]) if (fs.existsSync(extra)) fs.chmodSync(extra, 0o600);
    return new OperatorStore(db, now);
  }

  /**
   * On first run (no operator yet) creates `admin` with a random password, writes it to
   * `passwordFile` (0600) and returns it so that the caller shows it once; otherwise undefined.
   */
  async ensureAdmin(passwordFile: string): Promise<string | undefined> {
    const count = (this.db.prepare('SELECT COUNT(*) AS n FROM operators').get() as { n: number }).n;
    if (count > 0) return undefined;
    const password = randomBytes(18).toString('base64url');
    await this.create(ADMIN_OPERATOR, password);
    writeFileAtomic(passwordFile, `${password}\n`, 0o600);
    return password;
  }

  list(): Operator[] {
    const rows = this.db.prepare('SELECT name, created_ms FROM operators ORDER BY name').all() as OperatorRow[];
    return rows.map((r) => ({ name: r.name, createdMs: r.created_ms }));
  }

  async create(name: string, password: string): Promise<Operator> {
    const nameProblem = operatorNameProblem(name);
    if (nameProblem) throw new ControlError('invalid', nameProblem, 'name');
    const pwProblem = passwordProblem(password);
    if (pwProblem) throw new ControlError('invalid', pwProblem, 'password');
    const salt = randomBytes(16);
    const hash = await derive(password, salt);
    const createdMs = this.now();
    const inserted = this.db.prepare('INSERT OR IGNORE INTO operators (name, salt, hash, created_ms) VALUES (?, ?, ?, ?)').run(name, salt, hash, createdMs);
    if (inserted.changes === 0) throw new ControlError('conflict', `operator ${name} already exists`, 'name');
    return { name, createdMs };
  }

  /** True when the password is the operator's; takes as long for an unknown name. */
  async verifyPassword(name: string, password: string): Promise<boolean> {
    const row = this.db.prepare('SELECT name, salt, hash, created_ms FROM operators WHERE name = ?').get(name) as OperatorRow | undefined;
    const key = await derive(password.slice(0, MAX_PASSWORD_LENGTH), row ? row.salt : this.decoySalt);
    return row !== undefined && key.length === row.hash.length && timingSafeEqual(key, row.hash);
  }

  issueToken(operator: string, ttlMs?: number): IssuedToken {
    const token = randomBytes(32).toString('base64url');
    const id = randomBytes(6).toString('hex');
    const createdMs = this.now();
    const expiresMs = ttlMs === undefined ? null : createdMs + ttlMs;
    this.db.prepare('INSERT INTO tokens (id, hash, operator, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?)').run(id, tokenHash(token), operator, createdMs, expiresMs);
    return { token, id, operator, createdMs, expiresMs };
  }

  /** The token's record when it is valid (known, not expired, its operator still exists). */
  authenticate(token: string): TokenInfo | undefined {
    if (token.length === 0 || token.length > 256) return undefined;
    const row = this.db
      .prepare('SELECT t.id, t.operator, t.created_ms, t.expires_ms FROM tokens t JOIN operators o ON o.name = t.operator WHERE t.hash = ?')
      .get(tokenHash(token)) as TokenRow | undefined;
    if (!row) return undefined;
    if (row.expires_ms !== null && row.expires_ms <= this.now()) {
      this.db.prepare('DELETE FROM tokens WHERE id = ?').run(row.id);
      return undefined;
    }
    return { id: row.id, operator: row.operator, createdMs: row.created_ms, expiresMs: row.expires_ms };
  }

  tokens(operator: string): TokenInfo[] {
    this.db.prepare('DELETE FROM tokens WHERE expires_ms IS NOT NULL AND expires_ms <= ?').run(this.now());
    const rows = this.db.prepare('SELECT id, operator, created_ms, expires_ms FROM tokens WHERE operator = ? ORDER BY created_ms').all(operator) as TokenRow[];
    return rows.map((r) => ({ id: r.id, operator: r.operator, createdMs: r.created_ms, expiresMs: r.expires_ms }));
  }

  /** Revokes one of the operator's tokens. */
  revokeToken(operator: string, id: string): void {
    const deleted = this.db.prepare('DELETE FROM tokens WHERE id = ? AND operator = ?').run(id, operator);
    if (deleted.changes === 0) throw new ControlError('not-found', `no token ${id} of operator ${operator}`, 'id');
  }

  close(): void {
    this.db.close();
  }
}
