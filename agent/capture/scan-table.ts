import * as fs from 'fs';
import * as path from 'path';
import { crc32 } from 'zlib';
import { BLOCK_HASH_BYTES } from '../../common/block-hash';
import { fsyncDir, writeFileAtomic } from '../../common/fsutil';
import type { ResyncKind } from './types';

const SNAPSHOT_MAGIC = 0x4e435346; // "FSCN"
const SNAPSHOT_VERSION = 1;
const SNAPSHOT_HEADER_BYTES = 64;
const LOG_ENTRY_BYTES = 8 + 8 + BLOCK_HASH_BYTES + 4;
/** Block number of a log entry that records the resync state instead of a block hash. */
const RESYNC_ENTRY = 0xffffffffffffffffn;
const RESYNC_KINDS: Array<ResyncState['kind']> = ['none', 'full', 'hash-compare', 'delta'];

function encodeEntries(entries: readonly BlockEntry[]): Buffer {
  const buf = Buffer.alloc(entries.length * LOG_ENTRY_BYTES);
  entries.forEach((e, i) => {
    const off = i * LOG_ENTRY_BYTES;
    buf.writeBigUInt64LE(BigInt(e.seq), off);
    buf.writeBigUInt64LE(BigInt(e.block), off + 8);
    e.hash.copy(buf, off + 16);
  });
  return buf;
}

/** A block whose hash the stream carries: written to the log before its record is handed out. */
export interface BlockEntry {
  seq: number;
  block: number;
  hash: Buffer;
}

export interface ResyncState {
  kind: ResyncKind | 'none';
  /** Every block below this offset is durable at the receiver as the resync pass read it. */
  cursor: number;
  /** Seq from which points are usable (0 while the resync runs). */
  doneSeq: number;
}

/**
 * What the scan source knows of the receiver's copy of a volume: per block, the hash of the
 * data the receiver holds durably (`durable`), and the hash of the data the stream will hold
 * once every record handed out lands (`sent`). New scans compare against `sent`.
 *
 * Persistence is a snapshot of `durable` at a committed seq plus a log of the block hashes of
 * every record handed out since. Reopening against the receiver's durable seq D replays the
 * log entries up to D: the table then describes exactly what the receiver holds, even after
 * a kill -9 between hand-out and commit. Memory: about 34 bytes per block.
 */
export class ScanTable {
  readonly blocks: number;
  private readonly durableHash: Buffer;
  private readonly durableKnown: Uint8Array;
  private readonly sentHash: Buffer;
  private readonly sentKnown: Uint8Array;
  resync: ResyncState = { kind: 'none', cursor: 0, doneSeq: 0 };
  /** Highest seq whose block hashes are folded into `durable`. */
  committedSeq = 0;
  private logFd = -1;
  private logEntries = 0;
  private syncsInFlight = 0;
  private closeDeferred = false;

  private constructor(
    private readonly dir: string,
    readonly sizeBytes: number,
    readonly blockSize: number,
  ) {
    this.blocks = Math.ceil(sizeBytes / blockSize);
    this.durableHash = Buffer.alloc(this.blocks * BLOCK_HASH_BYTES);
    this.durableKnown = new Uint8Array(this.blocks);
    this.sentHash = Buffer.alloc(this.blocks * BLOCK_HASH_BYTES);
    this.sentKnown = new Uint8Array(this.blocks);
  }

  private get snapshotFile(): string {
    return path.join(this.dir, 'scan-table');
  }

  private get logFile(): string {
    return path.join(this.dir, 'scan-log');
  }

  /**
   * Opens the table of a volume. Returns `stale` when what is stored cannot describe the
   * receiver's copy (no table, another geometry, or the receiver is behind the snapshot).
   */
  static open(dir: string, sizeBytes: number, blockSize: number, receiverDurableSeq: number): { table: ScanTable; stale: boolean } {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const table = new ScanTable(dir, sizeBytes, blockSize);
    const loaded = table.loadSnapshot();
    const stale = !loaded || table.committedSeq > receiverDurableSeq;
    if (stale) {
      table.durableKnown.fill(0);
      table.resync = { kind: 'none', cursor: 0, doneSeq: 0 };
      table.committedSeq = receiverDurableSeq;
    } else {
      table.replayLog(receiverDurableSeq);
      table.committedSeq = receiverDurableSeq;
    }
    table.sentHash.set(table.durableHash);
    table.sentKnown.set(table.durableKnown);
    table.compact();
    return { table, stale };
  }

  private loadSnapshot(): boolean {
    let data: Buffer;
    try {
      data = fs.readFileSync(this.snapshotFile);
    } catch {
      return false;
    }
    const tableBytes = this.blocks * (BLOCK_HASH_BYTES + 1);
    if (data.length !== SNAPSHOT_HEADER_BYTES + tableBytes) return false;
    if (data.readUInt32LE(0) !== SNAPSHOT_MAGIC || data.readUInt32LE(4) !== SNAPSHOT_VERSION) return false;
    if (data.readUInt32LE(8) !== this.blockSize || Number(data.readBigUInt64LE(16)) !== this.sizeBytes) return false;
    if (crc32(data.subarray(0, 60), crc32(data.subarray(SNAPSHOT_HEADER_BYTES))) !== data.readUInt32LE(60)) return false;
    this.committedSeq = Number(data.readBigUInt64LE(24));
    this.resync = { kind: RESYNC_KINDS[data.readUInt32LE(12)] ?? 'none', cursor: Number(data.readBigUInt64LE(32)), doneSeq: Number(data.readBigUInt64LE(40)) };
    data.copy(this.durableHash, 0, SNAPSHOT_HEADER_BYTES, SNAPSHOT_HEADER_BYTES + this.durableHash.length);
    this.durableKnown.set(data.subarray(SNAPSHOT_HEADER_BYTES + this.durableHash.length));
    return true;
  }

  /** Folds logged block hashes with seq in (committedSeq, upTo] into `durable`. */
  private replayLog(upTo: number): void {
    let data: Buffer;
    try {
      data = fs.readFileSync(this.logFile);
    } catch {
      return;
    }
    for (let off = 0; off + LOG_ENTRY_BYTES <= data.length; off += LOG_ENTRY_BYTES) {
      const entry = data.subarray(off, off + LOG_ENTRY_BYTES);
      if (crc32(entry.subarray(0, LOG_ENTRY_BYTES - 4)) !== entry.readUInt32LE(LOG_ENTRY_BYTES - 4)) break;
      const seq = Number(entry.readBigUInt64LE(0));
      if (seq > upTo) continue;
      if (entry.readBigUInt64LE(8) === RESYNC_ENTRY) {
        const kind = RESYNC_KINDS[entry.readUInt32LE(16)] ?? 'none';
        const value = Number(entry.readBigUInt64LE(20));
        this.resync = kind === 'none' ? { kind, cursor: 0, doneSeq: value } : { kind, cursor: value, doneSeq: 0 };
        continue;
      }
      const block = Number(entry.readBigUInt64LE(8));
      if (seq <= this.committedSeq || block >= this.blocks) continue;
      entry.copy(this.durableHash, block * BLOCK_HASH_BYTES, 16, 16 + BLOCK_HASH_BYTES);
      this.durableKnown[block] = 1;
    }
  }

  /**
   * Writes a snapshot of `durable` and starts an empty log; `outstanding` are re-logged.
   * Returns false (and does nothing) while a log fdatasync is still running on the old log.
   */
  compact(outstanding: readonly BlockEntry[] = []): boolean {
    if (this.syncsInFlight > 0) return false;
    const header = Buffer.alloc(SNAPSHOT_HEADER_BYTES);
    header.writeUInt32LE(SNAPSHOT_MAGIC, 0);
    header.writeUInt32LE(SNAPSHOT_VERSION, 4);
    header.writeUInt32LE(this.blockSize, 8);
    header.writeUInt32LE(RESYNC_KINDS.indexOf(this.resync.kind), 12);
    header.writeBigUInt64LE(BigInt(this.sizeBytes), 16);
    header.writeBigUInt64LE(BigInt(this.committedSeq), 24);
    header.writeBigUInt64LE(BigInt(this.resync.cursor), 32);
    header.writeBigUInt64LE(BigInt(this.resync.doneSeq), 40);
    const body = Buffer.concat([this.durableHash, Buffer.from(this.durableKnown.buffer, this.durableKnown.byteOffset, this.durableKnown.length)]);
    header.writeUInt32LE(crc32(header.subarray(0, 60), crc32(body)), 60);
    writeFileAtomic(this.snapshotFile, Buffer.concat([header, body]));
    if (this.logFd >= 0) fs.closeSync(this.logFd);
    this.logFd = fs.openSync(this.logFile, 'w', 0o600);
    this.logEntries = 0;
    fsyncDir(this.dir);
    if (outstanding.length > 0) {
      this.append(encodeEntries(outstanding));
      fs.fdatasyncSync(this.logFd);
    }
    return true;
  }

  /**
   * Makes the block hashes of records about to be handed out durable before they are sent.
   * The fdatasync runs on the thread pool; it also covers resync entries written before it.
   */
  async log(entries: readonly BlockEntry[]): Promise<void> {
    if (entries.length === 0) return;
    this.append(encodeEntries(entries));
    const fd = this.logFd;
    this.syncsInFlight++;
    try {
      await new Promise<void>((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
    } finally {
      this.syncsInFlight--;
      if (this.syncsInFlight === 0 && this.closeDeferred) this.close();
    }
  }

  /**
   * Records how far a resync is durable, valid once the receiver holds seq `seq`: a restart
   * resumes the resync there instead of at zero. Not synced by itself: losing the newest of
   * these to a crash only makes the resync resume a little earlier.
   */
  logResync(state: ResyncState, seq: number): void {
    this.resync = state;
    const buf = Buffer.alloc(LOG_ENTRY_BYTES);
    buf.writeBigUInt64LE(BigInt(seq), 0);
    buf.writeBigUInt64LE(RESYNC_ENTRY, 8);
    // In the 16 bytes a block hash takes: the kind, then the cursor (running) or done seq (finished).
    buf.writeUInt32LE(RESYNC_KINDS.indexOf(state.kind), 16);
    buf.writeBigUInt64LE(BigInt(state.kind === 'none' ? state.doneSeq : state.cursor), 20);
    this.append(buf);
  }

  private append(buf: Buffer): void {
    for (let off = 0; off < buf.length; off += LOG_ENTRY_BYTES) {
      buf.writeUInt32LE(crc32(buf.subarray(off, off + LOG_ENTRY_BYTES - 4)), off + LOG_ENTRY_BYTES - 4);
    }
    fs.writeSync(this.logFd, buf, 0, buf.length, this.logEntries * LOG_ENTRY_BYTES);
    this.logEntries += buf.length / LOG_ENTRY_BYTES;
  }

  get logEntryCount(): number {
    return this.logEntries;
  }

  /** True when the stream will give the receiver exactly `hash` for `block`. */
  sentMatches(block: number, hash: Buffer): boolean {
    return this.sentKnown[block] === 1 && this.sentHash.compare(hash, 0, BLOCK_HASH_BYTES, block * BLOCK_HASH_BYTES, (block + 1) * BLOCK_HASH_BYTES) === 0;
  }

  isKnown(block: number): boolean {
    return this.sentKnown[block] === 1;
  }

  noteSent(block: number, hash: Buffer): void {
    hash.copy(this.sentHash, block * BLOCK_HASH_BYTES);
    this.sentKnown[block] = 1;
  }

  /** The receiver holds data with this hash already (a fresh replica's zeroes, or a remote hash). */
  noteReceiverHas(block: number, hash: Buffer): void {
    hash.copy(this.durableHash, block * BLOCK_HASH_BYTES);
    this.durableKnown[block] = 1;
    this.noteSent(block, hash);
  }

  noteCommitted(entries: readonly BlockEntry[], seq: number): void {
    for (const e of entries) {
      e.hash.copy(this.durableHash, e.block * BLOCK_HASH_BYTES);
      this.durableKnown[e.block] = 1;
    }
    this.committedSeq = Math.max(this.committedSeq, seq);
  }

  /** Closes the log; while an fdatasync is still running on it, the close waits for that to end. */
  close(): void {
    if (this.syncsInFlight > 0) {
      this.closeDeferred = true;
      return;
    }
    this.closeDeferred = false;
    if (this.logFd >= 0) fs.closeSync(this.logFd);
    this.logFd = -1;
  }
}
