import * as fs from 'node:fs';
import { afterAll } from 'vitest';
import { makeTempDir } from './receiver-process';

/** A maker of temporary directories that are all removed after the test file's tests. */
export function tempDirs(): (name: string) => string {
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
  return (name) => {
    const d = makeTempDir(name);
    dirs.push(d);
    return d;
  };
}
