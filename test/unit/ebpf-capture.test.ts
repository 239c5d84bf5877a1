import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { EbpfSource } from '../../agent/capture/ebpf-source';
import { DirtyRanges } from '../../agent/capture/ebpf/dirty-ranges';
import { bitmapRanges, diskToVolume, monotonicToWallUs, readGeometry, type VolumeGeometry } from '../../agent/capture/ebpf/geometry';
import { planEbpfAttach, type EbpfAttachFacts } from '../../agent/capture/ebpf/restart-plan';
import type { CapturedRecord, ProtectedVolume, ResyncNeed } from '../../agent/capture/types';
import { blockHashes } from '../../common/block-hash';
import { waitFor } from '../helpers/agent-lab';
import { FakeTracker } from '../helpers/fake-tracker';
import { tempDirs } from '../helpers/temp-dirs';

const tmp = tempDirs();
const KiB = 1024;
const MiB = 1024 * KiB;

describe('where a volume lies on its disk', () => {
  it('reads a partition and its disk from sysfs', () => {
    const sys = tmp('sysfs');
    const disk = path.join(sys, 'devices', 'virtio0', 'block', 'vda');
    fs.mkdirSync(path.join(disk, 'vda1'), { recursive: true });
    fs.writeFileSync(path.join(disk, 'dev'), '254:0\n');
    fs.writeFileSync(path.join(disk, 'size'), `${(64 * MiB) / 512}\n`);
    fs.writeFileSync(path.join(disk, 'vda1', 'dev'), '254:1\n');
    fs.writeFileSync(path.join(disk, 'vda1', 'partition'), '1\n');
    fs.writeFileSync(path.join(disk, 'vda1', 'start'), '2048\n');
    fs.writeFileSync(path.join(disk, 'vda1', 'size'), `${(32 * MiB) / 512}\n`);
    fs.mkdirSync(path.join(sys, 'dev', 'block'), { recursive: true });
    fs.symlinkSync(path.join(disk, 'vda1'), path.join(sys, 'dev', 'block', '254:1'));
    fs.symlinkSync(disk, path.join(sys, 'dev', 'block', '254:0'));
    const numbers: Record<string, { major: number; minor: number }> = { '/dev/vda1': { major: 254, minor: 1 }, '/dev/vda': { major: 254, minor: 0 } };
    const deviceOf = (p: string): { major: number; minor: number } | undefined => numbers[p];
    expect(readGeometry('/dev/vda1', sys, deviceOf)).toEqual({ disk: { major: 254, minor: 0, sizeBytes: 64 * MiB }, startBytes: MiB, sizeBytes: 32 * MiB, partition: true });
    expect(readGeometry('/dev/vda', sys, deviceOf)).toEqual({ disk: { major: 254, minor: 0, sizeBytes: 64 * MiB }, startBytes: 0, sizeBytes: 64 * MiB, partition: false });
    expect(() => readGeometry('/tmp/image', sys, deviceOf)).toThrow(/not a block device: the ebpf source tracks disks and partitions only/);
  });

  it('maps a whole-disk range to the partition, clipping what lies outside', () => {
    const part = { startBytes: MiB, sizeBytes: 32 * MiB };
    expect(diskToVolume(part, MiB + 4096, 8192)).toEqual({ offset: 4096, length: 8192 });
    expect(diskToVolume(part, MiB - 512, 1024)).toEqual({ offset: 0, length: 512 });
    expect(diskToVolume(part, 33 * MiB - 512, 4096)).toEqual({ offset: 32 * MiB - 512, length: 512 });
    expect(diskToVolume(part, 0, 4096)).toBeUndefined();
    expect(diskToVolume(part, 33 * MiB, 4096)).toBeUndefined();
  });

  it('turns bitmap bits into disk ranges and monotonic times into wall times', () => {
    const bits = Buffer.from([0b1000_0110, 0b0000_0001, 0]);
    expect(bitmapRanges(bits, 20, 16)).toEqual([
      { offset: 1 << 16, length: 2 << 16 },
      { offset: 7 << 16, length: 2 << 16 },
    ]);
    expect(monotonicToWallUs(5_000_000_000n, 1_700_000_000_000_000, 7_000_000_000n)).toBe(1_700_000_000_000_000 - 2_000_000);
  });
});

describe('the dirty ranges of a volume', () => {
  it('hands sorted, merged reads to a pass and counts them unsent until read', () => {
    const d = new DirtyRanges(1 * MiB + 4096, 64 * KiB);
    d.add(200 * KiB, 4096, 300);
    d.add(0, 4096, 200);
    d.add(64 * KiB, 100, 100);
    d.add(MiB, 8192, 400);
    expect(d.unsentSinceUs()).toBe(100);
    const reads = d.take(128 * KiB);
    expect(reads.map((r) => [r.offset, r.length, r.sinceUs])).toEqual([
      [0, 128 * KiB, 100],
      [192 * KiB, 64 * KiB, 300],
      [MiB, 4096, 400],
    ]);
    expect(d.hasWork).toBe(false);
    expect(d.unsentSinceUs()).toBe(100);
    d.done(reads[0]);
    expect(d.unsentSinceUs()).toBe(300);
    d.giveBack(reads.slice(1));
    expect(d.unsent()).toEqual(expect.arrayContaining([{ offset: 192 * KiB, length: 64 * KiB }, { offset: MiB, length: 4096 }]));
    d.done(d.take(MiB)[0]);
  });

  it('says it is draining a bitmap until those blocks are read', () => {
    const d = new DirtyRanges(MiB, 64 * KiB);
    d.add(0, 4096, 1);
    d.add(128 * KiB, 128 * KiB, 2, true);
    expect(d.drainingBitmap).toBe(true);
    const reads = d.take(MiB);
    expect(d.drainingBitmap).toBe(true);
    for (const r of reads) d.done(r);
    expect(d.drainingBitmap).toBe(false);
  });
});

describe('the ebpf source after an agent restart', () => {
  const none: ResyncNeed = { kind: 'none', reason: 'the scan table matches the receiver' };
  const facts = (over: Partial<EbpfAttachFacts>): EbpfAttachFacts => ({
    table: none,
    tableStale: false,
    saved: { instanceId: 'a', clean: true, pending: [] },
    instanceId: 'a',
    trackedBefore: true,
    ...over,
  });

  it('carries on when the same tracker kept tracking since a clean stop', () => {
    expect(planEbpfAttach(facts({})).need).toEqual({ kind: 'none', reason: expect.stringMatching(/kept tracking/) });
    const pending = [{ offset: 4096, length: 4096 }];
    const plan = planEbpfAttach(facts({ saved: { instanceId: 'a', clean: true, pending } }));
    expect(plan.need).toEqual({ kind: 'delta', reason: expect.stringMatching(/4096 bytes not sent/) });
    expect(plan.delta).toEqual(pending);
    // An interrupted hash-compare resumes; the saved ranges are read once it is done.
    const resumed = planEbpfAttach(facts({ table: { kind: 'hash-compare', reason: 'resuming' }, saved: { instanceId: 'a', clean: true, pending } }));
    expect(resumed).toEqual({ need: { kind: 'hash-compare', reason: 'resuming' }, dirty: pending });
  });

  it('compares the whole volume whenever a write may have gone untracked, and says why', () => {
    const why = (f: Partial<EbpfAttachFacts>): string => {
      const need = planEbpfAttach(facts(f)).need;
      expect(need.kind).toBe('hash-compare');
      return need.reason;
    };
    expect(why({ saved: undefined })).toMatch(/first attach with ebpf capture/);
    expect(why({ instanceId: 'b' })).toMatch(/tracker was reloaded .*a reboot or an unload/);
    expect(why({ trackedBefore: false })).toMatch(/was not tracking the disk/);
    expect(why({ saved: { instanceId: 'a', clean: false, pending: [] } })).toMatch(/crash or a kill/);
    expect(planEbpfAttach(facts({ tableStale: true, table: { kind: 'full', reason: 'the replica is new' } })).need.kind).toBe('full');
  });
});

/** A partition at 1 MiB of a fake disk 254:0; the volume's data is a real file. */
const DISK = { major: 254, minor: 0 };
const PART_START = MiB;
const SIZE = 4 * MiB;
const BS = 64 * KiB;

interface Lab {
  file: string;
  data: Buffer;
  replica: Buffer;
  tracker: FakeTracker;
  spec: ProtectedVolume;
  /** Highest seq committed (durable at the "receiver"). */
  durable: () => number;
  records: CapturedRecord[];
  open: () => EbpfSource;
  /** Writes the file and reports it as the tracker would. */
  write: (offset: number, bytes: Buffer) => void;
  /** hold(true) resolves once the pump takes no batch any more (one in flight is committed first). */
  pump: (source: EbpfSource) => { stop: () => Promise<void>; hold: (on: boolean) => Promise<void> };
  remote: (id: string, offset: number, blockSize: number, count: number) => Promise<Buffer>;
}

function lab(name: string, tracker = new FakeTracker()): Lab {
  const dir = tmp(name);
  const file = path.join(dir, 'vol.img');
  const data = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
  fs.writeFileSync(file, data);
  const geometry: VolumeGeometry = { disk: { ...DISK, sizeBytes: 8 * MiB }, startBytes: PART_START, sizeBytes: SIZE, partition: true };
  const replica = Buffer.alloc(SIZE);
  const records: CapturedRecord[] = [];
  let durable = 0;
  const l: Lab = {
    file,
    data,
    replica,
    tracker,
    spec: { id: 'v', path: file, sizeBytes: SIZE, blockSize: 512, isBlockDevice: false },
    durable: () => durable,
    records,
    open: () =>
      new EbpfSource({
        tracker,
        stateDirOf: () => path.join(dir, 'state'),
        blockSize: BS,
        maxPendingBytes: 256 * KiB,
        volumeIds: ['v'],
        drainIntervalMs: 20,
        geometryOf: () => geometry,
      }),
    write: (offset, bytes) => {
      bytes.copy(data, offset);
      const fd = fs.openSync(file, 'r+');
      fs.writeSync(fd, bytes, 0, bytes.length, offset);
      fs.closeSync(fd);
      tracker.write(DISK.major, DISK.minor, PART_START + offset, bytes.length);
    },
    pump: (source) => {
      let stopped = false;
      let held = false;
      let parked: (() => void) | undefined;
      const loop = (async () => {
        while (!stopped) {
          if (held) {
            parked?.();
            parked = undefined;
            await new Promise((r) => setTimeout(r, 10));
            continue;
          }
          const batch = await source.next(MiB, 20);
          if (!batch) continue;
          for (const r of batch.records) {
            if (r.kind === 'write' && r.data) r.data.copy(replica, r.offset);
            records.push(r);
          }
          await source.commit(batch.id);
          durable = batch.records[batch.records.length - 1].seq;
        }
      })();
      return {
        stop: async () => {
          stopped = true;
          await loop;
        },
        hold: (on) => {
          held = on;
          if (!on || stopped) return Promise.resolve();
          return new Promise<void>((resolve) => (parked = resolve));
        },
      };
    },
    remote: async (_id, offset, blockSize, count) => blockHashes(replica.subarray(offset, offset + count * blockSize), blockSize),
  };
  return l;
}

/** Attaches, runs the resync asked for, and waits until the replica equals the volume. */
async function startProtected(l: Lab, source: EbpfSource): Promise<ResyncNeed> {
  const need = await source.attach(l.spec, l.durable());
  if (need.kind !== 'none') source.startResync('v', need.kind, l.remote);
  return need;
}

const pattern = (bytes: number, seed: number): Buffer => {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += 4) b.writeUInt32LE((i * 40503 + seed * 2246822519) >>> 0, i);
  return b;
};

describe('the ebpf capture source over a fake tracker and a file', () => {
  it('streams the writes the tracker reports: the replica equals the volume, unchanged blocks are not sent', async () => {
    const l = lab('ebpf-stream');
    const source = l.open();
    const pump = l.pump(source);
    try {
      expect((await startProtected(l, source)).kind).toBe('full');
      await waitFor('the full resync to be durable', () => source.resyncProgress('v')?.finishedMs);
      await waitFor('the replica to equal the volume', () => l.replica.equals(l.data));
      const before = l.records.length;
      const t0 = Date.now() * 1000;
      l.write(8192, pattern(4096, 1));
      l.write(3 * MiB + 512, pattern(1024, 2));
      // A write to another partition of the disk is not this volume's.
      l.tracker.write(DISK.major, DISK.minor, 0, 4096);
      // A block rewritten with what it held: read back, compared, not sent.
      l.write(2 * MiB, l.data.subarray(2 * MiB, 2 * MiB + 4096));
      await waitFor('the replica to take the writes', () => l.replica.equals(l.data));
      const sent = l.records.slice(before);
      expect(sent.map((r) => r.offset).sort((a, b) => a - b)).toEqual([0, 3 * MiB]);
      expect(sent.every((r) => r.accuracy === 'approximate' && r.length === BS)).toBe(true);
      // The capture time is the write's, not the read-back's (within the few microseconds that
      // converting the event's monotonic time to wall time may be off).
      for (const r of sent) expect(r.captureTimeUs).toBeGreaterThanOrEqual(t0 - 1000);
      expect(source.mode('v')).toBe('approximate');
      await waitFor('nothing unsent', () => source.unsentSinceUs('v') === 0);
    } finally {
      await pump.stop();
      await source.close();
    }
  });

  it('reads back the dirty bitmap when the ring overflowed (mode bitmap-draining meanwhile)', async () => {
    const l = lab('ebpf-bitmap');
    const source = l.open();
    const pump = l.pump(source);
    try {
      await startProtected(l, source);
      await waitFor('the replica to equal the volume', () => source.resyncProgress('v')?.finishedMs && l.replica.equals(l.data));
      await pump.hold(true);
      l.tracker.ringCapacity = 0;
      for (let i = 0; i < 40; i++) l.write(i * 97 * KiB, pattern(4096, 10 + i));
      await waitFor('the source to drain the bitmap', () => source.mode('v') === 'bitmap-draining');
      // Writes not read back yet count for the RPO.
      expect(source.unsentSinceUs('v')).toBeGreaterThan(0);
      void pump.hold(false);
      await waitFor('the replica to take the writes', () => l.replica.equals(l.data));
      await waitFor('the drain to end', () => source.mode('v') === 'approximate');
    } finally {
      await pump.stop();
      await source.close();
    }
  });

  it('settles an app point: what was written before the freeze is in the stream before the cut', async () => {
    const l = lab('ebpf-settle');
    const source = l.open();
    const pump = l.pump(source);
    try {
      await startProtected(l, source);
      await waitFor('the replica to equal the volume', () => source.resyncProgress('v')?.finishedMs && l.replica.equals(l.data));
      await pump.hold(true);
      l.write(MiB, pattern(8192, 3));
      const frozen = Buffer.from(l.data);
      // The settle itself drains the tracker: no waiting for the drain timer.
      const settled = await source.settle(['v'], Date.now() + 10_000);
      expect(settled).toEqual({ settled: true });
      expect(source.settleReadBytes).toBeGreaterThanOrEqual(8192);
      expect(source.settleReadBytes).toBeLessThan(SIZE);
      const [cut] = await source.tag(['v'], { holdMs: 100, quiesced: true });
      expect(cut.accuracy).toBe('exact');
      void pump.hold(false);
      await waitFor('the cut to be durable', () => l.durable() >= cut.seq);
      const image = Buffer.alloc(SIZE);
      for (const r of l.records) if (r.seq <= cut.seq && r.data) r.data.copy(image, r.offset);
      expect(image.equals(frozen)).toBe(true);
    } finally {
      await pump.stop();
      await source.close();
    }
  });

  it('an operator\'s point holds a write completed just before it, not yet drained nor read back', async () => {
    const l = lab('ebpf-operator-tag');
    const source = l.open();
    const pump = l.pump(source);
    try {
      await startProtected(l, source);
      await waitFor('the replica to equal the volume', () => source.resyncProgress('v')?.finishedMs && l.replica.equals(l.data));
      l.write(2 * MiB + 4096, pattern(4096, 7));
      const written = Buffer.from(l.data);
      // Right after the write completes: its event is still in the ring (the drain runs every 20 ms).
      const [cut] = await source.tag(['v'], { holdMs: 100, quiesced: false, completedWritesByMs: Date.now() + 10_000 });
      await waitFor('the cut to be durable', () => l.durable() >= cut.seq);
      const image = Buffer.alloc(SIZE);
      for (const r of l.records) if (r.seq <= cut.seq && r.data) r.data.copy(image, r.offset);
      expect(image.equals(written)).toBe(true);
    } finally {
      await pump.stop();
      await source.close();
    }
  });

  it('stops, and compares everything at the next start, when the tracker\'s events cannot be read', async () => {
    const l = lab('ebpf-garbled');
    let source = l.open();
    await startProtected(l, source);
    l.tracker.garble();
    await expect(waitFor('the source to fail', () => source.next(MiB, 20).then(() => false, (err: Error) => err.message))).resolves.toMatch(/cannot read the write tracker: .*unknown op 77/);
    await source.close();
    source = l.open();
    try {
      expect((await source.attach(l.spec, l.durable())).kind).toBe('hash-compare');
    } finally {
      await source.close();
    }
  });

  it('carries on after a clean restart with the same tracker, and compares everything after a reload or a crash', async () => {
    const l = lab('ebpf-restart');
    let source = l.open();
    let pump = l.pump(source);
    await startProtected(l, source);
    await waitFor('the replica to equal the volume', () => source.resyncProgress('v')?.finishedMs && l.replica.equals(l.data));
    // Records read back but not yet durable when the agent stops must be read again by the next.
    await pump.hold(true);
    l.write(64 * KiB, pattern(4096, 4));
    await waitFor('the write to be read back', () => source.unsentSinceUs('v') > 0 && !source['volume']('v').dirty.hasWork);
    await pump.stop();
    await source.close();
    // Written while no agent runs: the pinned tracker keeps it.
    l.write(2 * MiB + 4096, pattern(4096, 5));

    source = l.open();
    pump = l.pump(source);
    const need = await startProtected(l, source);
    expect(need).toEqual({ kind: 'delta', reason: expect.stringMatching(/stopped cleanly/) });
    await waitFor('the replica to take both writes', () => source.resyncProgress('v')?.finishedMs && l.replica.equals(l.data));
    const bytesBefore = l.records.reduce((n, r) => n + r.length, 0);
    await pump.stop();
    await source.close();

    // Clean again, nothing pending: no resync at all.
    source = l.open();
    pump = l.pump(source);
    expect((await startProtected(l, source)).kind).toBe('none');
    l.write(3 * MiB, pattern(4096, 6));
    await waitFor('the replica to take the write', () => l.replica.equals(l.data));
    expect(l.records.reduce((n, r) => n + r.length, 0) - bytesBefore).toBe(BS);
    // A crash: no clean close.
    await pump.stop();
    source['closed'] = true;
    await source['passes'].close();

    source = l.open();
    pump = l.pump(source);
    expect(await startProtected(l, source)).toEqual({ kind: 'hash-compare', reason: expect.stringMatching(/crash or a kill/) });
    await waitFor('the hash-compare to finish', () => source.resyncProgress('v')?.finishedMs && l.replica.equals(l.data));
    await pump.stop();
    await source.close();

    // A reboot: a new tracker instance.
    l.tracker.reload();
    source = l.open();
    pump = l.pump(source);
    try {
      expect(await startProtected(l, source)).toEqual({ kind: 'hash-compare', reason: expect.stringMatching(/tracker was reloaded/) });
      l.write(512 * KiB, pattern(4096, 7));
      await waitFor('the replica to equal the volume', () => source.resyncProgress('v')?.finishedMs && l.replica.equals(l.data));
    } finally {
      await pump.stop();
      await source.close();
    }
  });
});
