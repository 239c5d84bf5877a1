// File helpers both designs share, so that their exports and cache handling cost the same.

import * as fs from 'fs';
import { readFully, writeFully } from '../../common/fsutil';
import { dropCache } from '../../native/addon';

const COPY_CHUNK = 4 * 1024 * 1024;

/**
 * Copies a (filled) replica into a new image file. Export's own clone is a reflink where the
 * filesystem has them, else a sparse copy: on a filled replica without reflinks that is this.
 */
export function copyImage(srcFd: number, dstFd: number, size: number): void {
  fs.ftruncateSync(dstFd, size);
  const buf = Buffer.allocUnsafe(COPY_CHUNK);
  for (let off = 0; off < size; off += COPY_CHUNK) {
    const n = readFully(srcFd, buf, 0, Math.min(COPY_CHUNK, size - off), off);
    writeFully(dstFd, buf.subarray(0, n), off);
  }
}

/**
 * Evicts the files' clean pages. Retained history is hours old when it is read (age-out,
 * export), so it comes from the disk, not from the page cache the run just filled.
 */
export function evict(files: readonly string[]): void {
  for (const file of files) {
    const fd = fs.openSync(file, 'r');
    try {
      fs.fdatasyncSync(fd);
      dropCache(fd);
    } finally {
      fs.closeSync(fd);
    }
  }
}

/** Every regular file under `dir`, recursively. */
export function filesUnder(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = `${dir}/${e.name}`;
    return e.isDirectory() ? filesUnder(p) : e.isFile() ? [p] : [];
  });
}

/** Bytes the files under `dir` take on disk (allocated blocks). */
export function diskBytesUnder(dir: string): number {
  return filesUnder(dir).reduce((n, f) => n + fs.statSync(f).blocks * 512, 0);
}
