import * as fs from 'fs';
import { allocate } from '../native/addon';
import { writeFully } from '../common/fsutil';

export interface StorageMonitorOptions {
  /** Below this much free space on a file system holding a volume's files, its agents are held. */
  minFreeBytes: number;
  /** Space kept back in `reserveFile` for checkpoints and the catalog when the disk is full. */
  reserveBytes: number;
  reserveFile: string;
}

export interface FileSystemSpace {
  /** One path on the file system (the first one asked about). */
  path: string;
  freeBytes: number;
  totalBytes: number;
  /** Below the floor: agents whose volumes live here are held. */
  low: boolean;
}

function statFree(p: string): { dev: number; freeBytes: number; totalBytes: number } | undefined {
  try {
    const dev = fs.statSync(p).dev;
    const s = fs.statfsSync(p);
    return { dev, freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize };
  } catch {
    return undefined;
  }
}

/**
 * Free space on every file system that holds receiver data. A file system goes `low` below
 * the floor and comes back only above one and a half times it, so that agents are not held
 * and released at every write. It also keeps the reserve: a file of `reserveBytes` on the
 * data file system that is deleted when a write there fails for lack of space (so that
 * checkpoints and the catalog can still be written) and made again once there is room.
 */
export class StorageMonitor {
  private readonly spaces = new Map<number, FileSystemSpace>();
  private readonly devOf = new Map<string, number>();
  private reserveHeld = false;

  constructor(private readonly opts: StorageMonitorOptions) {}

  /** Re-reads the free space of the file systems holding `paths`; returns the ones that changed state. */
  refresh(paths: Iterable<string>): Array<{ space: FileSystemSpace; becameLow: boolean }> {
    const changed: Array<{ space: FileSystemSpace; becameLow: boolean }> = [];
    const seen = new Set<number>();
    for (const p of paths) {
      const st = statFree(p);
      if (!st) continue;
      this.devOf.set(p, st.dev);
      if (seen.has(st.dev)) continue;
      seen.add(st.dev);
      const space = this.spaces.get(st.dev) ?? { path: p, freeBytes: st.freeBytes, totalBytes: st.totalBytes, low: false };
      space.freeBytes = st.freeBytes;
      space.totalBytes = st.totalBytes;
      const floor = this.floorFor(space);
      const low = space.low ? st.freeBytes < floor * 1.5 : st.freeBytes < floor;
      if (low !== space.low) changed.push({ space, becameLow: low });
      space.low = low;
      this.spaces.set(st.dev, space);
    }
    this.keepReserve();
    return changed;
  }

  /** The floor, capped at a quarter of a small file system so that it can still be used. */
  private floorFor(space: FileSystemSpace): number {
    return Math.min(this.opts.minFreeBytes, space.totalBytes / 4);
  }

  /** True when any file system holding one of `paths` is below its floor. */
  isLow(paths: readonly string[]): FileSystemSpace | undefined {
    for (const p of paths) {
      const dev = this.devOf.get(p);
      const space = dev === undefined ? undefined : this.spaces.get(dev);
      if (space?.low) return space;
    }
    return undefined;
  }

  /** The file system holding `paths` with the least free space, with its floor, as last read. */
  tightest(paths: readonly string[]): { space: FileSystemSpace; floorBytes: number } | undefined {
    let best: FileSystemSpace | undefined;
    for (const p of paths) {
      const dev = this.devOf.get(p);
      const space = dev === undefined ? undefined : this.spaces.get(dev);
      if (space && (!best || space.freeBytes < best.freeBytes)) best = space;
    }
    return best ? { space: best, floorBytes: this.floorFor(best) } : undefined;
  }

  /** The least free space among the file systems holding `paths`, as last read. */
  freeFor(paths: readonly string[]): number {
    return this.tightest(paths)?.space.freeBytes ?? 0;
  }

  get all(): FileSystemSpace[] {
    return [...this.spaces.values()];
  }

  /** A write failed for lack of space: give the reserve back to the file system. */
  releaseReserve(): boolean {
    if (!this.reserveHeld) return false;
    fs.rmSync(this.opts.reserveFile, { force: true });
    this.reserveHeld = false;
    return true;
  }

  get reserveReleased(): boolean {
    return !this.reserveHeld && this.opts.reserveBytes > 0;
  }

  /** Makes the reserve file when it is missing and there is room for it well above the floor. */
  private keepReserve(): void {
    if (this.opts.reserveBytes <= 0) return;
    if (this.reserveHeld) return;
    try {
      const size = fs.statSync(this.opts.reserveFile).size;
      if (size >= this.opts.reserveBytes) {
        this.reserveHeld = true;
        return;
      }
    } catch {
      // missing: make it below
    }
    const st = statFree(this.opts.reserveFile.replace(/\/[^/]*$/, '') || '.');
    if (!st || st.freeBytes < this.opts.reserveBytes * 2 + Math.min(this.opts.minFreeBytes, st.totalBytes / 4) * 1.5) return;
    const fd = fs.openSync(this.opts.reserveFile, 'w', 0o600);
    try {
      try {
        allocate(fd, 0, this.opts.reserveBytes);
      } catch {
        // no fallocate here: write it out
        const zero = Buffer.alloc(1024 * 1024);
        for (let off = 0; off < this.opts.reserveBytes; off += zero.length) writeFully(fd, zero.subarray(0, Math.min(zero.length, this.opts.reserveBytes - off)), off);
      }
      fs.fsyncSync(fd);
      this.reserveHeld = true;
    } catch {
      fs.rmSync(this.opts.reserveFile, { force: true });
    } finally {
      fs.closeSync(fd);
    }
  }
}
