import { execFileSync } from 'child_process';
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';

const TOOL_PATH = `${process.env.PATH ?? ''}:/usr/sbin:/sbin`;

function findTool(name: string): string | undefined {
  for (const dir of TOOL_PATH.split(':')) {
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

function run(tool: string, args: string[]): string {
  return execFileSync(tool, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PATH: TOOL_PATH } });
}

/** The e2fsprogs tools the quick start uses when they are installed (no root needed for any). */
export interface Ext4Tools {
  mke2fs: string;
  debugfs: string;
  e2fsck: string;
}

export function findExt4Tools(): Ext4Tools | undefined {
  const mke2fs = findTool('mke2fs');
  const debugfs = findTool('debugfs');
  const e2fsck = findTool('e2fsck');
  return mke2fs && debugfs && e2fsck ? { mke2fs, debugfs, e2fsck } : undefined;
}

/**
 * A sample volume image. With e2fsprogs it holds a real ext4 filesystem with a few files,
 * built and later changed without mounting (mke2fs -d, debugfs -w); without them, random data.
 */
export class SampleVolume {
  private fileCount = 0;

  private constructor(
    readonly file: string,
    readonly sizeBytes: number,
    readonly tools: Ext4Tools | undefined,
    private readonly workDir: string,
  ) {}

  static create(dir: string, sizeBytes: number): SampleVolume {
    const file = path.join(dir, 'sample-volume.img');
    const tools = findExt4Tools();
    const volume = new SampleVolume(file, sizeBytes, tools, dir);
    if (tools) {
      const seed = path.join(dir, 'seed');
      fs.mkdirSync(seed, { recursive: true });
      fs.writeFileSync(path.join(seed, 'README.txt'), 'A file system protected by Ferry.\n');
      for (let i = 0; i < 4; i++) fs.writeFileSync(path.join(seed, `data-${i}.bin`), randomBytes(1024 * 1024));
      fs.closeSync(fs.openSync(file, 'w'));
      fs.truncateSync(file, sizeBytes);
      run(tools.mke2fs, ['-q', '-F', '-t', 'ext4', '-L', 'ferry-sample', '-d', seed, file]);
      fs.rmSync(seed, { recursive: true, force: true });
    } else {
      const fd = fs.openSync(file, 'w');
      for (let off = 0; off < sizeBytes; off += 1024 * 1024) fs.writeSync(fd, randomBytes(Math.min(1024 * 1024, sizeBytes - off)), 0, undefined, off);
      fs.closeSync(fd);
    }
    return volume;
  }

  get kind(): 'ext4' | 'random data' {
    return this.tools ? 'ext4' : 'random data';
  }

  /** Changes the volume: adds a file of `bytes` through debugfs, or rewrites random blocks. */
  churn(bytes: number): void {
    if (this.tools) {
      const src = path.join(this.workDir, 'churn.bin');
      fs.writeFileSync(src, randomBytes(bytes));
      run(this.tools.debugfs, ['-w', '-R', `write ${src} churn-${this.fileCount++}.bin`, this.file]);
      fs.rmSync(src);
      return;
    }
    const fd = fs.openSync(this.file, 'r+');
    try {
      const block = 64 * 1024;
      for (let done = 0; done < bytes; done += block) {
        const offset = Math.floor(Math.random() * (this.sizeBytes / block)) * block;
        fs.writeSync(fd, randomBytes(block), 0, block, offset);
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  /** For an ext4 image: e2fsck's verdict and the files at the root. */
  inspect(image: string): { fsckClean: boolean; files: string[] } | undefined {
    if (!this.tools) return undefined;
    let fsckClean = true;
    try {
      run(this.tools.e2fsck, ['-f', '-n', image]);
    } catch {
      fsckClean = false;
    }
    const listing = run(this.tools.debugfs, ['-R', 'ls -l /', image]);
    const files = listing
      .split('\n')
      .map((l) => l.trim().split(/\s+/).pop() ?? '')
      .filter((n) => n !== '' && n !== '.' && n !== '..' && n !== 'lost+found');
    return { fsckClean, files };
  }
}
