import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ExitCode, FerryError } from '../common/errors';
import { parseDurationMs, parseHostPort, parseSizeBytes } from '../common/units';
import { ID_RULE, isSafeId } from '../proto/ids';
import { PolicyBounds } from '../proto/limits';
import { readCachedDocument, writeCachedDocument } from './config-cache';
import type { LocalPolicy } from './policy/effective';

const CAPTURE_KINDS = ['auto', 'kernel', 'ebpf', 'scan'] as const;
export type CaptureKind = (typeof CAPTURE_KINDS)[number];

export interface VolumeConfig {
  /** Receiver-side volume id. */
  id: string;
  /** Block device or image file. */
  path: string;
  /** Mount point to freeze for application-consistent tags. */
  mount?: string;
  /**
   * The machine boots with dm-ferry over this disk or partition (install.sh --protect-boot):
   * capturing it any other way is a degradation the agent reports (event capture-degraded).
   */
  bootProtected?: boolean;
}

export interface AgentConfig {
  /** Where the file was read from (relative paths in it are resolved against its folder). */
  file: string;
  receiver: { url: string; fingerprint?: string; caFile?: string };
  name: string;
  stateDir: string;
  capture: CaptureKind;
  volumes: VolumeConfig[];
  /** Passphrase for the first registration, read from this file (normally `ferry agent register` does it). */
  passphraseFile?: string;
  scan: { intervalMs: number; blockSize: number; maxPendingBytes: number };
  resync: { blockSize: number };
  pipeline: { maxBatchBytes: number; maxBatchDelayMs: number; windowBytes: number };
  tags: { crashIntervalMs: number; freezeTimeoutMs: number; preHook?: string; postHook?: string; hookTimeoutMs: number };
  /**
   * The policy values this file sets (tags.crashIntervalMs, tags.appIntervalMs, rpoThresholdMs),
   * undefined where it does not: they decide while the machine is in no group (policy/effective.ts).
   */
  policy: LocalPolicy;
  /** HOST:PORT for a Prometheus text endpoint (off when absent). */
  metricsListen?: string;
}

export const DEFAULTS = {
  stateDir: '/var/lib/ferry',
  scanIntervalMs: 1000,
  scanBlockSize: 64 * 1024,
  scanMaxPendingBytes: 4 * 1024 * 1024,
  resyncBlockSize: 64 * 1024,
  maxBatchBytes: 4 * 1024 * 1024,
  maxBatchDelayMs: 50,
  windowBytes: 16 * 1024 * 1024,
  crashIntervalMs: 1000,
  freezeTimeoutMs: 10_000,
  hookTimeoutMs: 60_000,
};

const TOP_KEYS = ['receiver', 'name', 'stateDir', 'capture', 'volumes', 'passphraseFile', 'scan', 'resync', 'pipeline', 'tags', 'metrics', 'rpoThresholdMs'];

type Raw = Record<string, unknown>;

class ConfigReader {
  constructor(private readonly file: string) {}

  fail(message: string): never {
    throw new FerryError(`config ${this.file}: ${message}`, ExitCode.usage);
  }

  object(value: unknown, where: string, allowed: readonly string[]): Raw {
    if (value === undefined || value === null) return {};
    if (typeof value !== 'object' || Array.isArray(value)) this.fail(`${where} must be a mapping`);
    const raw = value as Raw;
    for (const key of Object.keys(raw)) {
      if (!allowed.includes(key)) this.fail(`unknown key ${where === '' ? key : `${where}.${key}`} (allowed: ${allowed.join(', ')})`);
    }
    return raw;
  }

  string(value: unknown, where: string): string | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'string' || value.trim() === '') this.fail(`${where} must be a non-empty string`);
    return value;
  }

  requiredString(value: unknown, where: string): string {
    return this.string(value, where) ?? this.fail(`${where} is required`);
  }

  /** A number, or a string with a unit ("500ms", "64KiB"), within [min, max]. */
  quantity(value: unknown, where: string, fallback: number, parse: (text: string) => number | undefined, min: number, max: number): number {
    if (value === undefined || value === null) return fallback;
    const n = typeof value === 'number' ? value : typeof value === 'string' ? parse(value) : undefined;
    if (n === undefined || !Number.isFinite(n) || n < min || n > max) this.fail(`${where} must be between ${min} and ${max} (got ${JSON.stringify(value)})`);
    return n;
  }

  path(value: unknown, where: string): string | undefined {
    const p = this.string(value, where);
    return p === undefined ? undefined : path.resolve(path.dirname(this.file), p);
  }
}

const durationMs = (text: string): number | undefined => parseDurationMs(text);
const sizeBytes = (text: string): number | undefined => parseSizeBytes(text);

function powerOfTwo(reader: ConfigReader, n: number, where: string): number {
  if ((n & (n - 1)) !== 0) reader.fail(`${where} must be a power of two (got ${n})`);
  return n;
}

function parseVolumes(reader: ConfigReader, value: unknown): VolumeConfig[] {
  if (!Array.isArray(value) || value.length === 0) reader.fail('volumes must list at least one volume');
  const seen = new Set<string>();
  return value.map((item, i) => {
    const raw = reader.object(item, `volumes[${i}]`, ['id', 'path', 'mount', 'bootProtected']);
    const id = reader.requiredString(raw.id, `volumes[${i}].id`);
    if (!isSafeId(id)) reader.fail(`volumes[${i}].id ${JSON.stringify(id)} must be ${ID_RULE}`);
    if (seen.has(id)) reader.fail(`volume id ${id} is listed twice`);
    seen.add(id);
    const volumePath = reader.path(raw.path, `volumes[${i}].path`) ?? reader.fail(`volumes[${i}].path is required`);
    if (raw.bootProtected !== undefined && typeof raw.bootProtected !== 'boolean') reader.fail(`volumes[${i}].bootProtected must be true or false`);
    const volume: VolumeConfig = { id, path: volumePath, mount: reader.path(raw.mount, `volumes[${i}].mount`) };
    if (raw.bootProtected === true) volume.bootProtected = true;
    return volume;
  });
}

/** What is wrong with a receiver URL, or undefined when it is a wss:// URL. */
export function receiverUrlProblem(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `${JSON.stringify(url)} is not a URL (expected wss://HOST:PORT)`;
  }
  return parsed.protocol === 'wss:' ? undefined : `must use wss:// (TLS), not ${parsed.protocol}`;
}

/** What is wrong with a pinned certificate fingerprint, or undefined when it is one. */
export function fingerprintProblem(fingerprint: string): string | undefined {
  return fingerprint.replace(/[^0-9a-f]/gi, '').length === 64 ? undefined : 'must be a SHA-256 fingerprint (64 hex digits, colons optional)';
}

function parseReceiver(reader: ConfigReader, value: unknown): AgentConfig['receiver'] {
  const raw = reader.object(value, 'receiver', ['url', 'fingerprint', 'caFile']);
  const url = reader.requiredString(raw.url, 'receiver.url');
  const urlProblem = receiverUrlProblem(url);
  if (urlProblem) reader.fail(`receiver.url ${urlProblem}`);
  const fingerprint = reader.string(raw.fingerprint, 'receiver.fingerprint');
  const fpProblem = fingerprint === undefined ? undefined : fingerprintProblem(fingerprint);
  if (fpProblem) reader.fail(`receiver.fingerprint ${fpProblem}`);
  const caFile = reader.path(raw.caFile, 'receiver.caFile');
  if (!fingerprint && !caFile) reader.fail('receiver needs a fingerprint or a caFile to verify the receiver certificate');
  return { url, fingerprint, caFile };
}

/** A JSON config (every JSON text is YAML too) needs no YAML parser, which takes tens of ms to load. */
function isJsonText(text: string, file: string): boolean {
  return file.endsWith('.json') || /^\s*\{/.test(text);
}

/** The config text as a document, not checked yet. */
export function parseConfigDocument(text: string, file: string): unknown {
  try {
    return isJsonText(text, file) ? JSON.parse(text) : (require('yaml') as typeof import('yaml')).parse(text);
  } catch (err) {
    return new ConfigReader(file).fail(`cannot parse: ${(err as Error).message.split('\n')[0]}`);
  }
}

/** Parses and checks a config document; `file` names it in messages and anchors relative paths. */
export function parseAgentConfig(text: string, file: string): AgentConfig {
  return validateAgentConfig(parseConfigDocument(text, file), file);
}

/** Checks a parsed config document (see parseAgentConfig). */
export function validateAgentConfig(doc: unknown, file: string): AgentConfig {
  const reader = new ConfigReader(file);
  const top = reader.object(doc, '', TOP_KEYS);
  const captureText = reader.string(top.capture, 'capture') ?? 'auto';
  const capture = CAPTURE_KINDS.find((k) => k === captureText) ?? reader.fail(`capture must be auto, kernel, ebpf or scan (got ${captureText})`);
  const scan = reader.object(top.scan, 'scan', ['intervalMs', 'interval', 'blockSize', 'maxPendingBytes']);
  const resync = reader.object(top.resync, 'resync', ['blockSize']);
  const pipeline = reader.object(top.pipeline, 'pipeline', ['maxBatchBytes', 'maxBatchDelayMs', 'windowBytes']);
  const tags = reader.object(top.tags, 'tags', ['crashIntervalMs', 'appIntervalMs', 'freezeTimeoutMs', 'preHook', 'postHook', 'hookTimeoutMs']);
  const metrics = reader.object(top.metrics, 'metrics', ['listen']);
  const metricsListen = reader.string(metrics.listen, 'metrics.listen');
  if (metricsListen !== undefined && !parseHostPort(metricsListen)) reader.fail('metrics.listen must be HOST:PORT');
  const MiB = 1024 * 1024;
  const crashIntervalMs = reader.quantity(tags.crashIntervalMs, 'tags.crashIntervalMs', DEFAULTS.crashIntervalMs, durationMs, PolicyBounds.minCrashIntervalMs, PolicyBounds.maxCrashIntervalMs);
  const policy: LocalPolicy = {
    crashIntervalMs: tags.crashIntervalMs === undefined ? undefined : crashIntervalMs,
    appIntervalMs: appInterval(reader, tags.appIntervalMs),
    rpoThresholdMs: optionalQuantity(reader, top.rpoThresholdMs, 'rpoThresholdMs', PolicyBounds.minRpoThresholdMs, PolicyBounds.maxRpoThresholdMs),
  };
  return {
    file,
    receiver: parseReceiver(reader, top.receiver),
    name: reader.string(top.name, 'name') ?? os.hostname(),
    stateDir: reader.path(top.stateDir, 'stateDir') ?? DEFAULTS.stateDir,
    capture,
    volumes: parseVolumes(reader, top.volumes),
    passphraseFile: reader.path(top.passphraseFile, 'passphraseFile'),
    scan: {
      intervalMs: reader.quantity(scan.intervalMs ?? scan.interval, 'scan.intervalMs', DEFAULTS.scanIntervalMs, durationMs, 10, 24 * 3600_000),
      blockSize: powerOfTwo(reader, reader.quantity(scan.blockSize, 'scan.blockSize', DEFAULTS.scanBlockSize, sizeBytes, 4096, MiB), 'scan.blockSize'),
      maxPendingBytes: reader.quantity(scan.maxPendingBytes, 'scan.maxPendingBytes', DEFAULTS.scanMaxPendingBytes, sizeBytes, MiB, 4096 * MiB),
    },
    resync: {
      blockSize: powerOfTwo(reader, reader.quantity(resync.blockSize, 'resync.blockSize', DEFAULTS.resyncBlockSize, sizeBytes, 4096, MiB), 'resync.blockSize'),
    },
    pipeline: {
      maxBatchBytes: reader.quantity(pipeline.maxBatchBytes, 'pipeline.maxBatchBytes', DEFAULTS.maxBatchBytes, sizeBytes, 64 * 1024, 32 * MiB),
      maxBatchDelayMs: reader.quantity(pipeline.maxBatchDelayMs, 'pipeline.maxBatchDelayMs', DEFAULTS.maxBatchDelayMs, durationMs, 1, 10_000),
      windowBytes: reader.quantity(pipeline.windowBytes, 'pipeline.windowBytes', DEFAULTS.windowBytes, sizeBytes, MiB, 1024 * MiB),
    },
    tags: {
      crashIntervalMs,
      freezeTimeoutMs: reader.quantity(tags.freezeTimeoutMs, 'tags.freezeTimeoutMs', DEFAULTS.freezeTimeoutMs, durationMs, 100, 60_000),
      preHook: reader.path(tags.preHook, 'tags.preHook'),
      postHook: reader.path(tags.postHook, 'tags.postHook'),
      hookTimeoutMs: reader.quantity(tags.hookTimeoutMs, 'tags.hookTimeoutMs', DEFAULTS.hookTimeoutMs, durationMs, 100, 3600_000),
    },
    metricsListen,
    policy,
  };
}

function optionalQuantity(reader: ConfigReader, value: unknown, where: string, min: number, max: number): number | undefined {
  return value === undefined || value === null ? undefined : reader.quantity(value, where, 0, durationMs, min, max);
}

/** tags.appIntervalMs: a duration, or 0 / "off" for no scheduled app-consistent points. */
function appInterval(reader: ConfigReader, value: unknown): number | undefined {
  if (value === 0 || value === 'off' || value === '0') return 0;
  return optionalQuantity(reader, value, 'tags.appIntervalMs (0 or "off": none)', PolicyBounds.minAppIntervalMs, PolicyBounds.maxAppIntervalMs);
}

export function loadAgentConfig(file: string): AgentConfig {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = fs.readFileSync(abs, 'utf8');
  } catch (err) {
    throw new FerryError(`cannot read config ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, ExitCode.usage);
  }
  if (isJsonText(text, abs)) return parseAgentConfig(text, abs);
  const cached = readCachedDocument(abs, text);
  if (cached !== undefined) return validateAgentConfig(cached, abs);
  const doc = parseConfigDocument(text, abs);
  const config = validateAgentConfig(doc, abs);
  writeCachedDocument(abs, text, doc);
  return config;
}
