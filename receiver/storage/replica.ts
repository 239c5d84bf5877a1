import * as fs from 'fs';
import { readFully, writeFully, writeParts } from '../../common/fsutil';
import { cloneFile, isReflinkUnsupported, punchHole, seekData, seekHole } from '../../native/addon';

const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

/** True when every byte of `buf` is zero. */
export function isAllZero(buf: Buffer): boolean {
  for (let off = 0; off < buf.length; off += ZERO_CHUNK.length) {
    const len = Math.min(ZERO_CHUNK.length, buf.length - off);
    if (!buf.subarray(off, off + len).equals(ZERO_CHUNK.subarray(0, len))) return false;
  }
  return true;
}

/** Makes a range read back as zeroes: a hole where the filesystem can punch one. */
export function zeroRange(fd: number, offset: number, length: number): void {
  try {
    punchHole(fd, offset, length);
    return;
  } catch (err) {
    if (!isReflinkUnsupported(err)) throw err;
  }
  for (let done = 0; done < length; done += ZERO_CHUNK.length) {
    const len = Math.min(ZERO_CHUNK.length, length - done);
    writeFully(fd, ZERO_CHUNK.subarray(0, len), offset + done);
  }
}

/** The replica image of one volume: a sparse file of the volume's size. */
export class Replica {
  private constructor(
    readonly fd: number,
    readonly sizeBytes: number,
  ) {}

  static open(file: string, sizeBytes: number): Replica {
    const exists = fs.existsSync(file);
    const fd = fs.openSync(file, exists ? 'r+' : 'w+', 0o600);
    if (fs.fstatSync(fd).size !== sizeBytes) fs.ftruncateSync(fd, sizeBytes);
    return new Replica(fd, sizeBytes);
  }

  /** Opens a replica to read only (export from another process). */
  static openReadOnly(file: string, sizeBytes: number): Replica {
    return new Replica(fs.openSync(file, 'r'), sizeBytes);
  }

  /**
   * True when [offset, offset+length) is a hole: it reads as zeroes without reading (reading
   * a hole still fills page cache with zeroes, which is slow for a fresh replica).
   */
  isHole(offset: number, length: number): boolean {
    try {
      const data = seekData(this.fd, offset);
      return data < 0 || data >= offset + length;
    } catch {
      return false; // the filesystem cannot tell: read instead
    }
  }

  /** Reads `length` bytes at `offset` into `into` (a fresh buffer when not given). */
  read(offset: number, length: number, into: Buffer = Buffer.allocUnsafe(length)): Buffer {
    const buf = into.subarray(0, length);
    const n = readFully(this.fd, buf, 0, length, offset);
    if (n < length) buf.fill(0, n);
    return buf;
  }

  write(offset: number, data: Buffer): void {
    writeFully(this.fd, data, offset);
  }

  /** Writes consecutive buffers to one contiguous range. */
  writev(offset: number, buffers: Buffer[]): void {
    if (buffers.length === 1) return this.write(offset, buffers[0]);
    writeParts(this.fd, buffers, offset);
  }

  zero(offset: number, length: number): void {
    zeroRange(this.fd, offset, length);
  }

  sync(): void {
    fs.fdatasyncSync(this.fd);
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

const CLONE_CHUNK = 4 * 1024 * 1024;

/** Copies the replica: a reflink where the filesystem has them, else only its data extents. */
export function cloneReplica(srcFd: number, dstFd: number, size: number): 'reflink' | 'sparse-copy' {
  try {
    cloneFile(srcFd, dstFd);
    return 'reflink';
  } catch (err) {
    if (!isReflinkUnsupported(err)) throw err;
  }
  fs.ftruncateSync(dstFd, size);
  const buf = Buffer.allocUnsafe(CLONE_CHUNK);
  let pos = 0;
  while (pos < size) {
    const dataStart = seekData(srcFd, pos);
    if (dataStart < 0 || dataStart >= size) break;
    const dataEnd = Math.min(size, Math.max(seekHole(srcFd, dataStart), dataStart));
    for (let off = dataStart; off < dataEnd; ) {
      const n = fs.readSync(srcFd, buf, 0, Math.min(CLONE_CHUNK, dataEnd - off), off);
      if (n === 0) break;
      writeFully(dstFd, buf.subarray(0, n), off);
      off += n;
    }
    pos = dataEnd;
  }
  return 'sparse-copy';
}

