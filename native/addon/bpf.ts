// Loader of the ferry_bpf N-API addon (the eBPF write tracker, Linux only) and the one
// declaration of what it exports. It is a separate addon from ferry_native so that
// ferry_native loads on machines without libbpf; agent/capture/ebpf/bpf-tracker.ts wraps it.
//
// Failures throw an Error shaped like ferry_native's: `.code` is the errno name ('EPERM',
// 'ENOENT'...), `.errno` the positive errno value, `.syscall` the failing call where one
// applies, plus `.reason` (BpfFailureReason) for a program to branch on. Messages say what to
// do (run as root, a kernel with BTF, mount bpffs, the verifier log's tail).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { findPackageRoot } from './loader';

export type BpfFailureReason =
  | 'no-btf'
  | 'permission'
  | 'bpffs'
  | 'object'
  | 'load'
  | 'attach'
  | 'pinned'
  | 'slots'
  | 'bitmap-room'
  | 'geometry'
  | 'not-tracked'
  | 'closed'
  | 'system';

export interface FerryBpfError extends Error {
  code: string;
  errno?: number;
  syscall?: string;
  reason?: BpfFailureReason;
}

export interface RawTrackedDisk {
  slot: number;
  major: number;
  minor: number;
  chunkShift: number;
  sizeBytes: number;
}

export interface RawBitmapTake {
  /** ceil(nbits / 8) bytes; bit i is byte i >> 3, mask 1 << (i & 7). */
  bits: Buffer;
  nbits: number;
  chunkShift: number;
  dirty: number;
}

export interface RawTrackerCounters {
  events: number;
  overflowed: number;
  lost: number;
}

/** One process's handle on the pinned tracker (the addon's BpfTracker class). */
export interface BpfTrackerHandle {
  /** The pinned program's random 64-bit id, 16 hex digits. */
  readonly instanceId: string;
  /** Found pinned (loaded by an earlier process) rather than loaded now. */
  readonly reused: boolean;
  /** The ring's size as loaded (a reused program keeps its own). */
  readonly ringBytes: number;
  /** Tracks the whole disk major:minor (same geometry again: same slot). */
  track(major: number, minor: number, chunkShift: number, sizeBytes: number): number;
  untrack(slot: number): void;
  /** By slot, ascending. */
  tracked(): RawTrackedDisk[];
  /** Up to maxEvents packed 32-byte events, oldest first (an empty Buffer when none wait). */
  drain(maxEvents: number): Buffer;
  takeBitmap(slot: number): RawBitmapTake;
  counters(): RawTrackerCounters;
  /** unload: also unpin the program and maps (tracking stops). Closing twice is harmless. */
  close(unload: boolean): void;
}

/** What ferry_bpf.node exports. */
export interface FerryBpf {
  /**
   * Loads build/Release/ferry_trace.bpf.o (objectPath) and pins it under pinDir, or reuses the
   * program pinned there when its ABI matches (an older ABI is unpinned first). Mounts bpffs at
   * /sys/fs/bpf when pinDir lies under it and it is not mounted. ringBytes: a power of two
   * >= 4096, used only when loading.
   */
  open(pinDir: string, objectPath: string, ringBytes: number): BpfTrackerHandle;
  readonly abiVersion: number;
  readonly eventBytes: number;
  readonly maxSlots: number;
  /** Bits in the dirty-bitmap pool shared by every tracked disk. */
  readonly bitmapPoolBits: number;
}

const ADDON_RELATIVE_PATH = path.join('build', 'Release', 'ferry_bpf.node');
const OBJECT_RELATIVE_PATH = path.join('build', 'Release', 'ferry_trace.bpf.o');
const BUILD_HINT =
  'it is built by `npm install` when clang, libbpf-dev, libelf-dev and zlib1g-dev are installed (apt-get install clang libbpf-dev libelf-dev zlib1g-dev, then npm rebuild)';

/** Narrows an unknown caught value to an addon error with a string `.code`. */
export function isFerryBpfError(err: unknown): err is FerryBpfError {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'string';
}

/** The compiled BPF object the addon loads. */
export function bpfObjectPath(): string {
  return path.join(findPackageRoot(), OBJECT_RELATIVE_PATH);
}

let cached: FerryBpf | undefined;

/** Loads the addon once; throws a clear Error when it is not built or its libraries are missing. */
export function loadBpfAddon(): FerryBpf {
  if (cached !== undefined) return cached;
  if (process.platform !== 'linux') throw new Error('the eBPF write tracker runs on Linux only');
  const root = findPackageRoot();
  const addonPath = path.join(root, ADDON_RELATIVE_PATH);
  if (!fs.existsSync(addonPath)) {
    throw new Error(`the eBPF write tracker addon is not built (missing ${addonPath}): ${BUILD_HINT}`);
  }
  try {
    cached = require(addonPath) as FerryBpf;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    const library = /(lib[\w.+-]+\.so[\d.]*): cannot open shared object file/.exec(message)?.[1];
    if (library !== undefined) {
      throw new Error(`the eBPF write tracker addon cannot load: ${library} is missing (apt-get install libbpf1 libelf1 zlib1g)`);
    }
    throw new Error(`the eBPF write tracker addon ${addonPath} cannot load: ${message}`);
  }
  return cached;
}
