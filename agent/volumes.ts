import * as fs from 'fs';
import { ExitCode, FerryError } from '../common/errors';
import { deviceSize, logicalBlockSize } from '../native/addon';
import type { ProtectedVolume } from './capture/types';
import type { VolumeConfig } from './config';

const SECTOR = 512;

/** Opens a configured volume just long enough to learn its size and sector size. */
export function probeVolume(volume: VolumeConfig): ProtectedVolume {
  let fd: number;
  try {
    fd = fs.openSync(volume.path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new FerryError(`volume ${volume.id}: cannot open ${volume.path}: ${code}`, code === 'ENOENT' ? ExitCode.notFound : ExitCode.failure);
  }
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile() && !stat.isBlockDevice()) {
      throw new FerryError(`volume ${volume.id}: ${volume.path} is neither a block device nor an image file`, ExitCode.usage);
    }
    const sizeBytes = deviceSize(fd);
    const blockSize = stat.isBlockDevice() ? logicalBlockSize(fd) : SECTOR;
    if (sizeBytes === 0) throw new FerryError(`volume ${volume.id}: ${volume.path} is empty`, ExitCode.usage);
    if (sizeBytes % blockSize !== 0) {
      throw new FerryError(`volume ${volume.id}: size of ${volume.path} (${sizeBytes} bytes) is not a multiple of ${blockSize} bytes`, ExitCode.usage);
    }
    return { id: volume.id, path: volume.path, sizeBytes, blockSize, isBlockDevice: stat.isBlockDevice() };
  } finally {
    fs.closeSync(fd);
  }
}
