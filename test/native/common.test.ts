/**
 * The portable capture core's C unit tests (native/common/test): `make -C native/common test`
 * builds them with -Wall -Wextra -Werror, runs them plain, under ASan+UBSan and under valgrind
 * when it is installed, and compiles the core freestanding (no OS or libc headers). They include
 * the control calls both drivers share (ferry_ctl_ops.c: the Linux ioctls' logic) over a fake
 * platform. Needs gcc and make, which CI has.
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
  // the shared control calls ran, not only the core
  for (const t of ['ctl_headers', 'ctl_registry', 'ctl_list_stats', 'ctl_get_commit', 'ctl_tag', 'ctl_tag_steps', 'ctl_hold_args', 'ctl_hold_commit', 'ctl_hold_bound', 'ctl_hold_release', 'ctl_hold_failed_cut', 'ctl_bitmap', 'ctl_clear_resync'])
    expect(output, t).toContain(`ok   ${t}\n`);
  expect(output).toContain('freestanding compile: ok');
}, 600_000);
