// Typed wrapper and loader for the ferry_native N-API addon (Linux; on Windows the same
// names come from native/addon/win, see native/windows/README.md for the differences).
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

// ---------------------------------------------------------------------------
// dm-ferry control device (/dev/ferry-ctl): the kernel capture path.
//
// Every call runs on a worker thread and returns a Promise (the event loop
// never waits for the kernel). Failures reject with the errors described at
// the top of this file: `.code` is the errno name, see native/linux/README.md
// for what each errno means per call. The change-record format and its parser
// live in ./ferry-abi (re-exported here).

export * from './ferry-abi';
import {
  DEVICE_MODES,
  START_STATES,
  parseBatch,
  type DeviceMode,
  type KernelBatch,
  type StartState,
} from './ferry-abi';

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

/** A tracked device, as LIST/STATS report it. */
export interface DeviceInfo extends RawDeviceInfo {
  modeName: DeviceMode;
  startStateName: StartState;
  /** The table is suspended: no new seqs until it resumes. */
  suspended: boolean;
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
  /** The TAG record's seq on each device, in the order the devices were given. */
  seqs: number[];
  /** How long new writes were held, ns. */
  holdNs: number;
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
  device: RawDeviceInfo | null;
}

export interface ControlStats extends Omit<RawStats, 'device'> {
  device: DeviceInfo | null;
}

export interface RawBitmapResult {
  returned: number;
  granularity: number;
  nbits: number;
  dirtyBits: number;
  epoch: number;
  cutSeq: number;
}

export interface BitmapChunk extends RawBitmapResult {
  /** The bitmap bytes copied: a view into the buffer used. */
  data: Buffer;
  startByte: number;
}

export interface FerryNative {
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
  ctlTag(fd: number, devices: number[], holdMs: number, tagId: number): Promise<TagResult>;
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

/** /dev/ferry-ctl (dm-ferry) on Linux, \\.\FerryCtl (ferryflt.sys) on Windows. */
export const CONTROL_DEVICE_PATH = process.platform === 'win32' ? '\\\\.\\FerryCtl' : '/dev/ferry-ctl';
const DEFAULT_CHANGE_BUFFER_BYTES = 4 * 1024 * 1024;
const MAX_CHANGE_BUFFER_BYTES = 1024 * 1024 * 1024;
const BITMAP_CHUNK_BYTES = 1024 * 1024;

function deviceInfo(raw: RawDeviceInfo): DeviceInfo {
  return {
    ...raw,
    modeName: DEVICE_MODES[raw.mode] ?? 'data',
    startStateName: START_STATES[raw.startState] ?? 'unknown',
    suspended: (raw.flags & 0x1) !== 0,
  };
}

function controlError(code: string, message: string): FerryNativeError {
  const err = new Error(message) as FerryNativeError;
  err.code = code;
  return err;
}

/**
 * An open /dev/ferry-ctl. One agent should own the change stream: the first instance that calls
 * getChanges() does, until it is closed; then every batch it did not commit is handed out again
 * (flagged as redelivered) to the next owner.
 */
export class FerryControl {
  private closed = false;
  private pool: Buffer | undefined;
  private poolBusy = false;

  private constructor(
    readonly fd: number,
    readonly path: string,
  ) {}

  /** Opens the control device (needs CAP_SYS_ADMIN). ENOENT: dm-ferry is not loaded. */
  static async open(devicePath: string = CONTROL_DEVICE_PATH): Promise<FerryControl> {
    const fd = await loadNative().ctlOpen(devicePath);
    return new FerryControl(fd, devicePath);
  }

  private checkOpen(): void {
    if (this.closed) throw controlError('EBADF', `${this.path} is closed`);
  }

  /** Closes the fd (idempotent). Uncommitted batches of this consumer become deliverable again. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.pool = undefined;
    await loadNative().ctlClose(this.fd);
  }

  /** Module and ABI versions; check abiVersion === FERRY_ABI_VERSION before using the stream. */
  async version(): Promise<ControlVersion> {
    this.checkOpen();
    return loadNative().ctlVersion(this.fd);
  }

  /** Every tracked device with its mode, seqs, bitmap and counters. */
  async list(): Promise<DeviceInfo[]> {
    this.checkOpen();
    return (await loadNative().ctlList(this.fd)).map(deviceInfo);
  }

  /** Global stream and tag figures, plus one device's info when devIndex is given (ENODEV if unknown). */
  async stats(devIndex?: number): Promise<ControlStats> {
    this.checkOpen();
    const raw = await loadNative().ctlStats(this.fd, devIndex);
    return { ...raw, device: raw.device === null ? null : deviceInfo(raw.device) };
  }

  /**
   * Hands out the oldest records not handed out yet, over all devices, as one batch; an empty
   * batch (batchId 0) when there are none. Without `buffer` the records are views into an
   * internal buffer that the next such call reuses (and grows when one record needs more); with
   * `buffer` they are views into it and EMSGSIZE (`.needed`) says when it is too small.
   * On Windows the driver returns its result struct in the last 56 bytes of `buffer`, so a
   * batch can use all but those (`.needed` includes them).
   */
  async getChanges(buffer?: Buffer): Promise<KernelBatch> {
    this.checkOpen();
    const native = loadNative();
    if (buffer !== undefined) {
      await native.ctlGetChanges(this.fd, buffer);
      return parseBatch(buffer);
    }
    if (this.poolBusy) throw controlError('ERR_FERRY_BUSY', 'getChanges() without a buffer is already running');
    this.poolBusy = true;
    try {
      this.pool ??= Buffer.allocUnsafe(DEFAULT_CHANGE_BUFFER_BYTES);
      try {
        await native.ctlGetChanges(this.fd, this.pool);
      } catch (err) {
        const needed = (err as { needed?: number }).needed;
        if (!isFerryNativeError(err) || err.code !== 'EMSGSIZE' || needed === undefined || needed > MAX_CHANGE_BUFFER_BYTES) throw err;
        this.pool = Buffer.allocUnsafe(Math.ceil(needed / 1048576) * 1048576);
        await native.ctlGetChanges(this.fd, this.pool);
      }
      return parseBatch(this.pool);
    } finally {
      this.poolBusy = false;
    }
  }

  /** Frees every record of batches <= batchId (call once the receiver acked them durably). */
  async commit(batchId: number): Promise<void> {
    this.checkOpen();
    await loadNative().ctlCommit(this.fd, batchId);
  }

  /**
   * Waits up to timeoutMs for records; true if some are waiting. The poll() occupies one libuv
   * worker thread (4 by default, UV_THREADPOOL_SIZE) for the whole wait: prefer waits of a
   * second or less in a loop over very long ones.
   */
  async wait(timeoutMs: number): Promise<boolean> {
    this.checkOpen();
    return loadNative().ctlWait(this.fd, timeoutMs);
  }

  /**
   * Inserts a consistency tag at one cut across `devices` (indexes): new writes are held at most
   * `holdMs` (default: the module's tag_hold_ms, 300 ms) while the ones in flight finish.
   * `tagId` (default 0) becomes the TAG records' offset.
   */
  async tag(devices: number[], options: { holdMs?: number; tagId?: number } = {}): Promise<TagResult> {
    this.checkOpen();
    return loadNative().ctlTag(this.fd, devices, options.holdMs ?? 0, options.tagId ?? 0);
  }

  /**
   * Inserts a RESYNC_MARK for [offset, offset + length) and resolves its seq: read that range
   * from the device after this call and send it in place of the marker.
   */
  async resyncMark(devIndex: number, offset: number, length: number): Promise<number> {
    this.checkOpen();
    return loadNative().ctlResyncMark(this.fd, devIndex, offset, length);
  }

  /**
   * One chunk of a device's dirty bitmap (default: all of it up to 1 MiB from startByte 0).
   * cut=true first inserts the BITMAP_CUT record (cutSeq): data read back for the dirty regions
   * belongs at that seq. EBUSY while the device is in BITMAP mode.
   */
  async getBitmap(devIndex: number, options: { cut?: boolean; startByte?: number; buffer?: Buffer } = {}): Promise<BitmapChunk> {
    this.checkOpen();
    const buffer = options.buffer ?? Buffer.alloc(BITMAP_CHUNK_BYTES);
    const startByte = options.startByte ?? 0;
    const raw = await loadNative().ctlGetBitmap(this.fd, devIndex, buffer, startByte, options.cut ?? false);
    return { ...raw, startByte, data: buffer.subarray(0, raw.returned) };
  }

  /**
   * The whole dirty bitmap of a device, read chunk by chunk under one epoch (ESTALE if the device
   * overflowed meanwhile). With cut=true the BITMAP_CUT record is inserted first.
   */
  async readBitmap(devIndex: number, options: { cut?: boolean } = {}): Promise<BitmapChunk> {
    const first = await this.getBitmap(devIndex, { cut: options.cut });
    const totalBytes = Math.ceil(first.nbits / 64) * 8;
    const chunks: Buffer[] = [Buffer.from(first.data)];
    let have = first.returned;
    while (have < totalBytes) {
      const next = await this.getBitmap(devIndex, { startByte: have });
      if (next.epoch !== first.epoch) throw controlError('ESTALE', `device ${devIndex} overflowed while its bitmap was read`);
      if (next.returned === 0) break;
      chunks.push(Buffer.from(next.data));
      have += next.returned;
    }
    const data = Buffer.concat(chunks);
    return { ...first, returned: data.length, data };
  }

  /** Clears bits [startBit, startBit + nbits) if `epoch` is still current; resolves the bits still set. */
  async clearBitmap(devIndex: number, epoch: number, startBit: number, nbits: number): Promise<number> {
    this.checkOpen();
    return loadNative().ctlClearBitmap(this.fd, devIndex, epoch, startBit, nbits);
  }

  /** Windows only: re-read which volumes are protected (registry) and start or stop them. */
  async rescan(): Promise<RescanResult> {
    this.checkOpen();
    const native = loadNative();
    if (native.ctlRescan === undefined) throw controlError('ENOSYS', 'rescan() is only available on Windows');
    return native.ctlRescan(this.fd);
  }

  /**
   * Windows only: an application-consistent tag.  Runs a VSS copy backup of `volumes` ("E:\\"):
   * the writers freeze, the file system flushes, and ferryflt inserts a TAG (`tagId`) on each of
   * `devices` at that freeze point; the shadow copy is deleted unless keepSnapshot is set.
   * Bounded by timeoutMs (default 60 s): on timeout VSS is cancelled and the writers thaw.
   * Rejects with the first failing device's errno name unless every device was tagged and bridged.
   * The Linux agent takes application-consistent tags with freezeFs + tag() + thawFs instead.
   */
  async vssTag(
    volumes: string[],
    devices: number[],
    options: { tagId?: number; holdMs?: number; timeoutMs?: number; keepSnapshot?: boolean } = {},
  ): Promise<VssTagResult> {
    this.checkOpen();
    const native = loadNative();
    if (native.vssTag === undefined) throw controlError('ENOSYS', 'vssTag() is only available on Windows');
    const result = await native.vssTag(
      this.fd,
      volumes,
      devices,
      options.tagId ?? 0,
      options.holdMs ?? 0,
      options.timeoutMs ?? 60_000,
      options.keepSnapshot ?? false,
    );
    const bad = result.status.findIndex((st, i) => st !== 'ok' || !result.bridged[i]);
    if (bad >= 0) {
      const code = result.status[bad] === 'ok' ? 'ETIMEDOUT' : result.status[bad];
      const err = controlError(code, `vssTag: device ${devices[bad]} was not tagged at the VSS freeze point (${code})`);
      (err as FerryNativeError & { result?: VssTagResult }).result = result;
      throw err;
    }
    return result;
  }
}
