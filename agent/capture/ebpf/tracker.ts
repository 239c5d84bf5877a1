/**
 * The contract between the eBPF write tracker (native/bpf + the ferry_bpf addon, wrapped by
 * `bpf-tracker.ts`) and the `ebpf` capture source. A fake implements it for unit tests of the
 * source; the real one is tested in the VM lab.
 *
 * The tracker reports completed writes on whole disks (the block layer's request completion
 * tracepoint sees the whole disk's sectors: a write to /dev/vda1 arrives as /dev/vda at
 * partition start + offset). Mapping a disk range back to a partition is the source's job.
 *
 * It keeps working while no agent reads it: its program and maps are pinned in bpffs, so an
 * agent restart loses nothing. Events that do not fit in the ring (a slow reader, or none) set
 * bits in the tracked disk's dirty bitmap instead; the reader takes and clears those bits.
 */

/** One completed request on a tracked disk (see EVENT_BYTES for the wire layout). */
export interface TraceEvent {
  /** The tracked disk's slot (from `track`). */
  slot: number;
  /** First 512-byte sector, counted from the start of the whole disk. */
  sector: number;
  bytes: number;
  op: TraceOp;
  /** REQ_FUA was set. */
  fua: boolean;
  /** REQ_PREFLUSH was set (a flush before the data). */
  preflush: boolean;
  /** The request failed: the range's content is unknown, read it back. */
  error: boolean;
  /** Completion time, CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns). */
  timeNs: bigint;
}

export type TraceOp = 'write' | 'discard' | 'write-zeroes' | 'flush' | 'secure-erase';

/**
 * Layout of one event in the ring and in `drain()`'s buffer, little endian, 32 bytes:
 *   u64 time_ns | u64 sector | u32 bytes | u32 slot | u16 op (REQ_OP_* value) | u16 flags | u32 reserved
 * flags: 1 FUA, 2 PREFLUSH, 4 ERROR.
 */
export const EVENT_BYTES = 32;

export interface TrackedDisk {
  /** The whole disk's device number. */
  major: number;
  minor: number;
  /** log2 of the bytes one dirty-bitmap bit stands for (e.g. 16 for 64 KiB). */
  chunkShift: number;
  /** The disk's size in bytes (sizes its bitmap). */
  sizeBytes: number;
}

export interface TrackerCounters {
  /** Events put into the ring since the program was loaded. */
  events: number;
  /** Events that found the ring full and went to the bitmap instead. */
  overflowed: number;
  /** Events on tracked disks the program could not attribute (no bitmap room): must stay 0. */
  lost: number;
}

export interface BitmapTake {
  /** The bits set since the last take (bit i = bytes [i << chunkShift, (i + 1) << chunkShift)). */
  bits: Buffer;
  nbits: number;
  chunkShift: number;
  /** Number of bits set in `bits`. */
  dirty: number;
}

export interface WriteTracker {
  /**
   * Identifies the loaded program instance: the same while it stays pinned (across agent
   * restarts), new after a reboot or an unload. A source that finds the instance it saw before
   * knows no write went untracked in between.
   */
  readonly instanceId: string;
  /** This process found the program already loaded and pinned (an agent restart). */
  readonly reused: boolean;
  /**
   * Starts (or keeps) tracking a disk; returns its slot. Tracking the same disk again returns
   * the same slot (its bitmap is kept). Throws when no slot is free or the geometry changed.
   */
  track(disk: TrackedDisk): number;
  /** The disks tracked now, by slot (after a restart: what the previous agent tracked). */
  tracked(): Map<number, TrackedDisk>;
  /** Stops tracking a slot and clears its bitmap. */
  untrack(slot: number): void;
  /** Takes up to `maxEvents` events from the ring, oldest first, as packed EVENT_BYTES records. */
  drain(maxEvents: number): Buffer;
  /** Takes the slot's dirty bits and clears them, atomically per 64-bit word against the program. */
  takeBitmap(slot: number): BitmapTake;
  counters(): TrackerCounters;
  /**
   * Closes this process's handles. `unload`: also unpins the program and its maps, so that
   * tracking stops (uninstall); otherwise it keeps running for the next agent.
   */
  close(options: { unload: boolean }): void;
}

/** Opens (or loads and pins) the tracker; rejects with a reason an operator can act on. */
export type OpenTracker = () => Promise<WriteTracker>;
