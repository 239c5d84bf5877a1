import * as fs from 'fs';
import * as path from 'path';
import { fsyncDir, writeParts } from '../../common/fsutil';
import { dropCache } from '../../native/addon';
import { DamagedStretch, encodeRecordParts, RECORD_HEADER_BYTES, RecordDamageError, RecordFormat, RecordLocation, readRecordBody, readRecordHeader, recordBodyIntact, scanSegment } from './record-file';
import { listSegments, segmentFileName } from './segments';
import { Limits } from '../../proto/limits';
import { BufferArena } from '../../common/arena';
import { StorageDamage } from './damage';

const SPOOL_FORMAT: RecordFormat = { magic: 0x32505346 /* FSP2 */, magic1: 0x31505346 /* FSP1 */, metaBytes: 16, maxBodyBytes: Limits.maxFrameBytes };
/** Bytes a change set takes in the spool besides its frame: the record header and its meta (seqs). */
export const SPOOL_RECORD_OVERHEAD = RECORD_HEADER_BYTES + SPOOL_FORMAT.metaBytes;
const EXT = 'seg';
const EMPTY = Buffer.alloc(0);

/** A stretch of a segment that holds no readable change set: what it held is lost. */
export interface SpoolLost {
  file: string;
  offset: number;
  length: number;
  /** The seqs it held, when its header survived. */
  firstSeq?: number;
  lastSeq?: number;
}

export interface SpoolRecord {
  firstSeq: number;
  lastSeq: number;
  /** The change-set frame exactly as it arrived. */
  frame: Buffer;
  bytes: number;
  /** Where it is: its segment (by first seq) and the record's offset there (0 for lostOnly). */
  segment: number;
  recordOffset: number;
  /** Damaged stretches the cursor passed since the record before this one. */
  lostBefore?: SpoolLost[];
  /** No record, only damage whose header names its seqs (firstSeq..lastSeq): they are lost. */
  lostOnly?: boolean;
}

interface Segment {
  firstSeq: number;
  file: string;
  /** Bytes known to be valid and durable. */
  durableSize: number;
  /** Damaged stretches found when the spool was opened, in file order. */
  damage: DamagedStretch[];
}

/** The spool cannot take appends until `recover` (an append or fsync failed). */
export class SpoolFailedError extends Error {
  constructor(
    readonly failure: Error,
    readonly file: string,
  ) {
    super(`${file}: ${failure.message}`);
    this.name = 'SpoolFailedError';
  }

  /** The errno name of the failure ('ENOSPC', 'EIO'...), when it has one. */
  get code(): string | undefined {
    return (this.failure as NodeJS.ErrnoException).code;
  }
}

function seqsOf(meta: Buffer): { firstSeq: number; lastSeq: number } {
  return { firstSeq: Number(meta.readBigUInt64LE(0)), lastSeq: Number(meta.readBigUInt64LE(8)) };
}

/** How a damaged stretch of a segment is reported: with its seqs when its header survived. */
export function spoolStretchDamage(file: string, d: DamagedStretch): StorageDamage {
  const seqs = d.record ? seqsOf(d.record.meta) : undefined;
  return {
    kind: 'spool',
    file,
    offset: d.offset,
    length: d.length,
    ...(seqs ? { seqFrom: seqs.firstSeq, seqTo: seqs.lastSeq } : {}),
    detail: seqs ? `change set of seqs ${seqs.firstSeq}..${seqs.lastSeq} fails its CRC` : 'bytes that are no valid change set',
  };
}

/** Read size of the scrub's body checks. */
const SCRUB_CHUNK = 1024 * 1024;

/**
 * The process-server cache of one volume: append-only segments of incoming change-set
 * frames. `append` resolves only after the bytes are fsync'd (group commit: appends made while
 * one fdatasync runs share the next), which is what allows the receiver to acknowledge.
 *
 * A failed write or fsync is never acknowledged and breaks the spool until `recover`: after a
 * failed fsync the page cache may hold bytes the disk does not, so recovery cuts the active
 * segment back to what was last made durable and reads it again from the disk.
 */
export class Spool {
  private segments: Segment[] = [];
  private activeFd = -1;
  /**
   * A second descriptor of the active segment, for `flush` only. Linux reports a failed writeback
   * to each open file once: two fdatasyncs on one descriptor at the same time (a background
   * flush and a tag's `flush`) can both return success while one of them saw the error, and the
   * other would then call lost bytes durable. Each descriptor sees every error.
   */
  private syncFd = -1;
  private activeSize = 0;
  private appendedSeq = 0;
  private durable = 0;
  private waiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  private flushScheduled = false;
  private flushing = false;
  private readonly closeAfterFlush: number[] = [];
  private newSegmentUnsynced = false;
  private broken: SpoolFailedError | undefined;
  /** Damage found by `open`, for the owner to report. */
  readonly damageFound: StorageDamage[] = [];
  /** Bytes of torn tails dropped by `open`. */
  tornBytesDropped = 0;
  /** Records whose headers `open` checked and whose bodies `scrub` has yet to (see `open`). */
  private readonly unscrubbed: Array<{ segment: Segment; records: RecordLocation[]; next: number }> = [];
  private scrubScratch: Buffer | undefined;
  private firstHeld = 0;
  /** Bytes of pruned segments whose files are still being deleted (not yet free on the disk). */
  private deletingBytes = 0;

  private constructor(
    private readonly dir: string,
    private readonly segmentBytes: number,
  ) {}

  /**
   * Opens the spool. A torn tail (an append a crash cut short, never acknowledged) is dropped;
   * damaged stretches anywhere else are kept in place, reported in `damageFound`, and skipped
   * by cursors, which say so (SpoolRecord.lostBefore).
   *
   * Segments holding only seqs up to `appliedThrough` (retained for points, read back only by
   * exports and the redo advance, which check every record they read) have only their record
   * headers checked here: their bodies are checked afterwards by `scrub`, a slice at a time, so
   * that a receiver retaining a day of changes starts in seconds, not after reading it all.
   */
  static open(dir: string, segmentBytes = 64 * 1024 * 1024, appliedThrough = 0): Spool {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const spool = new Spool(dir, segmentBytes);
    const refs = listSegments(dir, EXT);
    const spans: Array<{ low: number; high: number }> = [];
    for (let i = 0; i < refs.length; i++) {
      const isLast = i === refs.length - 1;
      const headersOnly = !isLast && refs[i + 1].firstSeq - 1 <= appliedThrough;
      const fd = fs.openSync(refs[i].file, isLast ? 'r+' : 'r');
      try {
        const scan = scanSegment(fd, SPOOL_FORMAT, !headersOnly);
        if (scan.tornBytes > 0) {
          if (isLast) {
            fs.ftruncateSync(fd, scan.validEnd);
            fs.fsyncSync(fd);
            spool.tornBytesDropped += scan.tornBytes;
          } else {
            // An older segment was fsync'd whole before the next one began: a short one is damage.
            scan.damage.push({ offset: scan.validEnd, length: scan.tornBytes });
          }
        }
        let low = 0;
        let high = 0;
        for (const r of scan.records) {
          const seqs = seqsOf(r.meta);
          spool.appendedSeq = Math.max(spool.appendedSeq, seqs.lastSeq);
          if (low === 0 || seqs.firstSeq < low) low = seqs.firstSeq;
          high = Math.max(high, seqs.lastSeq);
        }
        spans.push({ low, high });
        for (const d of scan.damage) {
          if (d.record) spool.appendedSeq = Math.max(spool.appendedSeq, seqsOf(d.record.meta).lastSeq);
          spool.damageFound.push(spoolStretchDamage(refs[i].file, d));
        }
        const end = isLast ? scan.validEnd : scan.size;
        const segment: Segment = { firstSeq: refs[i].firstSeq, file: refs[i].file, durableSize: end, damage: scan.damage };
        spool.segments.push(segment);
        if (headersOnly && scan.records.length > 0) spool.unscrubbed.push({ segment, records: scan.records, next: 0 });
      } finally {
        fs.closeSync(fd);
      }
    }
    spool.durable = spool.appendedSeq;
    // Segments a prune had not deleted yet when a crash came may be left with gaps between
    // them: only the run of segments that reaches the newest without a gap counts as held.
    for (let i = spans.length - 1; i >= 0; i--) {
      if (spans[i].low === 0) continue;
      if (spool.firstHeld !== 0 && spans[i].high < spool.firstHeld - 1) break;
      spool.firstHeld = spool.firstHeld === 0 ? spans[i].low : Math.min(spool.firstHeld, spans[i].low);
    }
    const newest = spool.segments[spool.segments.length - 1];
    // Never append behind damage: a damaged newest segment is left as it is.
    if (newest && newest.durableSize < segmentBytes && newest.damage.length === 0) {
      spool.activeFd = fs.openSync(newest.file, 'r+');
      spool.syncFd = fs.openSync(newest.file, 'r');
      spool.activeSize = newest.durableSize;
    }
    return spool;
  }

  /** Segments opened with their headers checked only, whose bodies `scrub` has still to check. */
  get scrubPending(): boolean {
    return this.unscrubbed.length > 0;
  }

  /**
   * Checks now the bodies of the records `open` left to `scrub` that hold seqs after `seq`
   * (a reader is about to go through them: the redo index replays what it lost in a crash);
   * damage goes to `damageFound`.
   */
  checkBodiesAfter(seq: number): void {
    const scratch = Buffer.allocUnsafe(SCRUB_CHUNK);
    for (const work of this.unscrubbed) {
      const from = work.records.findIndex((r, i) => i >= work.next && seqsOf(r.meta).lastSeq > seq);
      if (from < 0) continue;
      const fd = fs.openSync(work.segment.file, 'r');
      try {
        for (const loc of work.records.splice(from)) {
          const damage = this.checkBody(fd, work.segment, loc, scratch);
          if (damage) this.damageFound.push(damage);
        }
      } finally {
        fs.closeSync(fd);
      }
    }
  }

  /** Checks one record's body; a damaged one is kept with its segment's damage and returned. */
  private checkBody(fd: number, segment: Segment, loc: RecordLocation, scratch: Buffer): StorageDamage | undefined {
    if (recordBodyIntact(fd, loc, scratch)) return undefined;
    const stretch: DamagedStretch = { offset: loc.offset, length: loc.end - loc.offset, record: loc };
    segment.damage.push(stretch);
    segment.damage.sort((a, b) => a.offset - b.offset);
    return spoolStretchDamage(segment.file, stretch);
  }

  /**
   * Checks the bodies of records that `open` checked the headers of only, for about `budgetMs`
   * (at least one record); returns the damage found. A damaged record is skipped by cursors
   * from then on, like damage found by `open`. Segments pruned meanwhile are passed over.
   */
  scrub(budgetMs: number): StorageDamage[] {
    const found: StorageDamage[] = [];
    const until = Date.now() + budgetMs;
    const scratch = (this.scrubScratch ??= Buffer.allocUnsafe(SCRUB_CHUNK));
    while (this.unscrubbed.length > 0) {
      const work = this.unscrubbed[0];
      if (!this.segments.includes(work.segment) || work.next >= work.records.length) {
        this.unscrubbed.shift();
        continue;
      }
      let fd: number;
      try {
        fd = fs.openSync(work.segment.file, 'r');
      } catch {
        this.unscrubbed.shift(); // deleted by a prune since
        continue;
      }
      try {
        while (work.next < work.records.length) {
          const loc = work.records[work.next++];
          let damage: StorageDamage | undefined;
          try {
            damage = this.checkBody(fd, work.segment, loc, scratch);
          } catch (err) {
            this.unscrubbed.shift(); // a segment that cannot be read is left to exports and verify
            throw err;
          }
          if (damage) found.push(damage);
          if (Date.now() >= until) return found;
        }
      } finally {
        fs.closeSync(fd);
      }
    }
    this.scrubScratch = undefined;
    return found;
  }

  /** Bytes of pruned segments being deleted in the background: free space to come. */
  get bytesBeingFreed(): number {
    return this.deletingBytes;
  }

  /** The segments held, oldest first, with their durable bytes (the last one is appended to). */
  heldSegments(): Array<{ firstSeq: number; bytes: number }> {
    return this.segments.map((s) => ({ firstSeq: s.firstSeq, bytes: s.durableSize }));
  }

  /** First seq of the oldest change set the spool holds (0: none). */
  get firstSeqHeld(): number {
    return this.firstHeld;
  }

  /** Highest seq whose change set is durable in the spool. */
  get durableSeq(): number {
    return this.durable;
  }

  /** Appends written and not yet durable (their fsync pending or running): ingest is under way. */
  get syncPending(): boolean {
    return this.waiters.length > 0 || this.flushing;
  }

  /** Set while an append or fsync failure keeps the spool from taking appends. */
  get failure(): SpoolFailedError | undefined {
    return this.broken;
  }

  /**
   * Writes a change set and resolves once it is durable. Throws at once (nothing appended)
   * when the write fails; the promise rejects when its fsync fails. `firstSeq` must not leave a gap
   * after what was appended before (a replay that starts lower is fine).
   */
  append(frame: Buffer, firstSeq: number, lastSeq: number): Promise<void> {
    if (this.broken) throw this.broken;
    if (this.appendedSeq > 0 && firstSeq > this.appendedSeq + 1) {
      throw new Error(`spool ${this.dir}: change set ${firstSeq}..${lastSeq} would leave a gap after seq ${this.appendedSeq}`);
    }
    this.ensureActiveSegment(firstSeq);
    const meta = Buffer.allocUnsafe(16);
    meta.writeBigUInt64LE(BigInt(firstSeq), 0);
    meta.writeBigUInt64LE(BigInt(lastSeq), 8);
    const before = this.activeSize;
    try {
      this.activeSize += writeParts(this.activeFd, encodeRecordParts(SPOOL_FORMAT, meta, frame), this.activeSize);
    } catch (err) {
      // Nothing of a failed write may stay behind: a later append would follow garbage.
      try {
        fs.ftruncateSync(this.activeFd, before);
      } catch (truncErr) {
        this.breakWith(truncErr as Error);
      }
      this.activeSize = before;
      throw err;
    }
    this.appendedSeq = Math.max(this.appendedSeq, lastSeq);
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.scheduleFlush();
    return done;
  }

  private activeFile(): string {
    return this.segments[this.segments.length - 1]?.file ?? this.dir;
  }

  private breakWith(err: Error): void {
    if (!this.broken) this.broken = new SpoolFailedError(err, this.activeFile());
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(this.broken);
  }

  /** Makes every append so far durable now, on this thread (tags and hash requests need it at once). */
  flush(): void {
    this.flushScheduled = false;
    if (this.broken) throw this.broken;
    const waiters = this.waiters;
    this.waiters = [];
    if (this.activeFd < 0) return;
    try {
      fs.fdatasyncSync(this.syncFd);
      if (this.newSegmentUnsynced) {
        fsyncDir(this.dir);
        this.newSegmentUnsynced = false;
      }
    } catch (err) {
      this.waiters = waiters;
      this.breakWith(err as Error);
      this.cutBackToDurable();
      throw this.broken;
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
    if (this.flushing || this.activeFd < 0 || this.waiters.length === 0 || this.broken) return;
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
      if (err || this.broken) {
        this.waiters = [...waiters, ...this.waiters];
        this.breakWith(err ?? (this.broken as Error));
        if (err) this.cutBackToDurable();
        return;
      }
      this.markDurable(segment, size, seq);
      for (const w of waiters) w.resolve();
      if (this.waiters.length > 0) this.flushInBackground();
    });
  }

  /**
   * Right after a failed fsync, cuts the active segment back to what was durable, so that a
   * crash before `recover` does not leave unacknowledged bytes (which the failed writeback may
   * have left as garbage on the disk) behind the durable records: found at the next open, they
   * could not be told from damage at rest. Best effort: `recover` cuts again and checks.
   */
  private cutBackToDurable(): void {
    const segment = this.segments[this.segments.length - 1];
    if (this.activeFd < 0 || !segment) return;
    try {
      fs.ftruncateSync(this.activeFd, segment.durableSize);
      fs.fsyncSync(this.activeFd);
    } catch {
      // the disk still fails: recover() tries again
    }
  }

  private closeActive(): void {
    this.closeFd(this.activeFd);
    this.activeFd = -1;
    fs.closeSync(this.syncFd);
    this.syncFd = -1;
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
      this.closeActive();
    }
    // A replayed change set may start at or below the previous segment's first seq; names
    // must stay unique and increasing, and its seqs up to the name are duplicates anyway.
    const previous = this.segments[this.segments.length - 1];
    const name = previous ? Math.max(firstSeq, previous.firstSeq + 1) : firstSeq;
    const file = path.join(this.dir, segmentFileName(name, EXT));
    let fd: number;
    try {
      // Read-write: recovery after a failed fsync reads the active segment back.
      fd = fs.openSync(file, 'wx+', 0o600);
    } catch (err) {
      // A file a failed earlier attempt created (and could not use) is taken over, empty.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || fs.statSync(file).size !== 0) throw err;
      fd = fs.openSync(file, 'r+');
    }
    try {
      this.syncFd = fs.openSync(file, 'r');
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    this.activeFd = fd;
    this.activeSize = 0;
    this.newSegmentUnsynced = true;
    this.segments.push({ firstSeq: name, file, durableSize: 0, damage: [] });
  }

  /**
   * Makes the spool take appends again after a failure: the active segment is cut back to what
   * was durable, synced, its cache dropped, and read again from the disk. Anything appended
   * after the last successful fsync is gone (it was never acknowledged). Throws when the disk
   * still fails; call again later.
   */
  recover(): void {
    if (this.flushing) throw new Error(`spool ${this.dir}: a flush is still running`);
    const segment = this.segments[this.segments.length - 1];
    if (this.activeFd >= 0 && segment) {
      fs.ftruncateSync(this.activeFd, segment.durableSize);
      fs.fsyncSync(this.activeFd);
      dropCache(this.activeFd);
      const scan = scanSegment(this.activeFd, SPOOL_FORMAT, true);
      if (scan.damage.length > 0 || scan.tornBytes > 0 || scan.size !== segment.durableSize) {
        throw new Error(`${segment.file}: durable records do not read back intact after the failure (${scan.damage.length} damaged stretch(es))`);
      }
      this.activeSize = segment.durableSize;
      // The failure is behind us (the segment was cut, synced and read back from the disk), but
      // `flush`'s descriptor may not have been told of it yet: let it see it now, not later.
      try {
        fs.fdatasyncSync(this.syncFd);
      } catch {
        // the error that was just recovered from
      }
    }
    fsyncDir(this.dir);
    this.newSegmentUnsynced = false;
    this.appendedSeq = this.durable;
    this.broken = undefined;
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
    const doomed: Segment[] = [];
    while (this.segments.length > 1 && this.segments[1].firstSeq - 1 <= seq) {
      doomed.push(this.segments.shift() as Segment);
    }
    for (const seg of doomed) {
      this.deletingBytes += seg.durableSize;
      void fs.promises
        .rm(seg.file, { force: true })
        .catch(() => undefined)
        .finally(() => {
          this.deletingBytes -= seg.durableSize;
        });
    }
    return doomed.length;
  }

  /** Closes the files; `flush` first when `sync` (a clean stop), never after a failure. */
  close(sync = true): void {
    if (this.activeFd >= 0) {
      if (sync && !this.broken) {
        try {
          this.flush();
        } catch {
          // reported through the waiters; nothing more to save
        }
      }
      this.breakWith(new Error('the spool was closed'));
      this.closeActive();
    }
  }
}

/**
 * Walks the spool forward record by record; returns undefined at the durable end and can be
 * called again later to continue from there as more records become durable. Damaged stretches
 * are skipped and reported with the record that follows them.
 */
export class SpoolCursor {
  private segFirstSeq: number;
  private offset = 0;
  private lost: SpoolLost[] = [];

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
   * for a record, only its header is read (the caller holds the frame already) and `frame` is
   * empty. Throws RecordDamageError when a record fails its CRC now though it passed at open.
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
      const damaged = seg.damage.find((d) => d.offset === this.offset);
      if (damaged) {
        const seqs = damaged.record ? seqsOf(damaged.record.meta) : undefined;
        if (!seqs || seqs.lastSeq > this.afterSeq) this.lost.push({ file: seg.file, offset: damaged.offset, length: damaged.length, ...seqs });
        this.offset = damaged.offset + damaged.length;
        continue;
      }
      if (this.offset >= seg.durableSize) {
        const next = this.segments[index + 1];
        if (!next) return this.lostAtEnd();
        this.segFirstSeq = next.firstSeq;
        this.offset = 0;
        continue;
      }
      const record = this.readAt(seg, arena, skipBody);
      if (record.lastSeq > this.afterSeq) {
        if (this.lost.length > 0) record.lostBefore = this.lost;
        this.lost = [];
        return record;
      }
      this.lost = [];
    }
  }

  /**
   * Damage after the last durable record: when its header says which seqs it held, they are
   * reported now (nothing later will); otherwise the next record tells where the gap ends.
   */
  private lostAtEnd(): SpoolRecord | undefined {
    const known = this.lost.filter((l) => l.lastSeq !== undefined);
    if (known.length === 0) return undefined;
    const lost = this.lost;
    this.lost = [];
    const firstSeq = Math.min(...known.map((l) => l.firstSeq as number));
    const lastSeq = Math.max(...known.map((l) => l.lastSeq as number));
    return { firstSeq, lastSeq, frame: EMPTY, bytes: 0, segment: 0, recordOffset: 0, lostBefore: lost, lostOnly: true };
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
    try {
      const loc = readRecordHeader(fd, SPOOL_FORMAT, this.offset, seg.durableSize);
      const { firstSeq, lastSeq } = seqsOf(loc.meta);
      // A record at or below afterSeq is passed over: its body is not read.
      const frame = lastSeq <= this.afterSeq || skipBody?.(firstSeq, lastSeq) ? EMPTY : readRecordBody(fd, loc, true, arena?.take(loc.bodyLength));
      this.offset = loc.end;
      return { firstSeq, lastSeq, frame, bytes: loc.end - loc.offset, segment: seg.firstSeq, recordOffset: loc.offset };
    } catch (err) {
      // Damaged since the spool was opened: opening it again finds and skips the damage.
      if (err instanceof RecordDamageError) throw new RecordDamageError(err.offset, `${seg.file}: ${err.message}`);
      throw err;
    }
  }
}

/** Reads a spool segment file whole, for `ferry receiver verify`. */
export function scanSpoolSegment(file: string): ReturnType<typeof scanSegment> & { seqs: Array<{ firstSeq: number; lastSeq: number }> } {
  const fd = fs.openSync(file, 'r');
  try {
    const scan = scanSegment(fd, SPOOL_FORMAT, true);
    return { ...scan, seqs: scan.records.map((r) => seqsOf(r.meta)) };
  } finally {
    fs.closeSync(fd);
  }
}

export const SPOOL_SEGMENT_EXT = EXT;

/**
 * The frame of the spool record at `offset` of an open segment file, its CRC checked (throws
 * RecordDamageError when it fails): the redo read path's access to retained records.
 */
export function readSpoolFrameAt(fd: number, offset: number): { firstSeq: number; lastSeq: number; frame: Buffer } {
  const loc = readRecordHeader(fd, SPOOL_FORMAT, offset, fs.fstatSync(fd).size);
  return { ...seqsOf(loc.meta), frame: readRecordBody(fd, loc, true) };
}
