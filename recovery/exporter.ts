import { spawn } from 'child_process';
import * as path from 'path';

/**
 * Writes the image of a volume at a point to a file, in a child `ferry export` (the receiver's
 * event loop keeps serving agents while a volume-sized image is written; the export reads the
 * catalog and the journal like the CLI does beside a running receiver).
 */

export type PointExporter = (request: { dataDir: string; volumeId: string; pointId: number; out: string; format?: 'raw' | 'vhd'; signal?: AbortSignal }) => Promise<void>;

const CLI_MAIN = path.join(__dirname, '..', 'cli', 'main.js');

export const exportWithCli: PointExporter = (r) =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_MAIN, 'export', '--data', r.dataDir, '--volume', r.volumeId, '--point', String(r.pointId), '--out', r.out, '--format', r.format ?? 'raw'], {
      stdio: ['ignore', 'ignore', 'pipe'],
      signal: r.signal,
    });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      if (err.length < 4096) err += d.toString();
    });
    child.once('error', (e) => reject(new Error(`export of ${r.volumeId} at point ${r.pointId}: ${e.message}`)));
    child.once('exit', (code) => {
      if (code === 0) resolve();
      else reject(new Error(`export of ${r.volumeId} at point ${r.pointId} failed (exit ${code}): ${err.trim().split('\n').pop() ?? ''}`));
    });
  });
