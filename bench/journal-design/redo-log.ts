// The redo design's retained journal: the spool itself. Change-set frames are appended exactly
// as they arrive (lz4 payload inside), framed like receiver/storage/spool.ts records (header
// CRC + body CRC), in segments named by their first seq. Nothing is rewritten: age-out only
// deletes whole segments.

import * as fs from 'fs';
import * as path from 'path';
import { fsyncDir, writeParts } from '../../common/fsutil';
import { Limits } from '../../proto/limits';
import { encodeRecordParts, RecordFormat, RecordLocation, readRecordBody, scanSegment } from '../../receiver/storage/record-file';
import { listSegments, segmentFileName } from '../../receiver/storage/segments';

const REDO_FORMAT: RecordFormat = { magic: 0x32445246 /* FRD2 */, metaBytes: 16, maxBodyBytes: Limits.maxFrameBytes };
const EXT = 'seg';

/** Where a frame lives: its segment (by first seq) and the record inside it. */
export interface FrameLocation {
  segment: number;
  loc: RecordLocation;
}

interface Segment {
  firstSeq: number;
  file: string;
  /** Highest seq any record of the segment holds. */
  lastSeq: number;
}

export class RedoLog {
  private segments: Segment[] = [];
  private activeFd = -1;
  private activeSize = 0;
  private newSegmentUnsynced = false;
  private readonly readFds = new Map<number, number>();

  private constructor(
    readonly dir: string,
    private readonly segmentBytes: number,
  ) {}

  /**
   * Opens the log and hands every intact record to `onRecord` in seq order (the index is
   * rebuilt from them). A torn tail of the newest segment (an append a crash cut short, never
   * acknowledged) is cut off; damage elsewhere throws: the prototype does not skip it.
   */
  static open(dir: string, segmentBytes: number, onRecord: (where: FrameLocation, frame: Buffer) => void): RedoLog {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const log = new RedoLog(dir, segmentBytes);
    const refs = listSegments(dir, EXT);
    refs.forEach((ref, i) => {
      const isNewest = i === refs.length - 1;
      const fd = fs.openSync(ref.file, isNewest ? 'r+' : 'r');
      try {
        const scan = scanSegment(fd, REDO_FORMAT, false);
        if (scan.damage.length > 0 || (scan.tornBytes > 0 && !isNewest)) throw new Error(`${ref.file}: damaged redo records`);
        if (scan.tornBytes > 0) {
          fs.ftruncateSync(fd, scan.validEnd);
          fs.fsyncSync(fd);
        }
        let lastSeq = ref.firstSeq - 1;
        for (const loc of scan.records) {
          onRecord({ segment: ref.firstSeq, loc }, readRecordBody(fd, loc, true));
          lastSeq = Number(loc.meta.readBigUInt64LE(8));
        }
        log.segments.push({ firstSeq: ref.firstSeq, file: ref.file, lastSeq });
        if (isNewest) log.activeSize = scan.validEnd;
      } finally {
        fs.closeSync(fd);
      }
    });
    const newest = log.segments[log.segments.length - 1];
    if (newest && log.activeSize < segmentBytes) log.activeFd = fs.openSync(newest.file, 'r+');
    return log;
  }

  /** Appends a frame (not yet durable: see `sync`). */
  append(frame: Buffer, firstSeq: number, lastSeq: number): FrameLocation {
    this.ensureActive(firstSeq);
    const meta = Buffer.allocUnsafe(16);
    meta.writeBigUInt64LE(BigInt(firstSeq), 0);
    meta.writeBigUInt64LE(BigInt(lastSeq), 8);
    const parts = encodeRecordParts(REDO_FORMAT, meta, frame);
    const offset = this.activeSize;
    this.activeSize += writeParts(this.activeFd, parts, offset);
    const segment = this.segments[this.segments.length - 1];
    segment.lastSeq = lastSeq;
    const headLen = parts[0].length;
    const loc: RecordLocation = { offset, meta, bodyOffset: offset + headLen, bodyLength: frame.length, end: this.activeSize, bodyCrc: parts[0].readUInt32LE(8), version: 2 };
    return { segment: segment.firstSeq, loc };
  }

  /** Makes every append so far durable (the spool's group commit). */
  sync(): void {
    if (this.activeFd < 0) return;
    fs.fdatasyncSync(this.activeFd);
    if (this.newSegmentUnsynced) fsyncDir(this.dir);
    this.newSegmentUnsynced = false;
  }

  private ensureActive(firstSeq: number): void {
    if (this.activeFd >= 0 && this.activeSize < this.segmentBytes) return;
    if (this.activeFd >= 0) {
      this.sync();
      fs.closeSync(this.activeFd);
    }
    const file = path.join(this.dir, segmentFileName(firstSeq, EXT));
    this.activeFd = fs.openSync(file, 'wx+', 0o600);
    this.activeSize = 0;
    this.newSegmentUnsynced = true;
    this.segments.push({ firstSeq, file, lastSeq: firstSeq - 1 });
  }

  /** The frame at `where`, its CRC checked. */
  read(where: FrameLocation): Buffer {
    let fd = this.readFds.get(where.segment);
    if (fd === undefined) {
      const seg = this.segments.find((s) => s.firstSeq === where.segment);
      if (!seg) throw new Error(`redo segment ${where.segment} is gone`);
      fd = fs.openSync(seg.file, 'r');
      this.readFds.set(where.segment, fd);
    }
    return readRecordBody(fd, where.loc, true);
  }

  /** Deletes whole segments whose records all have seq <= `seq`; never the active one. */
  dropThrough(seq: number): number {
    let dropped = 0;
    while (this.segments.length > 1 && this.segments[0].lastSeq <= seq) {
      const seg = this.segments.shift() as Segment;
      this.closeReader(seg.firstSeq);
      fs.rmSync(seg.file, { force: true });
      dropped++;
    }
    if (dropped > 0) fsyncDir(this.dir);
    return dropped;
  }

  /** First seq the oldest segment may hold. */
  get firstSeqHeld(): number {
    return this.segments[0]?.firstSeq ?? 0;
  }

  get files(): string[] {
    return this.segments.map((s) => s.file);
  }

  private closeReader(segment: number): void {
    const fd = this.readFds.get(segment);
    if (fd !== undefined) fs.closeSync(fd);
    this.readFds.delete(segment);
  }

  close(): void {
    for (const segment of [...this.readFds.keys()]) this.closeReader(segment);
    if (this.activeFd >= 0) fs.closeSync(this.activeFd);
    this.activeFd = -1;
  }
}
