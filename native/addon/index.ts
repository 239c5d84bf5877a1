// Typed wrapper and loader for the ferry_native N-API addon (Linux only).
//
// System-call failures throw an Error shaped like Node's own: `.code` is the
// errno name ('EBADF', 'EOPNOTSUPP'...), `.errno` the positive errno value (as
// in os.constants.errno) and `.syscall` the failing call. Arguments of the
// wrong type throw TypeError; negative, fractional or too large numbers throw
// RangeError. Offsets and lengths are plain numbers up to 2^53.

import * as fs from 'node:fs';
import * as path from 'node:path';

export type FlockMode = 'shared' | 'exclusive' | 'unlock';

export interface FerryNativeError extends Error {
  code: string;
  errno?: number;
  syscall?: string;
}

export interface FerryNative {
  /** fallocate(PUNCH_HOLE | KEEP_SIZE): the range reads back as zeros. A zero length is a no-op. */
  punchHole(fd: number, offset: number, length: number): void;
  /** lseek(SEEK_DATA): next data offset >= offset, or -1 if there is none (ENXIO). */
  seekData(fd: number, offset: number): number;
  /** lseek(SEEK_HOLE): next hole offset >= offset (EOF counts as a hole), or -1 past EOF (ENXIO). */
  seekHole(fd: number, offset: number): number;
  /** ioctl(FICLONE): make dstFd a reflink copy of srcFd. See isReflinkUnsupported(). */
  cloneFile(srcFd: number, dstFd: number): void;
  /**
   * flock(2). Returns true once the lock is taken (or released); with
   * wait=false returns false instead of blocking. wait=true blocks the
   * calling thread, event loop included.
   */
  flock(fd: number, mode: FlockMode, wait: boolean): boolean;
  /** Size in bytes: BLKGETSIZE64 for block devices, st_size for regular files; else EINVAL. */
  deviceSize(fd: number): number;
  /** BLKSSZGET for block devices, 512 for regular files; else EINVAL. */
  logicalBlockSize(fd: number): number;
  /** ioctl(FIFREEZE) on a mount point; refuses (EINVAL) paths that are not a mount root. */
  freezeFs(mountPath: string): void;
  /** ioctl(FITHAW); EINVAL if the filesystem is not frozen. */
  thawFs(mountPath: string): void;
  /**
   * O_DIRECT read on a worker thread. offset and length must be multiples of
   * 512 (else rejects with code 'EINVAL'); at most 1 GiB per call. Resolves
   * with fewer bytes at end of file.
   */
  readDirect(path: string, offset: number, length: number): Promise<Buffer>;
}

const PACKAGE_NAME = 'ferry';
const ADDON_RELATIVE_PATH = path.join('build', 'Release', 'ferry_native.node');

function isPackageRoot(dir: string): boolean {
  try {
    const manifest: unknown = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
    return (
      typeof manifest === 'object' &&
      manifest !== null &&
      (manifest as { name?: unknown }).name === PACKAGE_NAME
    );
  } catch {
    return false;
  }
}

/** Walks up from `startDir` to the directory whose package.json is named "ferry". */
export function findPackageRoot(startDir: string = __dirname): string {
  let dir = path.resolve(startDir);
  for (;;) {
    if (isPackageRoot(dir)) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) {
      throw new Error(`ferry native addon: no package.json named "${PACKAGE_NAME}" above ${startDir}`);
    }
    dir = parent;
  }
}

let cached: FerryNative | undefined;

/** Loads the addon once; throws a clear Error if it has not been built. */
export function loadNative(): FerryNative {
  if (cached !== undefined) return cached;
  const root = findPackageRoot();
  const addonPath = path.join(root, ADDON_RELATIVE_PATH);
  if (!fs.existsSync(addonPath)) {
    throw new Error(
      `ferry native addon is not built (missing ${addonPath}); run \`npm install\` in ${root}`,
    );
  }
  cached = require(addonPath) as FerryNative;
  return cached;
}

export function punchHole(fd: number, offset: number, length: number): void {
  loadNative().punchHole(fd, offset, length);
}

export function seekData(fd: number, offset: number): number {
  return loadNative().seekData(fd, offset);
}

export function seekHole(fd: number, offset: number): number {
  return loadNative().seekHole(fd, offset);
}

export function cloneFile(srcFd: number, dstFd: number): void {
  loadNative().cloneFile(srcFd, dstFd);
}

export function flock(fd: number, mode: FlockMode, wait: boolean): boolean {
  return loadNative().flock(fd, mode, wait);
}

export function deviceSize(fd: number): number {
  return loadNative().deviceSize(fd);
}

export function logicalBlockSize(fd: number): number {
  return loadNative().logicalBlockSize(fd);
}

export function freezeFs(mountPath: string): void {
  loadNative().freezeFs(mountPath);
}

export function thawFs(mountPath: string): void {
  loadNative().thawFs(mountPath);
}

export function readDirect(filePath: string, offset: number, length: number): Promise<Buffer> {
  return loadNative().readDirect(filePath, offset, length);
}

const REFLINK_UNSUPPORTED_CODES: ReadonlySet<string> = new Set([
  'EOPNOTSUPP',
  'ENOTSUP',
  'EXDEV',
  'EINVAL',
  'ENOTTY',
  'ENOSYS',
]);

/** True when cloneFile failed because reflinks are not possible here, so a plain copy should be used. */
export function isReflinkUnsupported(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && REFLINK_UNSUPPORTED_CODES.has(code);
}

/** Narrows an unknown caught value to an addon system error with a string `.code`. */
export function isFerryNativeError(err: unknown): err is FerryNativeError {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'string';
}
