import { Command, InvalidArgumentError } from 'commander';
import { parseDurationMs } from '../common/units';
import { ApiClient } from './api-client';
import { ApiFlags, readSavedLogin, resolveTarget } from './api-config';

/** Flags every management command takes. */
export interface CommonApiOptions extends ApiFlags {
  json?: boolean;
}

/** Adds --api, --token, --fingerprint and --json to a management command. */
export function withApiOptions(cmd: Command): Command {
  return cmd
    .option('--api <url>', 'management API https://HOST:PORT (default: FERRY_API, else the saved login)')
    .option('--token <token>', 'bearer token (default: FERRY_TOKEN, else the saved login)')
    .option('--fingerprint <sha256>', "the API certificate's SHA-256 fingerprint (default: FERRY_FINGERPRINT, else the saved login)")
    .option('--json', 'print JSON instead of a table');
}

export function clientFor(opts: ApiFlags): ApiClient {
  return new ApiClient(resolveTarget(opts, process.env, readSavedLogin()));
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** A policy duration: 30s, 5m, 1h, 2d, or off / 0 (where the policy allows it). */
export function policyDurationOption(value: string): number {
  const v = value.trim().toLowerCase();
  if (v === 'off' || v === '0') return 0;
  const ms = parseDurationMs(v);
  if (ms === undefined) throw new InvalidArgumentError('expected a duration such as 30s, 5m, 1h or 7d (or off)');
  return ms;
}

export function onOffOption(value: string): boolean {
  const v = value.trim().toLowerCase();
  if (['on', 'true', 'yes', '1'].includes(v)) return true;
  if (['off', 'false', 'no', '0'].includes(v)) return false;
  throw new InvalidArgumentError('expected on or off');
}

/** Rows as aligned columns under a header (pure). */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return `${[line(header), ...rows.map(line)].join('\n')}\n`;
}

export function formatAge(ms: number, now = Date.now()): string {
  if (ms <= 0) return 'never';
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 120) return `${s}s ago`;
  if (s < 7200) return `${Math.round(s / 60)}m ago`;
  if (s < 172_800) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86_400)}d ago`;
}
