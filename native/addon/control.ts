// dm-ferry control device (/dev/ferry-ctl): the kernel capture path.
//
// Every call runs on a worker thread and returns a Promise (the event loop
// never waits for the kernel). Failures reject with the errors described in
// loader.ts: `.code` is the errno name, see native/linux/README.md
// for what each errno means per call. The change-record format and its parser
// live in ./ferry-abi.

import { DEVICE_MODES, DeviceFlag, START_STATES, parseBatch, type DeviceMode, type KernelBatch, type StartState } from './ferry-abi';
import {
  isFerryNativeError,
  loadNative,
  type ControlVersion,
  type FerryNativeError,
  type HoldResult,
  type RawBitmapResult,
  type RawDeviceInfo,
  type RawStats,
  type ReleaseResult,
  type RescanResult,
  type TagResult,
  type VssTagResult,
} from './loader';

/** A tracked device, as LIST/STATS report it. */
export interface DeviceInfo extends RawDeviceInfo {
  modeName: DeviceMode;
  startStateName: StartState;
  /** The table is suspended: no new seqs until it resumes. */
  suspended: boolean;
}

export interface ControlStats extends Omit<RawStats, 'device'> {
  device: DeviceInfo | null;
}

export interface BitmapChunk extends RawBitmapResult {
  /** The bitmap bytes copied: a view into the buffer used. */
  data: Buffer;
  startByte: number;
}

/** /dev/ferry-ctl (dm-ferry) on Linux, \\.\FerryCtl (ferryflt.sys) on Windows. */
export const CONTROL_DEVICE_PATH = process.platform === 'win32' ? '\\\\.\\FerryCtl' : '/dev/ferry-ctl';
const DEFAULT_CHANGE_BUFFER_BYTES = 4 * 1024 * 1024;
const MAX_CHANGE_BUFFER_BYTES = 1024 * 1024 * 1024;
const BITMAP_CHUNK_BYTES = 1024 * 1024;

/** The driver reported a device mode this agent does not know: the module and the agent disagree. */
export class UnknownDeviceModeError extends Error {
  readonly code = 'ERR_FERRY_DEVICE_MODE';

  constructor(
    readonly device: string,
    readonly modeCode: number,
  ) {
    super(`device ${device} reports capture mode ${modeCode}, which this agent does not know (known: ${DEVICE_MODES.map((m, i) => `${i} ${m}`).join(', ')}): the driver and the agent do not speak the same ABI`);
    this.name = 'UnknownDeviceModeError';
  }
}

/** A device's info with its codes named; throws UnknownDeviceModeError for a mode code it does not know. */
export function toDeviceInfo(raw: RawDeviceInfo): DeviceInfo {
  const modeName = DEVICE_MODES[raw.mode];
  if (modeName === undefined) throw new UnknownDeviceModeError(raw.name, raw.mode);
  return {
    ...raw,
    modeName,
    startStateName: START_STATES[raw.startState] ?? 'unknown',
    suspended: (raw.flags & DeviceFlag.SUSPENDED) !== 0,
  };
}

/**
 * A write hold had already ended when it was to be tagged or released: its bound passed, it was
 * released, its owner's control fd closed, or a held device went away. Nothing was inserted.
 */
export class HoldEndedError extends Error {
  readonly code = 'ESTALE';

  constructor(
    readonly holdId: number,
    action: 'tag' | 'release',
  ) {
    super(`write hold ${holdId} had already ended (its bound passed, or it was released) when it was to be ${action === 'tag' ? 'tagged' : 'released'}: nothing was inserted`);
    this.name = 'HoldEndedError';
  }
}

/** The driver's ESTALE for a hold as a HoldEndedError; anything else unchanged. */
function holdError(err: unknown, holdId: number, action: 'tag' | 'release'): unknown {
  return isFerryNativeError(err) && err.code === 'ESTALE' ? new HoldEndedError(holdId, action) : err;
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
    return (await loadNative().ctlList(this.fd)).map(toDeviceInfo);
  }

  /** Global stream and tag figures, plus one device's info when devIndex is given (ENODEV if unknown). */
  async stats(devIndex?: number): Promise<ControlStats> {
    this.checkOpen();
    const raw = await loadNative().ctlStats(this.fd, devIndex);
    return { ...raw, device: raw.device === null ? null : toDeviceInfo(raw.device) };
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
   * Holds new writes on `devices` until tagHold(), releaseHold(), the close of this instance, or
   * `holdMs` (1..5000) after the hold began, whichever comes first; resolves once no write is
   * in flight on any of them (`drainNs`). One hold at a time (EBUSY). Rejects with ETIMEDOUT
   * (`.drainNs`) when the writes in flight did not finish in time: nothing stays held.
   */
  async hold(devices: number[], holdMs: number): Promise<HoldResult> {
    this.checkOpen();
    return loadNative().ctlHold(this.fd, devices, holdMs);
  }

  /**
   * Inserts a consistency tag at the cut of hold `holdId` on exactly its devices, then releases
   * it (the hold ends even when the cut fails, e.g. ENOSPC). `devices` in the result are the held
   * ones, `holdNs` counts from the hold's start. Rejects with HoldEndedError when the hold had
   * already ended (nothing inserted).
   */
  async tagHold(holdId: number, options: { tagId?: number } = {}): Promise<TagResult> {
    this.checkOpen();
    try {
      return await loadNative().ctlTag(this.fd, [], 0, options.tagId ?? 0, holdId);
    } catch (err) {
      throw holdError(err, holdId, 'tag');
    }
  }

  /** Ends hold `holdId` without a cut. Rejects with HoldEndedError when it had already ended. */
  async releaseHold(holdId: number): Promise<ReleaseResult> {
    this.checkOpen();
    try {
      return await loadNative().ctlRelease(this.fd, holdId);
    } catch (err) {
      throw holdError(err, holdId, 'release');
    }
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
