import * as lz4 from 'lz4';
import { crc32 } from 'zlib';
import { ferry } from './generated/ferry';
import { ErrorCode, ProtocolError } from './errors';
import { Limits } from './limits';

export interface PackedPayload {
  compression: ferry.Compression;
  payload: Buffer;
  uncompressedSize: number;
  payloadCrc32: number;
}

/**
 * lz4 block compression; the raw bytes are kept when compression does not shrink them. With
 * `scratch`, the compressed bytes are written there (grown as needed) instead of a new buffer:
 * the result is then only valid until the next call with the same scratch.
 */
export function packPayload(raw: Buffer, scratch?: ScratchBuffer): PackedPayload {
  const payloadCrc32 = crc32(raw);
  if (raw.length === 0) {
    return { compression: ferry.Compression.COMPRESSION_NONE, payload: raw, uncompressedSize: 0, payloadCrc32 };
  }
  const out = scratch ? scratch.get(lz4.encodeBound(raw.length)) : Buffer.allocUnsafe(lz4.encodeBound(raw.length));
  const size = lz4.encodeBlock(raw, out);
  if (size <= 0 || size >= raw.length) {
    return { compression: ferry.Compression.COMPRESSION_NONE, payload: raw, uncompressedSize: raw.length, payloadCrc32 };
  }
  return { compression: ferry.Compression.LZ4_BLOCK, payload: out.subarray(0, size), uncompressedSize: raw.length, payloadCrc32 };
}

/** A reusable buffer that grows to the largest size asked of it (saves an allocation per call). */
export class ScratchBuffer {
  private buf = Buffer.alloc(0);

  get(size: number): Buffer {
    if (this.buf.length < size) this.buf = Buffer.allocUnsafe(size);
    return this.buf.subarray(0, size);
  }
}

/** Gives memory for `size` bytes (a scratch buffer, an arena slice) instead of a fresh buffer. */
export type PayloadAlloc = (size: number) => Buffer;

/**
 * Decompresses and verifies a payload; throws ProtocolError on any mismatch. With `alloc`, an
 * lz4 payload is decompressed into the memory it gives: a fresh multi-megabyte buffer is a new
 * mapping whose every page faults in, and churning them keeps the garbage collector busy.
 */
export function unpackPayload(packed: PackedPayload, verifyCrc = true, alloc?: PayloadAlloc): Buffer {
  const { compression, payload, uncompressedSize, payloadCrc32 } = packed;
  if (uncompressedSize > Limits.maxPayloadBytes) {
    throw new ProtocolError(ErrorCode.TOO_LARGE, `payload of ${uncompressedSize} bytes exceeds the ${Limits.maxPayloadBytes}-byte cap`);
  }
  let raw: Buffer;
  if (compression === ferry.Compression.COMPRESSION_NONE) {
    if (payload.length !== uncompressedSize) {
      throw new ProtocolError(ErrorCode.BAD_FRAME, `uncompressed payload is ${payload.length} bytes, header says ${uncompressedSize}`);
    }
    raw = payload;
  } else if (compression === ferry.Compression.LZ4_BLOCK) {
    raw = alloc ? alloc(uncompressedSize).subarray(0, uncompressedSize) : Buffer.allocUnsafe(uncompressedSize);
    const size = payload.length === 0 ? -1 : lz4.decodeBlock(payload, raw);
    if (size !== uncompressedSize) {
      throw new ProtocolError(
        ErrorCode.DECOMPRESS_FAILED,
        size < 0 ? `lz4 payload is corrupt (error at byte ${-size})` : `lz4 payload decodes to ${size} bytes, header says ${uncompressedSize}`,
      );
    }
  } else {
    throw new ProtocolError(ErrorCode.BAD_FRAME, `unknown compression ${String(compression)}`);
  }
  if (!verifyCrc) return raw;
  const actual = crc32(raw);
  if (actual !== payloadCrc32) {
    throw new ProtocolError(
      ErrorCode.CHECKSUM_MISMATCH,
      `payload CRC-32 is ${actual.toString(16)}, frame says ${payloadCrc32.toString(16)}`,
    );
  }
  return raw;
}
