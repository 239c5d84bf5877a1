// The redo retention store of one volume (docs/journal-design.md, "Decision"): the retained
// spool records are the journal; apply only indexes them; the replica holds the image of the
// oldest retained point (`baseSeq`) and is advanced as points age out. Every read of a point
// (latest included) is the replica overlaid with the newest retained version <= the point of
// each byte range, through the on-disk index.
//
// Crash safety of an advance (see "Crash safety of the redo design"): the base file says
// `advancingTo` before the replica is written; the versions are written, the replica is
// fdatasync'd, the base says done, and only then may the owner delete the spool segments
// (`segmentsFreedThrough`). Open finds an unfinished advance and runs it again: each range gets
// the newest version <= the target in full, whatever the replica held.

import * as fs from 'fs';
import * as path from 'path';
import { createHash } from 'crypto';
import { BLOCK_HASH_BYTES, blockHashes } from '../../common/block-hash';
import { writeParts } from '../../common/fsutil';
import { buildSums } from '../apply/apply-engine';
import { BlockSums, blockSumsOf, SUM_BLOCK } from '../storage/block-sums';
import { cloneReplica, Replica } from '../storage/replica';
import { blocksNotCovered, partlyTouchedBlocks } from './block-coverage';
import { BaseFile } from './base-file';
import { PlanEpoch, RangePlan, recordKey } from './range-plan';
import { RedoIndex } from './redo-index';
import { extentsOfFrame, RetainedDataDamagedError, RetainedRecords, retainedExtentsOf } from './retained-records';
import { RetainedExtent, VisiblePiece, visiblePieces } from './visible-pieces';
import { localPassWriter, packPass, partlyCoveredBlocks, PassTicket, PassWriter } from './write-pass';

/**
 * Volume bytes whose versions are looked up at once by export and advance. A record with
 * versions in two windows is read once per window; a window's pieces are held in memory
 * (about 100 bytes each, at most one per retained extent overlapping it).
 */
const WINDOW_BYTES = 4 * 1024 * 1024 * 1024;
/** Decompressed payloads held at once before a sorted write pass. */
const GATHER_BYTES = 64 * 1024 * 1024;
const MAX_WRITEV_PARTS = 512;
/** Replica blocks read at once to check them against their sums. */
const CHECK_BLOCKS = 1024;
const ZEROES = Buffer.alloc(1024 * 1024);
/** Piece bytes a range plan puts aside for its later slices, at most. */
const PLAN_KEEP_BYTES = 64 * 1024 * 1024;

export interface RedoFiles {
  /** The volume's directory: replica.img, base, redo-index.db live here. */
  dir: string;
  /** The spool's segments (owned by the Spool: this only reads them). */
  spoolDir: string;
  sizeBytes: number;
}

/** A durable spool record to index: where it is and its frame. */
export interface IndexedRecord {
  segment: number;
  recordOffset: number;
  lastSeq: number;
  frame: Buffer;
}

/** The point is older than the replica's base (aged out) or in an advance's range. */
export class PointAgedOutError extends Error {
  constructor(
    readonly seq: number,
    readonly oldestSeq: number,
  ) {
    super(`point at seq ${seq} is no longer retained (the oldest retained seq is ${oldestSeq})`);
    this.name = 'PointAgedOutError';
  }
}

/** Test hook: called after each sorted write pass of an advance with the bytes written so far. */
export interface AdvanceHooks {
  afterWritePass?: (written: number) => void;
  /** Decompressed bytes gathered per write pass (default GATHER_BYTES): the size of a slice. */
  gatherBytes?: number;
}

/** What a slice of an advance yields: a pass still being written, or nothing. */
export type AdvanceWait = Promise<void> | undefined;

/** Runs a generator of slices to its end, at once. */
function drain<T>(steps: Generator<unknown, T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

export class RedoVolume {
  /** Where an advance's write passes are written and summed (see `hostPasses`). */
  private passes: PassWriter = localPassWriter;
  /** A written pass's buffer, to pack the next one into. */
  private spare: Uint8Array | undefined;
  /** Times `forgetAfter` dropped indexed records (range plans made before are stale). */
  private forgets = 0;

  private constructor(
    private readonly files: RedoFiles,
    private readonly replica: Replica,
    /** CRC of every 4 KiB block of the replica at the base (undefined: an export of a volume without them). */
    private readonly sums: BlockSums | undefined,
    private readonly index: RedoIndex,
    private readonly base: BaseFile,
    private readonly records: RetainedRecords,
  ) {}

  /**
   * Opens the replica, the base file and the index. A new store's base is `initialBaseSeq`
   * (migration: the undo replica as it stands, at its checkpoint). The owner then hands every
   * durable spool record after `replayAfter` to `indexRecords`, and calls `finishAdvance` when
   * `advancingTo` is set, before anything reads a point.
   */
  static open(files: RedoFiles, initialBaseSeq = 0): RedoVolume {
    const closers: Array<() => void> = [];
    try {
      const replica = Replica.open(path.join(files.dir, 'replica.img'), files.sizeBytes);
      closers.push(() => replica.close());
      const sumsFile = path.join(files.dir, 'replica.sums');
      const sumsExisted = fs.existsSync(sumsFile);
      const sums = BlockSums.open(sumsFile, files.sizeBytes);
      closers.push(() => sums.close());
      // A replica without sums (made before them, or filled from outside): sum what it holds.
      if (!sumsExisted) buildSums(replica, sums);
      const base = BaseFile.open(path.join(files.dir, 'base'), initialBaseSeq);
      const index = RedoIndex.open(path.join(files.dir, 'redo-index.db'));
      closers.push(() => index.close());
      return new RedoVolume(files, replica, sums, index, base, new RetainedRecords(files.spoolDir, files.sizeBytes));
    } catch (err) {
      for (const close of closers.reverse()) close();
      throw err;
    }
  }

  /**
   * Opens a redo volume to read only, from another process than the receiver's (export): it
   * creates nothing, and the caller holds the volume's lock shared so that no advance runs.
   */
  static openReadOnly(files: RedoFiles): RedoVolume {
    const base = BaseFile.read(path.join(files.dir, 'base'));
    const replica = Replica.openReadOnly(path.join(files.dir, 'replica.img'), files.sizeBytes);
    const sumsFile = path.join(files.dir, 'replica.sums');
    let sums: BlockSums | undefined;
    try {
      sums = fs.existsSync(sumsFile) ? BlockSums.open(sumsFile, files.sizeBytes, true) : undefined;
      const index = RedoIndex.open(path.join(files.dir, 'redo-index.db'), true);
      return new RedoVolume(files, replica, sums, index, base, new RetainedRecords(files.spoolDir, files.sizeBytes));
    } catch (err) {
      sums?.close();
      replica.close();
      throw err;
    }
  }

  /** The replica is the image of this point; older points are gone. */
  get baseSeq(): number {
    return this.base.state.baseSeq;
  }

  /** Set while an advance is unfinished (a crash interrupted it): run `finishAdvance`. */
  get advancingTo(): number | undefined {
    return this.base.state.advancingTo;
  }

  /** The index holds every record up to here; open replays the spool after it. */
  get replayAfter(): number {
    return Math.max(this.index.indexedThrough, this.baseSeq);
  }

  get indexedThrough(): number {
    return this.index.indexedThrough;
  }

  get sizeBytes(): number {
    return this.files.sizeBytes;
  }

  get retainedExtents(): number {
    return this.index.count(this.baseSeq);
  }

  /** Apply: indexes durable records (one transaction). Reads and writes no volume data. */
  indexRecords(records: readonly IndexedRecord[]): void {
    if (records.length === 0) return;
    const after = this.replayAfter;
    const rows: RetainedExtent[] = [];
    let through = after;
    for (const rec of records) {
      if (rec.lastSeq <= through) continue;
      rows.push(...retainedExtentsOf(extentsOfFrame(rec.frame), rec.segment, rec.recordOffset, through));
      through = rec.lastSeq;
    }
    if (through > after) this.index.add(rows, through);
  }

  /** Makes the index durable through everything indexed so far (before a checkpoint says so). */
  syncIndex(): void {
    this.index.sync();
  }

  /** Drops what was indexed after `seq` (records a failed spool fsync lost: never acknowledged). */
  forgetAfter(seq: number): void {
    this.forgets++;
    this.index.truncateAfter(Math.max(seq, this.baseSeq));
  }

  /**
   * Bytes of the volume at point `seq` (Infinity: latest), through the index; with `plan` (see
   * `planRange`), its next slice, read with the pieces and payloads the plan holds.
   */
  read(offset: number, length: number, seq = Infinity, plan?: RangePlan): Buffer {
    this.checkRetained(seq);
    const out = this.replica.read(offset, length);
    const end = offset + length;
    const pieces = plan ? plan.slice(offset, end) : this.piecesAt(offset, end, seq);
    // Still the replica's bytes: the check reads the blocks it needs from here, not again.
    this.checkReplica(blocksNotCovered(pieces, Math.floor(offset / SUM_BLOCK), Math.ceil(end / SUM_BLOCK)), { offset, data: out });
    for (const group of byRecord(pieces)) {
      if (plan) {
        plan.take(group, end, () => this.payloadFor(group), (p, bytes) => (bytes ? bytes.copy(out, p.offset - offset) : out.fill(0, p.offset - offset, p.offset - offset + p.length)));
        continue;
      }
      const payload = this.payloadFor(group);
      for (const p of group) copyPiece(p, payload, (data, at) => data.copy(out, at - offset));
    }
    return out;
  }

  /**
   * A plan for reading [from, to) at `seq` in slices, in order (`read` and `hashes` with it):
   * the pieces as indexed now, each record read once for the whole range while what later
   * slices need of it fits the plan's budget. A plan is for the volume as it is: see `planCurrent`.
   */
  planRange(from: number, to: number, seq: number): RangePlan {
    this.checkRetained(seq);
    return new RangePlan(this.epoch(), from, to, this.piecesAt(from, to, seq), PLAN_KEEP_BYTES);
  }

  /** False once an advance or a forgetting of records made the plan's pieces wrong. */
  planCurrent(plan: RangePlan): boolean {
    const now = this.epoch();
    return plan.epoch.baseSeq === now.baseSeq && plan.epoch.advancingTo === now.advancingTo && plan.epoch.forgets === now.forgets;
  }

  private epoch(): PlanEpoch {
    return { baseSeq: this.baseSeq, advancingTo: this.advancingTo, forgets: this.forgets };
  }

  /**
   * Hashes of `count` blocks of point `seq` (Infinity: `latest`; resync hash requests, see
   * common/block-hash).
   */
  hashes(offset: number, blockSize: number, count: number, seq = Infinity, plan?: RangePlan): Buffer {
    const end = Math.min(this.files.sizeBytes, offset + count * blockSize);
    try {
      return blockHashes(this.read(offset, end - offset, seq, plan), blockSize);
    } catch (err) {
      if (!(err instanceof RetainedDataDamagedError)) throw err;
    }
    // Some retained data is damaged: each block that needs it gets a hash no content has, so
    // that a hash-compare resync (the repair) sends it again and the newer write heals it.
    const out = Buffer.allocUnsafe(Math.ceil((end - offset) / blockSize) * BLOCK_HASH_BYTES);
    for (let at = offset, i = 0; at < end; at += blockSize, i++) {
      let hash: Buffer;
      try {
        hash = blockHashes(this.read(at, Math.min(blockSize, end - at), seq), blockSize);
      } catch (err) {
        if (!(err instanceof RetainedDataDamagedError)) throw err;
        hash = createHash('sha256').update(`ferry: damaged retained data at ${at}`).digest();
      }
      hash.copy(out, i * BLOCK_HASH_BYTES, 0, BLOCK_HASH_BYTES);
    }
    return out;
  }

  /**
   * The ranges of `latest` whose newest version is in the spool record at (`segment`,
   * `recordOffset`): what to ask the agent to send again when that record is damaged (a resync
   * of those ranges; its writes are newer and cover them). Merged, sorted.
   */
  rangesServedBy(segment: number, recordOffset: number): Array<{ offset: number; length: number }> {
    const ranges: Array<{ offset: number; length: number }> = [];
    for (let from = 0; from < this.files.sizeBytes; from += WINDOW_BYTES) {
      for (const p of this.piecesAt(from, Math.min(this.files.sizeBytes, from + WINDOW_BYTES), Infinity)) {
        if (p.extent.segment !== segment || p.extent.recordOffset !== recordOffset || p.extent.dataOffset < 0) continue;
        const last = ranges[ranges.length - 1];
        if (last && last.offset + last.length === p.offset) last.length += p.length;
        else ranges.push({ offset: p.offset, length: p.length });
      }
    }
    return ranges;
  }

  /** Writes the image of point `seq` (Infinity: latest) to `outFd` (truncated to the volume), fsync'd. */
  exportTo(outFd: number, seq = Infinity): 'reflink' | 'sparse-copy' {
    this.checkRetained(seq);
    const method = cloneReplica(this.replica.fd, outFd, this.files.sizeBytes);
    for (let from = 0; from < this.files.sizeBytes; from += WINDOW_BYTES) {
      const to = Math.min(this.files.sizeBytes, from + WINDOW_BYTES);
      const pieces = this.piecesAt(from, to, seq);
      this.checkReplica(blocksNotCovered(pieces, Math.floor(from / SUM_BLOCK), Math.ceil(to / SUM_BLOCK)));
      this.writeVersions(outFd, pieces, {});
    }
    fs.fsyncSync(outFd);
    return method;
  }

  /**
   * Ages out every point before `toSeq`: the replica becomes the image of `toSeq`. Returns the
   * bytes written to the replica. The owner deletes spool segments through `baseSeq` afterwards.
   */
  advance(toSeq: number, hooks: AdvanceHooks = {}): number {
    return drain(this.advanceSlices(toSeq, hooks));
  }

  /**
   * `advance` in slices: it yields after each sorted write pass (at most `gatherBytes` of
   * versions), so that its owner can let other work run between slices. A write pass goes to
   * the volume's pass writer (see `hostPasses`) while the next one is gathered; a slice that
   * yields a promise waits for a pass still being written: an owner that awaits it is not held,
   * one that does not is held by the next slice instead (`close`). Between two slices the
   * base says `advancingTo`: points before it are refused, reads of later points and of
   * `latest` stay exact (every range the advance writes has a retained version they show),
   * indexing goes on (its rows are newer than the target). Stopping between slices leaves an
   * unfinished advance, as a crash does: the next `advance` or `finishAdvance` redoes it.
   */
  *advanceSlices(toSeq: number, hooks: AdvanceHooks = {}): Generator<AdvanceWait, number> {
    // An unfinished advance can be redone or taken further (every range gets its newest version
    // <= toSeq, whatever the replica holds), never back: the replica may hold versions up to it.
    if (this.advancingTo !== undefined && toSeq < this.advancingTo) throw new Error(`an advance to seq ${this.advancingTo} is unfinished; it cannot be taken back to ${toSeq}`);
    if (toSeq > this.index.indexedThrough) throw new Error(`cannot advance to seq ${toSeq}: only seqs through ${this.index.indexedThrough} are indexed`);
    if (toSeq <= this.baseSeq && this.advancingTo === undefined) return 0;
    // The rows the advance writes from must survive a power loss as long as the base says advancingTo.
    this.index.sync();
    const redoing = this.advancingTo !== undefined;
    let written = 0;
    const windowPieces = (from: number): VisiblePiece[] => this.piecesAt(from, Math.min(this.files.sizeBytes, from + WINDOW_BYTES), toSeq);
    // Blocks written in part keep replica bytes: check those first (a redone advance cannot,
    // its first attempt may have written them already). One window's pieces in memory at a time.
    if (!redoing) for (let from = 0; from < this.files.sizeBytes; from += WINDOW_BYTES) this.checkReplica(partlyTouchedBlocks(windowPieces(from)));
    // Slices end at the costly steps: the checks above, the base's fsyncs, each write pass, and
    // the replica's fdatasync below.
    yield;
    this.base.beginAdvance(toSeq);
    yield;
    const partlyWritten: number[] = [];
    for (let from = 0; from < this.files.sizeBytes; from += WINDOW_BYTES) {
      written += yield* this.advancePasses(windowPieces(from), hooks, written, partlyWritten);
    }
    this.sumBlocks(partlyWritten);
    yield;
    // The replica's fdatasync, on the pass writer's thread too (it can take seconds).
    const synced = this.passes.submit({ fd: this.replica.fd, runs: [], data: new Uint8Array(0), datasync: true });
    if (!synced.result && !synced.error) yield synced.done;
    this.passes.wait(synced);
    this.sums?.sync();
    this.base.finishAdvance();
    this.spare = undefined;
    this.index.dropThrough(toSeq);
    // The owner deletes the spool segments the base passed next: a reader left open on one
    // would keep its space allocated until the process ends (readers reopen on demand).
    this.records.closeReaders();
    return written;
  }

  /** Advances write their passes through `writer` (an apply thread's) instead of on this thread. */
  hostPasses(writer: PassWriter): void {
    this.passes = writer;
  }

  /** Runs an advance a crash interrupted (open calls this before anything reads a point). */
  finishAdvance(hooks: AdvanceHooks = {}): number {
    const to = this.advancingTo;
    return to === undefined ? 0 : this.advance(to, hooks);
  }

  /** Closes readers of spool segments the owner deleted. */
  segmentsDeleted(segments: readonly number[]): void {
    this.records.closeReaders(segments);
  }

  close(): void {
    this.records.closeReaders();
    const errors: unknown[] = [];
    for (const c of [() => this.index.close(), () => this.replica.close(), () => this.sums?.close()]) {
      try {
        c();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length > 0) throw errors[0];
  }

  /**
   * Checks replica blocks against their sums (skipped while an advance is unfinished: its blocks
   * may hold new bytes under old sums until it is redone). A mismatch is damage, never data.
   */
  private checkReplica(blocks: readonly number[], read?: { offset: number; data: Buffer }): void {
    const sums = this.sums;
    if (!sums || this.advancingTo !== undefined) return;
    for (let i = 0; i < blocks.length; ) {
      let j = i + 1;
      while (j < blocks.length && blocks[j] === blocks[j - 1] + 1 && j - i < CHECK_BLOCKS) j++;
      const first = blocks[i];
      const start = first * SUM_BLOCK;
      const end = Math.min(this.files.sizeBytes, (first + j - i) * SUM_BLOCK);
      const data = read && start >= read.offset && end <= read.offset + read.data.length ? read.data.subarray(start - read.offset, end - read.offset) : this.replica.read(start, end - start);
      const actual = blockSumsOf(data);
      const expected = sums.read(first, j - i);
      for (let k = 0; k < actual.length; k++) {
        if (actual[k] === expected[k]) continue;
        const at = (first + k) * SUM_BLOCK;
        throw new RetainedDataDamagedError({
          kind: 'replica',
          file: path.join(this.files.dir, 'replica.img'),
          offset: at,
          length: SUM_BLOCK,
          volumeOffset: at,
          volumeLength: SUM_BLOCK,
          detail: 'a replica block does not match its checksum; the range needs a repair from the agent',
        });
      }
      i = j;
    }
  }

  /** New sums of blocks written in part, read back from the replica once every write is done. */
  private sumBlocks(blocks: readonly number[]): void {
    if (!this.sums) return;
    for (const b of new Set(blocks)) {
      const start = b * SUM_BLOCK;
      this.sums.write(b, blockSumsOf(this.replica.read(start, Math.min(this.files.sizeBytes, start + SUM_BLOCK) - start)));
    }
  }

  private checkRetained(seq: number): void {
    const oldest = this.advancingTo ?? this.baseSeq;
    if (seq < oldest) throw new PointAgedOutError(seq, oldest);
  }

  private piecesAt(from: number, to: number, seq: number): VisiblePiece[] {
    return visiblePieces(this.index.newestFirst(from, to, this.baseSeq, seq), from, to);
  }

  private payloadFor(group: readonly VisiblePiece[]): Buffer | undefined {
    const first = group[0];
    if (first.extent.dataOffset < 0) return undefined;
    const last = group[group.length - 1];
    return this.records.payloadOf(first.extent, { offset: first.offset, length: last.offset + last.length - first.offset });
  }

  /**
   * An advance's write passes of one window's pieces: each record read once (in spool order),
   * each pass's versions packed and handed to the pass writer, the next pass gathered while it
   * is written; their sums are stored as each pass is done. Returns the bytes written.
   */
  private *advancePasses(pieces: VisiblePiece[], hooks: AdvanceHooks, writtenBefore: number, partly: number[]): Generator<AdvanceWait, number> {
    let inflight: { ticket: PassTicket; bytes: number } | undefined;
    let written = 0;
    const submit = (versions: Array<{ offset: number; data: Buffer }>): void => {
      const pass = packPass(this.replica.fd, versions, this.spare);
      this.spare = undefined;
      const bytes = pass.data.byteLength;
      partly.push(...partlyCoveredBlocks(pass.runs));
      // The writer may take the pass's buffer away (to another thread).
      inflight = { ticket: this.passes.submit(pass), bytes };
    };
    const collect = function* (self: RedoVolume): Generator<AdvanceWait, void> {
      if (!inflight) return;
      const { ticket, bytes } = inflight;
      if (!ticket.result && !ticket.error) yield ticket.done;
      inflight = undefined;
      const done = self.passes.wait(ticket);
      for (const run of done.runs) if (run.sums.length > 0) self.sums?.write(run.first, run.sums);
      self.spare = done.data;
      written += bytes;
      hooks.afterWritePass?.(writtenBefore + written);
    };
    try {
      let pending: Array<{ offset: number; data: Buffer }> = [];
      let pendingBytes = 0;
      const gatherBytes = hooks.gatherBytes ?? GATHER_BYTES;
      for (const group of byRecord(pieces).sort(inSpoolOrder)) {
        const payload = this.payloadFor(group);
        for (const p of group) copyPiece(p, payload, (data, at) => pending.push({ offset: at, data }));
        pendingBytes += payload?.length ?? 0;
        if (pendingBytes >= gatherBytes) {
          yield* collect(this);
          submit(pending);
          pending = [];
          pendingBytes = 0;
          yield;
        }
      }
      yield* collect(this);
      if (pending.length > 0) {
        submit(pending);
        yield* collect(this);
      }
      return written;
    } finally {
      // Left by an error (a damaged record, a failed write): no pass may go on writing the
      // replica behind its owner's back (a close would close its descriptor under it).
      const left = inflight as { ticket: PassTicket } | undefined;
      if (left) {
        try {
          this.passes.wait(left.ticket);
        } catch {
          // the error that left the advance is the one to report
        }
      }
    }
  }

  /**
   * Writes pieces to `fd`: each record read once (in spool order), each pass's pieces written
   * sorted by volume offset, adjacent ones in one pwritev.
   */
  private writeVersions(fd: number, pieces: VisiblePiece[], hooks: AdvanceHooks): number {
    return drain(this.writeVersionSlices(fd, pieces, hooks, 0));
  }

  /** `writeVersions`, yielding after each write pass. */
  private *writeVersionSlices(fd: number, pieces: VisiblePiece[], hooks: AdvanceHooks, writtenBefore: number): Generator<void, number> {
    let pending: Array<{ offset: number; data: Buffer }> = [];
    let pendingBytes = 0;
    let written = 0;
    const flush = (): void => {
      written += writeSorted(fd, pending);
      pending = [];
      pendingBytes = 0;
      hooks.afterWritePass?.(writtenBefore + written);
    };
    const gatherBytes = hooks.gatherBytes ?? GATHER_BYTES;
    const groups = byRecord(pieces).sort(inSpoolOrder);
    for (const group of groups) {
      const payload = this.payloadFor(group);
      for (const p of group) copyPiece(p, payload, (data, at) => pending.push({ offset: at, data }));
      pendingBytes += payload?.length ?? 0;
      if (pendingBytes >= gatherBytes) {
        flush();
        yield;
      }
    }
    if (pending.length > 0) flush();
    return written;
  }
}

/** Groups of `byRecord` in the order their records are in the spool. */
function inSpoolOrder(a: VisiblePiece[], b: VisiblePiece[]): number {
  return a[0].extent.segment - b[0].extent.segment || a[0].extent.recordOffset - b[0].extent.recordOffset;
}

/** Pieces grouped by the spool record that holds them (discards: one group per extent). */
function byRecord(pieces: readonly VisiblePiece[]): VisiblePiece[][] {
  const groups = new Map<string, VisiblePiece[]>();
  for (const p of pieces) {
    const key = recordKey(p);
    const list = groups.get(key);
    if (list) list.push(p);
    else groups.set(key, [p]);
  }
  return [...groups.values()];
}

/** Hands the piece's bytes (slices of the payload, or zeroes for a discard) to `take`. */
function copyPiece(p: VisiblePiece, payload: Buffer | undefined, take: (data: Buffer, volumeOffset: number) => void): void {
  if (!payload) {
    for (let done = 0; done < p.length; done += ZEROES.length) take(ZEROES.subarray(0, Math.min(ZEROES.length, p.length - done)), p.offset + done);
    return;
  }
  const from = p.extent.dataOffset + p.skip;
  take(payload.subarray(from, from + p.length), p.offset);
}

/** Writes `pieces` sorted by offset, contiguous ones in one pwritev; returns the bytes. */
function writeSorted(fd: number, pieces: Array<{ offset: number; data: Buffer }>): number {
  pieces.sort((a, b) => a.offset - b.offset);
  let written = 0;
  for (let i = 0; i < pieces.length; ) {
    const parts = [pieces[i].data];
    let end = pieces[i].offset + pieces[i].data.length;
    let j = i + 1;
    while (j < pieces.length && pieces[j].offset === end && parts.length < MAX_WRITEV_PARTS) {
      parts.push(pieces[j].data);
      end += pieces[j].data.length;
      j++;
    }
    written += writeParts(fd, parts, pieces[i].offset);
    i = j;
  }
  return written;
}
