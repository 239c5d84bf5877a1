// Is a disk in use? Failback overwrites a whole disk: it must not while a file system on it (or
// on one of its partitions) is mounted, a device-mapper or md device sits on it, or a loop
// device serves the image file.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

export interface MountEntry {
  source: string;
  target: string;
}

/** `\040`-style octal escapes of /proc/self/mounts (space, tab, newline, backslash). */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** The lines of /proc/self/mounts (or /proc/mounts): source and mount point of each. */
export function parseMounts(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 2 || fields[0] === '') continue;
    out.push({ source: unescapeMountField(fields[0]), target: unescapeMountField(fields[1]) });
  }
  return out;
}

/** What is known of a disk: its kernel name and its partitions', and who holds each. */
export interface DiskFacts {
  /** Kernel names: the disk first, then its partitions ("vda", "vda1", ...). */
  names: string[];
  /** For each name, the kernel names of the devices built on it (dm-0, md0...). */
  holders: Record<string, string[]>;
  /** Loop devices that serve the image file (when the disk is a file). */
  loops: string[];
}

/**
 * Why the disk is in use (empty: it is not). `mountedNames` gives the kernel name of each
 * mount's source when it is a block device (undefined for tmpfs, proc...).
 */
export function diskUsage(facts: DiskFacts, mounts: readonly MountEntry[], mountedName: (source: string) => string | undefined): string[] {
  const reasons: string[] = [];
  const names = new Set([...facts.names, ...facts.loops]);
  for (const loop of facts.loops) reasons.push(`the image is attached to /dev/${loop}`);
  for (const m of mounts) {
    const name = mountedName(m.source);
    if (name !== undefined && names.has(name)) reasons.push(`/dev/${name} is mounted at ${m.target}`);
  }
  for (const name of facts.names) {
    for (const holder of facts.holders[name] ?? []) reasons.push(`/dev/${name} is held by /dev/${holder}${holder.startsWith('dm-') ? ' (device-mapper)' : ''}`);
  }
  return reasons;
}

function readdir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

/** The kernel name of a block device path (/dev/mapper/x -> dm-0), or undefined for anything else. */
function kernelName(devicePath: string): string | undefined {
  try {
    const real = fs.realpathSync(devicePath);
    if (!fs.statSync(real).isBlockDevice()) return undefined;
    const name = path.basename(real);
    return fs.existsSync(`/sys/class/block/${name}`) ? name : undefined;
  } catch {
    return undefined;
  }
}

/** Gathers the facts of a block device or image file from /sys. */
export function diskFacts(diskPath: string): DiskFacts {
  const stat = fs.statSync(diskPath);
  if (!stat.isBlockDevice()) {
    const real = fs.realpathSync(diskPath);
    const loops = readdir('/sys/class/block').filter((n) => n.startsWith('loop') && readText(`/sys/class/block/${n}/loop/backing_file`)?.trim() === real);
    return { names: [], holders: {}, loops };
  }
  const name = kernelName(diskPath);
  if (!name) return { names: [], holders: {}, loops: [] };
  const partitions = readdir(`/sys/class/block/${name}`).filter((n) => n.startsWith(name) && fs.existsSync(`/sys/class/block/${name}/${n}/partition`));
  const names = [name, ...partitions];
  const holders: Record<string, string[]> = {};
  for (const n of names) holders[n] = readdir(`/sys/class/block/${n}/holders`);
  return { names, holders, loops: [] };
}

/** Why `diskPath` is in use now (empty: free to overwrite). */
export function findDiskUsage(diskPath: string): string[] {
  const mounts = parseMounts(readText('/proc/self/mounts') ?? '');
  return diskUsage(diskFacts(diskPath), mounts, (source) => (source.startsWith('/') ? kernelName(source) : undefined));
}

/**
 * The device under a dm-ferry target in a device-mapper table (`dmsetup table` output), or
 * undefined when no line of it is a ferry target. A line: START LENGTH TARGET ARGS...; the
 * ferry target's first argument is the device it wraps.
 */
export function ferryTargetDevice(table: string): string | undefined {
  for (const line of table.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields[2] === 'ferry' && fields[3]) return fields[3];
  }
  return undefined;
}

/**
 * When `diskPath` is a dm-ferry device: what it wraps (as its table names it). Writing through
 * dm-ferry would capture the failback's own writes as new changes. Undefined for any other disk,
 * and when dmsetup cannot tell.
 */
export function dmFerryWrapped(diskPath: string): string | undefined {
  const name = kernelName(diskPath);
  if (!name?.startsWith('dm-')) return undefined;
  const dmName = readText(`/sys/class/block/${name}/dm/name`)?.trim();
  if (!dmName) return undefined;
  const r = spawnSync('dmsetup', ['table', dmName], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return r.status === 0 ? ferryTargetDevice(r.stdout) : undefined;
}
