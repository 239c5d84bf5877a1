import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** A file system mounted for a test; `unmount` undoes everything (loop device included). */
export interface MountedFs {
  mountPoint: string;
  unmount(): void;
}

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A real ext4 of `sizeMiB` on a loop device, mounted at `mountPoint` (made if missing). Root only. */
export function mountExt4(imageFile: string, mountPoint: string, sizeMiB: number): MountedFs {
  fs.mkdirSync(path.dirname(imageFile), { recursive: true });
  const fd = fs.openSync(imageFile, 'w');
  fs.ftruncateSync(fd, sizeMiB * 1024 * 1024);
  fs.closeSync(fd);
  // No blocks reserved for root: the receiver runs as root and must see the space it really has.
  run('mkfs.ext4', ['-q', '-F', '-m', '0', '-b', '4096', imageFile]);
  const loop = run('losetup', ['-f', '--show', imageFile]).trim();
  fs.mkdirSync(mountPoint, { recursive: true });
  try {
    run('mount', ['-t', 'ext4', loop, mountPoint]);
  } catch (err) {
    run('losetup', ['-d', loop]);
    throw err;
  }
  return {
    mountPoint,
    unmount: () => {
      try {
        run('umount', [mountPoint]);
      } finally {
        run('losetup', ['-d', loop]);
        fs.rmSync(imageFile, { force: true });
      }
    },
  };
}

/** A tmpfs of `sizeMiB` at `mountPoint`. Root only. */
export function mountTmpfs(mountPoint: string, sizeMiB: number): MountedFs {
  fs.mkdirSync(mountPoint, { recursive: true });
  run('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0700`, 'ferry-test', mountPoint]);
  return { mountPoint, unmount: () => run('umount', [mountPoint]) };
}

export function freeBytes(dir: string): number {
  const s = fs.statfsSync(dir);
  return s.bavail * s.bsize;
}

/** Fills `dir`'s file system with a ballast file until about `leaveBytes` are free; returns it. */
export function fillWithBallast(dir: string, leaveBytes: number, name = 'ballast'): string {
  const file = path.join(dir, name);
  const fd = fs.openSync(file, 'a');
  try {
    const chunk = Buffer.alloc(1024 * 1024, 0xba);
    for (;;) {
      const free = freeBytes(dir);
      if (free <= leaveBytes) break;
      const len = Math.min(chunk.length, free - leaveBytes);
      try {
        fs.writeSync(fd, chunk, 0, len);
      } catch {
        break;
      }
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return file;
}
