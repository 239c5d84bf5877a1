import * as fs from 'fs';
import { readDirect } from '../../native/addon';
import type { ProtectedVolume } from './types';

/**
 * Reads a protected volume as it is now: block devices with O_DIRECT (their page cache may be
 * stale next to a mounted filesystem), image files through the page cache.
 */
export class VolumeReader {
  private constructor(
    private readonly spec: ProtectedVolume,
    private readonly file: fs.promises.FileHandle,
  ) {}

  static async open(spec: ProtectedVolume): Promise<VolumeReader> {
    return new VolumeReader(spec, await fs.promises.open(spec.path, 'r'));
  }

  /** [offset, offset + length) into the start of `into`; bytes past the end of a file read as zero. */
  async read(offset: number, length: number, into: Buffer): Promise<Buffer> {
    if (this.spec.isBlockDevice) {
      const data = await readDirect(this.spec.path, offset, length);
      if (data.length !== length) throw new Error(`${this.spec.path}: short read at ${offset} (${data.length} of ${length} bytes)`);
      data.copy(into);
      return into.subarray(0, length);
    }
    const buf = into.subarray(0, length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.file.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    if (done < length) buf.fill(0, done);
    return buf;
  }

  close(): Promise<void> {
    return this.file.close();
  }
}
