import * as fs from 'fs';
import * as path from 'path';

export function ensureDir(dir: string, mode = 0o700): void {
  fs.mkdirSync(dir, { recursive: true, mode });
}

/** Makes a directory entry (a create, rename or unlink inside `dir`) durable. */
export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes a file so that a crash leaves either the old or the new content, never a mix. */
export function writeFileAtomic(file: string, data: string | Buffer, mode = 0o600): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w', mode);
  try {
    fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  fsyncDir(path.dirname(file));
}

/**
 * Replaces `file` by rename without any fsync: readers never see a torn file, but a crash may
 * leave the old contents or an empty file. For snapshots rewritten every few seconds (status),
 * whose fsyncs would block the event loop for tens of milliseconds on a busy disk.
 */
export function replaceFile(file: string, data: string | Buffer, mode = 0o600): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, data, { mode });
  fs.renameSync(tmp, file);
}

export function fileExists(file: string): boolean {
  try {
    fs.statSync(file);
    return true;
  } catch {
    return false;
  }
}

/** Positional read that loops until `length` bytes are read or EOF is reached (returns bytes read). */
export function readFully(fd: number, buf: Buffer, offset: number, length: number, position: number): number {
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, buf, offset + done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

export function writeFully(fd: number, buf: Buffer, position: number): void {
  let done = 0;
  while (done < buf.length) {
    done += fs.writeSync(fd, buf, done, buf.length - done, position + done);
  }
}

/** Positional writev that loops until every byte of `parts` is written; returns the byte count. */
export function writeParts(fd: number, parts: Buffer[], position: number): number {
  const total = parts.reduce((n, b) => n + b.length, 0);
  let done = fs.writevSync(fd, parts, position);
  if (done < total) writeFully(fd, Buffer.concat(parts).subarray(done), position + done);
  return total;
}
