import * as fs from 'fs';
import * as path from 'path';
import { fsyncDir, writeParts } from '../../common/fsutil';
import { encodeRecordParts, RecordFormat, RecordLocation, readRecordBody, scanRecords } from './record-file';
import { listSegments, segmentFileName, SegmentRef } from './segments';

/** Undo pieces are at most this long, so reading and journaling old data stays bounded. */
export const UNDO_PIECE_BYTES = 1024 * 1024;
const JOURNAL_FORMAT: RecordFormat = { magic: 0x314e4a46 /* FJN1 */, metaBytes: 24, maxBodyBytes: UNDO_PIECE_BYTES };
const EXT = 'jnl';
const FLAG_ZERO = 1;
/** Buffers per writev (IOV_MAX is 1024 on Linux). */
const MAX_WRITEV_PARTS = 512;

function pendingBytes(parts: readonly Buffer[]): number {
  return parts.reduce((n, b) => n + b.length, 0);
}

/** The data a range held before the write with this seq overwrote it. */
export interface UndoRecord {
  seq: number;
  offset: number;
  length: number;
  /** The old data was all zeroes: no body is stored. */
  zero: boolean;
  data: Buffer;
}

function encodeMeta(rec: UndoRecord): Buffer {
  const meta = Buffer.alloc(24);
  meta.writeBigUInt64LE(BigInt(rec.seq), 0);
  meta.writeBigUInt64LE(BigInt(rec.offset), 8);
  meta.writeUInt32LE(rec.length, 16);
  meta.writeUInt32LE(rec.zero ? FLAG_ZERO : 0, 20);
  return meta;
}

function metaSeq(loc: RecordLocation): number {
  return Number(loc.meta.readBigUInt64LE(0));
}

function decodeRecord(fd: number, loc: RecordLocation, crc: number): UndoRecord {
  const zero = (loc.meta.readUInt32LE(20) & FLAG_ZERO) !== 0;
  const length = loc.meta.readUInt32LE(16);
  const data = zero ? Buffer.alloc(0) : readRecordBody(fd, loc, crc);
  if (!zero && data.length !== length) throw new Error(`undo record at ${loc.offset} holds ${data.length} bytes, expected ${length}`);
  return { seq: metaSeq(loc), offset: Number(loc.meta.readBigUInt64LE(8)), length, zero, data };
}

/**
 * Undo records with seq > `afterSeq`, newest first, read straight from the segment files.
 * Used by crash recovery (roll back an unfinished apply) and by export (wind the replica
 * back to a recovery point); safe to run from another process while the receiver appends.
 */
export function* undoRecordsNewestFirst(dir: string, afterSeq: number): Generator<UndoRecord> {
  const segments = listSegments(dir, EXT);
  for (let i = segments.length - 1; i >= 0; i--) {
    const next = segments[i + 1];
    if (next && next.firstSeq - 1 <= afterSeq) break;
    const fd = fs.openSync(segments[i].file, 'r');
    try {
      const { records } = scanRecords(fd, JOURNAL_FORMAT, true);
      const crcs = records.map((loc) => {
        const b = Buffer.allocUnsafe(4);
        fs.readSync(fd, b, 0, 4, loc.offset + 8);
        return b.readUInt32LE(0);
      });
      for (let r = records.length - 1; r >= 0; r--) {
        if (metaSeq(records[r]) <= afterSeq) return;
        yield decodeRecord(fd, records[r], crcs[r]);
      }
    } finally {
      fs.closeSync(fd);
    }
  }
}

/**
 * The undo journal of one volume: before the replica is overwritten, the old data of the
 * range is appended here and fsync'd. Segments hold increasing seqs; a seq never straddles
 * two segments, so a segment's seqs are [its first seq, next segment's first seq).
 */
export class UndoJournal {
  private segments: SegmentRef[] = [];
  private activeFd = -1;
  private activeSize = 0;
  private newest = 0;

  private constructor(
    private readonly dir: string,
    private readonly segmentBytes: number,
  ) {}

  static open(dir: string, segmentBytes = 64 * 1024 * 1024): UndoJournal {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const journal = new UndoJournal(dir, segmentBytes);
    journal.segments = listSegments(dir, EXT);
    // Only the newest segment can have a torn tail (appends are fsync'd before the next one).
    for (let i = journal.segments.length - 1; i >= 0; i--) {
      const fd = fs.openSync(journal.segments[i].file, 'r+');
      try {
        const { records, validEnd } = scanRecords(fd, JOURNAL_FORMAT, i === journal.segments.length - 1);
        if (validEnd < fs.fstatSync(fd).size) {
          fs.ftruncateSync(fd, validEnd);
          fs.fsyncSync(fd);
        }
        if (i === journal.segments.length - 1) {
          journal.activeSize = validEnd;
        }
        if (records.length > 0) {
          journal.newest = metaSeq(records[records.length - 1]);
          break;
        }
      } finally {
        fs.closeSync(fd);
      }
    }
    const active = journal.segments[journal.segments.length - 1];
    if (active) journal.activeFd = fs.openSync(active.file, 'r+');
    return journal;
  }

  /** Highest seq that has an undo record. */
  get newestSeq(): number {
    return this.newest;
  }

  /** Appends the records and makes them durable before returning. */
  append(records: readonly UndoRecord[]): void {
    if (records.length === 0) return;
    let newFile = false;
    let parts: Buffer[] = [];
    const writePending = (): void => {
      if (parts.length > 0) this.activeSize += writeParts(this.activeFd, parts, this.activeSize);
      parts = [];
    };
    for (const rec of records) {
      if (rec.seq > this.newest && (this.activeFd < 0 || this.activeSize + pendingBytes(parts) >= this.segmentBytes)) {
        writePending();
        if (this.activeFd >= 0) {
          fs.fdatasyncSync(this.activeFd);
          fs.closeSync(this.activeFd);
        }
        const file = path.join(this.dir, segmentFileName(rec.seq, EXT));
        this.activeFd = fs.openSync(file, 'w', 0o600);
        this.activeSize = 0;
        this.segments.push({ firstSeq: rec.seq, file });
        newFile = true;
      }
      parts.push(...encodeRecordParts(JOURNAL_FORMAT, encodeMeta(rec), rec.zero ? Buffer.alloc(0) : rec.data));
      if (parts.length >= MAX_WRITEV_PARTS) writePending();
      this.newest = Math.max(this.newest, rec.seq);
    }
    writePending();
    fs.fdatasyncSync(this.activeFd);
    if (newFile) fsyncDir(this.dir);
  }

  /** Drops every record with seq > `seq` (after a roll-back restored their old data). */
  truncateAfter(seq: number): void {
    if (this.activeFd >= 0) fs.closeSync(this.activeFd);
    this.activeFd = -1;
    while (this.segments.length > 0 && this.segments[this.segments.length - 1].firstSeq > seq) {
      fs.rmSync((this.segments.pop() as SegmentRef).file, { force: true });
    }
    this.activeSize = 0;
    this.newest = 0;
    const active = this.segments[this.segments.length - 1];
    if (active) {
      this.activeFd = fs.openSync(active.file, 'r+');
      const { records } = scanRecords(this.activeFd, JOURNAL_FORMAT, false);
      const keep = records.filter((loc) => metaSeq(loc) <= seq);
      this.activeSize = keep.length > 0 ? keep[keep.length - 1].end : 0;
      this.newest = keep.length > 0 ? metaSeq(keep[keep.length - 1]) : active.firstSeq - 1;
      fs.ftruncateSync(this.activeFd, this.activeSize);
      fs.fsyncSync(this.activeFd);
    }
    fsyncDir(this.dir);
  }

  /** Deletes whole segments whose records all have seq <= `seq`; the newest segment stays. */
  pruneThrough(seq: number): number {
    let removed = 0;
    while (this.segments.length > 1 && this.segments[1].firstSeq - 1 <= seq) {
      fs.rmSync((this.segments.shift() as SegmentRef).file, { force: true });
      removed++;
    }
    if (removed > 0) fsyncDir(this.dir);
    return removed;
  }

  get segmentCount(): number {
    return this.segments.length;
  }

  close(): void {
    if (this.activeFd >= 0) fs.closeSync(this.activeFd);
    this.activeFd = -1;
  }
}
