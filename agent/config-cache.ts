// The parsed form of a YAML agent config, kept beside it (`.<name>.cache.json`): loading the
// YAML parser costs a short command like `ferry agent tag` about 20 ms, more than the rest of its
// start. The cache holds the document as the parser returned it, before any checking, with the
// exact YAML text it came from: a config edited since (even within the same second, or to the
// same size) reads as a miss and is parsed again. Comparing the text itself costs less than
// loading a hash function and cannot collide. Every use checks the document exactly as a fresh
// parse would be checked.
import * as fs from 'fs';
import * as path from 'path';

const VERSION = 1;

interface CacheFile {
  version: number;
  /** The YAML text `doc` was parsed from. */
  source: string;
  doc: unknown;
}

export function configCacheFile(configFile: string): string {
  return path.join(path.dirname(configFile), `.${path.basename(configFile)}.cache.json`);
}

/**
 * Only a cache that the config's owner wrote and nobody else may change is used: what it says
 * is where the agent sends its volumes, so a cache someone else could plant is no cache.
 */
function trusted(cache: fs.Stats, config: fs.Stats): boolean {
  return cache.isFile() && cache.uid === config.uid && (cache.mode & 0o022) === 0;
}

/** The document cached for exactly `text` (the config as just read), or undefined: missing, stale, damaged or untrusted. */
export function readCachedDocument(configFile: string, text: string): unknown {
  const file = configCacheFile(configFile);
  try {
    if (!trusted(fs.statSync(file), fs.statSync(configFile))) return undefined;
    const cached = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<CacheFile> | null;
    if (cached === null || typeof cached !== 'object' || cached.version !== VERSION || cached.source !== text || !('doc' in cached)) return undefined;
    return cached.doc;
  } catch {
    return undefined;
  }
}

/** True for what JSON carries unchanged: YAML's .inf, .nan or binary would come back different. */
export function isPlainJson(value: unknown): boolean {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return true;
  if (typeof value === 'number') return Number.isFinite(value);
  if (Array.isArray(value)) return value.every(isPlainJson);
  if (typeof value !== 'object' || Object.getPrototypeOf(value) !== Object.prototype) return false;
  return Object.values(value as Record<string, unknown>).every(isPlainJson);
}

/**
 * Stores `doc`, parsed from `text`, beside the config. Best effort: a folder the process may not
 * write (the service's read-only /etc) only means the next load parses the YAML again.
 */
export function writeCachedDocument(configFile: string, text: string, doc: unknown): void {
  // Windows reports no owner and no group/other bits: no cache there could pass `trusted`.
  if (process.platform === 'win32' || !isPlainJson(doc)) return;
  const file = configCacheFile(configFile);
  const tmp = `${file}.tmp-${process.pid}`;
  const body: CacheFile = { version: VERSION, source: text, doc };
  try {
    // No fsync: a cache torn by a crash fails to parse or to match, and is parsed again.
    fs.writeFileSync(tmp, JSON.stringify(body), { mode: 0o600 });
    fs.renameSync(tmp, file);
  } catch {
    try {
      fs.rmSync(tmp, { force: true });
    } catch {
      // nothing was written
    }
  }
}
