/**
 * `ferry agent protect` / `ferry agent unprotect` in a real kernel (the VM lab): a mounted
 * ext4 on a live dm-linear device is wrapped in dm-ferry and unwrapped while files are written,
 * and every refusal (module missing, not a dm device, no or too small metadata device, already
 * protected, not protected) is one line with its exit code. Needs root; skipped otherwise
 * unless CI is set.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRoot, prepareLab, REPO_ROOT, type Lab } from './lab';
import { killAllLabProcesses } from './processes';

const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false' && process.env.CI !== '0';
const skip = !isRoot() && !inCi;
if (skip) console.warn('test/vm/protect-cli.test.ts: SKIPPED: the VM lab needs root. With CI=true it fails instead of skipping.');

const MiB = 1024 * 1024;

interface Case {
  rc: number;
  stdout: string;
  stderr: string;
}

describe.skipIf(skip)('ferry agent protect / unprotect on a live dm device', () => {
  let lab: Lab;
  let ko: string;
  let dir: string;

  beforeAll(async () => {
    if (!fs.existsSync(path.join(REPO_ROOT, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is missing: run `npm run build` first');
    lab = await prepareLab();
    ko = await lab.buildModule(path.join(REPO_ROOT, 'native', 'linux'));
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-protect-'));
  }, 600_000);

  afterAll(async () => {
    await killAllLabProcesses();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('wraps and unwraps a mounted device, and refuses bad requests with one line and an exit code', async ({ signal }) => {
    const S = (64 * MiB) / 512;
    const r = await lab.run({
      script: `set -uo pipefail
# run NAME ARGS...: one CLI call, reported as a CASE line (rc, base64 stdout and stderr)
run() { local name=$1; shift; node bin/ferry "$@" >/run/out 2>/run/err; local rc=$?
  printf 'CASE %s %d %s %s\\n' "$name" $rc "$(base64 -w0 /run/out)" "$(base64 -w0 /run/err)"; }
set -e
dmsetup create lv --table "0 ${S} linear /dev/vda 0"
mkfs.ext4 -q -F /dev/mapper/lv && mkdir -p /run/m && mount /dev/mapper/lv /run/m
dd if=/dev/urandom of=/run/m/one bs=1M count=2 status=none && sync
set +e
run no-module agent protect --device /dev/mapper/lv --meta /dev/vdb
insmod ${ko}
run not-dm agent protect --device /dev/vda --meta /dev/vdb
run missing agent protect --device /dev/mapper/nope --meta /dev/vdb
run no-meta agent protect --device /dev/mapper/lv
run small-meta agent protect --device /dev/mapper/lv --meta /dev/vdc
run meta-in-use agent protect --device /dev/mapper/lv --meta /dev/mapper/lv
run protect agent protect --device /dev/mapper/lv --meta /dev/vdb
set -e
echo "TABLE $(dmsetup table lv)"
dd if=/dev/urandom of=/run/m/two bs=1M count=2 status=none && sync
echo "STATUS $(dmsetup status lv)"
set +e
run again agent protect --device /dev/mapper/lv --meta /dev/vdb
run unprotect agent unprotect --device /dev/mapper/lv
run not-protected agent unprotect --device /dev/mapper/lv
set -e
echo "TABLE-AFTER $(dmsetup table lv)"
dmsetup info lv-ferry-inner >/dev/null 2>&1 && echo "INNER-STILL-THERE"
sha256sum /run/m/one /run/m/two > /run/sums
umount /run/m
fsck.ext4 -fn /dev/mapper/lv >/dev/null && echo FSCK-CLEAN
mount /dev/mapper/lv /run/m && sha256sum -c --quiet /run/sums && echo FILES-OK
umount /run/m && dmsetup remove lv`,
      disks: [
        { path: path.join(dir, 'data.img'), sizeBytes: 64 * MiB },
        { path: path.join(dir, 'meta.img'), sizeBytes: 4 * MiB },
        { path: path.join(dir, 'tiny.img'), sizeBytes: 4096 },
      ],
      modules: [],
      timeoutMs: 600_000,
      signal,
    });
    const where = `exit ${r.exitCode}\n${r.output}\n(run dir ${r.runDir})`;
    expect(r.kernelProblems, where).toEqual([]);
    expect(r.exitCode, where).toBe(0);
    const cases = new Map<string, Case>();
    for (const line of r.output.split('\n')) {
      const m = /^CASE (\S+) (\d+) (\S*) (\S*)$/.exec(line);
      if (m) cases.set(m[1], { rc: Number(m[2]), stdout: Buffer.from(m[3], 'base64').toString(), stderr: Buffer.from(m[4], 'base64').toString() });
    }
    const refused = (name: string, rc: number, message: RegExp): void => {
      const c = cases.get(name);
      expect(c, `${name}: ${where}`).toBeDefined();
      expect(c?.rc, `${name}: ${JSON.stringify(c)}`).toBe(rc);
      expect(c?.stderr, name).toMatch(message);
      // One line, no stack trace.
      expect(c?.stderr.trim().split('\n'), name).toHaveLength(1);
      expect(c?.stderr, name).toMatch(/^ferry: /);
    };
    refused('no-module', 4, /dm-ferry module is not loaded/);
    refused('not-dm', 2, /not a device-mapper device/);
    refused('missing', 3, /does not exist/);
    refused('no-meta', 2, /--meta DEV is required: a separate device of at least 8192 bytes/);
    refused('small-meta', 2, /too small: 4096 bytes, .* needs 8192/);
    refused('meta-in-use', 2, /another device|in use/);
    expect(cases.get('protect'), where).toMatchObject({ rc: 0, stderr: '' });
    expect(cases.get('protect')?.stdout).toMatch(/protected \/dev\/mapper\/lv: ferry capture over \/dev\/mapper\/lv-ferry-inner/);
    expect(r.output).toMatch(/^TABLE 0 131072 ferry 253:\d+ 254:16 /m);
    refused('again', 1, /already protected/);
    expect(cases.get('unprotect'), where).toMatchObject({ rc: 0, stderr: '' });
    refused('not-protected', 1, /not protected/);
    expect(r.output).toMatch(/^TABLE-AFTER 0 131072 linear 254:0 0$/m);
    expect(r.output).not.toContain('INNER-STILL-THERE');
    expect(r.output).toContain('FSCK-CLEAN');
    expect(r.output).toContain('FILES-OK');
  }, 700_000);
});
