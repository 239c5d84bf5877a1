/**
 * The portable capture core's C unit tests (native/common/test): `make -C native/common test`
 * builds them with -Wall -Wextra -Werror, runs them plain, under ASan+UBSan and under valgrind
 * when it is installed, and compiles the core freestanding (no OS or libc headers). Needs gcc
 * and make, which CI has.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..', '..');

it('native/common unit tests pass (plain, sanitizers, valgrind, freestanding)', () => {
  const r = spawnSync('make', ['-C', path.join(ROOT, 'native', 'common'), 'test'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  expect(r.error, output).toBeUndefined();
  expect(r.status, output).toBe(0);
  expect(output).toContain('all core tests passed');
  expect(output).toContain('freestanding compile: ok');
}, 600_000);
