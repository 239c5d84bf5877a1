import { Command } from 'commander';
import * as fs from 'fs';
import * as path from 'path';
import { ExitCode, FerryError } from '../common/errors';
import { groupPointsOf } from '../control/plane';
import { ControlStore } from '../control/store';
import type { GroupRound } from '../control/model';
import { usToIso } from '../common/time';
import { formatBytes } from '../common/units';
import { isSafeId } from '../proto/ids';
import { Catalog, PointRow } from '../receiver/catalog';
import { exportPoint, ExportFormat } from '../receiver/export';
import { DataLayout } from '../receiver/layout';
import { readCheckpoint } from '../receiver/storage/checkpoint';
import { formatOption, textFlag } from './options';
import { COMMAND_DESCRIPTIONS } from './command-index';

function openCatalog(dataDir: string): { catalog: Catalog; layout: DataLayout } {
  const layout = new DataLayout(dataDir);
  if (!fs.existsSync(layout.catalogFile)) throw new FerryError(`${dataDir} is not a receiver data directory (no catalog.db)`, ExitCode.notFound);
  return { catalog: Catalog.open(layout.catalogFile, { readonly: true }), layout };
}

/** A group point: every member volume's point of one done round. */
interface GroupPoint {
  round: GroupRound;
  points: Array<PointRow & { machine: string; time: string; exportable: boolean }>;
}

/** The done rounds of a group with their points, newest first (read-only, safe while the receiver runs). */
function readGroupPoints(dataDir: string, groupId: string): GroupPoint[] {
  if (!isSafeId(groupId)) throw new FerryError(`--group ${JSON.stringify(groupId)} is not a valid group name`, ExitCode.usage);
  const { catalog, layout } = openCatalog(dataDir);
  const store = ControlStore.open(layout.catalogFile, { readonly: true });
  try {
    if (!store.hasTables || !store.group(groupId)) throw new FerryError(`no group ${groupId} in ${dataDir}`, ExitCode.notFound);
    const names = new Map(store.machines().map((m) => [m.id, m.name]));
    const owners = new Map(catalog.volumes().map((v) => [v.id, v.agentId]));
    const applied = new Map<string, number>();
    return groupPointsOf(store, catalog, groupId).map(({ round, points }) => ({
      round,
      points: points.map((p) => {
        if (!applied.has(p.volumeId)) applied.set(p.volumeId, readCheckpoint(layout.checkpointFile(p.volumeId)));
        const owner = owners.get(p.volumeId) ?? '';
        return { ...p, machine: names.get(owner) ?? owner, time: usToIso(p.timeUs), exportable: p.seq <= (applied.get(p.volumeId) ?? 0) };
      }),
    }));
  } finally {
    store.close();
    catalog.close();
  }
}

function printGroupPoints(groupPoints: GroupPoint[], json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(groupPoints, null, 2)}\n`);
    return;
  }
  const lines = [['ROUND', 'TIME', 'KIND', 'HOLD', 'MACHINE', 'VOLUME', 'POINT', 'SEQ', 'ACCURACY', 'STATE'].join('\t')];
  for (const { round, points } of groupPoints) {
    for (const p of points) {
      const hold = round.holdMs === null ? '-' : `${Math.round(round.holdMs)}ms`;
      lines.push([round.id, new Date(round.startedMs).toISOString(), round.app ? 'app' : 'crash', hold, p.machine, p.volumeId, p.id, p.seq, p.accuracy, p.exportable ? 'ready' : 'applying'].join('\t'));
    }
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

export function pointsCommand(): Command {
  return new Command('points')
    .description(COMMAND_DESCRIPTIONS.points)
    .requiredOption('--data <dir>', 'receiver data directory')
    .option('--volume <id>', 'only this volume')
    .option('--group <name>', "a protection group's points: every member volume's point of each done round")
    .option('--json', 'machine-readable output')
    .action((opts: { data: string; volume?: string; group?: string; json?: boolean }) => {
      if (opts.group !== undefined) {
        if (opts.volume !== undefined) throw new FerryError('--volume and --group cannot be used together', ExitCode.usage);
        printGroupPoints(readGroupPoints(opts.data, opts.group), opts.json === true);
        return;
      }
      if (opts.volume !== undefined && !isSafeId(opts.volume)) throw new FerryError(`--volume ${JSON.stringify(opts.volume)} is not a valid volume id`, ExitCode.usage);
      const { catalog, layout } = openCatalog(opts.data);
      try {
        if (opts.volume !== undefined && !catalog.volume(opts.volume)) throw new FerryError(`no volume ${opts.volume} in ${opts.data}`, ExitCode.notFound);
        const applied = new Map<string, number>();
        const rows = catalog.points(opts.volume).map((p) => {
          if (!applied.has(p.volumeId)) applied.set(p.volumeId, readCheckpoint(layout.checkpointFile(p.volumeId)));
          return { ...p, time: usToIso(p.timeUs), exportable: p.seq <= (applied.get(p.volumeId) ?? 0) };
        });
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
          return;
        }
        const lines = [['ID', 'VOLUME', 'TIME', 'KIND', 'ACCURACY', 'SEQ', 'ORIGIN', 'STATE'].join('\t')];
        for (const r of rows) {
          lines.push([r.id, r.volumeId, r.time, r.kind, r.accuracy, r.seq, r.origin, r.exportable ? 'ready' : 'applying'].join('\t'));
        }
        process.stdout.write(`${lines.join('\n')}\n`);
      } finally {
        catalog.close();
      }
    });
}

interface ExportOptions {
  data: string;
  volume?: string;
  point?: string;
  group?: string;
  round?: string;
  out: string;
  format: ExportFormat;
  force?: boolean;
}

/** A file name part from a machine name: safe characters only. */
function fileSafe(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '_') || 'machine';
}

/** Exports every member volume of a group point at its cut, one image per volume, into `dir`. */
function exportGroupPoint(opts: ExportOptions & { group: string; round: string }): void {
  if (!/^\d+$/.test(opts.round)) throw new FerryError(`--round must be a round number (see: ferry points --group ${opts.group}), not ${JSON.stringify(opts.round)}`, ExitCode.usage);
  const roundId = Number(opts.round);
  const groupPoint = readGroupPoints(opts.data, opts.group).find((g) => g.round.id === roundId);
  if (!groupPoint) throw new FerryError(`group ${opts.group} has no group point of round ${roundId} (not done, pruned, or another group's; see: ferry points --group ${opts.group})`, ExitCode.notFound);
  const notApplied = groupPoint.points.filter((p) => !p.exportable);
  if (notApplied.length > 0) {
    throw new FerryError(`round ${roundId} is not applied to the replica of ${notApplied.map((p) => p.volumeId).join(', ')} yet; retry shortly`, ExitCode.notReady);
  }
  fs.mkdirSync(opts.out, { recursive: true });
  const started = Date.now();
  const ext = opts.format === 'vhd' ? 'vhd' : 'img';
  for (const p of groupPoint.points) {
    const out = path.join(opts.out, `${fileSafe(p.machine)}-${p.volumeId}.${ext}`);
    const result = exportPoint({ dataDir: opts.data, volumeId: p.volumeId, point: String(p.id), out, format: opts.format, allowUnusable: opts.force === true });
    process.stdout.write(`exported ${p.machine} ${p.volumeId} at point ${p.id} (seq ${p.seq}, ${p.accuracy}) to ${out}: ${formatBytes(result.bytes)} ${opts.format}\n`);
  }
  process.stdout.write(`group ${opts.group} round ${roundId}: ${groupPoint.points.length} volume(s) exported to ${opts.out} in ${Date.now() - started} ms\n`);
}

export function exportCommand(): Command {
  return new Command('export')
    .description(COMMAND_DESCRIPTIONS.export)
    .requiredOption('--data <dir>', 'receiver data directory')
    .option('--volume <id>', 'volume id')
    .option('--point <id|latest|time>', 'point id, "latest", or ISO-8601 time (newest point at or before it)')
    .option('--group <name>', 'a protection group: export its group point --round into the directory --out')
    .option('--round <n>', 'the group round (see: ferry points --group)')
    .requiredOption('--out <file|dir>', 'output image file (a directory with --group)')
    .addOption(textFlag('--format <raw|vhd>', 'raw image or fixed VHD', 'raw').argParser(formatOption))
    .option('--force', 'also export a point cut while a resync ran (not consistent)')
    .action((opts: ExportOptions) => {
      if (opts.group !== undefined || opts.round !== undefined) {
        if (opts.group === undefined || opts.round === undefined) throw new FerryError('--group and --round go together', ExitCode.usage);
        if (opts.volume !== undefined || opts.point !== undefined) throw new FerryError('--group/--round and --volume/--point cannot be used together', ExitCode.usage);
        exportGroupPoint({ ...opts, group: opts.group, round: opts.round });
        return;
      }
      if (opts.volume === undefined || opts.point === undefined) throw new FerryError('export needs --volume and --point (or --group and --round)', ExitCode.usage);
      const started = Date.now();
      const result = exportPoint({ dataDir: opts.data, volumeId: opts.volume, point: opts.point, out: opts.out, format: opts.format, allowUnusable: opts.force === true });
      const p = result.point;
      process.stdout.write(
        `exported ${opts.volume} at point ${p.id} (seq ${p.seq}, ${usToIso(p.timeUs)}, ${p.kind}, ${p.accuracy}) to ${opts.out}: ` +
          `${formatBytes(result.bytes)} ${opts.format}, ${result.cloneMethod}, ${result.undoRecords} undo records, ${Date.now() - started} ms\n`,
      );
    });
}
