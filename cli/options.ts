import { InvalidArgumentError } from 'commander';
import { parseDurationMs, parseHostPort, parseSizeBytes } from '../common/units';

export function hostPortOption(value: string): { host: string; port: number } {
  const hp = parseHostPort(value);
  if (!hp) throw new InvalidArgumentError('expected HOST:PORT, e.g. 0.0.0.0:7443');
  return hp;
}

export function durationOption(value: string): number {
  const ms = parseDurationMs(value);
  if (ms === undefined) throw new InvalidArgumentError('expected a duration such as 90s, 15m, 24h or 7d');
  return ms;
}

export function sizeOption(value: string): number {
  const bytes = parseSizeBytes(value);
  if (bytes === undefined) throw new InvalidArgumentError('expected a size such as 512MiB or 2GiB');
  return bytes;
}

export function countOption(value: string): number {
  const n = Number(value.trim());
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('expected a whole number of at least 1');
  return n;
}

export function formatOption(value: string): 'raw' | 'vhd' {
  if (value !== 'raw' && value !== 'vhd') throw new InvalidArgumentError('expected raw or vhd');
  return value;
}
