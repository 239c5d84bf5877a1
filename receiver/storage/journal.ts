import * as fs from 'fs';
import * as path from 'path';
import * as lz4 from 'lz4';
import { fsyncDir, writeParts } from '../../common/fsutil';
import { dropCache } from '../../native/addon';
import { blocksOf } from './block-sums';
import { StorageDamage } from './damage';
import { DamagedStretch, encodeRecordParts, RecordFormat, RecordLocation, readRecordBody, scanSegment } from './record-file';
import { listSegments, segmentFileName, SegmentRef } from './segments';

/** Undo pieces are at most this long, so reading and journaling old data stays bounded. */
export const UNDO_PIECE_BYTES = 1024 * 1024;
const JOURNAL_FORMAT: RecordFormat = {
  magic: 0x324e4a46 /* FJN2 */,
  magic1: 0x314e4a46 /* FJN1 */,
  metaBytes: 24,
  // old data plus the old sums of the blocks it touches (one more at each unaligned end)
  maxBodyBytes: UNDO_PIECE_BYTES + 4 * (UNDO_PIECE_BYTES / 4096 + 2),
};
const EXT = 'jnl';
const FLAG_ZERO = 1;
const FLAG_SUMS = 2;
/** The old data is stored lz4-compressed (a block; its raw length is the record's length). */
const FLAG_LZ4 = 4;
/** Old data is stored compressed only when that saves at least this share of it. */
const MIN_LZ4_SAVING = 1 / 8;
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
  /**
   * The block sums (block-sums.ts) of the blocks the range touches, as they were before the
   * write. Undefined in records written before sums existed.
   */
  oldSums?: Uint32Array;
}

/** An undo record an export or a roll-back needs cannot be read: the history it holds is lost. */
export class JournalDamageError extends Error {
  constructor(readonly damage: StorageDamage) {
    super(`damaged undo journal ${damage.file} at byte ${damage.offset}${damage.seqFrom !== undefined ? ` (seq ${damage.seqFrom})` : ''}: ${damage.detail}`);
    this.name = 'JournalDamageError';
  }
}

function encodeMeta(rec: UndoRecord, compressed: boolean): Buffer {
  const meta = Buffer.alloc(24);
  meta.writeBigUInt64LE(BigInt(rec.seq), 0);
  meta.writeBigUInt64LE(BigInt(rec.offset), 8);
  meta.writeUInt32LE(rec.length, 16);
  meta.writeUInt32LE((rec.zero ? FLAG_ZERO : 0) | (rec.oldSums ? FLAG_SUMS : 0) | (compressed ? FLAG_LZ4 : 0), 20);
  return meta;
}

/** The old data as stored: lz4-compressed when that shrinks it enough, else as it is. */
function storedData(data: Buffer, scratch: Buffer): { bytes: Buffer; compressed: boolean } {
  if (data.length === 0) return { bytes: data, compressed: false };
  const bound = lz4.encodeBound(data.length);
  const out = scratch.length >= bound ? scratch.subarray(0, bound) : Buffer.allocUnsafe(bound);
  const size = lz4.encodeBlock(data, out);
  if (size <= 0 || size > data.length * (1 - MIN_LZ4_SAVING)) return { bytes: data, compressed: false };
  return { bytes: Buffer.from(out.subarray(0, size)), compressed: true };
}

function encodeSums(sums: Uint32Array): Buffer {
  const buf = Buffer.allocUnsafe(sums.length * 4);
  for (let i = 0; i < sums.length; i++) buf.writeUInt32LE(sums[i], i * 4);
  return buf;
}

function metaSeq(loc: RecordLocation): number {
  return Number(loc.meta.readBigUInt64LE(0));
}

function metaRange(loc: RecordLocation): { offset: number; length: number } {
  return { offset: Number(loc.meta.readBigUInt64LE(8)), length: loc.meta.readUInt32LE(16) };
}

function decodeRecord(fd: number, file: string, loc: RecordLocation): UndoRecord {
  const flags = loc.meta.readUInt32LE(20);
  const zero = (flags & FLAG_ZERO) !== 0;
  const { offset, length } = metaRange(loc);
  const { first, end } = blocksOf(offset, length);
  const sumBytes = flags & FLAG_SUMS ? (end - first) * 4 : 0;
  let body: Buffer;
  try {
    body = loc.bodyLength > 0 ? readRecordBody(fd, loc, true) : Buffer.alloc(0);
  } catch (err) {
    throw new JournalDamageError(damageOf(file, { offset: loc.offset, length: loc.end - loc.offset, record: loc }, (err as Error).message));
  }
  let data = body.subarray(sumBytes);
  if (flags & FLAG_LZ4 && !zero) {
    const raw = Buffer.allocUnsafe(length);
    const size = data.length === 0 ? -1 : lz4.decodeBlock(data, raw);
    if (size !== length) {
      throw new JournalDamageError(damageOf(file, { offset: loc.offset, length: loc.end - loc.offset, record: loc }, `its compressed old data decodes to ${size < 0 ? 'nothing (corrupt)' : `${size} bytes`}, expected ${length}`));
    }
    data = raw;
  }
  const dataLength = data.length;
  if (dataLength !== (zero ? 0 : length)) {
    throw new JournalDamageError(damageOf(file, { offset: loc.offset, length: loc.end - loc.offset, record: loc }, `holds ${dataLength} bytes of old data, expected ${zero ? 0 : length}`));
  }
  let oldSums: Uint32Array | undefined;
  if (sumBytes > 0) {
    oldSums = new Uint32Array(end - first);
    for (let i = 0; i < oldSums.length; i++) oldSums[i] = body.readUInt32LE(i * 4);
  }
  return { seq: metaSeq(loc), offset, length, zero, data: zero ? Buffer.alloc(0) : data, oldSums };
}

function damageOf(file: string, d: DamagedStretch, detail: string): StorageDamage {
  if (d.record) {
    const { offset, length } = metaRange(d.record);
    const seq = metaSeq(d.record);
    return { kind: 'journal', file, offset: d.offset, length: d.length, seqFrom: seq, seqTo: seq, volumeOffset: offset, volumeLength: length, detail };
  }
  return { kind: 'journal', file, offset: d.offset, length: d.length, detail };
}

/** A stretch a scan found holding no valid undo record. */
function stretchDamage(file: string, d: DamagedStretch): StorageDamage {
  return damageOf(file, d, d.record ? 'the undo record fails its CRC' : 'bytes that are no undo record');
}

/** Everything one scan of a journal segment found, in file order. */
type JournalItem = { kind: 'record'; loc: RecordLocation } | { kind: 'damage'; stretch: DamagedStretch };

/** The seq an item held, when a record or a surviving header says it. */
function itemSeq(item: JournalItem): number | undefined {
  if (item.kind === 'record') return metaSeq(item.loc);
  return item.stretch.record ? metaSeq(item.stretch.record) : undefined;
}

function scanJournalSegment(fd: number): { items: JournalItem[]; tornBytes: number; validEnd: number; size: number } {
  const scan = scanSegment(fd, JOURNAL_FORMAT, true);
  const items: JournalItem[] = [
    ...scan.records.map((loc) => ({ kind: 'record' as const, loc })),
    ...scan.damage.map((stretch) => ({ kind: 'damage' as const, stretch })),
  ];
  items.sort((a, b) => (a.kind === 'record' ? a.loc.offset : a.stretch.offset) - (b.kind === 'record' ? b.loc.offset : b.stretch.offset));
  return { items, tornBytes: scan.tornBytes, validEnd: scan.validEnd, size: scan.size };
}

/**
 * Undo records with seq > `afterSeq`, newest first, read straight from the segment files.
 * Used by crash recovery (roll back an unfinished apply) and by export (wind the replica
 * back to a recovery point); safe to run from another process while the receiver appends.
 * Throws JournalDamageError when a record it needs is damaged: the history it held is lost,
 * and nothing that depends on it may pretend otherwise.
 */
export function* undoRecordsNewestFirst(dir: string, afterSeq: number, onDamage?: (damage: StorageDamage) => void): Generator<UndoRecord> {
  const segments = listSegments(dir, EXT);
  for (let i = segments.length - 1; i >= 0; i--) {
    const next = segments[i + 1];
    if (next && next.firstSeq - 1 <= afterSeq) break;
    const fd = fs.openSync(segments[i].file, 'r');
    try {
      const { items } = scanJournalSegment(fd);
      for (let r = items.length - 1; r >= 0; r--) {
        const item = items[r];
        if (item.kind === 'record') {
          if (metaSeq(item.loc) <= afterSeq) return;
          try {
            yield decodeRecord(fd, segments[i].file, item.loc);
          } catch (err) {
            if (!(err instanceof JournalDamageError) || !onDamage || err.damage.seqFrom === undefined) throw err;
            onDamage(err.damage);
          }
          continue;
        }
        // Seqs grow through a segment. A stretch whose header survived says its seq; one that
        // did not may hold any seq between its neighbours, some of them needed: refuse.
        const known = itemSeq(item);
        if (known !== undefined && known <= afterSeq) return;
        const damage = stretchDamage(segments[i].file, item.stretch);
        // With `onDamage`, a record whose header survived is skipped and reported: the caller
        // knows which range lost its old data. A stretch without one could be anything.
        if (onDamage && known !== undefined) onDamage(damage);
        else throw new JournalDamageError(damage);
      }
    } finally {
      fs.closeSync(fd);
    }
  }
}

/** Every record and damaged stretch of the journal, for `ferry receiver verify`. */
export function verifyJournal(dir: string): { records: number; damage: StorageDamage[]; tornBytes: number } {
  const damage: StorageDamage[] = [];
  let records = 0;
  let tornBytes = 0;
  const segments = listSegments(dir, EXT);
  for (let i = 0; i < segments.length; i++) {
    const fd = fs.openSync(segments[i].file, 'r');
    try {
      const scan = scanJournalSegment(fd);
      for (const item of scan.items) {
        if (item.kind === 'record') records++;
        else damage.push(stretchDamage(segments[i].file, item.stretch));
      }
      if (i < segments.length - 1 && scan.tornBytes > 0) {
        damage.push({ kind: 'journal', file: segments[i].file, offset: scan.validEnd, length: scan.tornBytes, detail: 'an older segment ends inside a record' });
      } else tornBytes += scan.tornBytes;
    } finally {
      fs.closeSync(fd);
    }
  }
  return { records, damage, tornBytes };
}

/**
 * The undo journal of one volume: before the replica is overwritten, the old data of the
 * range is appended here and fsync'd. Segments hold increasing seqs; a seq never straddles
 * two segments, so a segment's seqs are [its first seq, next segment's first seq).
 *
 * A failed append leaves the journal broken (every later append throws) until it is opened
 * again: the owner then rolls the replica back to its checkpoint, as after a crash.
 */
export class UndoJournal {
  private segments: SegmentRef[] = [];
  private activeFd = -1;
  private activeSize = 0;
  /** Size of the active segment at its last successful fsync. */
  private syncedSize = 0;
  private newest = 0;
  /** The newest segment has damage: appends go to a new one. */
  private mustRoll = false;
  private broken: Error | undefined;
  /** Where old data is compressed before it is copied out at its compressed size. */
  private readonly scratch = Buffer.allocUnsafe(lz4.encodeBound(UNDO_PIECE_BYTES));
  readonly damageFound: StorageDamage[] = [];
  tornBytesDropped = 0;

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
      const isNewest = i === journal.segments.length - 1;
      const seg = journal.segments[i];
      const fd = fs.openSync(seg.file, isNewest ? 'r+' : 'r');
      try {
        if (isNewest) dropCache(fd);
        const scan = scanJournalSegment(fd);
        if (isNewest && scan.tornBytes > 0) {
          fs.ftruncateSync(fd, scan.validEnd);
          fs.fsyncSync(fd);
          journal.tornBytesDropped = scan.tornBytes;
        }
        const damaged = scan.items.filter((x): x is { kind: 'damage'; stretch: DamagedStretch } => x.kind === 'damage');
        for (const d of damaged) journal.damageFound.push(stretchDamage(seg.file, d.stretch));
        if (isNewest) {
          journal.activeSize = scan.validEnd;
          journal.syncedSize = scan.validEnd;
          journal.mustRoll = damaged.length > 0;
        }
        const seqs = scan.items.map((x) => itemSeq(x) ?? 0);
        const newest = Math.max(0, ...seqs);
        if (newest > 0) {
          journal.newest = newest;
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

  /** Seq of the oldest segment's first record (0: no segment). */
  get oldestSegmentSeq(): number {
    return this.segments[0]?.firstSeq ?? 0;
  }

  /** Appends the records and makes them durable before returning. */
  append(records: readonly UndoRecord[]): void {
    if (records.length === 0) return;
    if (this.broken) throw this.broken;
    try {
      this.appendUnchecked(records);
    } catch (err) {
      this.broken = err as Error;
      // At once, not only at recovery: a crash before then must not leave unsynced (perhaps
      // never written) records after the synced ones, where they would read as damage.
      try {
        this.discardUnsynced();
      } catch {
        // the disk still fails: recovery cuts again
      }
      throw err;
    }
  }

  private appendUnchecked(records: readonly UndoRecord[]): void {
    let newFile = false;
    let parts: Buffer[] = [];
    const writePending = (): void => {
      if (parts.length > 0) this.activeSize += writeParts(this.activeFd, parts, this.activeSize);
      parts = [];
    };
    for (const rec of records) {
      if (rec.seq > this.newest && (this.activeFd < 0 || this.mustRoll || this.activeSize + pendingBytes(parts) >= this.segmentBytes)) {
        writePending();
        if (this.activeFd >= 0) {
          fs.fdatasyncSync(this.activeFd);
          fs.closeSync(this.activeFd);
          this.activeFd = -1;
        }
        const file = path.join(this.dir, segmentFileName(rec.seq, EXT));
        this.activeFd = fs.openSync(file, 'w', 0o600);
        this.activeSize = 0;
        this.syncedSize = 0;
        this.mustRoll = false;
        this.segments.push({ firstSeq: rec.seq, file });
        newFile = true;
      }
      const stored = rec.zero ? { bytes: Buffer.alloc(0), compressed: false } : storedData(rec.data, this.scratch);
      const body = rec.oldSums ? Buffer.concat([encodeSums(rec.oldSums), stored.bytes]) : stored.bytes;
      parts.push(...encodeRecordParts(JOURNAL_FORMAT, encodeMeta(rec, stored.compressed), body));
      if (parts.length >= MAX_WRITEV_PARTS) writePending();
      this.newest = Math.max(this.newest, rec.seq);
    }
    writePending();
    fs.fdatasyncSync(this.activeFd);
    this.syncedSize = this.activeSize;
    if (newFile) fsyncDir(this.dir);
  }

  /** Set once an append failed: the journal must be opened again. */
  get failure(): Error | undefined {
    return this.broken;
  }

  /**
   * After a failed append: cuts the active segment back to its last fsync'd size and drops its
   * cached pages, so that opening it again reads what the disk holds.
   */
  discardUnsynced(): void {
    if (this.activeFd < 0) return;
    fs.ftruncateSync(this.activeFd, this.syncedSize);
    fs.fsyncSync(this.activeFd);
    dropCache(this.activeFd);
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
      const { items } = scanJournalSegment(this.activeFd);
      let keepEnd = 0;
      let newest = active.firstSeq - 1;
      for (const item of items) {
        const s = itemSeq(item);
        if (s === undefined || s > seq) break;
        keepEnd = item.kind === 'record' ? item.loc.end : item.stretch.offset + item.stretch.length;
        newest = s;
      }
      this.activeSize = keepEnd;
      this.newest = newest;
      fs.ftruncateSync(this.activeFd, this.activeSize);
      fs.fsyncSync(this.activeFd);
      this.syncedSize = this.activeSize;
      this.mustRoll = items.some((x) => x.kind === 'damage' && x.stretch.offset < keepEnd);
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
