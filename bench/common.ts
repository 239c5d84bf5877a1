import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseArgs } from 'util';

export const MiB = 1024 * 1024;

/** A bad command line: reported without a stack trace, exit code 2. */
export class UsageError extends Error {}

/** A bench's command line: its own options, all taking a value, plus --json and --help (-h). */
export interface BenchArgs {
  values: Partial<Record<string, string>>;
  json: boolean;
  help: boolean;
  /** The boolean options given (of `booleanOptions`). */
  flags: Set<string>;
}

/** Parses `argv` strictly (no positionals, no unknown options); a bad argument is a UsageError. */
export function parseBenchArgs(argv: string[], valueOptions: readonly string[], booleanOptions: readonly string[] = []): BenchArgs {
  const options = {
    ...Object.fromEntries(valueOptions.map((name) => [name, { type: 'string' as const }])),
    ...Object.fromEntries(booleanOptions.map((name) => [name, { type: 'boolean' as const }])),
  };
  try {
    const { values } = parseArgs({
      args: argv,
      options: { ...options, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: false,
    });
    const { json, help, ...rest } = values as Record<string, string | boolean | undefined>;
    const flags = new Set(booleanOptions.filter((name) => rest[name] === true));
    const strings = Object.fromEntries(Object.entries(rest).filter(([name]) => !booleanOptions.includes(name))) as Partial<Record<string, string>>;
    return { values: strings, json: json === true, help: help === true, flags };
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
}

/** Parses a whole number in [min, max]; `raw` is the option's text as given. */
export function integerOption(name: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const value = /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new UsageError(`--${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

/** Seconds taken by `fn`. */
export function timeSync(fn: () => void): number {
  const start = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

export async function timeAsync(fn: () => Promise<void>): Promise<number> {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** Throughput in MB/s, MB = 10^6 bytes (the unit disk tools report). */
export function mbPerSecond(bytes: number, seconds: number): number {
  return seconds > 0 ? bytes / 1e6 / seconds : 0;
}

/** Deterministic PRNG (mulberry32) so random workloads are the same on every run. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FS_TYPES: Record<number, string> = {
  0xef53: 'ext4',
  0x58465342: 'xfs',
  0x9123683e: 'btrfs',
  0x01021994: 'tmpfs',
  0x794c7630: 'overlayfs',
  0x2fc12fc1: 'zfs',
};

interface DiskInfo {
  fsType: string;
  freeBytes: number;
}

function diskInfo(dir: string): DiskInfo {
  const st = fs.statfsSync(dir);
  return { fsType: FS_TYPES[st.type] ?? `0x${st.type.toString(16)}`, freeBytes: st.bavail * st.bsize };
}

/**
 * The file system type of `dir`; throws when it has less than `neededBytes` free (`where` names
 * the place in the message, `what` the run that needs the room).
 */
export function requireFreeSpace(dir: string, neededBytes: number, where: string, what: string): string {
  const { fsType, freeBytes } = diskInfo(dir);
  if (freeBytes < neededBytes) throw new Error(`${where} has ${Math.floor(freeBytes / MiB)} MiB free; ${what} needs about ${Math.ceil(neededBytes / MiB)} MiB`);
  return fsType;
}

/** Progress lines on stderr, only for someone watching (a terminal), prefixed with the bench's name. */
export function progressTo(name: string): (message: string) => void {
  return (message) => {
    if (process.stderr.isTTY) process.stderr.write(`${name}: ${message}\n`);
  };
}

/**
 * Runs `fn` in a fresh temporary directory under `parent` (default: os.tmpdir()) and removes
 * it afterwards, also on error or on SIGINT/SIGTERM (handled once the current synchronous
 * step returns).
 */
export async function withWorkDir<T>(parent: string | undefined, prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const base = parent ?? os.tmpdir();
  if (!fs.existsSync(base) || !fs.statSync(base).isDirectory()) {
    throw new UsageError(`--dir ${JSON.stringify(base)} is not an existing directory`);
  }
  const dir = fs.mkdtempSync(path.join(path.resolve(base), prefix));
  const remove = (): void => fs.rmSync(dir, { recursive: true, force: true });
  const onSignal = (signal: NodeJS.Signals): void => {
    remove();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await fn(dir);
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    remove();
  }
}

/** Left-aligns the first column, right-aligns the others. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const all = [header, ...rows];
  const widths = header.map((_, col) => Math.max(...all.map((row) => (row[col] ?? '').length)));
  return all
    .map((row) => row.map((cell, col) => (col === 0 ? cell.padEnd(widths[col]) : cell.padStart(widths[col]))).join('  ').trimEnd())
    .join('\n');
}

/** Runs a bench's main: usage errors exit 2, other failures exit 1, both without a stack trace. */
export function runBench(name: string, usage: string, main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`${name}: ${message}\n`);
    if (err instanceof UsageError) process.stderr.write(`${usage}\n`);
    process.exitCode = err instanceof UsageError ? 2 : 1;
  });
}

/**
 * Writes and deletes a scratch file of `totalBytes` in 1 MiB chunks from `chunk(i)`. In a VM,
 * page-cache pages the guest has never touched are slow to fill the first time (the host
 * allocates them lazily): without this, whichever measurement needs fresh pages first pays
 * for it. Afterwards baseline and measured runs both reuse warm pages.
 */
export function warmPageCache(file: string, totalBytes: number, chunk: (index: number) => Buffer): void {
  const fd = fs.openSync(file, 'w', 0o600);
  try {
    for (let offset = 0, i = 0; offset < totalBytes; offset += MiB, i++) {
      const data = chunk(i);
      fs.writeSync(fd, data, 0, Math.min(data.length, MiB), offset);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
  }
}

/** Polls `check` until it gives a value (every 200 ms), or fails naming `what` at the timeout. */
export async function until<T>(what: string, check: () => T | undefined | Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
