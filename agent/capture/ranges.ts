import type { ByteRange } from './types';

/**
 * The blocks of `blockSize` that `ranges` touch, as sorted, disjoint, block-aligned ranges
 * clipped to the volume (the last block may be short). No ranges means the whole volume.
 */
export function blockRanges(ranges: readonly ByteRange[], blockSize: number, sizeBytes: number): ByteRange[] {
  if (ranges.length === 0) return sizeBytes > 0 ? [{ offset: 0, length: sizeBytes }] : [];
  const aligned = ranges
    .filter((r) => r.length > 0 && r.offset < sizeBytes)
    .map((r) => {
      const start = Math.floor(r.offset / blockSize) * blockSize;
      const end = Math.min(sizeBytes, Math.ceil((r.offset + r.length) / blockSize) * blockSize);
      return { start, end };
    })
    .sort((a, b) => a.start - b.start);
  const out: ByteRange[] = [];
  for (const r of aligned) {
    const last = out[out.length - 1];
    if (last && r.start <= last.offset + last.length) last.length = Math.max(last.length, r.end - last.offset);
    else out.push({ offset: r.start, length: r.end - r.start });
  }
  return out;
}

/** Bytes the ranges cover. */
export function rangeBytes(ranges: readonly ByteRange[]): number {
  return ranges.reduce((n, r) => n + r.length, 0);
}
