import { createHash } from 'node:crypto';
import type { ChangeRecord } from '../../agent/transport/change-set';

/** A deterministic PRNG (mulberry32) so failures reproduce from the printed seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The source volume as the test believes it to be, computed independently of the receiver:
 * every record is kept with its seq so the image at any seq can be rebuilt.
 */
export class VolumeModel {
  private readonly records: Array<{ seq: number; rec: ChangeRecord }> = [];

  constructor(readonly sizeBytes: number) {}

  add(seq: number, rec: ChangeRecord): void {
    this.records.push({ seq, rec });
  }

  imageAt(seq: number): Buffer {
    const img = Buffer.alloc(this.sizeBytes);
    for (const { seq: s, rec } of this.records) {
      if (s > seq) break;
      if (rec.kind === 'write' && rec.data) rec.data.copy(img, rec.offset);
      else if (rec.kind === 'discard') img.fill(0, rec.offset, rec.offset + rec.length);
    }
    return img;
  }
}

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** Random records: overlapping writes of various sizes (some compressible), discards, flushes. */
export function randomRecords(rand: () => number, count: number, volumeBytes: number, timeUs: () => number): ChangeRecord[] {
  const records: ChangeRecord[] = [];
  const sectors = volumeBytes / 512;
  for (let i = 0; i < count; i++) {
    const roll = rand();
    const captureTimeUs = timeUs();
    if (roll < 0.08) {
      records.push({ kind: 'flush', offset: 0, length: 0, captureTimeUs });
      continue;
    }
    const lengthSectors = 1 + Math.floor(rand() ** 3 * 511); // mostly small, up to 256 KiB
    const startSector = Math.floor(rand() * (sectors - lengthSectors));
    const offset = startSector * 512;
    const length = lengthSectors * 512;
    if (roll < 0.16) {
      records.push({ kind: 'discard', offset, length, captureTimeUs });
      continue;
    }
    const data = Buffer.allocUnsafe(length);
    if (rand() < 0.5) {
      const pattern = Math.floor(rand() * 256);
      for (let b = 0; b < length; b++) data[b] = (pattern + (b >> 9)) & 0xff;
    } else {
      for (let b = 0; b < length; b += 4) data.writeUInt32LE(Math.floor(rand() * 0x100000000), b);
    }
    records.push({ kind: 'write', offset, length, captureTimeUs, data });
  }
  return records;
}
