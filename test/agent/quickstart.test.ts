import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir, runFerryAsync } from '../helpers/receiver-process';

describe('ferry quickstart (the README main job)', () => {
  const dir = makeTempDir('quickstart');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('protects a sample volume, exports a point and finds it identical to the source', async () => {
    const work = path.join(dir, 'qs');
    const r = await runFerryAsync(['quickstart', '--dir', work, '--size', '32MiB', '--churn', '4MiB']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/identical to the source volume/);
    expect(r.stdout).toMatch(/recovery points\s+\d+/);
    if (r.stdout.includes('(ext4)')) expect(r.stdout).toMatch(/e2fsck clean; files: README.txt/);
    // A second run reuses (wipes) its own directory; a foreign non-empty directory is refused.
    expect((await runFerryAsync(['quickstart', '--dir', work, '--size', '8MiB', '--churn', '1MiB'])).status).toBe(0);
    const foreign = path.join(dir, 'foreign');
    fs.mkdirSync(foreign);
    fs.writeFileSync(path.join(foreign, 'precious.txt'), 'keep me');
    const refused = await runFerryAsync(['quickstart', '--dir', foreign]);
    expect(refused.status).toBe(2);
    expect(refused.stderr).toMatch(/was not made by `ferry quickstart`/);
    expect(fs.readFileSync(path.join(foreign, 'precious.txt'), 'utf8')).toBe('keep me');
  });
});
