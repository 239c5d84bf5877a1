import * as fs from 'fs';
import * as path from 'path';
import { crc32 } from 'zlib';
import { writeFileAtomic } from '../../../common/fsutil';
import type { ResyncKind } from '../types';

const FILE_NAME = 'kernel-stream';
const ENTRY_BYTES = 64;
const MAGIC = 0x4c534b46; // "FKSL"
/** Rewrite the file (compact) past this many entries. */
const COMPACT_ENTRIES = 4096;
/** Anchors kept after compaction: more than the kernel's 16 outstanding batches per device. */
const ANCHORS_KEPT = 48;

const enum EntryType {
  identity = 1,
  anchor = 2,
  resync = 3,
}

const RESYNC_KINDS: ReadonlyArray<PersistedResync['kind']> = ['none', 'full', 'hash-compare', 'delta'];

/**
 * Where a part of one kernel batch landed in the volume's stream: the device's records with
 * kernel seqs [kseqFirst, kseqEnd) of load `generation` got stream seqs [streamFirst, streamEnd).
 */
export interface Anchor {
  generation: number;
  kseqFirst: number;
  kseqEnd: number;
  streamFirst: number;
  streamEnd: number;
}

export interface PersistedResync {
  kind: ResyncKind | 'none';
  /** Whole-device resyncs: every byte below this was resynced and is durable at the receiver. */
  cursor: number;
}

/**
 * What the kernel source keeps per volume so that a restart continues the same stream: an
 * anchor for every part of a kernel batch it handed out (written and fdatasync'd before the
 * hand-out), the resync in progress, and the highest stream seq known committed. Stream seqs of
 * the records in between anchors follow from the records themselves (see records.ts), so an
 * anchor per batch is enough to give a redelivered batch exactly the seqs it had.
 *
 * The file is a sequence of 64-byte entries, each with a CRC; a torn tail is ignored. It is
 * rewritten atomically (a snapshot of the state as entries) when it grows.
 */
export class StreamLog {
  readonly anchors: Anchor[] = [];
  resync: PersistedResync = { kind: 'none', cursor: 0 };
  committedStream = 0;
  /** A state for this volume geometry was found on disk. */
  readonly loaded: boolean;
  private fd = -1;
  private entries = 0;

  private constructor(
    private readonly dir: string,
    readonly sizeBytes: number,
    readonly blockSize: number,
    fromDisk: boolean,
  ) {
    this.loaded = fromDisk && this.load();
    if (!this.loaded) {
      this.anchors.length = 0;
      this.resync = { kind: 'none', cursor: 0 };
      this.committedStream = 0;
    }
  }

  static open(dir: string, sizeBytes: number, blockSize: number): StreamLog {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const log = new StreamLog(dir, sizeBytes, blockSize, true);
    log.compact();
    return log;
  }

  private get file(): string {
    return path.join(this.dir, FILE_NAME);
  }

  /** The next stream seq after everything ever handed out (1 when nothing was). */
  get streamEnd(): number {
    return this.anchors.reduce((end, a) => Math.max(end, a.streamEnd), 1);
  }

  get generation(): number | undefined {
    return this.anchors.length > 0 ? this.anchors[this.anchors.length - 1].generation : undefined;
  }

  /**
   * The stream seq that the device's record `kseq` of load `generation` had, when it opens a
   * logged batch part or directly follows the last one; undefined otherwise.
   */
  lookup(generation: number, kseq: number): number | undefined {
    for (let i = this.anchors.length - 1; i >= 0; i--) {
      const a = this.anchors[i];
      if (a.generation === generation && a.kseqFirst === kseq) return a.streamFirst;
    }
    for (let i = this.anchors.length - 1; i >= 0; i--) {
      const a = this.anchors[i];
      if (a.generation === generation && a.kseqEnd === kseq) return a.streamEnd;
    }
    return undefined;
  }

  /** Makes the anchors of a batch about to be handed out durable. */
  appendAnchors(anchors: readonly Anchor[]): void {
    if (anchors.length === 0) return;
    const buf = Buffer.alloc(anchors.length * ENTRY_BYTES);
    anchors.forEach((a, i) => encodeAnchor(buf.subarray(i * ENTRY_BYTES), a));
    this.anchors.push(...anchors);
    this.append(buf);
    if (this.entries >= COMPACT_ENTRIES) this.compact();
  }

  /** Records the resync state, valid once the receiver holds stream seq `committedStream`. */
  saveResync(resync: PersistedResync, committedStream: number): void {
    this.resync = resync;
    this.committedStream = Math.max(this.committedStream, committedStream);
    const buf = Buffer.alloc(ENTRY_BYTES);
    encodeResync(buf, resync, this.committedStream);
    this.append(buf);
  }

  noteCommitted(streamSeq: number): void {
    this.committedStream = Math.max(this.committedStream, streamSeq);
  }

  /** Rewrites the file as a snapshot: identity, resync state, the most recent anchors. */
  compact(): void {
    const kept = this.anchors.slice(-ANCHORS_KEPT);
    this.anchors.splice(0, this.anchors.length, ...kept);
    const buf = Buffer.alloc((2 + kept.length) * ENTRY_BYTES);
    encodeIdentity(buf, this.sizeBytes, this.blockSize);
    encodeResync(buf.subarray(ENTRY_BYTES), this.resync, this.committedStream);
    kept.forEach((a, i) => encodeAnchor(buf.subarray((2 + i) * ENTRY_BYTES), a));
    for (let off = 0; off < buf.length; off += ENTRY_BYTES) seal(buf.subarray(off, off + ENTRY_BYTES));
    if (this.fd >= 0) fs.closeSync(this.fd);
    writeFileAtomic(this.file, buf);
    this.fd = fs.openSync(this.file, 'r+');
    this.entries = buf.length / ENTRY_BYTES;
  }

  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }

  private append(buf: Buffer): void {
    for (let off = 0; off < buf.length; off += ENTRY_BYTES) seal(buf.subarray(off, off + ENTRY_BYTES));
    fs.writeSync(this.fd, buf, 0, buf.length, this.entries * ENTRY_BYTES);
    fs.fdatasyncSync(this.fd);
    this.entries += buf.length / ENTRY_BYTES;
  }

  private load(): boolean {
    let data: Buffer;
    try {
      data = fs.readFileSync(this.file);
    } catch {
      return false;
    }
    let identified = false;
    for (let off = 0; off + ENTRY_BYTES <= data.length; off += ENTRY_BYTES) {
      const e = data.subarray(off, off + ENTRY_BYTES);
      if (e.readUInt32LE(0) !== MAGIC || crc32(e.subarray(0, ENTRY_BYTES - 4)) !== e.readUInt32LE(ENTRY_BYTES - 4)) break;
      const type = e.readUInt32LE(4);
      if (off === 0) {
        if (type !== EntryType.identity || u64(e, 8) !== this.sizeBytes || u64(e, 16) !== this.blockSize) return false;
        identified = true;
      } else if (type === EntryType.anchor) {
        this.anchors.push({ generation: u64(e, 8), kseqFirst: u64(e, 16), kseqEnd: u64(e, 24), streamFirst: u64(e, 32), streamEnd: u64(e, 40) });
      } else if (type === EntryType.resync) {
        this.resync = { kind: RESYNC_KINDS[e.readUInt32LE(8)] ?? 'none', cursor: u64(e, 16) };
        this.committedStream = Math.max(this.committedStream, u64(e, 24));
      }
    }
    return identified;
  }
}

function u64(buf: Buffer, off: number): number {
  return Number(buf.readBigUInt64LE(off));
}

function header(buf: Buffer, type: EntryType): void {
  buf.fill(0, 0, ENTRY_BYTES);
  buf.writeUInt32LE(MAGIC, 0);
  buf.writeUInt32LE(type, 4);
}

function encodeIdentity(buf: Buffer, sizeBytes: number, blockSize: number): void {
  header(buf, EntryType.identity);
  buf.writeBigUInt64LE(BigInt(sizeBytes), 8);
  buf.writeBigUInt64LE(BigInt(blockSize), 16);
}

function encodeAnchor(buf: Buffer, a: Anchor): void {
  header(buf, EntryType.anchor);
  buf.writeBigUInt64LE(BigInt(a.generation), 8);
  buf.writeBigUInt64LE(BigInt(a.kseqFirst), 16);
  buf.writeBigUInt64LE(BigInt(a.kseqEnd), 24);
  buf.writeBigUInt64LE(BigInt(a.streamFirst), 32);
  buf.writeBigUInt64LE(BigInt(a.streamEnd), 40);
}

function encodeResync(buf: Buffer, r: PersistedResync, committedStream: number): void {
  header(buf, EntryType.resync);
  buf.writeUInt32LE(RESYNC_KINDS.indexOf(r.kind), 8);
  buf.writeBigUInt64LE(BigInt(r.cursor), 16);
  buf.writeBigUInt64LE(BigInt(committedStream), 24);
}

function seal(entry: Buffer): void {
  entry.writeUInt32LE(crc32(entry.subarray(0, ENTRY_BYTES - 4)), ENTRY_BYTES - 4);
}
