/**
 * The WriteTracker over the ferry_bpf addon: the BPF program on the block layer's request
 * completion tracepoint, pinned in bpffs so that it keeps tracking between agents.
 */
import { bpfObjectPath, loadBpfAddon, type BpfTrackerHandle, type FerryBpf } from '../../../native/addon/bpf';
import type { BitmapTake, TrackedDisk, TrackerCounters, WriteTracker } from './tracker';

export const DEFAULT_PIN_DIR = '/sys/fs/bpf/ferry/v1';
/** 4 MiB: 104857 events (40 bytes each with the ring's header) before the bitmap takes over. */
export const DEFAULT_RING_BYTES = 4 << 20;

export interface BpfTrackerOptions {
  /** Where the program and its maps are pinned (default /sys/fs/bpf/ferry/v1). */
  pinDir?: string;
  /** The compiled program (default build/Release/ferry_trace.bpf.o). */
  objectPath?: string;
  /** The ring's size when this call loads the program (a power of two >= 4096). */
  ringBytes?: number;
  /** The addon (tests may pass another loader). */
  addon?: () => FerryBpf;
}

class BpfWriteTracker implements WriteTracker {
  readonly instanceId: string;
  readonly reused: boolean;
  private handle: BpfTrackerHandle | undefined;

  constructor(handle: BpfTrackerHandle) {
    this.handle = handle;
    this.instanceId = handle.instanceId;
    this.reused = handle.reused;
  }

  track(disk: TrackedDisk): number {
    return this.open().track(disk.major, disk.minor, disk.chunkShift, disk.sizeBytes);
  }

  tracked(): Map<number, TrackedDisk> {
    const out = new Map<number, TrackedDisk>();
    for (const d of this.open().tracked()) {
      out.set(d.slot, { major: d.major, minor: d.minor, chunkShift: d.chunkShift, sizeBytes: d.sizeBytes });
    }
    return out;
  }

  untrack(slot: number): void {
    this.open().untrack(slot);
  }

  drain(maxEvents: number): Buffer {
    return this.open().drain(maxEvents);
  }

  takeBitmap(slot: number): BitmapTake {
    const take = this.open().takeBitmap(slot);
    return { bits: take.bits, nbits: take.nbits, chunkShift: take.chunkShift, dirty: take.dirty };
  }

  counters(): TrackerCounters {
    return this.open().counters();
  }

  close(options: { unload: boolean }): void {
    const handle = this.handle;
    this.handle = undefined;
    handle?.close(options.unload);
  }

  private open(): BpfTrackerHandle {
    if (this.handle === undefined) throw new Error('the eBPF write tracker is closed');
    return this.handle;
  }
}

/**
 * Opens the pinned tracker or loads and pins it. Rejects when the addon is missing, the process
 * is not root, the kernel lacks BTF, bpffs cannot be mounted or the kernel refuses the program
 * (the error's message says which, with the verifier log's tail).
 */
export async function openBpfTracker(options: BpfTrackerOptions = {}): Promise<WriteTracker> {
  const addon = (options.addon ?? loadBpfAddon)();
  const handle = addon.open(options.pinDir ?? DEFAULT_PIN_DIR, options.objectPath ?? bpfObjectPath(), options.ringBytes ?? DEFAULT_RING_BYTES);
  return new BpfWriteTracker(handle);
}
