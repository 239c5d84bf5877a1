import { Command, InvalidArgumentError, Option } from 'commander';
import { parseDurationMs } from '../common/units';
import type { ControlEvent } from '../control/model';
import { clientFor, CommonApiOptions, formatTable, printJson, withApiOptions } from './api-command';
import { COMMAND_DESCRIPTIONS } from './command-index';

interface EventsOptions extends CommonApiOptions {
  since?: number;
  severity?: 'info' | 'warning' | 'error';
  subject?: string;
  kind?: string;
  limit?: number;
  follow?: boolean;
}

/** `--since 10m` (that long ago) or an ISO time -> ms since the epoch (pure; `now` for tests). */
export function parseSince(text: string, now = Date.now()): number {
  const ago = parseDurationMs(text);
  if (ago !== undefined) return now - ago;
  if (/^\d{4}-\d{2}-\d{2}/.test(text)) {
    const t = Date.parse(text);
    if (Number.isFinite(t)) return t;
  }
  throw new InvalidArgumentError('expected a duration ago (10m, 2h, 7d) or an ISO time (2026-01-31T12:00:00Z)');
}

export function eventsTable(events: ControlEvent[]): string {
  return formatTable(
    ['TIME', 'SEVERITY', 'KIND', 'SUBJECT', 'TEXT'],
    events.map((e) => [new Date(e.timeMs).toISOString(), e.severity + (e.acknowledged ? ' (ack)' : ''), e.kind, `${e.subjectKind} ${e.subjectId}`, e.text]),
  );
}

function limitOption(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 10_000) throw new InvalidArgumentError('expected 1..10000');
  return n;
}

export function eventsCommand(): Command {
  return withApiOptions(new Command('events'))
    .description(COMMAND_DESCRIPTIONS.events)
    .option('--since <when>', 'only events since a duration ago (10m, 24h) or an ISO time', (value: string) => parseSince(value))
    .addOption(new Option('--severity <level>', 'only events at or above this severity').choices(['info', 'warning', 'error']))
    .option('--subject <id>', 'only events about this group, machine or volume')
    .option('--kind <kind>', 'only events of this kind (e.g. rpo-exceeded)')
    .option('--limit <n>', 'at most this many (default 1000)', limitOption)
    .option('--follow', 'after the list, print new events as they happen (Ctrl-C to stop)')
    .action(async (opts: EventsOptions) => {
      const client = clientFor(opts);
      const { events } = await client.get<{ events: ControlEvent[] }>('/api/v1/events', { since: opts.since, severity: opts.severity, subject: opts.subject, kind: opts.kind, limit: opts.limit });
      if (opts.json) printJson(events);
      else process.stdout.write(events.length === 0 ? 'no events\n' : eventsTable(events));
      if (!opts.follow) return;
      const stop = new AbortController();
      process.once('SIGINT', () => stop.abort());
      await client.stream(
        '/api/v1/events/stream',
        (data) => {
          const e = JSON.parse(data) as ControlEvent;
          process.stdout.write(opts.json ? `${JSON.stringify(e)}\n` : eventsTable([e]).split('\n')[1] + '\n');
        },
        stop.signal,
      );
    });
}
