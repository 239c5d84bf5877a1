import * as fs from 'fs';
import { InvalidArgumentError, Option } from 'commander';
import { ExitCode, FerryError } from '../common/errors';
import { formatDuration, formatSize, parseDurationMs, parseHostPort, parseSizeBytes } from '../common/units';

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

// Options with a default: --help shows the default the way an operator would type it
// ("(default: 24h)", "(default: 1GiB)", "(default: 0.0.0.0:7443)"), never as milliseconds,
// bytes or JSON, while the program gets the parsed value.

/** A duration option; the program gets milliseconds. */
export function durationFlag(flags: string, description: string, defaultMs: number): Option {
  return new Option(flags, description).argParser(durationOption).default(defaultMs, formatDuration(defaultMs));
}

/** A size option; the program gets bytes. */
export function sizeFlag(flags: string, description: string, defaultBytes: number): Option {
  return new Option(flags, description).argParser(sizeOption).default(defaultBytes, formatSize(defaultBytes));
}

/** A HOST:PORT option; the program gets { host, port }. */
export function hostPortFlag(flags: string, description: string, defaultValue: { host: string; port: number }): Option {
  const shown = defaultValue.host.includes(':') ? `[${defaultValue.host}]:${defaultValue.port}` : `${defaultValue.host}:${defaultValue.port}`;
  return new Option(flags, description).argParser(hostPortOption).default(defaultValue, shown);
}

/** A text option (a name, a path, a choice), its default shown as typed, without quotes. */
export function textFlag(flags: string, description: string, defaultValue: string, shown = defaultValue): Option {
  return new Option(flags, description).default(defaultValue, shown);
}

/** A repeatable option: each use adds one value; none by default. */
export function listFlag<T>(flags: string, description: string, parse: (value: string) => T): Option {
  return new Option(flags, description).argParser((value: string, previous: T[]) => [...previous, parse(value)]).default([], 'none');
}

/**
 * The first line of a secret file (a passphrase, a password): `what` names it in the errors,
 * e.g. "--password-file"; a file that cannot be read or is empty is a usage error.
 */
export function readSecretFile(file: string, what: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new FerryError(`cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, ExitCode.usage);
  }
  const line = text.split(/\r?\n/)[0];
  if (line === '') throw new FerryError(`${what} ${file} is empty`, ExitCode.usage);
  return line;
}
