import { EVENT_BYTES, type TraceEvent, type TraceOp } from './tracker';

// Placeholder until the bpf helper's events.ts lands (same signature); take theirs on merge.
const OPS: Record<number, TraceOp> = { 1: 'write', 2: 'flush', 3: 'discard', 5: 'secure-erase', 9: 'write-zeroes' };

export function decodeEvents(buf: Buffer): TraceEvent[] {
  const out: TraceEvent[] = [];
  for (let off = 0; off + EVENT_BYTES <= buf.length; off += EVENT_BYTES) {
    const flags = buf.readUInt16LE(off + 26);
    out.push({
      timeNs: buf.readBigUInt64LE(off),
      sector: Number(buf.readBigUInt64LE(off + 8)),
      bytes: buf.readUInt32LE(off + 16),
      slot: buf.readUInt32LE(off + 20),
      op: OPS[buf.readUInt16LE(off + 24)] ?? 'write',
      fua: (flags & 1) !== 0,
      preflush: (flags & 2) !== 0,
      error: (flags & 4) !== 0,
    });
  }
  return out;
}
