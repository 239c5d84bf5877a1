import { ChangeBatch } from '../../proto/types';
import { BlockSums, blockSum, blocksOf, SUM_BLOCK, SumsAtPoint } from '../storage/block-sums';
import { StorageDamage } from '../storage/damage';
import { UndoJournal, UndoRecord, UNDO_PIECE_BYTES } from '../storage/journal';
import { isAllZero, Replica } from '../storage/replica';
import { IntervalSet } from './interval-set';
import { BufferArena } from '../../common/arena';

/** Old and new data held in memory before a journal fsync; bounds apply memory. */
const MAX_PENDING_BYTES = 32 * 1024 * 1024;
/** Longest contiguous range read or written with one system call. */
const MAX_RUN_BYTES = 8 * 1024 * 1024;

interface Piece {
  seq: number;
  offset: number;
  length: number;
  /** New data, or undefined for a discard. */
  data: Buffer | undefined;
}

/**
 * The records of `batch` with seq > `afterSeq`, cut at every UNDO_PIECE_BYTES boundary of the
 * volume (not of the extent), so that two pieces of one extent never share a checksum block.
 */
function* piecesOf(batch: ChangeBatch, afterSeq: number): Generator<Piece> {
  for (const ext of batch.extents) {
    if (ext.seq <= afterSeq || ext.kind === 'flush' || ext.kind === 'noop') continue;
    const end = ext.offset + ext.length;
    for (let pos = ext.offset; pos < end; ) {
      const next = Math.min(end, (Math.floor(pos / UNDO_PIECE_BYTES) + 1) * UNDO_PIECE_BYTES);
      const done = pos - ext.offset;
      const data = ext.kind === 'write' ? batch.data.subarray(ext.dataOffset + done, ext.dataOffset + done + (next - pos)) : undefined;
      yield { seq: ext.seq, offset: pos, length: next - pos, data };
      pos = next;
    }
  }
}

function alignDown(n: number): number {
  return Math.floor(n / SUM_BLOCK) * SUM_BLOCK;
}

/** What one piece's commit needs: its blocks' content before and the sums they had. */
interface PieceBefore {
  /** Content of the piece's whole blocks before the write (undefined: zeroes, a hole). */
  blocks: Buffer | undefined;
  /** Offset of `blocks` on the volume. */
  blocksOffset: number;
  oldSums: Uint32Array | undefined;
}

/**
 * Applies change sets to the replica in seq order. For every piece, the old data is journaled
 * and fsync'd before the replica is overwritten. Pieces of consecutive change sets share one
 * journal fsync, but a group never holds two pieces that touch the same 4 KiB block: the old
 * data of the second must be read after the first is written, so that each undo record holds
 * the true old data and the block sums the block had just before its write.
 * Call `finish` after the last batch: until then the tail of the group is not yet applied.
 *
 * With block sums, the old data read for the journal is checked against them: a replica block
 * that no longer matches its sum is damage, reported in `damage` (the write goes on: it makes
 * the block right again where it covers it, and the undo record keeps the sum the block should
 * have had, so an export of an older point refuses rather than rebuilds damaged data).
 */
export class ApplyGroup {
  private readonly touched = new IntervalSet();
  private pieces: Piece[] = [];
  private pendingBytes = 0;
  readonly damage: StorageDamage[] = [];

  /** Old data is read into `arena`, which must not be reset before `finish` returns. */
  constructor(
    private readonly replica: Replica,
    private readonly journal: UndoJournal,
    private readonly sums?: BlockSums,
    private readonly arena?: BufferArena,
  ) {}

  /** Queues the records of `batch` with seq > `afterSeq`; commits groups as they fill. */
  add(batch: ChangeBatch, afterSeq: number): void {
    for (const piece of piecesOf(batch, afterSeq)) {
      const { first, end } = blocksOf(piece.offset, piece.length);
      if (this.touched.overlaps(first, end) || this.pendingBytes >= MAX_PENDING_BYTES) this.commit();
      this.pieces.push(piece);
      this.touched.add(first, end);
      this.pendingBytes += piece.length + (piece.data ? piece.length : 0);
    }
  }

  /** Journals (durably) and then writes every queued piece. */
  finish(): void {
    if (this.pieces.length > 0) this.commit();
  }

  private commit(): void {
    const before = this.readBefore();
    const newSums: Array<Uint32Array | undefined> = [];
    this.journal.append(
      this.pieces.map((piece, i): UndoRecord => {
        const b = before[i];
        const data = b.blocks?.subarray(piece.offset - b.blocksOffset, piece.offset - b.blocksOffset + piece.length);
        const zero = data === undefined || isAllZero(data);
        if (this.sums) newSums.push(this.sumsAfter(piece, b));
        return { seq: piece.seq, offset: piece.offset, length: piece.length, zero, data: zero ? Buffer.alloc(0) : (data as Buffer), oldSums: b.oldSums };
      }),
    );
    this.writeNewData();
    if (this.sums) this.pieces.forEach((piece, i) => this.sums?.write(blocksOf(piece.offset, piece.length).first, newSums[i] as Uint32Array));
    this.pieces = [];
    this.pendingBytes = 0;
    this.touched.clear();
  }

  /** Runs of pieces whose blocks are contiguous on the volume, each at most MAX_RUN_BYTES long. */
  private runs(include: (piece: Piece) => boolean, aligned: boolean): Piece[][] {
    const runs: Piece[][] = [];
    let run: Piece[] = [];
    let runEnd = -1;
    let runBytes = 0;
    for (const piece of this.pieces) {
      if (!include(piece)) continue;
      const start = aligned ? alignDown(piece.offset) : piece.offset;
      if (run.length > 0 && (start !== runEnd || runBytes + piece.length > MAX_RUN_BYTES)) {
        runs.push(run);
        run = [];
        runBytes = 0;
      }
      run.push(piece);
      runEnd = aligned ? blocksOf(piece.offset, piece.length).end * SUM_BLOCK : piece.offset + piece.length;
      runBytes += piece.length;
    }
    if (run.length > 0) runs.push(run);
    return runs;
  }

  /**
   * The whole blocks every piece touches, as they are before the group, and their sums, read
   * one contiguous run at a time (no two pieces of a group share a block).
   */
  private readBefore(): PieceBefore[] {
    const result = new Map<Piece, PieceBefore>();
    const volumeEnd = this.replica.sizeBytes;
    const sortedPieces = this.pieces;
    for (const run of this.runs(() => true, true)) {
      const start = alignDown(run[0].offset);
      const last = run[run.length - 1];
      const end = Math.min(volumeEnd, blocksOf(last.offset, last.length).end * SUM_BLOCK);
      const hole = this.replica.isHole(start, end - start);
      const data = hole ? undefined : this.replica.read(start, end - start, this.arena?.take(end - start));
      const sums = this.sums?.read(start / SUM_BLOCK, Math.ceil((end - start) / SUM_BLOCK));
      if (sums) this.checkBlocks(start, data, end - start, sums, run);
      for (const piece of run) {
        const { first, end: pieceEnd } = blocksOf(piece.offset, piece.length);
        const from = first * SUM_BLOCK - start;
        const to = Math.min(end, pieceEnd * SUM_BLOCK) - start;
        result.set(piece, {
          blocks: data?.subarray(from, to),
          blocksOffset: first * SUM_BLOCK,
          oldSums: sums?.slice(from / SUM_BLOCK, from / SUM_BLOCK + (pieceEnd - first)),
        });
      }
    }
    return sortedPieces.map((p) => result.get(p) as PieceBefore);
  }

  /**
   * Reports blocks whose content no longer matches their sum and that stay damaged after the
   * group (a block a piece overwrites whole is right again; its undo record keeps the sum it
   * should have had, so an export of an older point still refuses it).
   */
  private checkBlocks(start: number, data: Buffer | undefined, length: number, sums: Uint32Array, run: readonly Piece[]): void {
    const overwritten = (b: number): boolean => {
      const blockStart = start + b * SUM_BLOCK;
      const blockEnd = Math.min(start + length, blockStart + SUM_BLOCK);
      return run.some((p) => p.offset <= blockStart && p.offset + p.length >= blockEnd);
    };
    let badFrom = -1;
    const flush = (i: number): void => {
      if (badFrom < 0) return;
      this.damage.push({
        kind: 'replica',
        file: 'replica.img',
        offset: start + badFrom * SUM_BLOCK,
        length: (i - badFrom) * SUM_BLOCK,
        volumeOffset: start + badFrom * SUM_BLOCK,
        volumeLength: (i - badFrom) * SUM_BLOCK,
        detail: 'replica blocks do not match their checksums (found by apply)',
      });
      badFrom = -1;
    };
    for (let i = 0; i < sums.length; i++) {
      const block = data?.subarray(i * SUM_BLOCK, Math.min(length, (i + 1) * SUM_BLOCK));
      const actual = block ? blockSum(block) : 0;
      if (actual !== sums[i] && !overwritten(i)) {
        if (badFrom < 0) badFrom = i;
      } else flush(i);
    }
    flush(sums.length);
  }

  /** The sums of the piece's blocks once it is written. */
  private sumsAfter(piece: Piece, before: PieceBefore): Uint32Array {
    const { first, end } = blocksOf(piece.offset, piece.length);
    const volumeEnd = this.replica.sizeBytes;
    const out = new Uint32Array(end - first);
    for (let b = first; b < end; b++) {
      const blockStart = b * SUM_BLOCK;
      const blockEnd = Math.min(volumeEnd, blockStart + SUM_BLOCK);
      if (piece.offset <= blockStart && piece.offset + piece.length >= blockEnd) {
        out[b - first] = piece.data ? blockSum(piece.data.subarray(blockStart - piece.offset, blockEnd - piece.offset)) : 0;
        continue;
      }
      // A block the piece covers in part: its old bytes around the new ones.
      const block = Buffer.alloc(blockEnd - blockStart);
      before.blocks?.copy(block, 0, blockStart - before.blocksOffset, blockEnd - before.blocksOffset);
      const from = Math.max(piece.offset, blockStart);
      const to = Math.min(piece.offset + piece.length, blockEnd);
      if (piece.data) piece.data.copy(block, from - blockStart, from - piece.offset, to - piece.offset);
      else block.fill(0, from - blockStart, to - blockStart);
      out[b - first] = blockSum(block);
    }
    return out;
  }

  private writeNewData(): void {
    for (const run of this.runs((p) => p.data !== undefined, false)) {
      this.replica.writev(run[0].offset, run.map((p) => p.data as Buffer));
    }
    for (const piece of this.pieces) if (!piece.data) this.replica.zero(piece.offset, piece.length);
  }
}

/** Applies the records of one change set with seq > `afterSeq` (see ApplyGroup). */
export function applyBatch(batch: ChangeBatch, afterSeq: number, replica: Replica, journal: UndoJournal, sums?: BlockSums): void {
  const group = new ApplyGroup(replica, journal, sums);
  group.add(batch, afterSeq);
  group.finish();
}

/**
 * Restores the old data of every journaled record with seq > `seq`, newest first. With `sums`,
 * the block sums of every block it touched are restored too: to the sum the oldest rolled-back
 * record kept for it, or (records from before sums existed) computed from the restored data.
 */
export function rollBack(records: Iterable<UndoRecord>, replica: Replica, sums?: BlockSums): number {
  let count = 0;
  const atPoint = new SumsAtPoint();
  for (const rec of records) {
    if (rec.zero) replica.zero(rec.offset, rec.length);
    else replica.write(rec.offset, rec.data);
    const { first, end } = blocksOf(rec.offset, rec.length);
    atPoint.note(first, end, rec.oldSums);
    count++;
  }
  if (sums) restoreSums(atPoint, replica, sums);
  return count;
}

function restoreSums(atPoint: SumsAtPoint, replica: Replica, sums: BlockSums): void {
  for (const [block, sum] of atPoint.touched) {
    let value = sum;
    if (sum < 0) {
      const start = block * SUM_BLOCK;
      value = blockSum(replica.read(start, Math.min(SUM_BLOCK, replica.sizeBytes - start)));
    }
    sums.write(block, Uint32Array.of(value));
  }
}
