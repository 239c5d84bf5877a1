import * as fs from 'fs';
import { ExitCode, FerryError } from '../common/errors';
import { usToIso } from '../common/time';
import { writeFully } from '../common/fsutil';
import { cloneFile, isReflinkUnsupported, seekData, seekHole } from '../native/addon';
import { isSafeId } from '../proto/ids';
import { rollBack } from './apply/apply-batch';
import { Catalog, PointRow } from './catalog';
import { DataLayout } from './layout';
import { readCheckpoint } from './storage/checkpoint';
import { undoRecordsNewestFirst } from './storage/journal';
import { Replica } from './storage/replica';
import { vhdFixedFooter } from './vhd';
import { withVolumeLock } from './volume-store';

export type ExportFormat = 'raw' | 'vhd';

export interface ExportRequest {
  dataDir: string;
  volumeId: string;
  /** A point id, `latest`, or an ISO-8601 time (the newest point at or before it). */
  point: string;
  out: string;
  format: ExportFormat;
  /** Also export a point cut while a resync ran (accuracy none: its image is not consistent). */
  allowUnusable?: boolean;
}

export interface ExportResult {
  point: PointRow;
  bytes: number;
  cloneMethod: 'reflink' | 'sparse-copy';
  undoRecords: number;
}

const COPY_CHUNK = 4 * 1024 * 1024;

/**
 * The point `spec` names. `latest` and times only consider usable points; a point cut during
 * a resync (accuracy none) is refused unless `allowUnusable`.
 */
export function resolvePoint(catalog: Catalog, volumeId: string, spec: string, allowUnusable = false): PointRow {
  const all = catalog.points(volumeId);
  if (all.length === 0) throw new FerryError(`volume ${volumeId} has no recovery points yet`, ExitCode.notFound);
  if (/^\d+$/.test(spec)) {
    const p = all.find((x) => x.id === Number(spec));
    if (!p) throw new FerryError(`volume ${volumeId} has no point ${spec} (see: ferry points --volume ${volumeId})`, ExitCode.notFound);
    if (p.accuracy === 'none' && !allowUnusable) {
      throw new FerryError(`point ${p.id} was cut while a resync was running: its image is not consistent (use --force to export it anyway)`, ExitCode.notReady);
    }
    return p;
  }
  const points = allowUnusable ? all : all.filter((p) => p.accuracy !== 'none');
  if (points.length === 0) throw new FerryError(`volume ${volumeId} has no usable recovery point yet (its initial resync has not finished)`, ExitCode.notReady);
  if (spec === 'latest') return points[points.length - 1];
  const ms = Date.parse(spec);
  if (Number.isNaN(ms)) throw new FerryError(`--point must be a point id, "latest" or an ISO-8601 time, not ${JSON.stringify(spec)}`, ExitCode.usage);
  const atOrBefore = points.filter((p) => p.timeUs <= ms * 1000);
  if (atOrBefore.length === 0) {
    throw new FerryError(`volume ${volumeId} has no point at or before ${new Date(ms).toISOString()} (oldest: ${usToIso(points[0].timeUs)})`, ExitCode.notFound);
  }
  return atOrBefore.reduce((best, p) => (p.timeUs > best.timeUs || (p.timeUs === best.timeUs && p.seq > best.seq) ? p : best));
}

/** Copies the replica: a reflink where the filesystem has them, else only its data extents. */
function cloneReplica(srcFd: number, dstFd: number, size: number): 'reflink' | 'sparse-copy' {
  try {
    cloneFile(srcFd, dstFd);
    return 'reflink';
  } catch (err) {
    if (!isReflinkUnsupported(err)) throw err;
  }
  fs.ftruncateSync(dstFd, size);
  const buf = Buffer.allocUnsafe(COPY_CHUNK);
  let pos = 0;
  while (pos < size) {
    const dataStart = seekData(srcFd, pos);
    if (dataStart < 0 || dataStart >= size) break;
    const dataEnd = Math.min(size, Math.max(seekHole(srcFd, dataStart), dataStart));
    for (let off = dataStart; off < dataEnd; ) {
      const n = fs.readSync(srcFd, buf, 0, Math.min(COPY_CHUNK, dataEnd - off), off);
      if (n === 0) break;
      writeFully(dstFd, buf.subarray(0, n), off);
      off += n;
    }
    pos = dataEnd;
  }
  return 'sparse-copy';
}

/**
 * Writes the image of a volume at a recovery point while replication goes on: clone the
 * replica (it may change under the copy), then apply every undo record newer than the point,
 * newest first. Any range the apply worker changed during the copy has its undo record in
 * the journal before the replica write, so winding back through the journal removes it.
 */
export function exportPoint(req: ExportRequest): ExportResult {
  if (!isSafeId(req.volumeId)) throw new FerryError(`--volume ${JSON.stringify(req.volumeId)} is not a valid volume id`, ExitCode.usage);
  const layout = new DataLayout(req.dataDir);
  if (!fs.existsSync(layout.catalogFile)) throw new FerryError(`${req.dataDir} is not a receiver data directory (no catalog.db)`, ExitCode.notFound);
  const catalog = Catalog.open(layout.catalogFile, { readonly: true });
  try {
    const volume = catalog.volume(req.volumeId);
    if (!volume) throw new FerryError(`no volume ${req.volumeId} in ${req.dataDir}`, ExitCode.notFound);
    const tmp = `${req.out}.partial-${process.pid}`;
    const result = withVolumeLock(layout, req.volumeId, 'shared', true, () => {
      const point = resolvePoint(catalog, req.volumeId, req.point, req.allowUnusable);
      const applied = readCheckpoint(layout.checkpointFile(req.volumeId));
      if (point.seq > applied) {
        throw new FerryError(
          `point ${point.id} (seq ${point.seq}) is not applied to the replica yet (applied through seq ${applied}); retry shortly`,
          ExitCode.notReady,
        );
      }
      const src = fs.openSync(layout.replicaFile(req.volumeId), 'r');
      let out: Replica | undefined;
      try {
        const dstFd = fs.openSync(tmp, 'w', 0o600);
        fs.closeSync(dstFd);
        out = Replica.open(tmp, volume.sizeBytes);
        const cloneMethod = cloneReplica(src, out.fd, volume.sizeBytes);
        const undoRecords = rollBack(undoRecordsNewestFirst(layout.journalDir(req.volumeId), point.seq), out);
        if (req.format === 'vhd') writeFully(out.fd, vhdFixedFooter(volume.sizeBytes), volume.sizeBytes);
        fs.fsyncSync(out.fd);
        return { point, cloneMethod, undoRecords };
      } catch (err) {
        fs.rmSync(tmp, { force: true });
        throw err;
      } finally {
        out?.close();
        fs.closeSync(src);
      }
    });
    if (!result) throw new Error('unreachable: a waiting lock always runs');
    fs.renameSync(tmp, req.out);
    return { ...result, bytes: volume.sizeBytes + (req.format === 'vhd' ? 512 : 0) };
  } finally {
    catalog.close();
  }
}
