import * as fs from 'fs';
import { crc32 } from 'zlib';
import { readFully } from '../../common/fsutil';

/**
 * Framing of records in spool and journal segments:
 *   magic u32 | body length u32 | crc32(meta + body) u32 | meta (fixed size per file kind) | body
 * A record whose header or CRC does not check out ends the valid part of a file; whatever
 * follows it is a torn tail from a crash and was never acknowledged.
 */
export const RECORD_HEADER_BYTES = 12;

export interface RecordFormat {
  magic: number;
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
}

/** The record as [header + meta, body]: write both with one writev, no copy of the body. */
export function encodeRecordParts(format: RecordFormat, meta: Buffer, body: Buffer): [Buffer, Buffer] {
  if (meta.length !== format.metaBytes) throw new Error(`record meta must be ${format.metaBytes} bytes`);
  const head = Buffer.allocUnsafe(RECORD_HEADER_BYTES + meta.length);
  head.writeUInt32LE(format.magic, 0);
  head.writeUInt32LE(body.length, 4);
  head.writeUInt32LE(crc32(body, crc32(meta)), 8);
  meta.copy(head, RECORD_HEADER_BYTES);
  return [head, body];
}

/**
 * Reads records from the start of a file. Stops at the first invalid record and returns the
 * valid ones plus the offset where the valid data ends. With `withBodies` false only the
 * header and meta are read, but then the CRC cannot be checked: use that only on files whose
 * tail has already been validated.
 */
export function scanRecords(fd: number, format: RecordFormat, withBodies: boolean): { records: RecordLocation[]; validEnd: number } {
  const size = fs.fstatSync(fd).size;
  const headLen = RECORD_HEADER_BYTES + format.metaBytes;
  const head = Buffer.allocUnsafe(headLen);
  const records: RecordLocation[] = [];
  let offset = 0;
  while (offset + headLen <= size) {
    if (readFully(fd, head, 0, headLen, offset) !== headLen) break;
    if (head.readUInt32LE(0) !== format.magic) break;
    const bodyLength = head.readUInt32LE(4);
    if (bodyLength > format.maxBodyBytes || offset + headLen + bodyLength > size) break;
    const meta = Buffer.from(head.subarray(RECORD_HEADER_BYTES));
    if (withBodies) {
      const body = Buffer.allocUnsafe(bodyLength);
      if (readFully(fd, body, 0, bodyLength, offset + headLen) !== bodyLength) break;
      if (crc32(body, crc32(meta)) !== head.readUInt32LE(8)) break;
    }
    const end = offset + headLen + bodyLength;
    records.push({ offset, meta, bodyOffset: offset + headLen, bodyLength, end });
    offset = end;
  }
  return { records, validEnd: offset };
}

/** Reads and verifies one record's body. */
export function readRecordBody(fd: number, loc: RecordLocation, crcExpected?: number, into?: Buffer): Buffer {
  const body = into ? into.subarray(0, loc.bodyLength) : Buffer.allocUnsafe(loc.bodyLength);
  if (readFully(fd, body, 0, loc.bodyLength, loc.bodyOffset) !== loc.bodyLength) {
    throw new Error(`record at ${loc.offset} is truncated`);
  }
  if (crcExpected !== undefined && crc32(body, crc32(loc.meta)) !== crcExpected) {
    throw new Error(`record at ${loc.offset} fails its CRC`);
  }
  return body;
}

export function readRecordCrc(fd: number, loc: RecordLocation): number {
  const b = Buffer.allocUnsafe(4);
  readFully(fd, b, 0, 4, loc.offset + 8);
  return b.readUInt32LE(0);
}
