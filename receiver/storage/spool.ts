import * as fs from 'fs';
import * as path from 'path';
import { fsyncDir, readFully, writeParts } from '../../common/fsutil';
import { encodeRecordParts, RecordFormat, RECORD_HEADER_BYTES, scanRecords, readRecordBody } from './record-file';
import { listSegments, segmentFileName } from './segments';
import { Limits } from '../../proto/limits';
import { BufferArena } from '../../common/arena';

const SPOOL_FORMAT: RecordFormat = { magic: 0x31505346 /* FSP1 */, metaBytes: 16, maxBodyBytes: Limits.maxFrameBytes };
const EXT = 'seg';
const EMPTY = Buffer.alloc(0);

export interface SpoolRecord {
  firstSeq: number;
  lastSeq: number;
  /** The change-set frame exactly as it arrived. */
  frame: Buffer;
  bytes: number;
}

interface Segment {
  firstSeq: number;
  file: string;
  /** Bytes known to be valid and durable. */
  durableSize: number;
}

/**
 * The process-server cache of one volume: append-only segments of incoming change-set
 * frames. `append` resolves only after the bytes are fsync'd (group commit: appends made while
 * one fdatasync runs share the next), which is what allows the receiver to acknowledge.
 */
export class Spool {
  private segments: Segment[] = [];
  private activeFd = -1;
  private activeSize = 0;
  private appendedSeq = 0;
  private durable = 0;
  private waiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  private flushScheduled = false;
  private flushing = false;
  private readonly closeAfterFlush: number[] = [];
  private newSegmentUnsynced = false;

  private constructor(
    private readonly dir: string,
    private readonly segmentBytes: number,
  ) {}

  /** Opens the spool, dropping a torn tail left by a crash (it was never acknowledged). */
  static open(dir: string, segmentBytes = 64 * 1024 * 1024): Spool {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const spool = new Spool(dir, segmentBytes);
    const refs = listSegments(dir, EXT);
    for (let i = 0; i < refs.length; i++) {
      const isLast = i === refs.length - 1;
      const fd = fs.openSync(refs[i].file, isLast ? 'r+' : 'r');
      try {
        const { records, validEnd } = scanRecords(fd, SPOOL_FORMAT, isLast);
        if (isLast && validEnd < fs.fstatSync(fd).size) {
          fs.ftruncateSync(fd, validEnd);
          fs.fsyncSync(fd);
        }
        for (const r of records) spool.appendedSeq = Math.max(spool.appendedSeq, Number(r.meta.readBigUInt64LE(8)));
        spool.segments.push({ firstSeq: refs[i].firstSeq, file: refs[i].file, durableSize: validEnd });
      } finally {
        fs.closeSync(fd);
      }
    }
    spool.durable = spool.appendedSeq;
    const newest = spool.segments[spool.segments.length - 1];
    if (newest && newest.durableSize < segmentBytes) {
      spool.activeFd = fs.openSync(newest.file, 'r+');
      spool.activeSize = newest.durableSize;
    }
    return spool;
  }

  /** Highest seq whose change set is durable in the spool. */
  get durableSeq(): number {
    return this.durable;
  }

  append(frame: Buffer, firstSeq: number, lastSeq: number): Promise<void> {
    this.ensureActiveSegment(firstSeq);
    const meta = Buffer.allocUnsafe(16);
    meta.writeBigUInt64LE(BigInt(firstSeq), 0);
    meta.writeBigUInt64LE(BigInt(lastSeq), 8);
    this.activeSize += writeParts(this.activeFd, encodeRecordParts(SPOOL_FORMAT, meta, frame), this.activeSize);
    this.appendedSeq = Math.max(this.appendedSeq, lastSeq);
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.scheduleFlush();
    return done;
  }

  /** Makes every append so far durable now, on this thread (tags and hash requests need it at once). */
  flush(): void {
    this.flushScheduled = false;
    const waiters = this.waiters;
    this.waiters = [];
    if (this.activeFd < 0) return;
    try {
      fs.fdatasyncSync(this.activeFd);
      if (this.newSegmentUnsynced) {
        fsyncDir(this.dir);
        this.newSegmentUnsynced = false;
      }
    } catch (err) {
      for (const w of waiters) w.reject(err as Error);
      return;
    }
    this.markDurable(this.segments[this.segments.length - 1], this.activeSize, this.appendedSeq);
    for (const w of waiters) w.resolve();
  }

  private markDurable(segment: Segment, size: number, seq: number): void {
    segment.durableSize = Math.max(segment.durableSize, size);
    this.durable = Math.max(this.durable, seq);
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flushInBackground();
    });
  }

  /**
   * Group commit without blocking the event loop: one fdatasync on the thread pool covers every
   * append made before it started; appends made meanwhile wait for the next one.
   */
  private flushInBackground(): void {
    if (this.flushing || this.activeFd < 0 || this.waiters.length === 0) return;
    const fd = this.activeFd;
    const segment = this.segments[this.segments.length - 1];
    const size = this.activeSize;
    const seq = this.appendedSeq;
    const waiters = this.waiters;
    const newSegment = this.newSegmentUnsynced;
    this.waiters = [];
    this.newSegmentUnsynced = false;
    this.flushing = true;
    fs.fdatasync(fd, (syncErr) => {
      let err: Error | null = syncErr;
      if (!err && newSegment) {
        try {
          fsyncDir(this.dir);
        } catch (dirErr) {
          err = dirErr as Error;
        }
      }
      this.flushing = false;
      for (const closing of this.closeAfterFlush.splice(0)) fs.closeSync(closing);
      if (err) {
        for (const w of waiters) w.reject(err);
      } else {
        this.markDurable(segment, size, seq);
        for (const w of waiters) w.resolve();
      }
      if (this.waiters.length > 0) this.flushInBackground();
    });
  }

  /** Closes a segment's fd, or leaves that to the background flush still using it. */
  private closeFd(fd: number): void {
    if (this.flushing) this.closeAfterFlush.push(fd);
    else fs.closeSync(fd);
  }

  private ensureActiveSegment(firstSeq: number): void {
    if (this.activeFd >= 0 && this.activeSize < this.segmentBytes) return;
    if (this.activeFd >= 0) {
      this.flush();
      this.closeFd(this.activeFd);
      this.activeFd = -1;
    }
    // A replayed change set may start at or below the previous segment's first seq; names
    // must stay unique and increasing, and its seqs up to the name are duplicates anyway.
    const previous = this.segments[this.segments.length - 1];
    const name = previous ? Math.max(firstSeq, previous.firstSeq + 1) : firstSeq;
    const file = path.join(this.dir, segmentFileName(name, EXT));
    this.activeFd = fs.openSync(file, 'wx', 0o600);
    this.activeSize = 0;
    this.newSegmentUnsynced = true;
    this.segments.push({ firstSeq: name, file, durableSize: 0 });
  }

  /** A reader positioned at the first durable record whose last seq is after `afterSeq`. */
  cursor(afterSeq: number): SpoolCursor {
    return new SpoolCursor(this.segments, afterSeq);
  }

  /**
   * Forgets segments holding only seqs <= `seq` (the apply checkpoint; never the active one)
   * and deletes their files in the background: unlinking a large, just-written file is slow
   * and must not hold up apply. A file a crash leaves behind is skipped by every cursor (its
   * seqs are at or below the checkpoint) and deleted by the next prune after a restart.
   */
  pruneThrough(seq: number): number {
    const doomed: string[] = [];
    while (this.segments.length > 1 && this.segments[1].firstSeq - 1 <= seq) {
      doomed.push((this.segments.shift() as Segment).file);
    }
    if (doomed.length > 0) {
      void Promise.all(doomed.map((file) => fs.promises.rm(file, { force: true }))).catch(() => undefined);
    }
    return doomed.length;
  }

  close(): void {
    if (this.activeFd >= 0) {
      this.flush();
      this.closeFd(this.activeFd);
      this.activeFd = -1;
    }
  }
}

/**
 * Walks the spool forward record by record; returns undefined at the durable end and can be
 * called again later to continue from there as more records become durable.
 */
export class SpoolCursor {
  private segFirstSeq: number;
  private offset = 0;
  private readonly head = Buffer.allocUnsafe(RECORD_HEADER_BYTES + SPOOL_FORMAT.metaBytes);

  constructor(
    private readonly segments: readonly Segment[],
    private readonly afterSeq: number,
  ) {
    let start = segments[0]?.firstSeq ?? 0;
    for (const seg of segments) if (seg.firstSeq <= afterSeq + 1) start = seg.firstSeq;
    this.segFirstSeq = start;
  }

  /**
   * The next record; its frame is read into `arena` when one is given. With `skipBody` true
   * for a record, only its header is read (the caller holds the frame already) and `frame` is empty.
   */
  next(arena?: BufferArena, skipBody?: (firstSeq: number, lastSeq: number) => boolean): SpoolRecord | undefined {
    for (;;) {
      const index = this.segments.findIndex((s) => s.firstSeq === this.segFirstSeq);
      if (index < 0) {
        // Not created yet (empty spool) or pruned: restart from the oldest segment.
        if (this.segments.length === 0) return undefined;
        this.segFirstSeq = this.segments[0].firstSeq;
        this.offset = 0;
        continue;
      }
      const seg = this.segments[index];
      if (this.offset >= seg.durableSize) {
        const next = this.segments[index + 1];
        if (!next) return undefined;
        this.segFirstSeq = next.firstSeq;
        this.offset = 0;
        continue;
      }
      const record = this.readAt(seg, arena, skipBody);
      if (record.lastSeq > this.afterSeq) return record;
    }
  }

  private fd = -1;
  private fdFile = '';

  private fileFor(seg: Segment): number {
    if (this.fdFile !== seg.file) {
      this.close();
      this.fd = fs.openSync(seg.file, 'r');
      this.fdFile = seg.file;
    }
    return this.fd;
  }

  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
    this.fdFile = '';
  }

  private readAt(seg: Segment, arena: BufferArena | undefined, skipBody: ((firstSeq: number, lastSeq: number) => boolean) | undefined): SpoolRecord {
    const fd = this.fileFor(seg);
    const head = this.head;
    readFully(fd, head, 0, head.length, this.offset);
    const meta = Buffer.from(head.subarray(RECORD_HEADER_BYTES));
    const firstSeq = Number(meta.readBigUInt64LE(0));
    const lastSeq = Number(meta.readBigUInt64LE(8));
    const bodyOffset = this.offset + head.length;
    const bodyLength = head.readUInt32LE(4);
    const loc = { offset: this.offset, meta, bodyOffset, bodyLength, end: bodyOffset + bodyLength };
    const frame = skipBody?.(firstSeq, lastSeq) ? EMPTY : readRecordBody(fd, loc, head.readUInt32LE(8), arena?.take(bodyLength));
    this.offset = loc.end;
    return { firstSeq, lastSeq, frame, bytes: loc.end - loc.offset };
  }
}
