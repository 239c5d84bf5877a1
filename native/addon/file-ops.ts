// File and block-device operations of the addon (Linux; see loader.ts for the error shape).

import { loadNative, type FlockMode } from './loader';

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

export function allocate(fd: number, offset: number, length: number): void {
  loadNative().allocate(fd, offset, length);
}

export function dropCache(fd: number): void {
  loadNative().dropCache(fd);
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

export function pinMmapThreshold(bytes: number): boolean {
  return loadNative().pinMmapThreshold(bytes);
}

export function pinTrimThreshold(bytes: number): boolean {
  return loadNative().pinTrimThreshold(bytes);
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
