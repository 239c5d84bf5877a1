// The redo design's in-memory extent index: every retained write (seq, volume range, the spool
// record holding its data and where in the record's payload), in seq order, plus the newest
// retained version of each 4 KiB block, which serves `latest`.
//
// Prototype limits: extents must be 4 KiB-aligned (the bench's are; the agent sends 512-byte
// sectors, which a real index would keep as byte ranges in an interval tree), and the
// newest-version map is a flat Int32Array of 4 bytes per volume block (1/1024 of the volume).

import { ChangeExtent } from '../../proto/types';
import { FrameLocation } from './redo-log';

export const BLOCK = 4096;
const NONE = -1;

/** A run of consecutive blocks whose chosen version is one extent: one read slice, one write. */
export interface VersionRun {
  /** Volume offset. */
  offset: number;
  length: number;
  extent: number;
}

/** Growable columns of the retained extents; ids are absolute, `base` is the id of column 0. */
class ExtentColumns {
  seq = new Float64Array(1024);
  offset = new Float64Array(1024);
  length = new Uint32Array(1024);
  record = new Int32Array(1024);
  /** Offset of the data in the record's payload; NONE for a discard (zeroes). */
  dataOffset = new Int32Array(1024);
  base = 0;
  count = 0;

  push(seq: number, offset: number, length: number, record: number, dataOffset: number): number {
    if (this.count === this.seq.length) this.grow(this.count * 2);
    const i = this.count++;
    this.seq[i] = seq;
    this.offset[i] = offset;
    this.length[i] = length;
    this.record[i] = record;
    this.dataOffset[i] = dataOffset;
    return this.base + i;
  }

  private grow(capacity: number): void {
    const copy = <T extends Float64Array | Uint32Array | Int32Array>(a: T, make: (n: number) => T): T => {
      const b = make(capacity);
      b.set(a.subarray(0, this.count));
      return b;
    };
    this.seq = copy(this.seq, (n) => new Float64Array(n));
    this.offset = copy(this.offset, (n) => new Float64Array(n));
    this.length = copy(this.length, (n) => new Uint32Array(n));
    this.record = copy(this.record, (n) => new Int32Array(n));
    this.dataOffset = copy(this.dataOffset, (n) => new Int32Array(n));
  }

  /** Forgets the first `n` columns. */
  shift(n: number): void {
    for (const a of [this.seq, this.offset, this.length, this.record, this.dataOffset]) a.copyWithin(0, n, this.count);
    this.count -= n;
    this.base += n;
  }

  /** Bytes one retained extent takes in the columns. */
  static readonly BYTES_PER_EXTENT = 8 + 8 + 4 + 4 + 4;
}

export class ExtentIndex {
  private readonly extents = new ExtentColumns();
  /** Records by id; ids are absolute, `recordBase` is the id of element 0. */
  private records: FrameLocation[] = [];
  private recordBase = 0;
  /** Newest retained extent of each block, or NONE: the replica holds it. */
  private readonly latest: Int32Array;

  constructor(volumeBytes: number) {
    this.latest = new Int32Array(Math.ceil(volumeBytes / BLOCK)).fill(NONE);
  }

  /** Indexes the writes of one durable spool record. */
  add(where: FrameLocation, extents: readonly ChangeExtent[]): void {
    const record = this.recordBase + this.records.length;
    this.records.push(where);
    for (const ext of extents) {
      if (ext.kind !== 'write' && ext.kind !== 'discard') continue;
      if (ext.offset % BLOCK !== 0 || ext.length % BLOCK !== 0) throw new Error(`prototype index: extent of seq ${ext.seq} is not 4 KiB-aligned`);
      const id = this.extents.push(ext.seq, ext.offset, ext.length, record, ext.kind === 'write' ? ext.dataOffset : NONE);
      this.latest.fill(id, ext.offset / BLOCK, (ext.offset + ext.length) / BLOCK);
    }
  }

  get newestSeq(): number {
    const c = this.extents;
    return c.count > 0 ? c.seq[c.count - 1] : 0;
  }

  get retainedExtents(): number {
    return this.extents.count;
  }

  get retainedRecords(): number {
    return this.records.length;
  }

  /** Memory of the index proper: the columns in use, the record table (estimated), the block map. */
  memoryBytes(): { perExtent: number; perRecord: number; blockMap: number } {
    return { perExtent: ExtentColumns.BYTES_PER_EXTENT, perRecord: RECORD_ENTRY_BYTES, blockMap: this.latest.byteLength };
  }

  seqOf(extent: number): number {
    return this.extents.seq[extent - this.extents.base];
  }

  location(extent: number): { record: FrameLocation; recordId: number; dataOffset: number } {
    const i = extent - this.extents.base;
    const recordId = this.extents.record[i];
    return { record: this.records[recordId - this.recordBase], recordId, dataOffset: this.extents.dataOffset[i] };
  }

  extentOffset(extent: number): number {
    return this.extents.offset[extent - this.extents.base];
  }

  /**
   * For every block, the newest retained version with seq <= `seq` (NONE: the replica's), as
   * runs. `seq` >= the newest retained seq reads the block map; older points walk the extents
   * newest first, taking each block the first time it is seen.
   */
  versionsAt(seq: number): VersionRun[] {
    if (seq >= this.newestSeq) return runsOf(this.latest);
    const chosen = new Int32Array(this.latest.length).fill(NONE);
    const c = this.extents;
    for (let i = this.lastAtOrBefore(seq); i >= 0; i--) {
      const first = c.offset[i] / BLOCK;
      const end = first + c.length[i] / BLOCK;
      for (let b = first; b < end; b++) if (chosen[b] === NONE) chosen[b] = c.base + i;
    }
    return runsOf(chosen);
  }

  /** Column index of the newest extent with seq <= `seq`, or -1. */
  private lastAtOrBefore(seq: number): number {
    let lo = 0;
    let hi = this.extents.count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.extents.seq[mid] <= seq) lo = mid + 1;
      else hi = mid;
    }
    return lo - 1;
  }

  /** Forgets every extent with seq <= `seq` (the replica holds them now). */
  dropThrough(seq: number): void {
    const n = this.lastAtOrBefore(seq) + 1;
    if (n === 0) return;
    const firstKept = this.extents.base + n;
    for (let b = 0; b < this.latest.length; b++) if (this.latest[b] !== NONE && this.latest[b] < firstKept) this.latest[b] = NONE;
    const keptRecord = n < this.extents.count ? this.extents.record[n] : this.recordBase + this.records.length;
    this.extents.shift(n);
    this.records = this.records.slice(keptRecord - this.recordBase);
    this.recordBase = keptRecord;
  }
}

/** A FrameLocation with its RecordLocation object, roughly, in V8. */
const RECORD_ENTRY_BYTES = 200;

function runsOf(chosen: Int32Array): VersionRun[] {
  const runs: VersionRun[] = [];
  let run: VersionRun | undefined;
  for (let b = 0; b < chosen.length; b++) {
    const e = chosen[b];
    if (e === NONE) {
      run = undefined;
      continue;
    }
    if (run && run.extent === e) {
      run.length += BLOCK;
      continue;
    }
    run = { offset: b * BLOCK, length: BLOCK, extent: e };
    runs.push(run);
  }
  return runs;
}
