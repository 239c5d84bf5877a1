import type { BitmapChunk, DeviceInfo, HoldResult, KernelBatch, ReleaseResult, TagResult, VssTagResult } from '../../../native/addon';

/**
 * The calls of the driver's control device (/dev/ferry-ctl, \\.\FerryCtl) that kernel capture
 * makes. `FerryControl` satisfies it; tests drive the capture with a fake (test/helpers/fake-control.ts).
 * Errors carry the errno name in `.code` (EMSGSIZE also `.needed`), as FerryControl's do.
 */
export interface ControlDevice {
  /** Every tracked device. */
  list(): Promise<DeviceInfo[]>;
  /** One device's info (ENODEV: it went away). */
  stats(devIndex: number): Promise<{ device: DeviceInfo | null }>;
  /** The oldest records not handed out yet, as one batch (batchId 0: none), parsed from `buffer`. */
  getChanges(buffer: Buffer): Promise<KernelBatch>;
  /** Frees every batch <= batchId. */
  commit(batchId: number): Promise<void>;
  /** Waits up to timeoutMs for records; true if some are waiting. */
  wait(timeoutMs: number): Promise<boolean>;
  tag(devices: number[], options: { holdMs?: number; tagId?: number }): Promise<TagResult>;
  /** Holds new writes on the devices (at most holdMs from now; ETIMEDOUT: they did not drain). */
  hold(devices: number[], holdMs: number): Promise<HoldResult>;
  /** A tag at the hold's cut on exactly its devices, then the release; HoldEndedError if it ended. */
  tagHold(holdId: number, options: { tagId?: number }): Promise<TagResult>;
  /** Ends the hold now; HoldEndedError if it had already ended. */
  releaseHold(holdId: number): Promise<ReleaseResult>;
  /** Windows: a tag at the VSS freeze point; rejects unless every device was tagged and bridged. */
  vssTag(volumes: string[], devices: number[], options: { tagId?: number; holdMs?: number }): Promise<VssTagResult>;
  /** Inserts a RESYNC_MARK for the range; resolves its kernel seq. */
  resyncMark(devIndex: number, offset: number, length: number): Promise<number>;
  /** The whole dirty bitmap of a device under one epoch. */
  readBitmap(devIndex: number): Promise<BitmapChunk>;
  /** Clears bits if `epoch` is still current; resolves the bits still set. */
  clearBitmap(devIndex: number, epoch: number, startBit: number, nbits: number): Promise<number>;
  /** Uncommitted batches become deliverable again (flagged redelivered). */
  close(): Promise<void>;
}

/** Reads `length` bytes of a volume at `offset` (O_DIRECT for block devices). */
export type ReadVolume = (path: string, offset: number, length: number) => Promise<Buffer>;
