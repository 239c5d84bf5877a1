import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadAgentConfig } from '../../agent/config';
import { configCacheFile, isPlainJson, readCachedDocument } from '../../agent/config-cache';
import { writeAgentConfig } from '../../agent/config-writer';
import { ExitCode, FerryError } from '../../common/errors';
import { tempDirs } from '../helpers/temp-dirs';

const tmp = tempDirs();
const FP = 'ab:'.repeat(31) + 'ab';
const yaml = (name: string): string => `receiver:\n  url: wss://rx.example:7443\n  fingerprint: "${FP}"\nname: ${name}\nvolumes:\n  - id: root\n    path: ./disk.img\n`;

function configIn(dir: string, text: string): string {
  const file = path.join(dir, 'agent.yaml');
  fs.writeFileSync(file, text, { mode: 0o640 });
  return file;
}

function readCache(file: string): { version: number; source: string; doc: Record<string, unknown> } {
  return JSON.parse(fs.readFileSync(configCacheFile(file), 'utf8')) as { version: number; source: string; doc: Record<string, unknown> };
}

function usageError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(FerryError);
    expect((err as FerryError).exitCode).toBe(ExitCode.usage);
    return (err as Error).message;
  }
  throw new Error('accepted');
}

describe('agent config cache (the parsed form of a YAML config)', () => {
  it('is written on the first load and used by the next one', () => {
    const file = configIn(tmp('cfg-cache'), yaml('first'));
    expect(loadAgentConfig(file).name).toBe('first');
    const cache = readCache(file);
    expect(cache.source).toBe(yaml('first'));
    expect(fs.statSync(configCacheFile(file)).mode & 0o777).toBe(0o600);
    // The next load takes the document from the cache, not from the YAML (which says "first").
    fs.writeFileSync(configCacheFile(file), JSON.stringify({ ...cache, doc: { ...cache.doc, name: 'from-cache' } }), { mode: 0o600 });
    expect(loadAgentConfig(file).name).toBe('from-cache');
  });

  it('parses the YAML again when it changed, even to the same size, and refreshes the cache', () => {
    const file = configIn(tmp('cfg-stale'), yaml('aaaa'));
    loadAgentConfig(file);
    const mtime = fs.statSync(file).mtime;
    fs.writeFileSync(file, yaml('bbbb'));
    fs.utimesSync(file, mtime, mtime);
    expect(loadAgentConfig(file).name).toBe('bbbb');
    expect(readCache(file).source).toBe(yaml('bbbb'));
  });

  it('ignores a damaged cache and rewrites it', () => {
    const file = configIn(tmp('cfg-damaged'), yaml('good'));
    for (const damage of ['{"version":1,"sour', 'null', '[]', JSON.stringify({ version: 99, source: yaml('good'), doc: {} }), JSON.stringify({ version: 1, source: yaml('good') })]) {
      fs.writeFileSync(configCacheFile(file), damage, { mode: 0o600 });
      expect(loadAgentConfig(file).name).toBe('good');
      expect(readCache(file).doc.name).toBe('good');
    }
  });

  it('ignores a cache that others may write', () => {
    const file = configIn(tmp('cfg-untrusted'), yaml('real'));
    loadAgentConfig(file);
    const cache = readCache(file);
    fs.writeFileSync(configCacheFile(file), JSON.stringify({ ...cache, doc: { ...cache.doc, name: 'planted' } }));
    fs.chmodSync(configCacheFile(file), 0o666);
    expect(readCachedDocument(file, yaml('real'))).toBeUndefined();
    expect(loadAgentConfig(file).name).toBe('real');
  });

  it('checks a cached document as strictly as a parsed one', () => {
    const file = configIn(tmp('cfg-strict'), yaml('strict'));
    loadAgentConfig(file);
    const cache = readCache(file);
    fs.writeFileSync(configCacheFile(file), JSON.stringify({ ...cache, doc: { ...cache.doc, capture: 'turbo' } }), { mode: 0o600 });
    expect(usageError(() => loadAgentConfig(file))).toMatch(/capture must be auto, kernel, ebpf or scan/);
  });

  it('caches nothing for a config that is refused, nor for values JSON would change', () => {
    const dir = tmp('cfg-refused');
    const file = configIn(dir, `${yaml('x')}capture: turbo\n`);
    expect(usageError(() => loadAgentConfig(file))).toMatch(/capture must be/);
    expect(fs.existsSync(configCacheFile(file))).toBe(false);
    fs.writeFileSync(file, `${yaml('x')}scan:\n  intervalMs: .nan\n`);
    expect(usageError(() => loadAgentConfig(file))).toMatch(/scan.intervalMs must be between/);
    expect(usageError(() => loadAgentConfig(file))).toMatch(/scan.intervalMs must be between/);
    expect(fs.existsSync(configCacheFile(file))).toBe(false);
    expect(isPlainJson({ a: [1, 'b', null, true], c: { d: 2 } })).toBe(true);
    expect(isPlainJson({ a: Number.NaN })).toBe(false);
    expect(isPlainJson({ a: Number.POSITIVE_INFINITY })).toBe(false);
    expect(isPlainJson({ a: new Uint8Array(1) })).toBe(false);
  });

  it('is written by `ferry agent configure` (writeAgentConfig) for YAML, not for JSON', () => {
    const dir = tmp('cfg-write');
    const volumes = [{ id: 'root', path: path.join(dir, 'disk.img') }];
    const file = path.join(dir, 'agent.yaml');
    writeAgentConfig({ receiver: { url: 'wss://rx:1', fingerprint: FP }, name: 'written', volumes }, file);
    expect(readCache(file).source).toBe(fs.readFileSync(file, 'utf8'));
    expect(readCachedDocument(file, fs.readFileSync(file, 'utf8'))).toMatchObject({ name: 'written' });
    const json = path.join(dir, 'agent.json');
    writeAgentConfig({ receiver: { url: 'wss://rx:1', fingerprint: FP }, name: 'json', volumes }, json);
    expect(fs.existsSync(configCacheFile(json))).toBe(false);
    expect(loadAgentConfig(json).name).toBe('json');
  });
});
