/**
 * The kernel capture's decisions, without root or a kernel: the pure ones directly, the per-volume
 * state's transitions, and the whole source over a fake control device (test/helpers/fake-control.ts):
 * conversion and coverage, resync and drain requests, marks, degradation and recovery, restarts
 * with uncommitted batches. The real path is test/vm/kernel-capture.test.ts.
 */
import * as path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { log } from '../../common/log';
import { KernelSource } from '../../agent/capture/kernel-source';
import {
  bitmapReadRetryable,
  chooseWalk,
  clearKeepsBits,
  idleBitsNeedDrain,
  markIsNoop,
  markLimit,
  markRetryable,
  modeChange,
  reloadPlan,
  walkBaseline,
} from '../../agent/capture/kernel/decisions';
import { StreamLog } from '../../agent/capture/kernel/stream-log';
import { KernelVolume, type PendingMark, type Walk, type WalkWindow } from '../../agent/capture/kernel/volume';
import { VolumeEvents } from '../../agent/capture/kernel/volume-events';
import type { CapturedRecord, ProtectedVolume, RemoteHashes, RepairResult } from '../../agent/capture/types';
import { blockHash, blockHashes } from '../../common/block-hash';
import type { KernelRecord, RecordKind } from '../../native/addon';
import { FakeKernel, type FakeDevice } from '../helpers/fake-control';
import { tempDirs } from '../helpers/temp-dirs';

const BS = 65536;
const tmp = tempDirs();

describe('pure decisions', () => {
  it('picks the walk to run: a started resync first, repairs only without a pending resync, a drain once earlier walks cleared', () => {
    const none = { resync: undefined, repairsQueued: 0, drainRequested: false, clearingWalks: 0 };
    expect(chooseWalk(none)).toEqual({ run: 'none', reason: 'nothing was asked for' });
    expect(chooseWalk({ ...none, resync: { ready: true }, repairsQueued: 1, drainRequested: true }).run).toBe('resync');
    expect(chooseWalk({ ...none, repairsQueued: 1, drainRequested: true }).run).toBe('repair');
    // A resync the agent did not start yet holds repairs back (it covers every block), not drains.
    expect(chooseWalk({ ...none, resync: { ready: false }, repairsQueued: 1 })).toMatchObject({ run: 'none', reason: expect.stringMatching(/repairs wait/) });
    expect(chooseWalk({ ...none, resync: { ready: false }, repairsQueued: 1, drainRequested: true }).run).toBe('drain');
    expect(chooseWalk({ ...none, resync: { ready: false } })).toMatchObject({ run: 'none', reason: expect.stringMatching(/agent to start it/) });
    expect(chooseWalk({ ...none, drainRequested: true, clearingWalks: 1 })).toMatchObject({ run: 'none', reason: expect.stringMatching(/read them again/) });
  });

  it('compares a walk\'s blocks with zeroes for a new replica, with the receiver\'s hashes when known, else sends them', () => {
    const whole = { purpose: 'resync' as const, wholeDevice: true, hasRemote: true };
    expect(walkBaseline(whole, 0, 1).baseline).toBe('zero');
    expect(walkBaseline(whole, 0, 5).baseline).toBe('remote');
    expect(walkBaseline({ ...whole, hasRemote: false }, 10, 11).baseline).toBe('none');
    expect(walkBaseline({ purpose: 'repair', wholeDevice: false, hasRemote: true }, 0, 1).baseline).toBe('remote');
    expect(walkBaseline({ purpose: 'drain', wholeDevice: false, hasRemote: true }, 0, 1).baseline).toBe('none');
  });

  it('reads MODE records: BITMAP opens an episode, DRAINING asks for a drain, METADATA and the way back are told', () => {
    expect(modeChange('data', 'bitmap')).toMatchObject({ bitmapEpisode: true, drain: false, note: { level: 'warn' } });
    expect(modeChange('bitmap', 'draining')).toEqual({ bitmapEpisode: false, drain: true });
    expect(modeChange('data', 'metadata').note?.message).toMatch(/read back/);
    expect(modeChange('draining', 'data').note).toEqual({ level: 'info', message: 'capture is back to full data' });
    expect(modeChange('data', 'data').note).toBeUndefined();
  });

  it('drains after a clean reload (resuming an interrupted resync) and compares after any other', () => {
    expect(reloadPlan('clean', 3, 'full')).toMatchObject({ kind: 'drain', resumeResync: 'full' });
    expect(reloadPlan('clean', 3, undefined)).toMatchObject({ kind: 'drain', resumeResync: undefined });
    expect(reloadPlan('dirty', 3, 'full')).toEqual({ kind: 'compare', reason: 'the device\'s metadata was dirty at load 3' });
    expect(reloadPlan('new', 4, undefined).kind).toBe('compare');
  });

  it('drains idle dirty bits only outside BITMAP mode and once no walk still clears its own', () => {
    expect(idleBitsNeedDrain({ dirtyBits: 0, modeName: 'data' }, 0).drain).toBe(false);
    expect(idleBitsNeedDrain({ dirtyBits: 3, modeName: 'bitmap' }, 0).drain).toBe(false);
    expect(idleBitsNeedDrain({ dirtyBits: 3, modeName: 'data' }, 1).drain).toBe(false);
    expect(idleBitsNeedDrain({ dirtyBits: 3, modeName: 'draining' }, 0).drain).toBe(true);
  });

  it('bounds marks by the ring and memory, sends a block unless its hash matches and nothing wrote it since, and retries what goes away', () => {
    expect(markLimit(4096, BS, 256, 32 << 20)).toBe(256);
    expect(markLimit(64, BS, 256, 32 << 20)).toBe(8);
    expect(markLimit(8, BS, 256, 32 << 20)).toBe(4);
    expect(markLimit(1 << 20, 1 << 20, 256, 32 << 20)).toBe(32);
    const data = Buffer.alloc(BS, 3);
    const h = blockHash(data);
    expect(markIsNoop(h, false, () => blockHash(data))).toBe(true);
    expect(markIsNoop(h, true, () => blockHash(data))).toBe(false);
    expect(markIsNoop(undefined, false, () => blockHash(data))).toBe(false);
    expect(markIsNoop(Buffer.alloc(0), false, () => blockHash(data))).toBe(false);
    expect(markIsNoop(blockHash(Buffer.alloc(BS)), false, () => blockHash(data))).toBe(false);
    expect(['ENOSPC', 'EAGAIN', 'ENODEV'].every(markRetryable)).toBe(true);
    expect(markRetryable('ERANGE')).toBe(false);
    expect(['EBUSY', 'ESTALE', 'EAGAIN', 'ENODEV'].every(bitmapReadRetryable)).toBe(true);
    expect(bitmapReadRetryable('EINVAL')).toBe(false);
    expect(['ESTALE', 'EBUSY', 'EAGAIN', 'ENODEV'].every(clearKeepsBits)).toBe(true);
    expect(clearKeepsBits('EIO')).toBe(false);
  });
});

describe('volume events', () => {
  it('wakes a waiter at the event it waits for; one that happened after its stamp counts; a timeout only when asked', async () => {
    const ev = new VolumeEvents();
    const stamp = ev.stamp;
    ev.emit('committed');
    expect(await ev.next(['committed'], { since: stamp })).toBe('committed');
    expect(await ev.next(['request'], { since: stamp, timeoutMs: 5 })).toBe('timeout');
    const waiting = ev.next(['request', 'stopped']);
    ev.emit('committed');
    ev.emit('stopped');
    expect(await waiting).toBe('stopped');
  });
});

// ---- one volume's state, without a device ----------------------------------------------------

function rec(kind: RecordKind, seq: number, over: Partial<KernelRecord> = {}): KernelRecord {
  return { seq, devIndex: 0, kind, offset: 0, length: 0, timeNs: 0n, accuracy: 'exact', mode: 'data', flags: 0, data: Buffer.alloc(0), bufferOffset: 0, ...over };
}

function volume(name: string, init: Partial<{ nextStream: number; firstKseq: number; receiverDurable: number }> = {}): KernelVolume {
  const dir = tmp(name);
  const spec: ProtectedVolume = { id: 'vol1', path: path.join(dir, 'img'), sizeBytes: 8 * BS, blockSize: 512, isBlockDevice: false };
  return new KernelVolume(spec, { major: 7, minor: 0 }, StreamLog.open(path.join(dir, 'state'), spec.sizeBytes, BS), init.receiverDurable ?? 10, {
    devIndex: 0,
    generation: 1,
    loadFirstSeq: 1,
    mode: 'data',
    nextStream: init.nextStream ?? 11,
    firstKseq: init.firstKseq ?? 100,
  });
}

describe('a volume\'s state', () => {
  it('numbers records in kernel order; a START of its own load is no reload; a gap asks for a hash-compare resync', () => {
    const v = volume('vol-number');
    expect(v.numberRecord(rec('write', 100), 1)).toBe(11);
    expect(v.numberRecord(rec('tag', 101), 0)).toBe(12);
    expect(v.numberRecord(rec('write', 102), 2)).toBe(12);
    expect(v.nextStream).toBe(14);
    // The START of the attached load, handed out again: the stream goes on.
    v.numberRecord(rec('start', 1, { offset: 1 }), 0);
    expect(v.requestPending).toBe(false);
    v.numberRecord(rec('write', 2), 1);
    expect(v.accuracyAt(3)).toBe('exact');
    v.numberRecord(rec('write', 7), 1);
    expect(v.requestPending).toBe(true);
    expect(v.lastResync).toMatchObject({ kind: 'hash-compare', doneBytes: 0, totalBytes: 8 * BS });
    expect(v.log.resync).toEqual({ kind: 'hash-compare', cursor: 0 });
    expect(v.accuracyAt(8)).toBe('none');
    expect(v.takeWalk()).toMatchObject({ purpose: 'resync', kind: 'hash-compare', cursor: 0 });
    v.log.close();
  });

  it('after a clean reload drains, and resumes the resync that was interrupted; after a dirty one compares', async () => {
    const v = volume('vol-reload');
    v.needResync('full', 3 * BS);
    v.numberRecord(rec('start', 50, { offset: 2, length: 2 /* clean */ }), 0);
    expect(v.generation).toBe(2);
    const resync = v.takeWalk();
    expect(resync).toMatchObject({ purpose: 'resync', kind: 'full', cursor: 3 * BS });
    // The drain waits for no clearing walk: it runs next.
    expect(v.takeWalk()).toEqual({ purpose: 'drain' });
    const tag = v.waitTag(60, 1000);
    v.numberRecord(rec('start', 70, { offset: 3, length: 3 /* dirty */ }), 0);
    await expect(tag).rejects.toThrow(/reloaded before the tag/);
    expect(v.takeWalk()).toMatchObject({ purpose: 'resync', kind: 'hash-compare', cursor: 0 });
    v.log.close();
  });

  it('follows MODE records: BITMAP makes points unusable until a drain covering it read its regions; DRAINING asks for the drain', () => {
    const v = volume('vol-mode');
    v.noteModeRecord('metadata');
    expect(v.mode).toBe('metadata');
    v.noteReadBack(120);
    expect(v.accuracyAt(119)).toBe('approximate');
    v.noteModeRecord('bitmap');
    expect(v.accuracyAt(130)).toBe('none');
    expect(v.requestPending).toBe(false);
    v.noteModeRecord('draining');
    expect(v.takeWalk()).toEqual({ purpose: 'drain' });
    const w = walk('drain');
    v.beginWalk(w);
    expect(w.covers).toBe(1);
    w.placedAll = true;
    v.walkReadDone(w, 140);
    expect(v.accuracyAt(139)).toBe('approximate');
    expect(v.accuracyAt(140)).toBe('exact');
    v.log.close();
  });

  it('says capture is back to full data on the MODE record even when STATS saw DATA first', () => {
    const v = volume('vol-mode-stats');
    const info = vi.spyOn(log, 'info');
    v.noteModeRecord('bitmap');
    v.noteModeRecord('draining');
    v.refreshMode('data');
    v.noteModeRecord('data');
    expect(info.mock.calls.map((c) => c[0])).toContain('capture is back to full data');
    info.mockRestore();
    v.log.close();
  });

  it('hands a mark to the converter only once it is registered, and frees its slot at the commit', async () => {
    const v = volume('vol-marks');
    const w = walk('resync');
    const win: WalkWindow = { epoch: 1, start: 0, end: BS, lastKseq: 0, marksPlaced: 0, marksConverted: 0, complete: false };
    let finishIoctl = (_kseq: number): void => undefined;
    const placed = v.placeMark(
      () => new Promise<number>((resolve) => (finishIoctl = resolve)),
      (): PendingMark => ({ walk: w, window: win, block: 0, data: Promise.resolve(Buffer.alloc(BS)) }),
    );
    // The converter meets the mark's record before the ioctl returned: it waits for the registration.
    const taken = v.takeMark(200);
    finishIoctl(200);
    expect(await placed).toBe(true);
    expect((await taken)?.window).toBe(win);
    expect(v.marksOutstanding).toBe(1);
    expect(await v.takeMark(200)).toBeUndefined();
    const committed = v.events.next(['committed']);
    v.noteCommitted(30, 1);
    expect(await committed).toBe('committed');
    expect(v.marksOutstanding).toBe(0);
    expect(v.committedStream).toBe(30);
    // A mark the ioctl did not place (ring full) is not registered.
    expect(await v.placeMark(async () => undefined, () => expect.fail('not placed'))).toBe(false);
    v.log.close();
  });
});

function walk(purpose: Walk['purpose']): Walk {
  return {
    purpose,
    kind: purpose === 'drain' ? 'delta' : 'full',
    ranges: [],
    wholeDevice: purpose === 'resync',
    baseline: 'none',
    covers: 0,
    progress: { kind: 'full', doneBytes: 0, totalBytes: 0, sentBytes: 0, startedMs: 0 },
    windows: [],
    marksPlaced: 0,
    marksConverted: 0,
    placedAll: false,
    readDone: false,
    lastStream: 0,
    cancelled: false,
  };
}

// ---- the whole source over a fake control device ---------------------------------------------

/** The receiver: applies each volume's records in seq order, idempotently; its hashes for compares. */
class Replica {
  readonly data: Buffer;
  durable = 0;
  readonly records: CapturedRecord[] = [];

  constructor(size: number) {
    this.data = Buffer.alloc(size);
  }

  apply(records: CapturedRecord[]): void {
    for (const r of records) {
      if (r.seq <= this.durable) continue; // redelivered: the receiver has it
      expect(r.seq, 'stream seqs follow each other').toBe(this.durable + 1);
      if (r.kind === 'write' && r.data) r.data.copy(this.data, r.offset);
      if (r.kind === 'discard') this.data.fill(0, r.offset, r.offset + r.length);
      this.durable = r.seq;
      this.records.push(r);
    }
  }

  readonly remote: RemoteHashes = async (_id, offset, blockSize, count) => blockHashes(this.data.subarray(offset, offset + count * blockSize), blockSize);
}

interface Lab {
  kernel: FakeKernel;
  device: FakeDevice;
  spec: ProtectedVolume;
  replica: Replica;
  stateDir: string;
  source: KernelSource;
}

const sources: KernelSource[] = [];
afterEach(async () => {
  for (const s of sources.splice(0)) await s.close();
});

function newSource(lab: Pick<Lab, 'kernel' | 'stateDir'>): KernelSource {
  const source = new KernelSource({
    control: lab.kernel.open(),
    readVolume: lab.kernel.readVolume,
    deviceOf: (p) => {
      const d = lab.kernel.devices.find((x) => x.path === p);
      return d && { major: d.major, minor: d.minor };
    },
    stateDirOf: (id) => path.join(lab.stateDir, id),
    resyncBlockSize: BS,
    volumeIds: ['vol1'],
  });
  sources.push(source);
  return source;
}

/** Hands batches to the replica (committing them unless `hold`) until `done`. */
async function pump(lab: Lab, what: string, done: () => boolean, opts: { hold?: number[]; source?: KernelSource } = {}): Promise<void> {
  const source = opts.source ?? lab.source;
  const deadline = Date.now() + 10_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    const batch = await source.next(1 << 20, 20);
    if (!batch) continue;
    lab.replica.apply(batch.records);
    if (opts.hold) opts.hold.push(batch.id);
    else await source.commit(batch.id);
  }
}

/** A protected volume whose first full resync is done. */
async function protectedLab(name: string, sizeBytes = 8 * BS): Promise<Lab> {
  const kernel = new FakeKernel();
  const device = kernel.addDevice({ sizeBytes, granularity: BS });
  for (let i = 0; i < sizeBytes; i += 4096) if ((i / 4096) % 5 === 1) device.data.fill(((i / 4096) % 251) + 1, i, i + 4096);
  const spec: ProtectedVolume = { id: 'vol1', path: device.path, sizeBytes, blockSize: 512, isBlockDevice: true };
  const lab: Lab = { kernel, device, spec, replica: new Replica(sizeBytes), stateDir: tmp(name), source: undefined as unknown as KernelSource };
  lab.source = newSource(lab);
  expect(await lab.source.attach(spec, 0)).toEqual({ kind: 'full', reason: 'the replica is new' });
  lab.source.startResync('vol1', 'full', lab.replica.remote);
  await pump(lab, 'the first resync', () => lab.source.resyncProgress('vol1')?.finishedMs !== undefined);
  expect(lab.replica.data.equals(device.data)).toBe(true);
  return lab;
}

async function tagAccuracy(lab: Lab): Promise<string> {
  const cut = lab.source.tag(['vol1'], { holdMs: 0, quiesced: false });
  let done = false;
  void cut.finally(() => (done = true)).catch(() => undefined);
  await pump(lab, 'the tag', () => done);
  return (await cut)[0].accuracy;
}

const block = (fill: number, length = BS): Buffer => Buffer.alloc(length, fill);

describe('kernel source over a fake control device', () => {
  it('resyncs a new replica against zeroes (only non-zero blocks are sent), then cuts exact points', async () => {
    const lab = await protectedLab('src-new');
    const writes = lab.replica.records.filter((r) => r.kind === 'write');
    const nonZero = new Set<number>();
    for (let b = 0; b < 8; b++) if (!lab.device.data.subarray(b * BS, (b + 1) * BS).equals(Buffer.alloc(BS))) nonZero.add(b);
    expect(new Set(writes.map((r) => r.offset / BS))).toEqual(nonZero);
    // Points inside the resync are unusable; right after its last block, approximate (writes may be in the data read).
    expect(lab.replica.records.slice(0, -1).every((r) => r.accuracy === 'none')).toBe(true);
    expect(lab.replica.records[lab.replica.records.length - 1].accuracy).toBe('approximate');
    expect(lab.source.mode('vol1')).toBe('exact');
    lab.device.write(2 * BS + 512, block(9, 4096), { fua: true });
    expect(await tagAccuracy(lab)).toBe('exact');
    const last = lab.replica.records.slice(-2);
    expect(last.map((r) => r.kind)).toEqual(['write', 'flush']);
    expect(lab.replica.data.equals(lab.device.data)).toBe(true);
  });

  it('degrades DATA -> METADATA -> BITMAP -> DRAINING and climbs back, the replica equal to the source', async () => {
    const lab = await protectedLab('src-degrade');
    const { device, source, replica } = lab;
    // METADATA: writes are read back; points are approximate.
    device.setMode('metadata');
    device.write(0, block(1));
    await pump(lab, 'the read-back', () => replica.data.equals(device.data));
    expect(source.mode('vol1')).toBe('approximate');
    expect(replica.records[replica.records.length - 1]).toMatchObject({ kind: 'write', offset: 0, accuracy: 'approximate' });
    // BITMAP: writes only set bits; no consistent cut.
    device.setMode('bitmap');
    device.write(3 * BS, block(2));
    device.write(6 * BS, block(3, 4096));
    await pump(lab, 'the MODE record', () => source.mode('vol1') === 'bitmap-draining' && lab.kernel.pendingRecords === 0);
    await expect(source.tag(['vol1'], { holdMs: 0, quiesced: false })).rejects.toThrow(/bitmap mode/);
    expect(replica.data.equals(device.data)).toBe(false);
    // DRAINING: the agent reads the dirty regions back; a point cut before that read is unusable.
    device.setMode('draining');
    expect(await tagAccuracy(lab)).toBe('none');
    await pump(lab, 'the drain', () => replica.data.equals(device.data) && device.mode === 'data' && source.mode('vol1') === 'exact');
    expect(device.dirtyBits).toBe(0);
    expect(lab.kernel.calls).toContain('readBitmap');
    device.write(BS, block(4, 512));
    expect(await tagAccuracy(lab)).toBe('exact');
    expect(replica.data.equals(device.data)).toBe(true);
  });

  it('reads a range written again and again in METADATA mode once per kernel batch; the rest keep their seqs as NOOPs', async () => {
    const lab = await protectedLab('src-covered');
    const before = lab.replica.records.length;
    lab.device.setMode('metadata');
    for (let i = 0; i < 3; i++) lab.device.write(BS, block(10 + i));
    await pump(lab, 'the writes', () => lab.kernel.pendingRecords === 0 && lab.replica.data.equals(lab.device.data));
    expect(lab.replica.records.slice(before).map((r) => r.kind)).toEqual(['write', 'noop', 'noop']);
  });

  it('gives records a kernel batch hands out again after a restart the stream seqs they had', async () => {
    const lab = await protectedLab('src-restart');
    lab.kernel.maxRecordsPerBatch = 2;
    for (let i = 0; i < 6; i++) lab.device.write(i * BS, block(20 + i, 4096));
    // The first batch is committed; the rest reach the receiver but the agent stops before committing them.
    const held: number[] = [];
    const first = await lab.source.next(1 << 20, 100);
    if (!first) throw new Error('no batch');
    lab.replica.apply(first.records);
    await lab.source.commit(first.id);
    const seen = new Map<number, Buffer | undefined>();
    await pump(lab, 'the other batches', () => lab.kernel.pendingRecords === 0, { hold: held });
    for (const r of lab.replica.records.slice(-4)) seen.set(r.seq, r.data);
    expect(held).toHaveLength(2);
    await lab.source.close();
    expect(lab.kernel.pendingRecords).toBe(4); // redelivered
    // The next agent continues the same stream: no resync, the same seqs for the same writes.
    const again = newSource(lab);
    expect(await again.attach(lab.spec, lab.replica.durable)).toEqual({ kind: 'none', reason: 'the stream continues where it stopped' });
    const redelivered: CapturedRecord[] = [];
    while (redelivered.length < 4) {
      const b = await again.next(1 << 20, 100);
      if (!b) continue;
      redelivered.push(...b.records);
      lab.replica.apply(b.records);
      await again.commit(b.id);
    }
    expect(redelivered.map((r) => r.seq)).toEqual([...seen.keys()]);
    for (const r of redelivered) expect(r.data?.equals(seen.get(r.seq) as Buffer)).toBe(true);
    lab.device.write(7 * BS, block(30, 4096));
    await pump(lab, 'a new write', () => lab.replica.data.equals(lab.device.data), { source: again });
  });

  it('asks for a hash-compare resync when kernel seqs jump, and converges', async () => {
    const lab = await protectedLab('src-gap');
    lab.device.skipSeqs(3); // records were lost
    lab.device.write(4 * BS, block(5));
    await pump(lab, 'the compare', () => lab.source.resyncProgress('vol1')?.kind === 'hash-compare' && lab.source.resyncProgress('vol1')?.finishedMs !== undefined);
    expect(lab.replica.data.equals(lab.device.data)).toBe(true);
  });

  it('drains what a clean reload left as dirty bits, and compares after a dirty one', async () => {
    const lab = await protectedLab('src-reload');
    lab.device.write(5 * BS, block(6, 4096));
    lab.device.reload('clean'); // the write was not handed out: it is a dirty bit now
    await pump(lab, 'the drain after the reload', () => lab.replica.data.equals(lab.device.data) && lab.device.dirtyBits === 0);
    lab.device.write(1 * BS, block(7, 4096));
    lab.device.reload('dirty');
    await pump(lab, 'the compare after a crash', () => lab.replica.data.equals(lab.device.data) && lab.source.resyncProgress('vol1')?.finishedMs !== undefined && lab.source.resyncProgress('vol1')?.kind === 'hash-compare');
  });

  it('drains dirty bits the kernel kept without a record once the volume is idle', async () => {
    const lab = await protectedLab('src-idle-bits');
    // A change the device knows only as a bit (e.g. a clear it refused): no record says so.
    lab.device.data.fill(0x33, 2 * BS, 2 * BS + 4096);
    lab.device.setBits(2 * BS, 4096);
    await pump(lab, 'the idle drain', () => lab.replica.data.equals(lab.device.data) && lab.device.dirtyBits === 0);
  });

  it('repairs ranges the receiver lost, sending only the blocks that differ, once what was in flight is durable', async () => {
    const lab = await protectedLab('src-repair');
    lab.replica.data.fill(0xee, 3 * BS + 10, 3 * BS + 20);
    const before = lab.replica.records.length;
    let result: RepairResult | undefined;
    void lab.source.repair('vol1', [{ offset: 2 * BS + 1, length: 2 * BS }], lab.replica.remote, 'test').then((r) => (result = r));
    await pump(lab, 'the repair', () => result !== undefined);
    const sent = lab.replica.records.slice(before);
    expect(sent.map((r) => [r.kind, r.offset / BS])).toEqual([
      ['noop', 0],
      ['write', 3],
      ['noop', 0],
    ]);
    expect(result).toEqual({ throughSeq: sent[2].seq, sentBytes: BS });
    expect(lab.source.repairProgress('vol1')).toMatchObject({ reason: 'test', doneBytes: 3 * BS, finishedMs: expect.any(Number) });
    expect(lab.replica.data.equals(lab.device.data)).toBe(true);
  });

  it('grows its buffer for a record larger than it', async () => {
    const lab = await protectedLab('src-big', 64 * BS);
    lab.device.write(0, block(8, 2 << 20));
    await pump(lab, 'the large write', () => lab.replica.data.equals(lab.device.data));
  });

  it('waits for its tag and fails it when the device is reloaded before the tag is converted', async () => {
    const lab = await protectedLab('src-tag-reload');
    const cut = lab.source.tag(['vol1'], { holdMs: 0, quiesced: false });
    await new Promise((resolve) => setImmediate(resolve)); // the source waits for the TAG record
    lab.device.reload('clean');
    // The reload dropped the TAG record; its START reaches the agent.
    const failed = cut.then(
      () => undefined,
      (err: Error) => err,
    );
    let err: Error | undefined;
    void failed.then((e) => (err = e));
    await pump(lab, 'the tag to fail', () => err !== undefined);
    expect(err?.message).toMatch(/reloaded before the tag/);
  });
});

describe('kernel source: write holds for group rounds', () => {
  /** Commits the hold while the pipeline runs (the TAG record is converted by next()). */
  async function commitWhilePumping(lab: Lab, commit: () => Promise<unknown>): Promise<unknown> {
    let out: unknown;
    let done = false;
    void commit().then(
      (v) => ((out = v), (done = true)),
      (e: unknown) => ((out = e), (done = true)),
    );
    await pump(lab, 'the commit', () => done);
    return out;
  }

  it('commits at the held cut on the held devices, like a tag, and releases', async () => {
    const lab = await protectedLab('hold-commit');
    lab.device.write(BS, block(3, 4096));
    const hold = await lab.source.hold!(['vol1'], 500);
    expect(lab.kernel.holding?.devices).toEqual([lab.device.index]);
    // One hold at a time: a second one and a plain tag are refused while it is in place.
    await expect(lab.source.hold!(['vol1'], 500)).rejects.toThrow(/another write hold is in place/);
    await expect(lab.source.tag(['vol1'], { holdMs: 100, quiesced: false })).rejects.toThrow(/a group round holds the writes/);
    const cuts = (await commitWhilePumping(lab, () => hold.commit())) as Array<{ volumeId: string; seq: number; accuracy: string }>;
    expect(cuts).toHaveLength(1);
    expect(cuts[0].volumeId).toBe('vol1');
    expect(cuts[0].accuracy).toBe('exact');
    // The cut is the stream seq of the last record before the TAG: the write made before the hold.
    const write = lab.replica.records.filter((r) => r.kind === 'write').pop();
    expect(cuts[0].seq).toBe(write?.seq);
    expect(lab.kernel.holding).toBeUndefined();
    expect(lab.kernel.holdsEnded).toEqual({ ok: 1, expired: 0, aborted: 0 });
    await hold.release(); // idempotent after a commit
    await expect(hold.commit()).rejects.toThrow(/already committed/);
    expect(lab.kernel.calls.filter((c) => c.startsWith('releaseHold'))).toEqual([]);
  });

  it('rejects a commit after the bound released the hold, with no TAG anywhere', async () => {
    const lab = await protectedLab('hold-expired');
    const hold = await lab.source.hold!(['vol1'], 30);
    const nextSeq = lab.device.nextSeq;
    const deadline = Date.now() + 5000;
    while (lab.kernel.holding && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    expect(lab.kernel.holdsEnded.expired).toBe(1);
    await expect(hold.commit()).rejects.toThrow(/expired: its 30 ms bound passed before the commit/);
    expect(lab.kernel.calls.filter((c) => c.startsWith('tagHold'))).toEqual([]); // refused by the agent's own clock
    await hold.release();
    expect(lab.device.nextSeq).toBe(nextSeq); // no TAG record
  });

  it('turns the driver\'s ESTALE into the same clear refusal when its bound ran first', async () => {
    const lab = await protectedLab('hold-estale');
    const hold = await lab.source.hold!(['vol1'], 2000);
    // The driver ended the hold (its bound, by its own clock) while the agent still had time left.
    await lab.kernel.open().releaseHold(lab.kernel.holding!.id);
    await expect(hold.commit()).rejects.toThrow(/expired/);
    await hold.release();
  });

  it('releases: idempotent, and a later hold is possible; closing the source ends a hold in place', async () => {
    const lab = await protectedLab('hold-release');
    const hold = await lab.source.hold!(['vol1'], 1000);
    await hold.release();
    await hold.release();
    expect(lab.kernel.holding).toBeUndefined();
    expect(lab.kernel.calls.filter((c) => c.startsWith('releaseHold'))).toHaveLength(1);
    await expect(hold.commit()).rejects.toThrow(/was released/);
    const again = await lab.source.hold!(['vol1'], 1000);
    expect(lab.kernel.holding).toBeDefined();
    await lab.source.close();
    expect(lab.kernel.holding).toBeUndefined();
    expect(lab.kernel.holdsEnded.aborted).toBe(2);
    await again.release();
    await expect(again.commit()).rejects.toThrow(/capture source closed/);
  });

  it('says why the driver refused a hold', async () => {
    const lab = await protectedLab('hold-refused');
    await expect(lab.source.hold!(['vol1'], 6000)).rejects.toThrow(/1 to 5000 ms/);
    lab.device.suspended = true;
    await expect(lab.source.hold!(['vol1'], 100)).rejects.toThrow(/suspended/);
    await expect(lab.source.hold!(['nope'], 100)).rejects.toThrow(/not attached/);
  });
});

describe('kernel source: stopping', () => {
  it('stops its walkers without waiting for a poll', async () => {
    const lab = await protectedLab('src-stop');
    const started = Date.now();
    await lab.source.close();
    expect(Date.now() - started).toBeLessThan(500);
  });
});
