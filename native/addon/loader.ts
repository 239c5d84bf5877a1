// Loader of the ferry_native N-API addon and the one declaration of what it exports (Linux; on
// Windows the same names come from native/addon/win, see native/windows/README.md).
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

/** Narrows an unknown caught value to an addon system error with a string `.code`. */
export function isFerryNativeError(err: unknown): err is FerryNativeError {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'string';
}

/** Raw results of the ctl* addon functions (numbers as the kernel reports them). */
export interface RawDeviceInfo {
  name: string;
  index: number;
  mode: number;
  devMajor: number;
  devMinor: number;
  dataMajor: number;
  dataMinor: number;
  metaMajor: number;
  metaMinor: number;
  sizeBytes: number;
  granularity: number;
  startState: number;
  generation: number;
  flags: number;
  firstSeq: number;
  nextSeq: number;
  committedSeq: number;
  seqLimit: number;
  bitmapBits: number;
  dirtyBits: number;
  bitmapEpoch: number;
  ringCapacity: number;
  ringUsed: number;
  ringHandedOut: number;
  poolSize: number;
  poolUsed: number;
  inflight: number;
  counters: DeviceCounters;
}

export interface DeviceCounters {
  /** WRITE records (with payload) and their bytes. */
  writes: number;
  writeBytes: number;
  /**
   * DIRTY records standing for a write: METADATA-mode writes, failed writes, payloads that could
   * not be copied, writes overlapped whole by another write in flight.
   */
  dirtyRecords: number;
  discards: number;
  flushes: number;
  tags: number;
  resyncMarks: number;
  modeChanges: number;
  /** Writes that only set bitmap bits (BITMAP mode). */
  bitmapWrites: number;
  failedWrites: number;
  droppedFlushes: number;
  recordsCommitted: number;
  bytesCommitted: number;
  /** Pairs of overlapping writes in flight at the same time (read back, see native/common/README.md). */
  overlaps: number;
  /** DIRTY records added after a write's own record to read an overlap back. */
  overlapDirty: number;
}

export interface ControlVersion {
  abiVersion: number;
  maxDevices: number;
  batchHeaderSize: number;
  recordHeaderSize: number;
  devInfoSize: number;
  maxTagHoldMs: number;
  moduleVersion: string;
}

export interface RawGetResult {
  batchId: number;
  nrecords: number;
  bytes: number;
  batchFlags: number;
}

export interface TagResult {
  /** The TAG record's seq on each device, in the order of `devices`. */
  seqs: number[];
  /** The devices tagged: as given, or for a tag at a hold's cut the held ones in the hold's order. */
  devices: number[];
  /** How long new writes were held, ns (for a tag at a hold's cut: from the hold's start). */
  holdNs: number;
}

/** A write hold in place (FERRY_IOC_HOLD). */
export interface HoldResult {
  /** Pass to a tag at the hold's cut, or to a release. */
  holdId: number;
  /** From the start of the hold until no write was in flight on any held device, ns. */
  drainNs: number;
}

export interface ReleaseResult {
  /** How long new writes were held, ns. */
  heldNs: number;
}

/** What became of the write holds since the module loaded. */
export interface HoldStats {
  /** Ended by a tag at their cut. */
  ok: number;
  /** Released by their bound. */
  expired: number;
  /** Ended otherwise: a release, the owner's close, a drain timeout, a failed cut, a device going away. */
  aborted: number;
  /** The longest hold, ns. */
  maxNs: number;
}

export interface RawStats {
  ndevices: number;
  batchesInflight: number;
  consumerAttached: boolean;
  nextBatchId: number;
  committedBatchId: number;
  gets: number;
  commits: number;
  resets: number;
  tagsOk: number;
  tagsTimedOut: number;
  tagHoldLastNs: number;
  tagHoldMaxNs: number;
  holds: HoldStats;
  device: RawDeviceInfo | null;
}

export interface RawBitmapResult {
  returned: number;
  granularity: number;
  nbits: number;
  dirtyBits: number;
  epoch: number;
  cutSeq: number;
}

/** Windows: volumes that began or ended protection after a registry change. */
export interface RescanResult {
  started: number;
  stopped: number;
  failed: number;
  tracked: number;
}

/** Windows: the outcome of FerryControl.vssTag, per device in the order given. */
export interface VssTagResult {
  tagId: number;
  /** The TAG record's seq per device (0 where none was inserted). */
  seqs: number[];
  /** 'ok', or the errno name of why that device got no TAG ('ENOENT': VSS never froze it). */
  status: string[];
  /** The write hold lasted until volsnap held the volume: the cut is consistent across devices. */
  bridged: boolean[];
  holdNs: number;
  snapshotSetId: string;
  /** Shadow copy device paths when keepSnapshot was set (for verification). */
  snapshotDevices: string[];
}

/** What ferry_native.node exports: file and block-device operations, then the control device. */
export interface FerryNative {
  /** fallocate(PUNCH_HOLE | KEEP_SIZE): the range reads back as zeros. A zero length is a no-op. */
  punchHole(fd: number, offset: number, length: number): void;
  /** lseek(SEEK_DATA): next data offset >= offset, or -1 if there is none (ENXIO). */
  seekData(fd: number, offset: number): number;
  /** lseek(SEEK_HOLE): next hole offset >= offset (EOF counts as a hole), or -1 past EOF (ENXIO). */
  seekHole(fd: number, offset: number): number;
  /** ioctl(FICLONE): make dstFd a reflink copy of srcFd. See isReflinkUnsupported(). */
  cloneFile(srcFd: number, dstFd: number): void;
  /** fallocate(mode 0): reserves blocks for [offset, offset+length) (ENOSPC when there is no room). */
  allocate(fd: number, offset: number, length: number): void;
  /** posix_fadvise(DONTNEED): drops the file's clean cached pages, so the next read comes from the disk. */
  dropCache(fd: number): void;
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
  /**
   * mallopt(M_MMAP_THRESHOLD): allocations of at least `bytes` get their own mapping, returned
   * to the OS when freed, and glibc stops raising the threshold as large blocks are freed.
   * Returns false where the C library is not glibc (nothing changed).
   */
  pinMmapThreshold(bytes: number): boolean;
  /**
   * mallopt(M_TRIM_THRESHOLD): free memory at the top of the heap is returned to the OS only
   * beyond `bytes` (128 KiB to 1 GiB). Returns false where the C library is not glibc.
   */
  pinTrimThreshold(bytes: number): boolean;

  // ---- the control device (see control.ts) ----
  /** open(path, O_RDWR | O_CLOEXEC) of the control device; resolves the fd. Needs CAP_SYS_ADMIN. */
  ctlOpen(path: string): Promise<number>;
  /** close(fd). Closing the fd that consumed changes makes its uncommitted batches deliverable again. */
  ctlClose(fd: number): Promise<void>;
  /** FERRY_IOC_VERSION. */
  ctlVersion(fd: number): Promise<ControlVersion>;
  /** FERRY_IOC_LIST: every tracked device. */
  ctlList(fd: number): Promise<RawDeviceInfo[]>;
  /**
   * FERRY_IOC_GET_CHANGES into `buffer` (parse it with parseBatch). The first fd to call it owns
   * the stream until closed (others get EBUSY). EMSGSIZE: the buffer cannot hold the next record;
   * the error's `.needed` says how many bytes would. ENOBUFS: 16 batches are uncommitted.
   */
  ctlGetChanges(fd: number, buffer: Buffer): Promise<RawGetResult>;
  /** FERRY_IOC_COMMIT: frees every batch <= batchId. EINVAL: never handed out; ESTALE: voided by a reset. */
  ctlCommit(fd: number, batchId: number): Promise<void>;
  /** poll(POLLIN) on a worker thread: true when records are waiting, false on timeout. */
  ctlWait(fd: number, timeoutMs: number): Promise<boolean>;
  /**
   * FERRY_IOC_TAG: hold new writes on every device (at most holdMs, 0 = module default), wait for
   * the ones in flight, insert a TAG record at that cut, release. ETIMEDOUT: the writes in flight
   * did not finish in time (nothing inserted, writes released); ENOSPC: a device is in BITMAP mode
   * or its ring is full; EAGAIN: a device is suspended. Errors carry `.holdNs`.
   */
  ctlTag(fd: number, devices: number[], holdMs: number, tagId: number, holdId?: number): Promise<TagResult>;
  /**
   * FERRY_IOC_HOLD: hold new writes on every device, wait (at most holdMs) for the ones in flight
   * and leave them held until a tag at the hold's cut (ctlTag with holdId, devices [] and holdMs
   * 0), ctlRelease, the close of this fd, or holdMs after the hold began. One hold at a time
   * (EBUSY; a plain ctlTag gets EBUSY too while it is in place). ETIMEDOUT: the writes in flight
   * did not finish in time (released). Errors carry `.drainNs`. A tag or release of a hold that
   * already ended: ESTALE.
   */
  ctlHold(fd: number, devices: number[], holdMs: number): Promise<HoldResult>;
  /** FERRY_IOC_RELEASE: ends the hold now. ESTALE: it had already ended. */
  ctlRelease(fd: number, holdId: number): Promise<ReleaseResult>;
  /** FERRY_IOC_STATS: global figures plus one device (or none with devIndex undefined). */
  ctlStats(fd: number, devIndex?: number): Promise<RawStats>;
  /**
   * FERRY_IOC_GET_BITMAP: copies bitmap bytes from startByte into buffer; with cut=true first
   * inserts the RESYNC_MARK/BITMAP_CUT record whose seq the drained data belongs at. EBUSY in
   * BITMAP mode (drain the records first); ERANGE: startByte past the end.
   */
  ctlGetBitmap(fd: number, devIndex: number, buffer: Buffer, startByte: number, cut: boolean): Promise<RawBitmapResult>;
  /** FERRY_IOC_CLEAR_BITMAP: resolves the bits still set. ESTALE: the epoch changed (the device overflowed again). */
  ctlClearBitmap(fd: number, devIndex: number, epoch: number, startBit: number, nbits: number): Promise<number>;
  /** FERRY_IOC_RESYNC_MARK: resolves the marker's seq. ERANGE: outside the device; ENOSPC: ring full. */
  ctlResyncMark(fd: number, devIndex: number, offset: number, length: number): Promise<number>;
  /** Any ferry ioctl on a caller-built argument buffer (tests and diagnostics). */
  ctlIoctlRaw(fd: number, request: number, buffer: Buffer): Promise<number>;
  /** ioctl numbers and ABI sizes as compiled into the addon. */
  ctlConstants: Readonly<Record<string, number>>;
  /** Windows only (ferryflt): re-read the protection list from the registry. */
  ctlRescan?(fd: number): Promise<RescanResult>;
  /** Windows only: an application-consistent tag through VSS (see FerryControl.vssTag). */
  vssTag?(
    fd: number,
    volumes: string[],
    devices: number[],
    tagId: number,
    holdMs: number,
    timeoutMs: number,
    keepSnapshot: boolean,
  ): Promise<VssTagResult>;
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
