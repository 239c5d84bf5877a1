/**
 * Disk images of recovered machines: copy-on-write overlays for test failovers (the base is
 * never written) and persistent copies for failovers (reflink clones where the filesystem can).
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TargetError } from './targets/target';

function run(binary: string, args: string[], installHint: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(binary, args, { timeout: 120_000, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (!err) {
        resolve(stdout);
        return;
      }
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') reject(new TargetError(`${binary} not found (${installHint})`));
      else reject(new TargetError(`${binary} ${args.join(' ')} failed: ${(stderr || err.message).trim().split('\n').slice(-3).join(' ')}`));
    });
  });
}

/**
 * A qcow2 overlay over `basePath`: the VM writes into the overlay, reads what it did not write
 * from the base. The base's path is stored absolute in the overlay.
 */
export async function createOverlay(basePath: string, baseFormat: 'raw' | 'qcow2', overlayPath: string, qemuImg = 'qemu-img'): Promise<void> {
  const base = path.resolve(basePath);
  if (!fs.existsSync(base)) throw new TargetError(`overlay: base image ${base} does not exist`);
  if (fs.existsSync(overlayPath)) throw new TargetError(`overlay: ${overlayPath} already exists`);
  fs.mkdirSync(path.dirname(path.resolve(overlayPath)), { recursive: true });
  await run(qemuImg, ['create', '-q', '-f', 'qcow2', '-b', base, '-F', baseFormat, overlayPath], 'install: apt-get install qemu-utils');
}

/** A persistent copy of `source` at `dest`: a reflink clone when the filesystem supports it, else a sparse copy. */
export async function createPersistentDisk(source: string, dest: string): Promise<void> {
  if (!fs.existsSync(source)) throw new TargetError(`disk copy: ${source} does not exist`);
  if (fs.existsSync(dest)) throw new TargetError(`disk copy: ${dest} already exists`);
  fs.mkdirSync(path.dirname(path.resolve(dest)), { recursive: true });
  const tmp = `${dest}.partial`;
  fs.rmSync(tmp, { force: true });
  try {
    await run('cp', ['--reflink=auto', '--sparse=always', '--', source, tmp], 'install: apt-get install coreutils');
    fs.renameSync(tmp, dest);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/** Removes a disk image; a missing one is fine. */
export function removeDisk(diskPath: string): void {
  fs.rmSync(diskPath, { force: true });
}
