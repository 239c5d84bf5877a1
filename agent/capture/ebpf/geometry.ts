import * as fs from 'fs';
import * as path from 'path';
import { blockDeviceNumber, type DeviceNumber } from '../kernel/devices';
import type { ByteRange } from '../types';

const SECTOR = 512;

/** Where a protected volume lies on the whole disk the tracker watches. */
export interface VolumeGeometry {
  disk: DeviceNumber & { sizeBytes: number };
  /** Byte offset of the volume on the disk (0 for a whole disk). */
  startBytes: number;
  sizeBytes: number;
  /** The volume is a partition of `disk` (not the disk itself). */
  partition: boolean;
}

function readNumber(file: string): number {
  const text = fs.readFileSync(file, 'utf8').trim();
  if (!/^\d+$/.test(text)) throw new Error(`${file}: expected a number, found ${JSON.stringify(text)}`);
  return Number(text);
}

function readDev(file: string): DeviceNumber {
  const m = /^(\d+):(\d+)$/.exec(fs.readFileSync(file, 'utf8').trim());
  if (!m) throw new Error(`${file}: expected MAJOR:MINOR`);
  return { major: Number(m[1]), minor: Number(m[2]) };
}

/**
 * The geometry of a block device from sysfs: /sys/dev/block/MAJ:MIN is its folder (as under
 * /sys/class/block/NAME); a partition has `partition` and `start` there, and its folder sits
 * inside the disk's. Sizes in sysfs count 512-byte sectors whatever the logical block size.
 */
export function readGeometry(devicePath: string, sysRoot = '/sys', deviceOf: (p: string) => DeviceNumber | undefined = blockDeviceNumber): VolumeGeometry {
  const dev = deviceOf(devicePath);
  if (!dev) throw new Error(`${devicePath} is not a block device: the ebpf source tracks disks and partitions only`);
  const link = path.join(sysRoot, 'dev', 'block', `${dev.major}:${dev.minor}`);
  let dir: string;
  try {
    dir = fs.realpathSync(link);
  } catch {
    throw new Error(`${devicePath}: ${link} is missing (is sysfs mounted?)`);
  }
  const sizeBytes = readNumber(path.join(dir, 'size')) * SECTOR;
  if (!fs.existsSync(path.join(dir, 'partition'))) {
    return { disk: { ...dev, sizeBytes }, startBytes: 0, sizeBytes, partition: false };
  }
  const parent = path.dirname(dir);
  const disk = readDev(path.join(parent, 'dev'));
  return {
    disk: { ...disk, sizeBytes: readNumber(path.join(parent, 'size')) * SECTOR },
    startBytes: readNumber(path.join(dir, 'start')) * SECTOR,
    sizeBytes,
    partition: true,
  };
}

/** The part of a disk range [diskOffset, diskOffset + length) inside the volume, in volume offsets. */
export function diskToVolume(volume: Pick<VolumeGeometry, 'startBytes' | 'sizeBytes'>, diskOffset: number, length: number): ByteRange | undefined {
  const start = Math.max(diskOffset, volume.startBytes);
  const end = Math.min(diskOffset + length, volume.startBytes + volume.sizeBytes);
  return end > start ? { offset: start - volume.startBytes, length: end - start } : undefined;
}

/** The disk byte ranges that the set bits of a dirty bitmap stand for, runs of bits merged. */
export function bitmapRanges(bits: Buffer, nbits: number, chunkShift: number): ByteRange[] {
  const out: ByteRange[] = [];
  const chunk = 2 ** chunkShift;
  let runStart = -1;
  for (let i = 0; i <= nbits; i++) {
    const set = i < nbits && (bits[i >> 3] & (1 << (i & 7))) !== 0;
    if (set && runStart < 0) runStart = i;
    if (!set && runStart >= 0) {
      out.push({ offset: runStart * chunk, length: (i - runStart) * chunk });
      runStart = -1;
    }
  }
  return out;
}

/**
 * Converts a CLOCK_MONOTONIC time (ns, as bpf_ktime_get_ns) to µs since the epoch, given one
 * moment read on both clocks.
 */
export function monotonicToWallUs(timeNs: bigint, nowWallUs: number, nowMonoNs: bigint): number {
  return nowWallUs - Number((nowMonoNs - timeNs) / 1000n);
}
