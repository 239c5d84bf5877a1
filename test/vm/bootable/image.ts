/**
 * The bootable Debian disk of the recovery tests (built by debian-image.sh, cached) and the host
 * side helpers around it: clone it, loop-mount its root partition to write marker files.
 *
 *   const img = await prepareDebianImage();          // builds once (minutes), then reuses the cache
 *   await cloneImage(img.path, disk);                 // never boot or mount the cached image itself
 *   await writeMarkers(disk, img, ['m1', 'm2']);       // files in /var/lib/ferry-markers
 *   await readMarkers(disk, img);                      // ['m1', 'm2']
 *
 * Needs root (loop devices). See debian-image.sh for what the guest prints at boot.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runCommand } from '../lab';

export const IMAGE_SCRIPT = path.join(__dirname, 'debian-image.sh');
/** Where the guest's ferry-markers.service looks for marker files. */
export const MARKERS_DIR = '/var/lib/ferry-markers';
/** The guest's root password. */
export const ROOT_PASSWORD = 'ferry';

export class ImageError extends Error {
  override name = 'ImageError';
}

export interface DebianImage {
  /** The cached raw disk (read-only by convention: clone it or put an overlay over it). */
  path: string;
  sizeBytes: number;
  /** Partition 1 (the ext4 root) in bytes and in 512-byte sectors. */
  partStartBytes: number;
  partSizeBytes: number;
  partStartSector: number;
  partSectors: number;
  rootUuid: string;
  /** The kernel release installed in the image, e.g. 6.1.0-50-cloud-amd64. */
  kernelRelease: string;
}

const REQUIRED_KEYS = [
  'FERRY_DEBIAN_IMAGE',
  'FERRY_DEBIAN_SIZE',
  'FERRY_DEBIAN_PART_START',
  'FERRY_DEBIAN_PART_SIZE',
  'FERRY_DEBIAN_PART_START_SECTOR',
  'FERRY_DEBIAN_PART_SECTORS',
  'FERRY_DEBIAN_ROOT_UUID',
  'FERRY_DEBIAN_KVER',
] as const;

/** Parses debian-image.sh's KEY=VALUE output; throws ImageError naming a missing or bad key. */
export function parseImageInfo(stdout: string): DebianImage {
  const vars = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) vars.set(line.slice(0, eq).trim(), line.slice(eq + 1).trim());
  }
  for (const key of REQUIRED_KEYS) {
    if (!vars.get(key)) throw new ImageError(`debian-image.sh printed no ${key}:\n${stdout}`);
  }
  const num = (key: (typeof REQUIRED_KEYS)[number]): number => {
    const text = vars.get(key) ?? '';
    const n = Number(text);
    if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(n)) throw new ImageError(`debian-image.sh: ${key} is not a byte count: ${text}`);
    return n;
  };
  const image: DebianImage = {
    path: vars.get('FERRY_DEBIAN_IMAGE') ?? '',
    sizeBytes: num('FERRY_DEBIAN_SIZE'),
    partStartBytes: num('FERRY_DEBIAN_PART_START'),
    partSizeBytes: num('FERRY_DEBIAN_PART_SIZE'),
    partStartSector: num('FERRY_DEBIAN_PART_START_SECTOR'),
    partSectors: num('FERRY_DEBIAN_PART_SECTORS'),
    rootUuid: vars.get('FERRY_DEBIAN_ROOT_UUID') ?? '',
    kernelRelease: vars.get('FERRY_DEBIAN_KVER') ?? '',
  };
  if (image.partStartBytes !== image.partStartSector * 512 || image.partSizeBytes !== image.partSectors * 512) {
    throw new ImageError(`debian-image.sh: partition bytes and sectors disagree:\n${stdout}`);
  }
  if (image.partStartBytes + image.partSizeBytes > image.sizeBytes) {
    throw new ImageError(`debian-image.sh: partition 1 ends past the disk:\n${stdout}`);
  }
  return image;
}

async function mustRun(command: string, args: string[]): Promise<string> {
  const r = await runCommand(command, args);
  if (r.code !== 0) throw new ImageError(`${command} ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

function tail(text: string, lines: number): string {
  return text.split('\n').slice(-lines).join('\n');
}

let preparing: Promise<DebianImage> | undefined;

/** Builds the image once (or finds it in the cache) and describes it. Once per process. */
export function prepareDebianImage(): Promise<DebianImage> {
  preparing ??= (async () => {
    const r = await runCommand('bash', [IMAGE_SCRIPT]);
    if (r.code !== 0) throw new ImageError(`debian-image.sh failed (exit ${r.code}):\n${tail(r.stderr, 40)}`);
    return parseImageInfo(r.stdout);
  })();
  preparing.catch(() => (preparing = undefined));
  return preparing;
}

/** A private copy of the disk: a reflink clone where the filesystem can, else a sparse copy. */
export async function cloneImage(src: string, dest: string): Promise<void> {
  await mustRun('cp', ['--reflink=auto', '--sparse=always', src, dest]);
}

/**
 * Runs a bash `script` as root with partition 1 of `disk` (a raw image file, never the cached one)
 * mounted on $ROOT; returns its stdout. The mount lives in a private mount namespace and is gone
 * (unmounted, loop device detached) when this resolves, even if the script fails: a mount in the
 * host's namespace could be copied by another process (a virtiofsd sandbox) and outlive us.
 * `env` is passed to the script.
 */
export async function runInRootPartition(disk: string, image: DebianImage, script: string, env: Record<string, string> = {}): Promise<string> {
  const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-debian-root-'));
  const wrapper = `
    set -euo pipefail
    loop=$(losetup -f --show --offset "$FERRY_PART_OFFSET" --sizelimit "$FERRY_PART_SIZE" "$FERRY_DISK")
    cleanup() {
      cd /
      if mountpoint -q "$ROOT"; then umount "$ROOT" || umount -l "$ROOT"; fi
      losetup -d "$loop" || true
    }
    trap cleanup EXIT
    mount "$loop" "$ROOT"
    ${script}
  `;
  try {
    const r = await runCommand('unshare', ['--mount', '--propagation', 'private', 'bash', '-c', wrapper], {
      ...process.env,
      ...env,
      PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin`,
      ROOT: mnt,
      FERRY_DISK: disk,
      FERRY_PART_OFFSET: String(image.partStartBytes),
      FERRY_PART_SIZE: String(image.partSizeBytes),
    });
    if (r.code !== 0) throw new ImageError(`script on the root partition of ${disk} failed (exit ${r.code}): ${r.stderr.trim()}`);
    return r.stdout;
  } finally {
    fs.rmSync(mnt, { recursive: true, force: true });
  }
}

/** Runs `e2fsck -fn` (read-only) on partition 1 of `disk`; `clean` when it found nothing to fix. */
export async function checkRootFilesystem(disk: string, image: DebianImage): Promise<{ clean: boolean; output: string }> {
  const loop = (
    await mustRun('losetup', ['-f', '--show', '--read-only', '--offset', String(image.partStartBytes), '--sizelimit', String(image.partSizeBytes), disk])
  ).trim();
  try {
    const r = await runCommand('e2fsck', ['-fn', loop], { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` });
    return { clean: r.code === 0, output: r.stdout + r.stderr };
  } finally {
    await runCommand('losetup', ['-d', loop]);
  }
}

function checkMarkerName(name: string): void {
  if (!/^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(name)) throw new ImageError(`bad marker name: ${JSON.stringify(name)} (letters, digits, . _ -)`);
}

/** Writes one marker file per name into the disk's /var/lib/ferry-markers (content: the name). */
export async function writeMarkers(disk: string, image: DebianImage, names: string[]): Promise<void> {
  names.forEach(checkMarkerName);
  await runInRootPartition(disk, image, 'for n in $FERRY_MARKERS; do echo "$n" > "$ROOT/var/lib/ferry-markers/$n"; done', {
    FERRY_MARKERS: names.join(' '),
  });
}

/**
 * Makes the machine write `mib` MiB of random data at its next boots (ferry-churn.service, before
 * the login prompt, which then prints `ferry-churn: done <mib>`); 0 turns it off.
 */
export async function setChurn(disk: string, image: DebianImage, mib: number): Promise<void> {
  if (!Number.isSafeInteger(mib) || mib < 0) throw new ImageError(`bad churn size: ${mib} (MiB, an integer >= 0)`);
  await runInRootPartition(disk, image, mib === 0 ? 'rm -f "$ROOT/etc/ferry-churn"' : 'echo "$FERRY_CHURN" > "$ROOT/etc/ferry-churn"', {
    FERRY_CHURN: String(mib),
  });
}

/** Sizes in bytes of the files the churn wrote (one per boot), by boot id. */
export async function readChurn(disk: string, image: DebianImage): Promise<Map<string, number>> {
  const out = await runInRootPartition(disk, image, 'find "$ROOT/var/lib/ferry-churn" -maxdepth 1 -type f -printf "%f %s\\n"');
  const sizes = new Map<string, number>();
  for (const line of out.split('\n')) {
    const [name, size] = line.split(' ');
    if (name && size) sizes.set(name, Number(size));
  }
  return sizes;
}

/** The names of the marker files on the disk, sorted. */
export async function readMarkers(disk: string, image: DebianImage): Promise<string[]> {
  const out = await runInRootPartition(disk, image, 'LC_ALL=C ls -1A "$ROOT/var/lib/ferry-markers"');
  return out.split('\n').filter((l) => l !== '').sort();
}

/** The names the guest prints in its `ferry-markers:` line, or null when the line is not (yet) there. */
export function markersInSerial(serial: string): string[] | null {
  const m = /^ferry-markers: (.*?)\r?$/m.exec(serial);
  if (!m) return null;
  return m[1] === 'none' ? [] : m[1].split(' ');
}
