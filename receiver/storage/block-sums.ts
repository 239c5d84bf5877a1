import * as fs from 'fs';
import { crc32 } from 'zlib';
import { readFully, writeFully } from '../../common/fsutil';

/** The replica is checksummed in blocks of this size (independent of the volume's block size). */
export const SUM_BLOCK = 4096;
const SUM_BYTES = 4;
const ZERO_CRC = crc32(Buffer.alloc(SUM_BLOCK));
/** A block whose content is not known (its old data could not be kept): never matches. */
export const UNKNOWN_SUM = 0xffffffff;

/**
 * The stored checksum of one block: CRC-32 of its bytes, folded so that a block of zeroes (a
 * hole of the sparse replica) stores 0, and a sparse sums file matches a sparse replica.
 */
export function blockSum(block: Buffer): number {
  const zero = block.length === SUM_BLOCK ? ZERO_CRC : crc32(Buffer.alloc(block.length));
  let sum = (crc32(block) ^ zero) >>> 0;
  if (sum === UNKNOWN_SUM) sum = 0xfffffffe;
  return sum;
}

/** Sums of consecutive blocks of `data`, which starts at a block boundary (the last block may be short). */
export function blockSumsOf(data: Buffer, into?: Uint32Array): Uint32Array {
  const count = Math.ceil(data.length / SUM_BLOCK);
  const out = into && into.length >= count ? into.subarray(0, count) : new Uint32Array(count);
  for (let i = 0; i < count; i++) out[i] = blockSum(data.subarray(i * SUM_BLOCK, Math.min(data.length, (i + 1) * SUM_BLOCK)));
  return out;
}

/** Blocks [first, end) that the byte range [offset, offset+length) touches. */
export function blocksOf(offset: number, length: number): { first: number; end: number } {
  return { first: Math.floor(offset / SUM_BLOCK), end: Math.ceil((offset + length) / SUM_BLOCK) };
}

/**
 * The block checksums of one replica (`replica.sums`): 4 bytes per 4 KiB block, a sparse file
 * (0 = a zero block) updated with every write applied and made durable with the replica at each
 * checkpoint. They let an export, `ferry receiver verify` and apply itself tell a damaged
 * replica block from a good one.
 */
export class BlockSums {
  private constructor(
    private readonly fd: number,
    readonly blocks: number,
    readonly file: string,
  ) {}

  static open(file: string, volumeBytes: number, readonly = false): BlockSums {
    const blocks = Math.ceil(volumeBytes / SUM_BLOCK);
    const exists = fs.existsSync(file);
    const fd = fs.openSync(file, readonly ? 'r' : exists ? 'r+' : 'w+', 0o600);
    if (!readonly && fs.fstatSync(fd).size !== blocks * SUM_BYTES) fs.ftruncateSync(fd, blocks * SUM_BYTES);
    return new BlockSums(fd, blocks, file);
  }

  /** Stored sums of blocks [first, first+count). */
  read(first: number, count: number): Uint32Array {
    const buf = Buffer.alloc(count * SUM_BYTES);
    readFully(this.fd, buf, 0, buf.length, first * SUM_BYTES);
    const out = new Uint32Array(count);
    for (let i = 0; i < count; i++) out[i] = buf.readUInt32LE(i * SUM_BYTES);
    return out;
  }

  write(first: number, sums: Uint32Array): void {
    if (sums.length === 0) return;
    const buf = Buffer.allocUnsafe(sums.length * SUM_BYTES);
    for (let i = 0; i < sums.length; i++) buf.writeUInt32LE(sums[i], i * SUM_BYTES);
    writeFully(this.fd, buf, first * SUM_BYTES);
  }

  sync(): void {
    fs.fdatasyncSync(this.fd);
  }

  get descriptor(): number {
    return this.fd;
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/**
 * The sum each block had at a recovery point, learnt while undo records are rolled back newest
 * first: the oldest rolled-back record that touched a block carries the sum the block had just
 * before that write, which is its sum at the point.
 */
export class SumsAtPoint {
  private readonly sums = new Map<number, number>();

  /** `oldSums` of an undo record covering blocks from `firstBlock` (undefined: a format-1 record, no sums). */
  note(firstBlock: number, endBlock: number, oldSums: Uint32Array | undefined): void {
    for (let b = firstBlock; b < endBlock; b++) {
      if (oldSums) this.sums.set(b, oldSums[b - firstBlock]);
      else this.sums.set(b, -1);
    }
  }

  /** The sum block `b` must have at the point; undefined: not touched since; -1: not known. */
  expected(b: number): number | undefined {
    return this.sums.get(b);
  }

  get touched(): ReadonlyMap<number, number> {
    return this.sums;
  }
}
