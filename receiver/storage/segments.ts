import * as fs from 'fs';
import * as path from 'path';

/**
 * Append-only segment files named by the first seq they hold (`00000000000000000042.seg`).
 * Seqs grow across segments, so segment i holds seqs in [first(i), first(i+1)).
 */
export interface SegmentRef {
  firstSeq: number;
  file: string;
}

export function segmentFileName(firstSeq: number, ext: string): string {
  return `${String(firstSeq).padStart(20, '0')}.${ext}`;
}

export function listSegments(dir: string, ext: string): SegmentRef[] {
  const pattern = new RegExp(`^(\\d{20})\\.${ext}$`);
  return fs
    .readdirSync(dir)
    .map((name) => pattern.exec(name))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ firstSeq: Number(m[1]), file: path.join(dir, m[0]) }))
    .sort((a, b) => a.firstSeq - b.firstSeq);
}
