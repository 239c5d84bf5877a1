/**
 * The pure parts of online verify and repair (block verdicts, ranges, RepairRequest checks),
 * the receiver's repair requests handled one at a time, and the kernel walker repairing ranges
 * over a fake control device. The real path is test/agent/verify.test.ts (scan capture) and
 * the VM lab (dm-ferry).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { convertKernelRecords, type ConvertContext } from '../../agent/capture/kernel/converter';
import { StreamLog } from '../../agent/capture/kernel/stream-log';
import { KernelVolume } from '../../agent/capture/kernel/volume';
import { VolumeWalker } from '../../agent/capture/kernel/walker';
import { blockRanges } from '../../agent/capture/ranges';
import { ScanSource } from '../../agent/capture/scan-source';
import type { CapturedRecord, ProtectedVolume, RepairResult } from '../../agent/capture/types';
import { checkRepairRequest, RepairDesk } from '../../agent/repair-requests';
import { BlockCheck, classifyBlock } from '../../agent/verify/classify';
import { blockRuns } from '../../agent/verify/verifier';
import { blockHash, blockHashes } from '../../common/block-hash';
import type { ControlDevice } from '../../agent/capture/kernel/control-device';
import { readDirect, type KernelRecord, type DeviceInfo } from '../../native/addon';
import type { ferry } from '../../proto/frames';
import { waitFor } from '../helpers/agent-lab';
import { tempDirs } from '../helpers/temp-dirs';

const tmp = tempDirs();

const h = (fill: number): Buffer => blockHash(Buffer.alloc(4096, fill));
const check = (sourceBefore: number, receiver: number, sourceAfter: number): BlockCheck => ({ sourceBefore: h(sourceBefore), receiver: h(receiver), sourceAfter: h(sourceAfter) });

describe('a suspect block, check by check', () => {
  it('matches once the receiver caught up with a write that was on its way', () => {
    expect(classifyBlock([check(1, 1, 1)], 6)).toMatchObject({ kind: 'match', reason: expect.stringMatching(/caught up/) });
    // It was written between the reads of an earlier check, then settled.
    expect(classifyBlock([check(1, 2, 3), check(3, 3, 3)], 6).kind).toBe('match');
  });

  it('is checked again while the source block changes between the two reads, and is busy when it never stops', () => {
    expect(classifyBlock([check(1, 0, 2)], 6)).toMatchObject({ kind: 'check-again', reason: expect.stringMatching(/being written/) });
    const always = [check(1, 0, 2), check(2, 1, 3), check(3, 2, 4)];
    expect(classifyBlock(always, 3)).toMatchObject({ kind: 'busy', reason: expect.stringMatching(/changed between the two reads in 3 checks/) });
  });

  it('is diverged only when two checks in a row saw a stable source and the same other data at the receiver', () => {
    const once = classifyBlock([check(1, 9, 1)], 6);
    expect(once).toMatchObject({ kind: 'check-again', reason: expect.stringMatching(/confirming/) });
    expect(classifyBlock([check(1, 9, 1), check(1, 9, 1)], 6)).toMatchObject({ kind: 'diverged', reason: expect.stringMatching(/two checks in a row/) });
    // A write and its undoing between the reads of the first check (the receiver had only the
    // write): the next check, caught up again, sees the receiver agree. No false alarm.
    expect(classifyBlock([check(1, 9, 1), check(1, 1, 1)], 6).kind).toBe('match');
    // The receiver's data changed from one check to the next: not a stable divergence yet.
    expect(classifyBlock([check(1, 9, 1), check(1, 8, 1)], 6).kind).toBe('check-again');
    // Busy first, then stable: it needs two stable checks of its own.
    expect(classifyBlock([check(1, 0, 2), check(2, 9, 2)], 6).kind).toBe('check-again');
    expect(classifyBlock([check(1, 0, 2), check(2, 9, 2), check(2, 9, 2)], 6).kind).toBe('diverged');
  });

  it('never calls a block diverged on its last check without confirmation', () => {
    expect(classifyBlock([check(1, 0, 2), check(2, 9, 2)], 2)).toMatchObject({ kind: 'busy', reason: expect.stringMatching(/too often to confirm/) });
    expect(classifyBlock([], 6).kind).toBe('check-again');
  });
});

describe('repair ranges', () => {
  it('widens ranges to whole blocks, merges them, clips them to the volume; none means all of it', () => {
    const bs = 65536;
    const size = 10 * bs + 4096; // a short last block
    expect(blockRanges([], bs, size)).toEqual([{ offset: 0, length: size }]);
    expect(blockRanges([{ offset: 2 * bs + 10, length: 1 }], bs, size)).toEqual([{ offset: 2 * bs, length: bs }]);
    expect(
      blockRanges(
        [
          { offset: 5 * bs, length: bs },
          { offset: 2 * bs, length: 2 * bs + 1 }, // reaches into block 4
          { offset: 10 * bs + 100, length: 10 },
        ],
        bs,
        size,
      ),
    ).toEqual([
      { offset: 2 * bs, length: 4 * bs },
      { offset: 10 * bs, length: 4096 },
    ]);
    expect(blockRuns([1, 2, 3, 7, 8, 20], 2)).toEqual([
      { first: 1, count: 2 },
      { first: 3, count: 1 },
      { first: 7, count: 2 },
      { first: 20, count: 1 },
    ]);
  });
});

const VOLUME: ProtectedVolume = { id: 'vol1', path: '/dev/null', sizeBytes: 1 << 20, blockSize: 512, isBlockDevice: false };
const volumes = new Map([[VOLUME.id, VOLUME]]);

describe('RepairRequest from the receiver', () => {
  it('is refused with a reason for an unknown volume, ranges outside the volume, empty ranges or too many', () => {
    expect(checkRepairRequest({ volumeId: 'nope', requestId: 1 }, volumes)).toMatchObject({ ok: false, why: expect.stringMatching(/"nope" is not one this agent protects/) });
    expect(checkRepairRequest({ volumeId: 'vol1', requestId: 1, ranges: [{ offset: (1 << 20) - 512, length: 1024 }] }, volumes)).toMatchObject({
      ok: false,
      why: expect.stringMatching(/ends past the end of the volume/),
    });
    expect(checkRepairRequest({ volumeId: 'vol1', requestId: 1, ranges: [{ offset: 0, length: 0 }] }, volumes)).toMatchObject({ ok: false, why: expect.stringMatching(/not a non-empty/) });
    const many = Array.from({ length: 65537 }, () => ({ offset: 0, length: 512 }));
    expect(checkRepairRequest({ volumeId: 'vol1', requestId: 1, ranges: many }, volumes)).toMatchObject({ ok: false, why: expect.stringMatching(/65537 ranges/) });
    expect(checkRepairRequest({ volumeId: 'vol1', requestId: 4, ranges: [], reason: 'lost spool' }, volumes)).toEqual({
      ok: true,
      request: { volumeId: 'vol1', requestId: 4, ranges: [], reason: 'lost spool' },
    });
  });

  it('runs one repair at a time per volume, never the same id twice, and answers a repeated request from memory', async () => {
    const runs: Array<{ ranges: unknown; finish: (r: RepairResult) => void }> = [];
    const sent: ferry.IRepairDone[] = [];
    const desk = new RepairDesk({
      volumes: () => volumes,
      run: (_id, ranges) => new Promise<RepairResult>((resolve) => runs.push({ ranges, finish: resolve })),
      send: (done) => {
        sent.push(done);
        return true;
      },
    });
    // Before the volumes are attached, requests wait.
    desk.onRequest({ volumeId: 'vol1', requestId: 1, ranges: [{ offset: 0, length: 512 }] });
    expect(runs).toHaveLength(0);
    desk.start();
    expect(runs).toHaveLength(1);
    desk.onRequest({ volumeId: 'vol1', requestId: 1 }); // running: not run twice
    desk.onRequest({ volumeId: 'vol1', requestId: 2 }); // queued behind 1
    desk.onRequest({ volumeId: 'vol1', requestId: 2 }); // queued: not twice
    desk.onRequest({ volumeId: 'other', requestId: 3 }); // malformed: ignored
    expect(runs).toHaveLength(1);
    runs[0].finish({ throughSeq: 40, sentBytes: 512 });
    await waitFor('the second repair to start', () => runs.length === 2);
    expect(sent).toEqual([{ volumeId: 'vol1', requestId: 1, throughSeq: 40, sentBytes: 512 }]);
    runs[1].finish({ throughSeq: 41, sentBytes: 0 });
    await waitFor('the second answer', () => sent.length === 2);
    desk.onRequest({ volumeId: 'vol1', requestId: 1, ranges: [{ offset: 0, length: 512 }] }); // asked again after a login
    expect(sent[2]).toEqual(sent[0]);
    expect(runs).toHaveLength(2);
    // The same id for other ranges (a receiver that lost its own records): a new repair.
    desk.onRequest({ volumeId: 'vol1', requestId: 1, ranges: [{ offset: 4096, length: 512 }] });
    expect(runs).toHaveLength(3);
    expect(runs[2].ranges).toEqual([{ offset: 4096, length: 512 }]);
  });
});

// ---- the kernel walker repairing ranges, over a fake /dev/ferry-ctl ----------------------------

const BS = 65536;

/** Just what the walker and the converter ask of the control device: marks, stats, bitmap clears. */
class FakeControl {
  nextKseq = 100;
  readonly marks: KernelRecord[] = [];
  readonly cleared: Array<{ first: number; nbits: number }> = [];

  constructor(private readonly sizeBytes: number) {}

  private info(): DeviceInfo {
    return {
      index: 0,
      modeName: 'data',
      suspended: false,
      granularity: BS,
      ringCapacity: 4096,
      bitmapEpoch: 1,
      bitmapBits: this.sizeBytes / BS,
      dirtyBits: 0,
      nextSeq: this.nextKseq,
    } as DeviceInfo;
  }

  async stats(): Promise<{ device: DeviceInfo }> {
    return { device: this.info() };
  }

  async resyncMark(devIndex: number, offset: number, length: number): Promise<number> {
    const seq = this.nextKseq++;
    this.marks.push({ seq, devIndex, kind: 'resync-mark', offset, length, timeNs: 0n, accuracy: 'exact', mode: 'data', flags: 0, data: Buffer.alloc(0), bufferOffset: 0 });
    return seq;
  }

  async clearBitmap(_dev: number, _epoch: number, first: number, nbits: number): Promise<number> {
    this.cleared.push({ first, nbits });
    return 0;
  }
}

/** The fake stands in for the calls the walker and the converter make (the rest are unused here). */
const asControl = (c: FakeControl): ControlDevice => c as unknown as ControlDevice;

const walkerContext = (c: FakeControl) => ({ control: asControl(c), blockSize: BS, readVolume: readDirect });

/** Converts all of `records` (one kernel batch) into v's stream. */
const converterFor = (c: FakeControl, v: KernelVolume) => {
  const ctx: ConvertContext = {
    control: asControl(c),
    readVolume: readDirect,
    volumes: { at: () => v, refresh: async () => undefined, isIgnored: () => false, ignore: () => false },
  };
  return (records: KernelRecord[]) => convertKernelRecords(ctx, records, 0, 64 << 20, new Set());
};

describe('kernel capture: a repair of some ranges', () => {
  it('places marks over the blocks of the ranges only, sends the blocks that differ, and ends once they are committed', async () => {
    const dir = tmp('kernel-repair');
    const size = 8 * BS;
    const image = path.join(dir, 'vol.img');
    const source = Buffer.alloc(size);
    for (let i = 0; i < size; i += 4) source.writeUInt32LE((i * 2654435761) >>> 0, i);
    fs.writeFileSync(image, source);
    // The receiver's replica: blocks 2 and 5 are damaged.
    const replica = Buffer.from(source);
    replica.fill(0xee, 2 * BS + 100, 2 * BS + 200);
    replica.fill(0, 5 * BS, 6 * BS);
    const remote = async (_id: string, offset: number, blockSize: number, count: number): Promise<Buffer> => blockHashes(replica.subarray(offset, offset + count * blockSize), blockSize);

    const control = new FakeControl(size);
    const spec: ProtectedVolume = { id: 'vol1', path: image, sizeBytes: size, blockSize: 512, isBlockDevice: false };
    const v = new KernelVolume(spec, { major: 7, minor: 0 }, StreamLog.open(path.join(dir, 'state'), size, BS), 10, {
      devIndex: 0,
      generation: 1,
      loadFirstSeq: 1,
      mode: 'data',
      nextStream: 11,
      firstKseq: 100,
    });
    const walker = new VolumeWalker(walkerContext(control), v).run();
    const converter = converterFor(control, v);
    let result: RepairResult | undefined;
    // Blocks 2-5 (a range that starts and ends inside blocks) and block 7.
    const ranges = blockRanges([{ offset: 2 * BS + 10, length: 3 * BS }, { offset: 7 * BS, length: 100 }], BS, size);
    const progress = { reason: 'test', doneBytes: 0, totalBytes: 5 * BS, sentBytes: 0, startedMs: 0 };
    v.queueRepair({ ranges, remote, progress, resolve: (r) => (result = r), reject: (err) => expect.fail(err.message) });
    try {
      await waitFor('the marks of the five blocks', () => control.marks.length === 5);
      expect(control.marks.map((m) => m.offset / BS)).toEqual([2, 3, 4, 5, 7]);
      // Until the repair has read its blocks, a point cut now is not usable.
      expect(v.accuracyAt(control.nextKseq)).toBe('none');
      const { batch } = await converter(control.marks);
      const records: CapturedRecord[] = batch.records;
      expect(records.map((r) => [r.seq, r.kind, r.offset / BS])).toEqual([
        [11, 'write', 2],
        [12, 'noop', 0],
        [13, 'noop', 0],
        [14, 'write', 5],
        [15, 'noop', 0],
      ]);
      expect(records[0].data?.equals(source.subarray(2 * BS, 3 * BS))).toBe(true);
      expect(v.accuracyAt(control.nextKseq)).not.toBe('none');
      expect(result).toBeUndefined(); // nothing is committed yet
      // The pipeline commits the batch (the receiver holds it): the repair is done.
      v.noteCommitted(15, 5);
      await waitFor('the repair to end', () => result);
      expect(result).toEqual({ throughSeq: 15, sentBytes: 2 * BS });
      expect(progress).toMatchObject({ doneBytes: 5 * BS, sentBytes: 2 * BS, finishedMs: expect.any(Number) });
      expect(v.lastRepair).toBe(progress);
    } finally {
      v.stop();
      await walker;
      v.log.close();
    }
  });

  it('runs a repair again after its walk failed, and leaves nothing behind that would hold up drains', async () => {
    const dir = tmp('kernel-repair-error');
    const size = 2 * BS;
    const image = path.join(dir, 'vol.img');
    fs.writeFileSync(image, Buffer.alloc(size, 1));
    let calls = 0;
    const remote = async (_id: string, offset: number, blockSize: number, count: number): Promise<Buffer> => {
      if (++calls === 1) throw new Error('the receiver went away');
      return blockHashes(Buffer.alloc(count * blockSize, 2), blockSize);
    };
    const control = new FakeControl(size);
    const spec: ProtectedVolume = { id: 'vol1', path: image, sizeBytes: size, blockSize: 512, isBlockDevice: false };
    const v = new KernelVolume(spec, { major: 7, minor: 0 }, StreamLog.open(path.join(dir, 'state'), size, BS), 10, {
      devIndex: 0,
      generation: 1,
      loadFirstSeq: 1,
      mode: 'data',
      nextStream: 11,
      firstKseq: 100,
    });
    const walker = new VolumeWalker(walkerContext(control), v).run();
    const converter = converterFor(control, v);
    let result: RepairResult | undefined;
    v.queueRepair({ ranges: [{ offset: 0, length: size }], remote, progress: { reason: 'test', doneBytes: 0, totalBytes: size, sentBytes: 0, startedMs: 0 }, resolve: (r) => (result = r), reject: (err) => expect.fail(err.message) });
    try {
      await waitFor('the marks of the second attempt', () => control.marks.length === 2);
      expect(calls).toBe(2);
      await converter(control.marks);
      v.noteCommitted(12, 2);
      await waitFor('the repair to end', () => result);
      expect(result).toEqual({ throughSeq: 12, sentBytes: 2 * BS });
      await waitFor('the clearing list to empty', () => v.clearingWalks.length === 0);
    } finally {
      v.stop();
      await walker;
      v.log.close();
    }
  });

  it('runs a repair again when the device was reloaded before its blocks were read', async () => {
    const dir = tmp('kernel-repair-reload');
    const size = 4 * BS;
    const image = path.join(dir, 'vol.img');
    fs.writeFileSync(image, Buffer.alloc(size, 1));
    const replica = Buffer.alloc(size, 2);
    const remote = async (_id: string, offset: number, blockSize: number, count: number): Promise<Buffer> => blockHashes(replica.subarray(offset, offset + count * blockSize), blockSize);
    const control = new FakeControl(size);
    const spec: ProtectedVolume = { id: 'vol1', path: image, sizeBytes: size, blockSize: 512, isBlockDevice: false };
    const v = new KernelVolume(spec, { major: 7, minor: 0 }, StreamLog.open(path.join(dir, 'state'), size, BS), 10, {
      devIndex: 0,
      generation: 1,
      loadFirstSeq: 1,
      mode: 'data',
      nextStream: 11,
      firstKseq: 100,
    });
    const walker = new VolumeWalker(walkerContext(control), v).run();
    let failed: Error | undefined;
    v.queueRepair({ ranges: [{ offset: 0, length: size }], remote, progress: { reason: 'test', doneBytes: 0, totalBytes: size, sentBytes: 0, startedMs: 0 }, resolve: () => undefined, reject: (err) => (failed = err) });
    try {
      await waitFor('the first marks', () => control.marks.length === 4);
      v.abandonLoad('reloaded');
      await waitFor('the repair to place its marks again', () => control.marks.length === 8);
      expect(control.marks.slice(4).map((m) => m.offset / BS)).toEqual([0, 1, 2, 3]);
    } finally {
      v.stop();
      await walker;
      v.log.close();
    }
    // Stopping the agent fails the repair that was running (the receiver asks again later).
    await waitFor('the repair to be failed by the stop', () => failed);
    expect(failed?.message).toMatch(/stopping/);
  });
});

describe('scan capture: a repair of some ranges', () => {
  it('waits until the stream is durable, sends the blocks that differ from the receiver, and marks points unusable meanwhile', async () => {
    const dir = tmp('scan-repair');
    const size = 16 * BS;
    const image = path.join(dir, 'vol.img');
    const data = Buffer.alloc(size);
    for (let i = 0; i < size; i += 4) data.writeUInt32LE((i * 2246822519) >>> 0, i);
    fs.writeFileSync(image, data);
    const source = new ScanSource({ stateDirOf: () => path.join(dir, 'state'), intervalMs: 20, blockSize: BS, maxPendingBytes: 8 << 20 });
    // The receiver: a replica the records are applied to, and its block hashes.
    const replica = Buffer.alloc(size);
    const writes: CapturedRecord[] = [];
    const remote = async (_id: string, offset: number, blockSize: number, count: number): Promise<Buffer> => blockHashes(replica.subarray(offset, offset + count * blockSize), blockSize);
    // A pipeline stand-in: takes batches, applies them, commits them unless held.
    let hold = false;
    const held: number[] = [];
    let stopped = false;
    const pump = (async () => {
      while (!stopped) {
        const batch = await source.next(1 << 20, 20);
        if (!batch) continue;
        for (const r of batch.records) {
          if (r.kind === 'write' && r.data) r.data.copy(replica, r.offset);
          writes.push(r);
        }
        if (hold) held.push(batch.id);
        else await source.commit(batch.id);
      }
    })();
    const spec: ProtectedVolume = { id: 'vol1', path: image, sizeBytes: size, blockSize: 512, isBlockDevice: false };
    try {
      expect((await source.attach(spec, 0)).kind).toBe('full');
      source.startResync('vol1', 'full', remote);
      await waitFor('the resync to be durable', () => source.resyncProgress('vol1')?.finishedMs);
      await waitFor('the replica to equal the source', () => replica.equals(data));
      // The receiver loses blocks 2 and 9; the source changes block 5, whose record stays in flight.
      replica.fill(0, 2 * BS, 3 * BS);
      replica.fill(0xab, 9 * BS + 4096, 9 * BS + 8192);
      hold = true;
      data.fill(0x11, 5 * BS, 6 * BS);
      fs.writeFileSync(image, data);
      await waitFor('the change of block 5 to be in flight', () => held.length > 0);
      let result: RepairResult | undefined;
      const repair = source.repair('vol1', [{ offset: 2 * BS, length: BS }, { offset: 9 * BS + 100, length: 1 }, { offset: 12 * BS, length: 2 * BS }], remote, 'test');
      void repair.then((r) => (result = r));
      // Until what is in flight is durable, the receiver's hashes would not describe it: the repair waits.
      await waitFor('the repair to start', () => source.repairProgress('vol1'));
      expect(source.repairProgress('vol1')).toMatchObject({ reason: 'test', totalBytes: 4 * BS, doneBytes: 0 });
      expect((await source.tag(['vol1'], { holdMs: 0, quiesced: false }))[0].accuracy).toBe('none');
      const before = writes.length;
      hold = false;
      for (const id of held.splice(0)) await source.commit(id);
      await waitFor('the repair to be durable', () => result);
      const sent = writes.slice(before).filter((w) => w.kind === 'write');
      expect(sent.map((w) => w.offset / BS)).toEqual([2, 9]);
      expect(sent.every((w) => w.accuracy === 'none')).toBe(true);
      expect(result).toEqual({ throughSeq: sent[1].seq, sentBytes: 2 * BS });
      expect(replica.equals(data)).toBe(true);
      expect(source.repairProgress('vol1')).toMatchObject({ doneBytes: 4 * BS, sentBytes: 2 * BS, finishedMs: expect.any(Number) });
      expect((await source.tag(['vol1'], { holdMs: 0, quiesced: false }))[0].accuracy).toBe('approximate');
    } finally {
      stopped = true;
      await source.close();
      await pump;
    }
  });
});
