import { Command } from 'commander';
import * as fs from 'fs';
import { ExitCode, FerryError } from '../common/errors';
import { usToIso } from '../common/time';
import { formatBytes } from '../common/units';
import { isSafeId } from '../proto/ids';
import { Catalog } from '../receiver/catalog';
import { exportPoint, ExportFormat } from '../receiver/export';
import { DataLayout } from '../receiver/layout';
import { readCheckpoint } from '../receiver/storage/checkpoint';
import { formatOption, textFlag } from './options';

function openCatalog(dataDir: string): { catalog: Catalog; layout: DataLayout } {
  const layout = new DataLayout(dataDir);
  if (!fs.existsSync(layout.catalogFile)) throw new FerryError(`${dataDir} is not a receiver data directory (no catalog.db)`, ExitCode.notFound);
  return { catalog: Catalog.open(layout.catalogFile, { readonly: true }), layout };
}

export function pointsCommand(): Command {
  return new Command('points')
    .description('list recovery points (id, time, kind, accuracy, seq)')
    .requiredOption('--data <dir>', 'receiver data directory')
    .option('--volume <id>', 'only this volume')
    .option('--json', 'machine-readable output')
    .action((opts: { data: string; volume?: string; json?: boolean }) => {
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

export function exportCommand(): Command {
  return new Command('export')
    .description('write the image of a volume at a recovery point (replication keeps running)')
    .requiredOption('--data <dir>', 'receiver data directory')
    .requiredOption('--volume <id>', 'volume id')
    .requiredOption('--point <id|latest|time>', 'point id, "latest", or ISO-8601 time (newest point at or before it)')
    .requiredOption('--out <file>', 'output image file')
    .addOption(textFlag('--format <raw|vhd>', 'raw image or fixed VHD', 'raw').argParser(formatOption))
    .option('--force', 'also export a point cut while a resync ran (not consistent)')
    .action((opts: { data: string; volume: string; point: string; out: string; format: ExportFormat; force?: boolean }) => {
      const started = Date.now();
      const result = exportPoint({ dataDir: opts.data, volumeId: opts.volume, point: opts.point, out: opts.out, format: opts.format, allowUnusable: opts.force === true });
      const p = result.point;
      process.stdout.write(
        `exported ${opts.volume} at point ${p.id} (seq ${p.seq}, ${usToIso(p.timeUs)}, ${p.kind}, ${p.accuracy}) to ${opts.out}: ` +
          `${formatBytes(result.bytes)} ${opts.format}, ${result.cloneMethod}, ${result.undoRecords} undo records, ${Date.now() - started} ms\n`,
      );
    });
}
