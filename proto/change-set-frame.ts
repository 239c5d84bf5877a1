import * as lz4 from 'lz4';
import * as protobuf from 'protobufjs/minimal';
import { crc32 } from 'zlib';
import { ferry } from './generated/ferry';
import { PROTOCOL_VERSION } from './frames';

/** A change set without its payload: the fields the frame carries before the payload bytes. */
export type ChangeSetHeader = Omit<ferry.IChangeSet, 'payload' | 'compression' | 'uncompressedSize' | 'payloadCrc32'>;

export interface ChangeSetFrame {
  /** The whole frame (a view into the memory `alloc` gave). */
  frame: Buffer;
  compression: ferry.Compression;
  payloadBytes: number;
}

// Field keys (field number << 3 | wire type) the frame is written with.
const KEY_VERSION = (1 << 3) | 0; // Frame.version, varint
const KEY_CHANGE_SET = (9 << 3) | 2; // Frame.change_set, length-delimited
const KEY_PAYLOAD = (6 << 3) | 2; // ChangeSet.payload, length-delimited

function varintBytes(n: number): number {
  let bytes = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    bytes++;
  }
  return bytes;
}

function writeVarint(buf: Buffer, at: number, n: number): number {
  while (n >= 0x80) {
    buf[at++] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80);
  }
  buf[at++] = n;
  return at;
}

const headerWriter = protobuf.Writer.create();

function encodeHeader(header: ChangeSetHeader, compression: ferry.Compression, raw: Buffer, crc: number): Uint8Array {
  try {
    return ferry.ChangeSet.encode({ ...header, compression, uncompressedSize: raw.length, payloadCrc32: crc }, headerWriter).finish();
  } finally {
    headerWriter.reset();
  }
}

/**
 * Encodes a `Frame { version, change_set }` whose payload is `raw` lz4 block-compressed (or raw
 * when that does not shrink it), straight into memory from `alloc`: the payload is compressed
 * (or copied) once, to its place in the frame, instead of into a scratch buffer that protobufjs
 * then copies into a new frame. The payload field is written last; protobuf decoders take
 * fields in any order, so the receiver reads it as it reads `encodeFrame`'s (tested).
 * `headroom`: bytes of the same memory left free before the frame (a transport header's room).
 */
export function encodeChangeSetFrame(header: ChangeSetHeader, raw: Buffer, alloc: (size: number) => Buffer, headroom = 0): ChangeSetFrame {
  const crc = crc32(raw);
  const longestHeader = encodeHeader(header, ferry.Compression.LZ4_BLOCK, raw, crc).length;
  const room = raw.length === 0 ? 0 : Math.max(raw.length, lz4.encodeBound(raw.length));
  // The largest prefix: version, change-set key and length, header, payload key and length.
  const reserve = headroom + 2 + 1 + varintBytes(longestHeader + 1 + varintBytes(room) + room) + longestHeader + 1 + varintBytes(room);
  const buf = alloc(reserve + room);
  let compression = ferry.Compression.COMPRESSION_NONE;
  let payloadBytes = raw.length;
  if (raw.length > 0) {
    const size = lz4.encodeBlock(raw, buf.subarray(reserve, reserve + room));
    if (size > 0 && size < raw.length) {
      compression = ferry.Compression.LZ4_BLOCK;
      payloadBytes = size;
    } else raw.copy(buf, reserve);
  }
  const headerBytes = encodeHeader(header, compression, raw, crc);
  const payloadField = payloadBytes > 0 ? 1 + varintBytes(payloadBytes) : 0;
  const changeSetBytes = headerBytes.length + payloadField + payloadBytes;
  const prefix = 2 + 1 + varintBytes(changeSetBytes) + headerBytes.length + payloadField;
  const start = reserve - prefix;
  let at = start;
  buf[at++] = KEY_VERSION;
  buf[at++] = PROTOCOL_VERSION;
  buf[at++] = KEY_CHANGE_SET;
  at = writeVarint(buf, at, changeSetBytes);
  buf.set(headerBytes, at);
  at += headerBytes.length;
  if (payloadField > 0) {
    buf[at++] = KEY_PAYLOAD;
    at = writeVarint(buf, at, payloadBytes);
  }
  if (at !== reserve) throw new Error(`change-set frame prefix ended at ${at}, expected ${reserve}`);
  return { frame: buf.subarray(start, reserve + payloadBytes), compression, payloadBytes };
}
