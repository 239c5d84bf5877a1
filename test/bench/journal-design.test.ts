import { spawnSync } from 'child_process';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/receiver-process';

// The journal-design bench runs the receiver's own undo and redo code on one workload; its
// figures are not asserted here, but what it checks is: both designs export the same images, a
// crash in the middle of a redo advance is finished on reopen, and the index reopens the same.
describe('journal-design bench (small run)', () => {
  it('runs both designs and finds the same images in each, also after a crash mid-advance', () => {
    const r = spawnSync(process.execPath, [path.join(REPO_ROOT, 'dist/bench/journal-design.js'), '--volume-mib', '16', '--churn-mib', '16', '--write-kib', '4', '--json'], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { sameImages: { latest: boolean; oldest: boolean }; redo: { reopenSameIndex: boolean; crashCheck?: { sameImage: boolean } } };
    expect(out.sameImages).toEqual({ latest: true, oldest: true });
    expect(out.redo.reopenSameIndex).toBe(true);
    expect(out.redo.crashCheck?.sameImage).toBe(true);
  });
});
