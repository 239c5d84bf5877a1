// Reads retained spool records by location for the redo read path (index -> record), with
// their CRC checked, and answers damage with one typed error naming the file, the seqs and
// the volume range that depend on it.

import * as fs from 'fs';
import * as path from 'path';
import { decodeFrame, ferry } from '../../proto/frames';
import { accuracyName, ChangeExtent, ExtentKind } from '../../proto/types';
import { validateChangeSet } from '../../proto/validate';
import { StorageDamage } from '../storage/damage';
import { RecordDamageError } from '../storage/record-file';
import { readSpoolFrameAt, SPOOL_SEGMENT_EXT } from '../storage/spool';
import { segmentFileName } from '../storage/segments';
import { RetainedExtent } from './visible-pieces';

/** Retained data the point needs cannot be read: never answered with other bytes. */
export class RetainedDataDamagedError extends Error {
  constructor(readonly damage: StorageDamage) {
    super(`${damage.file} at byte ${damage.offset}: ${damage.detail}`);
    this.name = 'RetainedDataDamagedError';
  }
}

/** The spool segments of one volume, opened on demand for reads (the Spool owns appends). */
export class RetainedRecords {
  private readonly fds = new Map<number, number>();

  constructor(
    private readonly spoolDir: string,
    private readonly volumeBytes: number,
  ) {}

  fileOf(segment: number): string {
    return path.join(this.spoolDir, segmentFileName(segment, SPOOL_SEGMENT_EXT));
  }

  /**
   * The uncompressed payload of the record holding `ext`. Throws RetainedDataDamagedError when
   * the record is gone, fails its CRC, or does not hold the extent the index says it holds.
   */
  payloadOf(ext: RetainedExtent, needed: { offset: number; length: number }): Buffer {
    const file = this.fileOf(ext.segment);
    const damaged = (detail: string): RetainedDataDamagedError =>
      new RetainedDataDamagedError({ kind: 'spool', file, offset: ext.recordOffset, length: 0, seqFrom: ext.seq, seqTo: ext.seq, volumeOffset: needed.offset, volumeLength: needed.length, detail });
    let fd = this.fds.get(ext.segment);
    try {
      if (fd === undefined) {
        fd = fs.openSync(file, 'r');
        this.fds.set(ext.segment, fd);
      }
      const rec = readSpoolFrameAt(fd, ext.recordOffset);
      if (ext.seq < rec.firstSeq || ext.seq > rec.lastSeq) throw damaged(`the record holds seqs ${rec.firstSeq}..${rec.lastSeq}, not ${ext.seq}`);
      const cs = decodeFrame(rec.frame).changeSet;
      if (!cs) throw damaged('the record holds no change set');
      return validateChangeSet(cs, this.volumeBytes, false).data;
    } catch (err) {
      if (err instanceof RetainedDataDamagedError) throw err;
      if (err instanceof RecordDamageError) throw damaged(`retained change set fails its CRC (${err.message}); the volume range needs a repair from the agent`);
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw damaged('the retained spool segment is gone');
      throw err;
    }
  }

  /** Closes readers of segments that were deleted (or all, with no argument). */
  closeReaders(segments?: readonly number[]): void {
    for (const seg of segments ?? [...this.fds.keys()]) {
      const fd = this.fds.get(seg);
      if (fd !== undefined) fs.closeSync(fd);
      this.fds.delete(seg);
    }
  }
}

const EXTENT_KINDS: Partial<Record<number, ExtentKind>> = {
  [ferry.Extent.Kind.WRITE]: 'write',
  [ferry.Extent.Kind.DISCARD]: 'discard',
  [ferry.Extent.Kind.FLUSH]: 'flush',
  [ferry.Extent.Kind.NOOP]: 'noop',
};

/**
 * The extents of a spooled change-set frame, without decompressing its payload: the frame was
 * validated at ingest and the spool record's CRC covers it. Data offsets as validateChangeSet
 * gives them (writes only, in order).
 */
export function extentsOfFrame(frame: Buffer): ChangeExtent[] {
  return summaryOfFrame(frame).extents;
}

/** The extents of a spooled frame and whether its stream is write-ordered (exact). */
export function summaryOfFrame(frame: Buffer): { extents: ChangeExtent[]; exact: boolean } {
  const cs = decodeFrame(frame).changeSet;
  if (!cs) throw new Error('spool record holds no change set');
  return { extents: extentsOf(cs), exact: accuracyName(cs.accuracy ?? 0) === 'exact' };
}

function extentsOf(cs: ferry.IChangeSet): ChangeExtent[] {
  const firstSeq = Number(cs.firstSeq ?? 0);
  let dataOffset = 0;
  return (cs.extents ?? []).map((ext, i) => {
    const kind = EXTENT_KINDS[ext.kind ?? ferry.Extent.Kind.WRITE] ?? 'noop';
    const out: ChangeExtent = { seq: firstSeq + i, kind, offset: Number(ext.offset ?? 0), length: Number(ext.length ?? 0), captureTimeUs: Number(ext.captureTimeUs ?? 0), dataOffset };
    if (kind === 'write') dataOffset += out.length;
    return out;
  });
}

/** The index rows of one spool record: its writes and discards after `afterSeq`. */
export function retainedExtentsOf(extents: readonly ChangeExtent[], segment: number, recordOffset: number, afterSeq: number): RetainedExtent[] {
  const rows: RetainedExtent[] = [];
  for (const e of extents) {
    if (e.seq <= afterSeq || e.length === 0 || (e.kind !== 'write' && e.kind !== 'discard')) continue;
    rows.push({ seq: e.seq, offset: e.offset, length: e.length, segment, recordOffset, dataOffset: e.kind === 'write' ? e.dataOffset : -1 });
  }
  return rows;
}
