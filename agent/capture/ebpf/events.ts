import { EVENT_BYTES, type TraceEvent, type TraceOp } from './tracker';

/** REQ_OP_* values (Linux 4.10 and later, 6.1 included) of the ops the tracker reports. */
const OPS: ReadonlyMap<number, TraceOp> = new Map([
  [1, 'write'],
  [2, 'flush'],
  [3, 'discard'],
  [5, 'secure-erase'],
  [9, 'write-zeroes'],
]);

const FLAG_FUA = 1;
const FLAG_PREFLUSH = 2;
const FLAG_ERROR = 4;
const KNOWN_FLAGS = FLAG_FUA | FLAG_PREFLUSH | FLAG_ERROR;

/** A drained buffer that is not a whole number of well-formed events. */
export class TraceDecodeError extends Error {
  override readonly name = 'TraceDecodeError';
}

/**
 * Decodes the tracker's packed events (layout: EVENT_BYTES in tracker.ts). Refuses the whole
 * buffer when its length is not a multiple of EVENT_BYTES or an event has an unknown op, unknown
 * flag bits, a nonzero reserved field or a sector beyond 2^53: a program/decoder mismatch, never
 * something to skip over.
 */
export function decodeEvents(buf: Buffer): TraceEvent[] {
  if (buf.length % EVENT_BYTES !== 0) {
    throw new TraceDecodeError(`trace events: ${buf.length} bytes is not a multiple of the ${EVENT_BYTES}-byte event`);
  }
  const events: TraceEvent[] = [];
  for (let off = 0; off < buf.length; off += EVENT_BYTES) {
    const index = off / EVENT_BYTES;
    const sector = buf.readBigUInt64LE(off + 8);
    const opCode = buf.readUInt16LE(off + 24);
    const flags = buf.readUInt16LE(off + 26);
    const reserved = buf.readUInt32LE(off + 28);
    const op = OPS.get(opCode);
    if (op === undefined) throw new TraceDecodeError(`trace event ${index}: unknown op ${opCode}`);
    if ((flags & ~KNOWN_FLAGS) !== 0) throw new TraceDecodeError(`trace event ${index}: unknown flags 0x${flags.toString(16)}`);
    if (reserved !== 0) throw new TraceDecodeError(`trace event ${index}: reserved field is 0x${reserved.toString(16)}, not 0`);
    if (sector > BigInt(Number.MAX_SAFE_INTEGER)) throw new TraceDecodeError(`trace event ${index}: sector ${sector} is out of range`);
    events.push({
      slot: buf.readUInt32LE(off + 20),
      sector: Number(sector),
      bytes: buf.readUInt32LE(off + 16),
      op,
      fua: (flags & FLAG_FUA) !== 0,
      preflush: (flags & FLAG_PREFLUSH) !== 0,
      error: (flags & FLAG_ERROR) !== 0,
      timeNs: buf.readBigUInt64LE(off),
    });
  }
  return events;
}
