import { describe, expect, it } from 'vitest';
import { diskUsage, ferryTargetDevice, parseMounts } from '../../agent/failback-usage';

const MOUNTS = [
  'sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0',
  '/dev/vda1 / ext4 rw,relatime 0 0',
  '/dev/mapper/vg-data /srv/my\\040data xfs rw 0 0',
  'tmpfs /run tmpfs rw 0 0',
  '',
].join('\n');

describe('mounted-device check', () => {
  it('parses /proc/self/mounts with its octal escapes', () => {
    expect(parseMounts(MOUNTS)).toEqual([
      { source: 'sysfs', target: '/sys' },
      { source: '/dev/vda1', target: '/' },
      { source: '/dev/mapper/vg-data', target: '/srv/my data' },
      { source: 'tmpfs', target: '/run' },
    ]);
  });

  const kernelNames: Record<string, string> = { '/dev/vda1': 'vda1', '/dev/mapper/vg-data': 'dm-0' };
  const name = (source: string): string | undefined => kernelNames[source];

  it('finds a mounted partition of the disk', () => {
    const facts = { names: ['vda', 'vda1', 'vda2'], holders: { vda: [], vda1: [], vda2: [] }, loops: [] };
    expect(diskUsage(facts, parseMounts(MOUNTS), name)).toEqual(['/dev/vda1 is mounted at /']);
  });

  it('finds a device-mapper device built on the disk, and the mount of a dm device itself', () => {
    const held = { names: ['vdb'], holders: { vdb: ['dm-0'] }, loops: [] };
    expect(diskUsage(held, parseMounts(MOUNTS), name)).toEqual(['/dev/vdb is held by /dev/dm-0 (device-mapper)']);
    const dm = { names: ['dm-0'], holders: { 'dm-0': [] }, loops: [] };
    expect(diskUsage(dm, parseMounts(MOUNTS), name)).toEqual(['/dev/dm-0 is mounted at /srv/my data']);
  });

  it('finds an image file served by a loop device, and that device mounted', () => {
    const facts = { names: [], holders: {}, loops: ['loop3'] };
    const mounts = parseMounts('/dev/loop3 /mnt/img ext4 rw 0 0\n');
    expect(diskUsage(facts, mounts, (s) => (s === '/dev/loop3' ? 'loop3' : undefined))).toEqual(['the image is attached to /dev/loop3', '/dev/loop3 is mounted at /mnt/img']);
  });

  it('passes a disk nobody uses', () => {
    const facts = { names: ['vdc', 'vdc1'], holders: { vdc: [], vdc1: [] }, loops: [] };
    expect(diskUsage(facts, parseMounts(MOUNTS), name)).toEqual([]);
  });
});

describe('dm-ferry detection', () => {
  it('finds the device a ferry target wraps in a dmsetup table, and nothing in other tables', () => {
    expect(ferryTargetDevice('0 2097152 ferry /dev/mapper/vg-root-ferry-data /dev/vdb1\n')).toBe('/dev/mapper/vg-root-ferry-data');
    expect(ferryTargetDevice('0 2097152 linear 252:0 2048\n')).toBeUndefined();
    expect(ferryTargetDevice('')).toBeUndefined();
  });
});
