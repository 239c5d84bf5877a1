import * as fs from 'fs';
import { crc32 } from 'zlib';
import { readFully } from '../../common/fsutil';

/**
 * Framing of records in spool and journal segments (format 2):
 *   magic u32 | body length u32 | crc32(body) u32 | crc32(the 12 bytes before + meta) u32 | meta | body
 * The header has its own CRC, so a record whose body is damaged still tells where it ends and
 * what it held (its meta: seqs, offsets). Format 1 records (`magic1`: a 12-byte header with one
 * crc32(meta + body)) are still read.
 *
 * What a scan finds past the last valid record decides what it is:
 * - torn: the file ends inside a record (a header or body cut short), or only zeroes follow
 *   to the end of the file: an append a crash interrupted, or whose write failed (EIO) while
 *   the file system still recorded the new size. Never acknowledged: the receiver acknowledges
 *   only after fsync, and an agent whose acknowledged seq the receiver no longer has stops
 *   loudly (ReceiverRegressedError) instead of going on;
 * - damaged: a complete record that fails its CRC, or bytes that are no record, anywhere.
 */
export const RECORD_HEADER_BYTES = 16;
const V1_HEADER_BYTES = 12;

export interface RecordFormat {
  /** Format 2 magic, written by this version. */
  magic: number;
  /** Format 1 magic, read only (undefined: the file kind never had format 1). */
  magic1?: number;
  metaBytes: number;
  maxBodyBytes: number;
}

export interface RecordLocation {
  /** File offset of the record's header. */
  offset: number;
  meta: Buffer;
  bodyOffset: number;
  bodyLength: number;
  /** File offset just past this record. */
  end: number;
  /** CRC-32 of the body (format 1: of meta + body). */
  bodyCrc: number;
  version: 1 | 2;
}

/** A stretch of a segment file that holds no valid record. */
export interface DamagedStretch {
  offset: number;
  length: number;
  /** The record's header survived (its meta is trustworthy) and only its body fails its CRC. */
  record?: RecordLocation;
}

export interface SegmentScan {
  records: RecordLocation[];
  damage: DamagedStretch[];
  /** End of the last valid record or damaged stretch: what follows is a torn tail. */
  validEnd: number;
  /** Bytes of an append cut short at the end of the file (0: none). */
  tornBytes: number;
  size: number;
}

/** The record as [header + meta, body]: write both with one writev, no copy of the body. */
export function encodeRecordParts(format: RecordFormat, meta: Buffer, body: Buffer): [Buffer, Buffer] {
  if (meta.length !== format.metaBytes) throw new Error(`record meta must be ${format.metaBytes} bytes`);
  const head = Buffer.allocUnsafe(RECORD_HEADER_BYTES + meta.length);
  head.writeUInt32LE(format.magic, 0);
  head.writeUInt32LE(body.length, 4);
  head.writeUInt32LE(crc32(body), 8);
  meta.copy(head, RECORD_HEADER_BYTES);
  head.writeUInt32LE(headCrc(head), 12);
  return [head, body];
}

function headCrc(head: Buffer): number {
  return crc32(head.subarray(RECORD_HEADER_BYTES), crc32(head.subarray(0, 12)));
}

type Parsed =
  | { kind: 'ok'; loc: RecordLocation }
  | { kind: 'badBody'; loc: RecordLocation }
  | { kind: 'torn' }
  | { kind: 'bad' };

/** Reads bodies in pieces of this size to check CRCs without holding big records twice. */
const CHECK_CHUNK = 4 * 1024 * 1024;

function bodyCrcAt(fd: number, offset: number, length: number, seed = 0, scratch?: Buffer): number | undefined {
  const buf = scratch ?? Buffer.allocUnsafe(Math.min(CHECK_CHUNK, Math.max(1, length)));
  let crc = seed;
  for (let done = 0; done < length; ) {
    const n = Math.min(buf.length, length - done);
    if (readFully(fd, buf, 0, n, offset + done) !== n) return undefined;
    crc = crc32(buf.subarray(0, n), crc);
    done += n;
  }
  return crc;
}

/** Tries to read one record at `offset`; with `checkBody` false only the header is checked. */
function parseAt(fd: number, format: RecordFormat, offset: number, size: number, checkBody: boolean, scratch: Buffer): Parsed {
  const headLen = RECORD_HEADER_BYTES + format.metaBytes;
  const head = Buffer.allocUnsafe(headLen);
  const got = readFully(fd, head, 0, Math.min(headLen, size - offset), offset);
  if (got < 4) return got === size - offset ? { kind: 'torn' } : { kind: 'bad' };
  const magic = head.readUInt32LE(0);
  if (magic === format.magic) {
    if (got < headLen) return { kind: 'torn' };
    if (headCrc(head) !== head.readUInt32LE(12)) return { kind: 'bad' };
    const bodyLength = head.readUInt32LE(4);
    if (bodyLength > format.maxBodyBytes) return { kind: 'bad' };
    const loc: RecordLocation = {
      offset,
      meta: Buffer.from(head.subarray(RECORD_HEADER_BYTES)),
      bodyOffset: offset + headLen,
      bodyLength,
      end: offset + headLen + bodyLength,
      bodyCrc: head.readUInt32LE(8),
      version: 2,
    };
    if (loc.end > size) return { kind: 'torn' };
    if (!checkBody) return { kind: 'ok', loc };
    return bodyCrcAt(fd, loc.bodyOffset, bodyLength, 0, scratch) === loc.bodyCrc ? { kind: 'ok', loc } : { kind: 'badBody', loc };
  }
  if (format.magic1 !== undefined && magic === format.magic1) {
    const v1Len = V1_HEADER_BYTES + format.metaBytes;
    if (got < v1Len) return { kind: 'torn' };
    const bodyLength = head.readUInt32LE(4);
    if (bodyLength > format.maxBodyBytes) return { kind: 'bad' };
    const meta = Buffer.from(head.subarray(V1_HEADER_BYTES, v1Len));
    const loc: RecordLocation = { offset, meta, bodyOffset: offset + v1Len, bodyLength, end: offset + v1Len + bodyLength, bodyCrc: head.readUInt32LE(8), version: 1 };
    if (loc.end > size) return { kind: 'torn' };
    if (!checkBody) return { kind: 'ok', loc };
    // Format 1 has no header CRC: a bad record tells nothing reliable about where it ends.
    return bodyCrcAt(fd, loc.bodyOffset, bodyLength, crc32(meta), scratch) === loc.bodyCrc ? { kind: 'ok', loc } : { kind: 'bad' };
  }
  return { kind: 'bad' };
}

/** The next offset after `from` where a fully valid record starts, or undefined. */
function findNextRecord(fd: number, format: RecordFormat, from: number, size: number, scratch: Buffer): number | undefined {
  const magics = [format.magic, format.magic1].filter((m): m is number => m !== undefined).map((m) => {
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32LE(m, 0);
    return b;
  });
  const window = Buffer.allocUnsafe(1024 * 1024);
  for (let base = from; base < size; base += window.length - 3) {
    const n = readFully(fd, window, 0, Math.min(window.length, size - base), base);
    if (n < 4) return undefined;
    const view = window.subarray(0, n);
    let best: number | undefined;
    for (const m of magics) {
      for (let i = view.indexOf(m); i >= 0; i = view.indexOf(m, i + 1)) {
        const at = base + i;
        if (at <= from - 1) continue;
        if (best !== undefined && at >= best) break;
        if (parseAt(fd, format, at, size, true, scratch).kind === 'ok') {
          best = at;
          break;
        }
      }
    }
    if (best !== undefined) return best;
    if (base + n >= size) return undefined;
  }
  return undefined;
}

/** True when the file holds only zero bytes from `offset` to `size`. */
function zeroesToEnd(fd: number, offset: number, size: number, scratch: Buffer): boolean {
  for (let at = offset; at < size; ) {
    const n = readFully(fd, scratch, 0, Math.min(scratch.length, size - at), at);
    if (n === 0) return true;
    for (let i = 0; i < n; i++) if (scratch[i] !== 0) return false;
    at += n;
  }
  return true;
}

/**
 * Reads every record of a segment file from its start. With `checkBodies` false only headers
 * are read (format 2 headers still carry their own CRC): use it only where bodies are checked
 * when read.
 */
export function scanSegment(fd: number, format: RecordFormat, checkBodies = true): SegmentScan {
  const size = fs.fstatSync(fd).size;
  const scratch = Buffer.allocUnsafe(CHECK_CHUNK);
  const records: RecordLocation[] = [];
  const damage: DamagedStretch[] = [];
  let offset = 0;
  let tornBytes = 0;
  while (offset < size) {
    const parsed = parseAt(fd, format, offset, size, checkBodies, scratch);
    if (parsed.kind === 'ok') {
      records.push(parsed.loc);
      offset = parsed.loc.end;
      continue;
    }
    if (parsed.kind === 'badBody') {
      damage.push({ offset, length: parsed.loc.end - offset, record: parsed.loc });
      offset = parsed.loc.end;
      continue;
    }
    const next = findNextRecord(fd, format, offset + 1, size, scratch);
    if (next !== undefined) {
      damage.push({ offset, length: next - offset });
      offset = next;
      continue;
    }
    if (parsed.kind === 'torn' || zeroesToEnd(fd, offset, size, scratch)) tornBytes = size - offset;
    else damage.push({ offset, length: size - offset });
    break;
  }
  const validEnd = tornBytes > 0 ? size - tornBytes : size;
  return { records, damage, validEnd, tornBytes, size };
}

/** Reads and verifies one record's body. */
export function readRecordBody(fd: number, loc: RecordLocation, verify = true, into?: Buffer): Buffer {
  const body = into ? into.subarray(0, loc.bodyLength) : Buffer.allocUnsafe(loc.bodyLength);
  if (readFully(fd, body, 0, loc.bodyLength, loc.bodyOffset) !== loc.bodyLength) {
    throw new RecordDamageError(loc.offset, `record at ${loc.offset} is truncated`);
  }
  if (verify) {
    const crc = loc.version === 2 ? crc32(body) : crc32(body, crc32(loc.meta));
    if (crc !== loc.bodyCrc) throw new RecordDamageError(loc.offset, `record at ${loc.offset} fails its CRC`);
  }
  return body;
}

/** True when the record's body (read in chunks through `scratch`) matches its CRC. */
export function recordBodyIntact(fd: number, loc: RecordLocation, scratch: Buffer): boolean {
  const seed = loc.version === 2 ? 0 : crc32(loc.meta);
  return bodyCrcAt(fd, loc.bodyOffset, loc.bodyLength, seed, scratch) === loc.bodyCrc;
}

/** A record that was valid when scanned no longer reads back intact. */
export class RecordDamageError extends Error {
  constructor(
    readonly offset: number,
    message: string,
  ) {
    super(message);
    this.name = 'RecordDamageError';
  }
}

/** Reads the header of the record at `offset` of a file whose records were scanned before. */
export function readRecordHeader(fd: number, format: RecordFormat, offset: number, size: number): RecordLocation {
  const parsed = parseAt(fd, format, offset, size, false, Buffer.alloc(0));
  if (parsed.kind !== 'ok') throw new RecordDamageError(offset, `no valid record header at ${offset}`);
  return parsed.loc;
}
