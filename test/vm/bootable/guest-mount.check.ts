/**
 * One-off check (not in CI) that the lead's VM tests can write markers into the bootable Debian
 * disk from a VM-lab guest: the disk (a copy) is /dev/vda, guest-mount.sh maps partition 1 with
 * dm-linear, mounts it (ext4 is built into the lab kernel), writes a marker and unmounts; the
 * host then finds the marker in the image, and the filesystem is clean.
 *   FERRY_VM_CACHE=/work/main/.cache/vm npx vitest run --config test/vm/bootable/vitest.check.config.mts
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { prepareLab } from '../lab';
import { killAllLabProcesses } from '../processes';
import { checkRootFilesystem, cloneImage, prepareDebianImage, readMarkers } from './image';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-guest-mount-'));
afterAll(async () => {
  await killAllLabProcesses();
  fs.rmSync(dir, { recursive: true, force: true });
});

it('maps, mounts and writes a marker into the Debian disk from a lab guest', async ({ signal }) => {
  const [lab, image] = await Promise.all([prepareLab(), prepareDebianImage()]);
  const disk = path.join(dir, 'vda.img');
  await cloneImage(image.path, disk);

  const r = await lab.run({
    signal,
    disks: [{ path: disk }],
    env: { PART_START: String(image.partStartSector), PART_SECTORS: String(image.partSectors) },
    script: `
      set -euo pipefail
      . test/vm/bootable/guest-mount.sh
      mount_root_partition /dev/vda "$PART_START" "$PART_SECTORS" /run/ferry-root
      echo "hostname-in-image: $(cat /run/ferry-root/etc/hostname)"
      write_marker /run/ferry-root m-lab
      ls /run/ferry-root/var/lib/ferry-markers
      umount_root_partition /run/ferry-root
      echo "maps-left: $(dmsetup ls | grep -c p1 || true)"
      if write_marker /run/ferry-root 'bad name' 2>/dev/null; then echo bad-name-accepted; fi
    `,
  });
  console.log(r.output);
  expect(r.exitCode, r.output).toBe(0);
  expect(r.output).toContain('hostname-in-image: ferry-debian');
  expect(r.output).toContain('maps-left: 0');
  expect(r.output).not.toContain('bad-name-accepted');
  expect(r.kernelProblems).toEqual([]);

  const seen = await readMarkers(disk, image);
  expect(seen).toEqual(['m-lab']);
  const fsck = await checkRootFilesystem(disk, image);
  expect(fsck.clean, fsck.output).toBe(true);
  console.log(`lab timings: boot ${r.timings.bootMs} ms, script ${r.timings.scriptMs} ms`);
});
