import { spawnSync } from 'child_process';
import * as fs from 'fs';
import { ExitCode, FerryError } from '../../../common/errors';
import { CONTROL_DEVICE_PATH, deviceSize } from '../../../native/addon';
import { blockDeviceNumber, type DeviceNumber } from './devices';

const SECTOR = 512;
const DEFAULT_GRANULARITY_KB = 64;
const GRANULARITY_PARAM = '/sys/module/dm_ferry/parameters/granularity_kb';

/** A device-mapper device as dmsetup sees it. */
export interface DmDevice {
  name: string;
  path: string;
  dev: DeviceNumber;
  table: string;
  sectors: number;
}

interface DmsetupResult {
  ok: boolean;
  stdout: string;
  stderr: string;
}

function dmsetup(args: string[], input?: string): DmsetupResult {
  const r = spawnSync('dmsetup', args, { encoding: 'utf8', input, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
  if (r.error) throw new FerryError(`cannot run dmsetup: ${(r.error as NodeJS.ErrnoException).code ?? r.error.message} (install dmsetup)`, ExitCode.failure);
  return { ok: r.status === 0, stdout: r.stdout, stderr: r.stderr.trim() };
}

function dmsetupOk(what: string, args: string[], input?: string): string {
  const r = dmsetup(args, input);
  if (!r.ok) throw new FerryError(`${what} failed: ${r.stderr || `dmsetup ${args.join(' ')}`}`, ExitCode.failure);
  return r.stdout;
}

function dmName(dev: DeviceNumber): string | undefined {
  try {
    return fs.readFileSync(`/sys/dev/block/${dev.major}:${dev.minor}/dm/name`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** The dm device at `devicePath`; a clear error when it is missing or not a dm device. */
export function dmDevice(devicePath: string): DmDevice {
  if (!fs.existsSync(devicePath)) throw new FerryError(`${devicePath} does not exist`, ExitCode.notFound);
  const dev = blockDeviceNumber(devicePath);
  if (!dev) throw new FerryError(`${devicePath} is not a block device`, ExitCode.usage);
  const name = dmName(dev);
  if (!name) {
    throw new FerryError(`${devicePath} is not a device-mapper device (LVM logical volume, dm-linear...): only those can be protected live`, ExitCode.usage);
  }
  const table = dmsetupOk(`reading the table of ${name}`, ['table', name]).trim();
  const sectors = table.split('\n').reduce((n, line) => n + Number(line.trim().split(/\s+/)[1] ?? 0), 0);
  return { name, path: `/dev/mapper/${name}`, dev, table, sectors };
}

/** The table is one ferry target: returns its data device (major:minor) and metadata device. */
function ferryTable(table: string): { data: string; meta: string } | undefined {
  const lines = table.split('\n').filter((l) => l.trim() !== '');
  const f = lines.length === 1 ? lines[0].trim().split(/\s+/) : [];
  return f[2] === 'ferry' && f.length >= 5 ? { data: f[3], meta: f[4] } : undefined;
}

/** dm-ferry is loaded (modprobe'd here if needed); a clear error otherwise. */
export function ensureFerryModule(): void {
  if (fs.existsSync(CONTROL_DEVICE_PATH)) return;
  const r = spawnSync('modprobe', ['dm-ferry'], { encoding: 'utf8' });
  if (r.status === 0 && fs.existsSync(CONTROL_DEVICE_PATH)) return;
  const why = r.error ? (r.error as NodeJS.ErrnoException).code : r.stderr.trim().split('\n')[0];
  throw new FerryError(`the dm-ferry module is not loaded and \`modprobe dm-ferry\` failed (${why || 'no /dev/ferry-ctl'}): install it (DKMS, see native/linux/README.md)`, ExitCode.notReady);
}

/** Bytes the metadata device needs for a volume of `sizeBytes` (native/linux/README.md). */
export function metadataBytesNeeded(sizeBytes: number): number {
  let granularityKb = DEFAULT_GRANULARITY_KB;
  try {
    granularityKb = Number(fs.readFileSync(GRANULARITY_PARAM, 'utf8').trim()) || DEFAULT_GRANULARITY_KB;
  } catch {
    // module not loaded yet: its default
  }
  const bits = Math.ceil(sizeBytes / (granularityKb * 1024));
  const bitmapBytes = Math.ceil(bits / 64) * 8;
  return 4096 + Math.ceil(bitmapBytes / 4096) * 4096;
}

function checkMeta(meta: string, volume: DmDevice): void {
  const dev = blockDeviceNumber(meta);
  if (!dev) throw new FerryError(`--meta ${meta} is not a block device`, fs.existsSync(meta) ? ExitCode.usage : ExitCode.notFound);
  if (dev.major === volume.dev.major && dev.minor === volume.dev.minor) throw new FerryError('--meta must be another device than the one protected', ExitCode.usage);
  let fd: number;
  try {
    // O_EXCL on a block device: fails with EBUSY while it is mounted or held by dm/md.
    fd = fs.openSync(meta, fs.constants.O_RDONLY | fs.constants.O_EXCL);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new FerryError(`--meta ${meta} cannot be used: ${code === 'EBUSY' ? 'it is in use (mounted, or part of another device)' : code}`, ExitCode.usage);
  }
  try {
    const need = metadataBytesNeeded(volume.sectors * SECTOR);
    const have = deviceSize(fd);
    if (have < need) throw new FerryError(`--meta ${meta} is too small: ${have} bytes, the bitmap of ${volume.path} needs ${need}`, ExitCode.usage);
  } finally {
    fs.closeSync(fd);
  }
}

export interface ProtectResult {
  name: string;
  inner: string;
  meta: string;
}

/**
 * Wraps the live dm device in the ferry target (native/linux/README.md): a second device takes
 * the current mapping, then the device is suspended, reloaded as `ferry <inner> <meta>` and
 * resumed. Its name and device number stay. On a failure the original table is put back.
 */
export function protectDevice(opts: { device: string; meta?: string; inner?: string }): ProtectResult {
  const dm = dmDevice(opts.device);
  if (ferryTable(dm.table)) throw new FerryError(`${dm.path} is already protected (its table is a ferry target)`, ExitCode.failure);
  if (!opts.meta) {
    throw new FerryError(`--meta DEV is required: a separate device of at least ${metadataBytesNeeded(dm.sectors * SECTOR)} bytes for the persistent dirty bitmap`, ExitCode.usage);
  }
  const meta = opts.meta;
  ensureFerryModule();
  checkMeta(meta, dm);
  const inner = opts.inner ?? `${dm.name}-ferry-inner`;
  if (dmsetup(['info', inner]).ok) throw new FerryError(`a device named ${inner} already exists: pick another --name`, ExitCode.usage);
  dmsetupOk(`creating ${inner}`, ['create', inner], `${dm.table}\n`);
  const original = dm.table;
  if (!dmsetup(['suspend', dm.name]).ok) {
    dmsetup(['remove', inner]);
    throw new FerryError(`suspending ${dm.name} failed; nothing changed`, ExitCode.failure);
  }
  const reload = dmsetup(['reload', dm.name, '--table', `0 ${dm.sectors} ferry /dev/mapper/${inner} ${meta}`]);
  const resume = reload.ok ? dmsetup(['resume', dm.name]) : reload;
  if (!reload.ok || !resume.ok) {
    // Put the original mapping back (a failed reload leaves the live table in place).
    dmsetup(['reload', dm.name], `${original}\n`);
    dmsetup(['resume', dm.name]);
    dmsetup(['remove', inner]);
    throw new FerryError(`loading the ferry table on ${dm.name} failed (${(reload.ok ? resume : reload).stderr || 'see dmesg'}); the original table is back`, ExitCode.failure);
  }
  return { name: dm.name, inner, meta };
}

/** The reverse: the device gets its inner device's mapping back; the inner device is removed. */
export function unprotectDevice(opts: { device: string }): { name: string; inner: string | undefined } {
  const dm = dmDevice(opts.device);
  const f = ferryTable(dm.table);
  if (!f) throw new FerryError(`${dm.path} is not protected (its table is not a ferry target)`, ExitCode.failure);
  const [major, minor] = f.data.split(':').map(Number);
  const inner = Number.isInteger(major) && Number.isInteger(minor) ? dmName({ major, minor }) : undefined;
  const table = inner ? dmsetupOk(`reading the table of ${inner}`, ['table', inner]).trim() : `0 ${dm.sectors} linear ${f.data} 0`;
  dmsetupOk(`suspending ${dm.name}`, ['suspend', dm.name]);
  const reload = dmsetup(['reload', dm.name], `${table}\n`);
  const resume = dmsetup(['resume', dm.name]);
  if (!reload.ok || !resume.ok) throw new FerryError(`restoring the original table of ${dm.name} failed: ${(reload.ok ? resume : reload).stderr}`, ExitCode.failure);
  if (inner) dmsetupOk(`removing ${inner}`, ['remove', inner]);
  return { name: dm.name, inner };
}
