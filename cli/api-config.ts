import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ExitCode, FerryError } from '../common/errors';
import { ensureDir, writeFileAtomic } from '../common/fsutil';
import { ApiTarget, normalizeFingerprint, parseApiUrl } from './api-client';

/** What `ferry login` saves: the API, its pinned certificate and the bearer token. */
export interface SavedLogin {
  api: string;
  fingerprint: string;
  token: string;
  operator: string;
  tokenId: string;
  savedMs: number;
}

/** The management commands' connection flags. */
export interface ApiFlags {
  api?: string;
  token?: string;
  fingerprint?: string;
}

/** `$FERRY_CONFIG_DIR`, else `~/.config/ferry`. */
export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.FERRY_CONFIG_DIR ?? path.join(env.XDG_CONFIG_HOME ?? path.join(os.homedir(), '.config'), 'ferry');
}

export function loginFile(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(configDir(env), 'api.json');
}

export function readSavedLogin(env: NodeJS.ProcessEnv = process.env): SavedLogin | undefined {
  const file = loginFile(env);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const saved = JSON.parse(text) as Partial<SavedLogin>;
    if (typeof saved.api !== 'string' || typeof saved.fingerprint !== 'string' || typeof saved.token !== 'string') throw new Error('fields missing');
    return saved as SavedLogin;
  } catch (err) {
    throw new FerryError(`${file} is not a saved login (${(err as Error).message}): run ferry login again`, ExitCode.usage);
  }
}

export function saveLogin(login: SavedLogin, env: NodeJS.ProcessEnv = process.env): string {
  const file = loginFile(env);
  ensureDir(path.dirname(file));
  writeFileAtomic(file, `${JSON.stringify(login, null, 2)}\n`, 0o600);
  return file;
}

/**
 * The API target of a management command: flags over environment (FERRY_API, FERRY_TOKEN,
 * FERRY_FINGERPRINT) over the saved login. The saved fingerprint and token are used only for
 * the API they were saved for (pure: tested without files).
 */
export function resolveTarget(flags: ApiFlags, env: NodeJS.ProcessEnv, saved: SavedLogin | undefined): ApiTarget {
  const api = flags.api ?? env.FERRY_API ?? saved?.api;
  if (api === undefined) throw new FerryError('no management API: run ferry login --api https://HOST:PORT first (or pass --api / set FERRY_API)', ExitCode.usage);
  const origin = parseApiUrl(api).origin;
  const sameApi = saved !== undefined && parseApiUrl(saved.api).origin === origin;
  const fingerprint = flags.fingerprint ?? env.FERRY_FINGERPRINT ?? (sameApi ? saved.fingerprint : undefined);
  if (fingerprint === undefined) {
    throw new FerryError(`no pinned certificate for ${origin}: run ferry login --api ${origin} (or pass --fingerprint / set FERRY_FINGERPRINT)`, ExitCode.usage);
  }
  const token = flags.token ?? env.FERRY_TOKEN ?? (sameApi ? saved.token : undefined);
  if (token === undefined) throw new FerryError(`not logged in to ${origin}: run ferry login --api ${origin} (or pass --token / set FERRY_TOKEN)`, ExitCode.auth);
  return { url: origin, fingerprint: normalizeFingerprint(fingerprint), token };
}
