import * as fs from 'fs';
import { ExitCode, FerryError } from '../common/errors';
import { usToIso } from '../common/time';
import { readFully, writeFully } from '../common/fsutil';
import { seekData } from '../native/addon';
import { isSafeId } from '../proto/ids';
import { Catalog, DamageRow, PointRow } from './catalog';
import { DataLayout } from './layout';
import { BlockSums, blockSumsOf, blocksOf, SUM_BLOCK, SumsAtPoint, UNKNOWN_SUM } from './storage/block-sums';
import { readCheckpointFile } from './storage/checkpoint';
import { JournalDamageError, undoRecordsNewestFirst } from './storage/journal';
import { cloneReplica, Replica } from './storage/replica';
import { vhdFixedFooter } from './vhd';
import { PointAgedOutError, RedoVolume } from './redo/redo-volume';
import { RetainedDataDamagedError } from './redo/retained-records';
import { redoBaseFile, withVolumeLock } from './volume-store';

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
  /** Blocks whose checksum was compared with the image (holes count as checked). */
  verifiedBlocks: number;
}

const COPY_CHUNK = 4 * 1024 * 1024;
/** Damaged ranges listed in a refusal, at most. */
const MAX_LISTED = 5;

/** Seqs whose change sets were lost (damaged spool records) and not yet healed by a repair. */
function lostSpans(damage: readonly DamageRow[]): Array<{ from: number; until: number; row: DamageRow }> {
  return damage
    .filter((d) => d.kind === 'spool' && d.seqFrom !== undefined)
    .map((d) => ({ from: d.seqFrom as number, until: d.state === 'resolved' ? (d.resolvedThroughSeq ?? Infinity) : Infinity, row: d }));
}

/** Why a point's image cannot be trusted, or undefined when it can. */
function pointDamage(p: PointRow, damage: readonly DamageRow[]): string | undefined {
  if (p.damaged) return p.damaged;
  const span = lostSpans(damage).find((s) => p.seq >= s.from && p.seq < s.until);
  if (span) {
    return `point ${p.id} (seq ${p.seq}) depends on change sets lost to damage (${span.row.file} at byte ${span.row.offset}, seqs from ${span.from}); ${
      span.until === Infinity ? 'a repair from the agent is pending' : `points from seq ${span.until} on are whole again`
    }`;
  }
  return undefined;
}

/**
 * The point `spec` names. `latest` and times only consider usable points: not cut during a
 * resync (accuracy none, unless `allowUnusable`), and not known to depend on damaged data.
 */
export function resolvePoint(catalog: Catalog, volumeId: string, spec: string, allowUnusable = false): PointRow {
  const all = catalog.points(volumeId);
  const damage = catalog.damage(volumeId);
  if (all.length === 0) throw new FerryError(`volume ${volumeId} has no recovery points yet`, ExitCode.notFound);
  if (/^\d+$/.test(spec)) {
    const p = all.find((x) => x.id === Number(spec));
    if (!p) throw new FerryError(`volume ${volumeId} has no point ${spec} (see: ferry points --volume ${volumeId})`, ExitCode.notFound);
    const why = pointDamage(p, damage);
    if (why) throw new FerryError(`refusing to export: ${why}`, ExitCode.damageFound);
    if (p.accuracy === 'none' && !allowUnusable) {
      throw new FerryError(`point ${p.id} was cut while a resync was running: its image is not consistent (use --force to export it anyway)`, ExitCode.notReady);
    }
    return p;
  }
  const points = all.filter((p) => (allowUnusable || p.accuracy !== 'none') && !pointDamage(p, damage));
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

/** The replica's block sums as a file of their own, copied before the replica is cloned. */
function snapshotSums(layout: DataLayout, volumeId: string, tmp: string): string | undefined {
  const file = layout.sumsFile(volumeId);
  if (!fs.existsSync(file)) return undefined;
  fs.copyFileSync(file, tmp, fs.constants.COPYFILE_FICLONE);
  return tmp;
}

/**
 * Checks every block of an exported image against the sum it must have at the point: the
 * sum a rolled-back undo record kept for it, else the replica's sum (taken before the clone:
 * a block apply changed since has an undo record newer than the point, so it is in `atPoint`).
 * Returns the damaged ranges, merged.
 */
function verifyImage(imageFd: number, size: number, sums: BlockSums, atPoint: SumsAtPoint): { checked: number; bad: Array<{ offset: number; length: number }> } {
  const bad: Array<{ offset: number; length: number }> = [];
  const chunkBlocks = COPY_CHUNK / SUM_BLOCK;
  const buf = Buffer.allocUnsafe(COPY_CHUNK);
  let checked = 0;
  for (let first = 0; first < sums.blocks; first += chunkBlocks) {
    const count = Math.min(chunkBlocks, sums.blocks - first);
    const start = first * SUM_BLOCK;
    const length = Math.min(size, start + count * SUM_BLOCK) - start;
    const expected = sums.read(first, count);
    for (let i = 0; i < count; i++) {
      const at = atPoint.expected(first + i);
      if (at !== undefined) expected[i] = at < 0 ? 0 : at;
    }
    const next = seekData(imageFd, start);
    const hole = next < 0 || next >= start + length;
    let actual: Uint32Array;
    if (hole) actual = new Uint32Array(count);
    else {
      const n = readFully(imageFd, buf, 0, length, start);
      if (n < length) buf.fill(0, n, length);
      actual = blockSumsOf(buf.subarray(0, length));
    }
    for (let i = 0; i < count; i++) {
      const b = first + i;
      if (atPoint.expected(b) === -1) continue; // a record from before sums: nothing to compare
      checked++;
      if (actual[i] === expected[i] && expected[i] !== UNKNOWN_SUM) continue;
      const last = bad[bad.length - 1];
      if (last && last.offset + last.length === b * SUM_BLOCK) last.length += SUM_BLOCK;
      else bad.push({ offset: b * SUM_BLOCK, length: SUM_BLOCK });
    }
  }
  return { checked, bad };
}

/**
 * Writes the image of a volume at a recovery point while replication goes on: clone the
 * replica (it may change under the copy), then apply every undo record newer than the point,
 * newest first. Any range the apply worker changed during the copy has its undo record in
 * the journal before the replica write, so winding back through the journal removes it.
 * Then every block of the image is checked against the sum it must have at the point: an
 * image that depends on damaged data (replica blocks, undo records) is refused, never written.
 */
export function exportPoint(req: ExportRequest): ExportResult {
  if (!isSafeId(req.volumeId)) throw new FerryError(`--volume ${JSON.stringify(req.volumeId)} is not a valid volume id`, ExitCode.usage);
  const layout = new DataLayout(req.dataDir);
  if (!fs.existsSync(layout.catalogFile)) throw new FerryError(`${req.dataDir} is not a receiver data directory (no catalog.db)`, ExitCode.notFound);
  const catalog = Catalog.open(layout.catalogFile, { readonly: true });
  try {
    const volume = catalog.volume(req.volumeId);
    if (!volume) throw new FerryError(`no volume ${req.volumeId} in ${req.dataDir}`, ExitCode.notFound);
    if (volume.damaged) throw new FerryError(`refusing to export: ${volume.damaged}`, ExitCode.damageFound);
    const tmp = `${req.out}.partial-${process.pid}`;
    const sumsTmp = `${req.out}.sums-${process.pid}`;
    const result = withVolumeLock(layout, req.volumeId, 'shared', true, () => {
      const point = resolvePoint(catalog, req.volumeId, req.point, req.allowUnusable);
      const checkpoint = readCheckpointFile(layout.checkpointFile(req.volumeId));
      if (checkpoint.lost) {
        throw new FerryError(`the checkpoint of volume ${req.volumeId} is damaged (${layout.checkpointFile(req.volumeId)}): the receiver recovers it when it opens the volume`, ExitCode.notReady);
      }
      if (point.seq > checkpoint.seq) {
        throw new FerryError(
          `point ${point.id} (seq ${point.seq}) is not applied to the replica yet (applied through seq ${checkpoint.seq}); retry shortly`,
          ExitCode.notReady,
        );
      }
      if (fs.existsSync(redoBaseFile(layout, req.volumeId))) return exportRedo(layout, req, point, volume.sizeBytes, tmp);
      const src = fs.openSync(layout.replicaFile(req.volumeId), 'r');
      let out: Replica | undefined;
      let sums: BlockSums | undefined;
      try {
        const sumsFile = snapshotSums(layout, req.volumeId, sumsTmp);
        const dstFd = fs.openSync(tmp, 'w', 0o600);
        fs.closeSync(dstFd);
        out = Replica.open(tmp, volume.sizeBytes);
        const cloneMethod = cloneReplica(src, out.fd, volume.sizeBytes);
        const atPoint = new SumsAtPoint();
        let undoRecords = 0;
        try {
          for (const rec of undoRecordsNewestFirst(layout.journalDir(req.volumeId), point.seq)) {
            if (rec.zero) out.zero(rec.offset, rec.length);
            else out.write(rec.offset, rec.data);
            const { first, end } = blocksOf(rec.offset, rec.length);
            atPoint.note(first, end, rec.oldSums);
            undoRecords++;
          }
        } catch (err) {
          if (!(err instanceof JournalDamageError)) throw err;
          throw new FerryError(`refusing to export point ${point.id} of ${req.volumeId}: it depends on ${err.message}`, ExitCode.damageFound);
        }
        let verifiedBlocks = 0;
        if (sumsFile) {
          sums = BlockSums.open(sumsFile, volume.sizeBytes, true);
          const { checked, bad } = verifyImage(out.fd, volume.sizeBytes, sums, atPoint);
          verifiedBlocks = checked;
          if (bad.length > 0) {
            const listed = bad
              .slice(0, MAX_LISTED)
              .map((r) => `${r.offset}+${r.length}`)
              .join(', ');
            throw new FerryError(
              `refusing to export point ${point.id} of ${req.volumeId}: ${bad.length} range(s) of its image do not match their checksums (volume bytes ${listed}${bad.length > MAX_LISTED ? ', ...' : ''}); ` +
                `the replica (${layout.replicaFile(req.volumeId)}) or its history there is damaged: see \`ferry receiver verify\``,
              ExitCode.damageFound,
            );
          }
        }
        if (req.format === 'vhd') writeFully(out.fd, vhdFixedFooter(volume.sizeBytes), volume.sizeBytes);
        fs.fsyncSync(out.fd);
        return { point, cloneMethod, undoRecords, verifiedBlocks };
      } catch (err) {
        fs.rmSync(tmp, { force: true });
        throw err;
      } finally {
        out?.close();
        sums?.close();
        fs.rmSync(sumsTmp, { force: true });
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

/**
 * The image of a point of a redo volume (receiver/redo/): the replica (the oldest point) with
 * the newest retained version <= the point of every range written over it, read through the
 * index; every retained record's CRC is checked as it is read. Runs under the volume's shared
 * lock (no advance meanwhile). Damage or an aged-out point refuses: nothing is written.
 */
function exportRedo(layout: DataLayout, req: ExportRequest, point: PointRow, sizeBytes: number, tmp: string): Omit<ExportResult, 'bytes'> {
  const volume = RedoVolume.openReadOnly({ dir: layout.volumeDir(req.volumeId), spoolDir: layout.spoolDir(req.volumeId), sizeBytes });
  const fd = fs.openSync(tmp, 'w+', 0o600);
  try {
    let cloneMethod: 'reflink' | 'sparse-copy';
    try {
      cloneMethod = volume.exportTo(fd, point.seq);
    } catch (err) {
      if (err instanceof PointAgedOutError) throw new FerryError(`point ${point.id} of ${req.volumeId}: ${err.message}`, ExitCode.notFound);
      if (err instanceof RetainedDataDamagedError) {
        throw new FerryError(`refusing to export point ${point.id} of ${req.volumeId}: it depends on damaged data: ${err.message}`, ExitCode.damageFound);
      }
      throw err;
    }
    if (req.format === 'vhd') writeFully(fd, vhdFixedFooter(sizeBytes), sizeBytes);
    fs.fsyncSync(fd);
    return { point, cloneMethod, undoRecords: 0, verifiedBlocks: 0 };
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  } finally {
    fs.closeSync(fd);
    volume.close();
  }
}
