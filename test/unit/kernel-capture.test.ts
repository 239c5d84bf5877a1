/**
 * The kernel capture source's pure parts: how kernel records map to stream seqs, the persisted
 * stream log, the attach decision and the accuracy labels. The real path (dm-ferry, the agent,
 * a receiver) is in test/vm/kernel-capture.test.ts.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AccuracyTracker } from '../../agent/capture/kernel/accuracy';
import { planAttach, type DeviceAtAttach, type StreamHistory } from '../../agent/capture/kernel/attach-plan';
import { BlockSet } from '../../agent/capture/kernel/block-set';
import { coveredReadBacks, PIECE_BYTES, piecesOf, planRecord, streamWidth } from '../../agent/capture/kernel/records';
import { StreamLog } from '../../agent/capture/kernel/stream-log';
import { RecordFlag, type KernelRecord, type RecordKind } from '../../native/addon/ferry-abi';

function rec(kind: RecordKind, length: number, opts: { flags?: number; data?: number; seq?: number; offset?: number; devIndex?: number } = {}): KernelRecord {
  return {
    seq: opts.seq ?? 1,
    devIndex: opts.devIndex ?? 0,
    kind,
    offset: opts.offset ?? 0,
    length,
    timeNs: 0n,
    accuracy: 'exact',
    mode: 'data',
    flags: opts.flags ?? 0,
    data: Buffer.alloc(opts.data ?? 0),
    bufferOffset: 0,
  };
}

describe('kernel records in the stream', () => {
  it('gives every kind a width that depends only on kind, flags and length', () => {
    expect(streamWidth(rec('write', 4096, { data: 4096 }))).toBe(1);
    expect(streamWidth(rec('write', 4096, { data: 4096, flags: RecordFlag.FUA }))).toBe(2);
    // A payload shorter than the write is read back instead: same width.
    expect(planRecord(rec('write', 4096, { data: 512 })).kind).toBe('read');
    expect(streamWidth(rec('write', 4096, { data: 512 }))).toBe(1);
    expect(streamWidth(rec('write', 0))).toBe(0);
    expect(planRecord(rec('write', 0, { flags: RecordFlag.FUA })).kind).toBe('flush');
    expect(streamWidth(rec('dirty', 4096))).toBe(1);
    expect(streamWidth(rec('dirty', PIECE_BYTES * 2 + 512))).toBe(3);
    expect(streamWidth(rec('discard', 1 << 30))).toBe(1);
    expect(streamWidth(rec('flush', 0))).toBe(1);
    expect(streamWidth(rec('resync-mark', 65536))).toBe(1);
    expect(streamWidth(rec('resync-mark', 0, { flags: RecordFlag.BITMAP_CUT }))).toBe(0);
    for (const k of ['tag', 'mode', 'start'] as const) expect(streamWidth(rec(k, 0))).toBe(0);
    // A redelivered record takes the same seqs.
    expect(streamWidth(rec('write', 8192, { data: 8192, flags: RecordFlag.REDELIVERED | RecordFlag.FUA }))).toBe(2);
  });

  it('cuts large ranges into pieces under the wire cap', () => {
    expect(piecesOf(512, PIECE_BYTES + 1024)).toEqual([
      { offset: 512, length: PIECE_BYTES },
      { offset: 512 + PIECE_BYTES, length: 1024 },
    ]);
    expect(piecesOf(0, 0)).toEqual([]);
  });

  it('reads a range back once per kernel batch while nothing else changed it in between', () => {
    const MiB = 1024 * 1024;
    const dirty = (offset: number, length = MiB, opts: { flags?: number; devIndex?: number } = {}): KernelRecord => rec('dirty', length, { offset, ...opts });
    // A sequential writer wrapping a 2 MiB volume: the second pass is covered by the first.
    expect([...coveredReadBacks([dirty(0), dirty(MiB), dirty(0), dirty(MiB), dirty(0)])]).toEqual([2, 3, 4]);
    // Covered by several earlier read-backs together; not by one that covers only part of it.
    expect([...coveredReadBacks([dirty(0), dirty(MiB), dirty(0, 2 * MiB), dirty(MiB, 2 * MiB)])]).toEqual([2]);
    // Anything else that changed the range in between (a write with data, a discard, a resync
    // mark) makes the next read-back needed again.
    expect([...coveredReadBacks([dirty(0), rec('write', 4096, { offset: 4096, data: 4096 }), dirty(0), dirty(0)])]).toEqual([3]);
    expect([...coveredReadBacks([dirty(0), rec('discard', 4096, { offset: MiB - 4096 }), dirty(0)])]).toEqual([]);
    expect([...coveredReadBacks([dirty(0), rec('resync-mark', MiB, { offset: 0 }), dirty(0)])]).toEqual([]);
    // Records without a range, or of another device, change nothing.
    expect([...coveredReadBacks([dirty(0), rec('flush', 0), rec('tag', 0), dirty(0, MiB, { devIndex: 1 }), dirty(0)])]).toEqual([4]);
    // A new load of the table, or a redelivered read-back (its data may be at the receiver from
    // before this batch was taken), covers nothing.
    expect([...coveredReadBacks([dirty(0), rec('start', 0), dirty(0)])]).toEqual([]);
    expect([...coveredReadBacks([dirty(0, MiB, { flags: RecordFlag.REDELIVERED }), dirty(0), dirty(0)])]).toEqual([2]);
  });
});

describe('stream log', () => {
  let dir = '';
  afterEach(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    dir = '';
  });

  it('finds the stream seq of a redelivered batch after a restart, survives a torn tail, and compacts', () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-streamlog-'));
    const log = StreamLog.open(dir, 64 << 20, 65536);
    expect(log.loaded).toBe(false);
    log.appendAnchors([{ generation: 3, kseqFirst: 10, kseqEnd: 20, streamFirst: 100, streamEnd: 112 }]);
    log.appendAnchors([{ generation: 3, kseqFirst: 20, kseqEnd: 25, streamFirst: 112, streamEnd: 112 }]);
    log.saveResync({ kind: 'full', cursor: 4 << 20 }, 90);
    log.close();
    // A torn append at the end is ignored.
    fs.appendFileSync(path.join(dir, 'kernel-stream'), Buffer.alloc(30, 0xab));
    const again = StreamLog.open(dir, 64 << 20, 65536);
    expect(again.loaded).toBe(true);
    expect(again.lookup(3, 10)).toBe(100);
    expect(again.lookup(3, 20)).toBe(112);
    expect(again.lookup(3, 25)).toBe(112);
    expect(again.lookup(3, 15)).toBeUndefined();
    expect(again.lookup(4, 10)).toBeUndefined();
    expect(again.streamEnd).toBe(112);
    expect(again.resync).toEqual({ kind: 'full', cursor: 4 << 20 });
    expect(again.committedStream).toBe(90);
    for (let i = 0; i < 5000; i++) again.appendAnchors([{ generation: 3, kseqFirst: 25 + i, kseqEnd: 26 + i, streamFirst: 112 + i, streamEnd: 113 + i }]);
    again.close();
    expect(fs.statSync(path.join(dir, 'kernel-stream')).size).toBeLessThan(5000 * 64);
    const compacted = StreamLog.open(dir, 64 << 20, 65536);
    expect(compacted.lookup(3, 5024)).toBe(5111);
    expect(compacted.streamEnd).toBe(5112);
    compacted.close();
    // Another geometry: the state does not describe this volume.
    expect(StreamLog.open(dir, 32 << 20, 65536).loaded).toBe(false);
  });
});

describe('attach decision', () => {
  const device = (over: Partial<DeviceAtAttach> = {}): DeviceAtAttach => ({ generation: 2, startState: 'clean', firstSeq: 500, committedSeq: 0, dirtyBits: 0, ...over });
  const history = (over: Partial<StreamHistory> = {}, anchors: Record<string, number> = {}): StreamHistory => ({
    loaded: true,
    generation: 1,
    streamEnd: 51,
    committedStream: 40,
    resync: { kind: 'none', cursor: 0 },
    lookup: (g, k) => anchors[`${g}:${k}`],
    ...over,
  });

  it('fully resyncs a new replica', () => {
    const p = planAttach(device({ startState: 'new' }), history({ loaded: false }), 0);
    expect(p.need.kind).toBe('full');
    expect(p.nextStream).toBe(1);
  });

  it('compares hashes after a crash, without state, or when the receiver disagrees', () => {
    expect(planAttach(device({ startState: 'dirty' }), history(), 50).need.kind).toBe('hash-compare');
    expect(planAttach(device(), history({ loaded: false }), 50).need.kind).toBe('hash-compare');
    expect(planAttach(device({ startState: 'new' }), history(), 50).need.kind).toBe('hash-compare');
    // The receiver holds more than was ever handed out, or less than it acknowledged.
    expect(planAttach(device(), history(), 60).need.kind).toBe('hash-compare');
    expect(planAttach(device(), history(), 30).need.kind).toBe('hash-compare');
    const p = planAttach(device({ startState: 'dirty' }), history(), 45);
    expect(p.nextStream).toBe(46);
  });

  it('drains only the saved bitmap after a clean teardown, and nothing when it is empty', () => {
    const delta = planAttach(device({ dirtyBits: 7 }), history(), 50);
    expect(delta.need.kind).toBe('delta');
    expect(delta.nextStream).toBe(51);
    expect(planAttach(device(), history(), 50).need.kind).toBe('none');
    // An interrupted whole-device resync resumes at its cursor.
    const resumed = planAttach(device({ dirtyBits: 7 }), history({ resync: { kind: 'full', cursor: 8 << 20 } }), 50);
    expect(resumed.need.kind).toBe('full');
    expect(resumed.resumeCursor).toBe(8 << 20);
    expect(resumed.drain).toBe(true);
  });

  it('continues the same load where it stopped: redelivered records keep their stream seqs', () => {
    const h = history({ generation: 2 }, { '2:601': 45 });
    const p = planAttach(device({ committedSeq: 600 }), h, 47);
    expect(p.need.kind).toBe('none');
    expect(p.firstKseq).toBe(601);
    expect(p.nextStream).toBe(45);
    // The receiver lost what was committed before the redelivered records.
    expect(planAttach(device({ committedSeq: 600 }), h, 43).need.kind).toBe('hash-compare');
    // No anchor for the first record to come: the state does not match the device.
    expect(planAttach(device({ committedSeq: 700 }), h, 47).need.kind).toBe('hash-compare');
  });
});

describe('accuracy of a cut', () => {
  it('is none during a resync or an undrained bitmap episode, approximate below read-backs, exact after', () => {
    const t = new AccuracyTracker();
    expect(t.at(1)).toBe('exact');
    t.resyncStarted();
    expect(t.at(5)).toBe('none');
    t.resyncRead(20);
    expect(t.at(19)).toBe('approximate');
    expect(t.at(20)).toBe('exact');
    t.bitmapEntered();
    const covers = t.episodes;
    expect(t.at(30)).toBe('none');
    t.bitmapEntered(); // overflowed again before the drain started: that drain does not cover it
    t.drainRead(covers, 40);
    expect(t.at(45)).toBe('none');
    t.drainRead(t.episodes, 50);
    expect(t.at(49)).toBe('approximate');
    expect(t.at(50)).toBe('exact');
    t.readBack(60);
    expect(t.at(55)).toBe('approximate');
  });

  it('tracks the blocks records touched', () => {
    const s = new BlockSet(65536, 1 << 20);
    s.addRange(65536 + 512, 512);
    s.addRange(1 << 20, 4096); // past the end: ignored
    expect([0, 1, 2].map((b) => s.has(b))).toEqual([false, true, false]);
    s.addRange(0, 3 * 65536);
    expect([0, 1, 2, 3].map((b) => s.has(b))).toEqual([true, true, true, false]);
  });
});
