import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildChangeSet, ChangeRecord } from '../../agent/transport/change-set';
import { encodeFrame } from '../../proto/frames';
import { validateChangeSet } from '../../proto/validate';
import { applyBatch, rollBack } from '../../receiver/apply/apply-batch';
import { IntervalSet } from '../../receiver/apply/interval-set';
import { DataLayout } from '../../receiver/layout';
import { Checkpoint, readCheckpoint } from '../../receiver/storage/checkpoint';
import { UndoJournal, undoRecordsNewestFirst } from '../../receiver/storage/journal';
import { Replica } from '../../receiver/storage/replica';
import { encodeRecordParts, scanSegment } from '../../receiver/storage/record-file';
import { Spool } from '../../receiver/storage/spool';
import { classifyStorageError, VolumeHealth } from '../../receiver/volume-health';
import { VolumeStore } from '../../receiver/volume-store';
import { stopApplyThreads } from '../../receiver/apply/apply-thread';
import { tempDirs } from '../helpers/temp-dirs';
import { sha256, VolumeModel } from '../helpers/volume-model';
import { JOURNALS, useJournal } from '../helpers/journal';

const tmp = tempDirs();

const SIZE = 1024 * 1024;
const write = (offset: number, length: number, fill: number): ChangeRecord => ({ kind: 'write', offset, length, captureTimeUs: 1, data: Buffer.alloc(length, fill) });

describe('IntervalSet', () => {
  it('detects overlap with any stored range, including touching-free neighbours', () => {
    const set = new IntervalSet();
    set.add(100, 200);
    set.add(300, 400);
    expect(set.overlaps(200, 300)).toBe(false);
    expect(set.overlaps(199, 201)).toBe(true);
    expect(set.overlaps(0, 100)).toBe(false);
    expect(set.overlaps(350, 360)).toBe(true);
    expect(set.overlaps(50, 500)).toBe(true);
    set.clear();
    expect(set.overlaps(150, 160)).toBe(false);
  });
});

describe('Spool', () => {
  it('drops a torn tail on reopen and keeps every complete record', async () => {
    const dir = tmp('spool');
    const spool = Spool.open(dir, 1 << 20);
    await spool.append(Buffer.from('first'), 1, 3);
    await spool.append(Buffer.from('second'), 4, 4);
    spool.close();
    const seg = path.join(dir, fs.readdirSync(dir)[0]);
    const full = fs.readFileSync(seg);
    const firstRecordBytes = 16 + 16 + 'first'.length;
    fs.appendFileSync(seg, full.subarray(firstRecordBytes, full.length - 3)); // a half-written record
    const reopened = Spool.open(dir, 1 << 20);
    expect(reopened.durableSeq).toBe(4);
    expect(fs.statSync(seg).size).toBe(full.length);
    await reopened.append(Buffer.from('third'), 5, 6);
    const cursor = reopened.cursor(3);
    expect(cursor.next()?.frame.toString()).toBe('second');
    expect(cursor.next()?.frame.toString()).toBe('third');
    expect(cursor.next()).toBeUndefined();
    cursor.close();
    reopened.close();
  });

  it('rolls over segments and prunes only segments wholly at or below the checkpoint', async () => {
    const dir = tmp('spool-roll');
    const spool = Spool.open(dir, 64);
    for (let s = 1; s <= 5; s++) await spool.append(Buffer.alloc(80, s), s, s);
    expect(fs.readdirSync(dir).length).toBe(5);
    expect(spool.pruneThrough(3)).toBe(3);
    const cursor = spool.cursor(3);
    expect(cursor.next()?.lastSeq).toBe(4);
    cursor.close();
    spool.close();
  });

  it('opens applied segments by their headers and finds a damaged body later, in slices (scrub) or at once for seqs a reader needs', async () => {
    const dir = tmp('spool-scrub');
    const spool = Spool.open(dir, 64);
    for (let s = 1; s <= 6; s++) await spool.append(Buffer.alloc(80, s), s, s);
    spool.close();
    // One record a segment (each exceeds 64 bytes): damage the bodies of seqs 2 and 5.
    const files = fs.readdirSync(dir).sort().map((n) => path.join(dir, n));
    for (const f of [files[1], files[4]]) {
      const bytes = fs.readFileSync(f);
      bytes[bytes.length - 10] ^= 0xff;
      fs.writeFileSync(f, bytes);
    }
    // Applied through 4: segments 1..4 are read by their headers only; the fifth holds a seq
    // not applied yet and is checked whole.
    const opened = Spool.open(dir, 64, 4);
    expect(opened.damageFound.map((d) => d.seqFrom)).toEqual([5]);
    expect(opened.durableSeq).toBe(6);
    expect(opened.scrubPending).toBe(true);
    const found = [];
    while (opened.scrubPending) found.push(...opened.scrub(0)); // at least one record per call
    expect(found.map((d) => [d.seqFrom, d.file])).toEqual([[2, files[1]]]);
    expect(found[0].detail).toMatch(/fails its CRC/);
    opened.close();

    // A reader about to go through seqs after 1 (a redo index replaying a crash) has them checked now.
    const again = Spool.open(dir, 64, 4);
    again.checkBodiesAfter(1);
    expect(again.damageFound.map((d) => d.seqFrom).sort()).toEqual([2, 5]);
    const cursor = again.cursor(1);
    const next = cursor.next();
    expect(next?.firstSeq).toBe(3); // the damaged record is skipped and said lost
    expect(next?.lostBefore?.[0]).toMatchObject({ file: files[1], firstSeq: 2 });
    cursor.close();
    again.close();
  });
});

describe('Checkpoint', () => {
  it('survives a torn write of the slot being written', () => {
    const file = path.join(tmp('cp'), 'checkpoint');
    const cp = Checkpoint.open(file);
    cp.save(10);
    cp.save(20);
    cp.close();
    // Corrupt the slot holding 20: the previous value must read back.
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from('garbage!'), 0, 8, 0);
    fs.closeSync(fd);
    expect(readCheckpoint(file)).toBe(10);
  });
});

describe('apply with undo journal', () => {
  useJournal('undo');
  it('stores compressible old data lz4-compressed, incompressible as it is, and reads both back exactly', () => {
    const dir = tmp('lz4');
    const journal = UndoJournal.open(path.join(dir, 'j'));
    const text = Buffer.from('old text that compresses well; '.repeat(4096).slice(0, 65536));
    const noise = Buffer.alloc(65536);
    let x = 12345;
    for (let i = 0; i < noise.length; i++) noise[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
    journal.append([
      { seq: 1, offset: 0, length: text.length, zero: false, data: text },
      { seq: 2, offset: 65536, length: noise.length, zero: false, data: noise },
    ]);
    journal.close();
    const bytes = fs.readdirSync(path.join(dir, 'j')).reduce((n, f) => n + fs.statSync(path.join(dir, 'j', f)).size, 0);
    expect(bytes).toBeLessThan(noise.length + text.length / 4);
    const back = [...undoRecordsNewestFirst(path.join(dir, 'j'), 0)];
    expect(back.map((r) => r.seq)).toEqual([2, 1]);
    expect(back[0].data.equals(noise)).toBe(true);
    expect(back[1].data.equals(text)).toBe(true);
  });

  it('overlapping writes inside one change set journal the right old data', () => {
    const dir = tmp('apply');
    const replica = Replica.open(path.join(dir, 'r.img'), SIZE);
    const journal = UndoJournal.open(path.join(dir, 'j'));
    replica.write(0, Buffer.alloc(8192, 0x11));
    const records = [write(0, 4096, 0xaa), write(2048, 4096, 0xbb), { kind: 'discard', offset: 1024, length: 1024, captureTimeUs: 1 } as ChangeRecord];
    const cs = buildChangeSet('v', 1, records, 'exact');
    applyBatch(validateChangeSet(cs, SIZE), 0, replica, journal);
    const model = new VolumeModel(SIZE);
    model.add(0, write(0, 8192, 0x11));
    records.forEach((r, i) => model.add(i + 1, r));
    expect(sha256(replica.read(0, SIZE))).toBe(sha256(model.imageAt(3)));
    replica.close();
    journal.close();
  });

  it('one apply step over many change sets with overlaps across them journals true old data for every seq', async () => {
    const root = tmp('step');
    const layout = new DataLayout(root);
    const spec = { volumeId: 'v1', sizeBytes: SIZE, blockSize: 4096 };
    const model = new VolumeModel(SIZE);
    const store = VolumeStore.open(layout, spec, 0, 1 << 16);
    let seq = 0;
    for (let b = 0; b < 8; b++) {
      // Each change set rewrites ranges the previous ones wrote, so pieces of one step overlap.
      const records = [write((b % 3) * 4096, 16384, 0x10 + b), write(8192 + b * 512, 4096, 0x40 + b)];
      records.forEach((r, i) => model.add(seq + 1 + i, r));
      const cs = buildChangeSet('v1', seq + 1, records, 'exact');
      await store.ingest(encodeFrame({ changeSet: cs }), validateChangeSet(cs, SIZE));
      seq += records.length;
    }
    const step = store.applyNext();
    expect(step && [step.firstSeq, step.lastSeq]).toEqual([1, seq]);
    store.saveCheckpoint();
    for (const point of [0, 3, 8, 11, seq]) {
      const image = Replica.open(path.join(root, `image-${point}`), SIZE);
      image.write(0, fs.readFileSync(layout.replicaFile('v1')));
      rollBack(undoRecordsNewestFirst(layout.journalDir('v1'), point), image);
      expect(sha256(image.read(0, SIZE)), `image at seq ${point}`).toBe(sha256(model.imageAt(point)));
      image.close();
    }
    store.close();
  });

  it('steps on the apply thread while ingest goes on, and a recovery started mid-step discards that step', async () => {
    const root = tmp('async');
    const layout = new DataLayout(root);
    const spec = { volumeId: 'v1', sizeBytes: SIZE, blockSize: 4096 };
    const model = new VolumeModel(SIZE);
    const store = VolumeStore.open(layout, spec, 0, 1 << 16);
    let seq = 0;
    const ingestOne = async (b: number): Promise<void> => {
      const records = [write((b % 5) * 65536, 65536, 0x20 + b), write(4096 * (b % 7), 4096, 0x60 + b)];
      records.forEach((r, i) => model.add(seq + 1 + i, r));
      const cs = buildChangeSet('v1', seq + 1, records, 'exact');
      seq += records.length;
      await store.ingest(encodeFrame({ changeSet: cs }), validateChangeSet(cs, SIZE));
    };
    for (let b = 0; b < 4; b++) await ingestOne(b);
    const first = store.applyNextAsync(60_000);
    expect(store.stepping).toBe(true);
    // Ingest does not wait for the step.
    for (let b = 4; b < 8; b++) await ingestOne(b);
    const step = await first;
    expect(step?.lastSeq).toBeGreaterThanOrEqual(8);
    expect(store.stepping).toBe(false);
    // A step the recovery overtakes no longer counts; apply starts over from the checkpoint.
    const overtaken = store.applyNextAsync(60_000);
    store.recoverApply();
    expect(await overtaken).toBeUndefined();
    expect(store.appliedSeq).toBe(store.checkpointSeq);
    while (store.hasWork()) await store.applyNextAsync(60_000);
    expect(store.appliedSeq).toBe(seq);
    expect(sha256(Buffer.from(fs.readFileSync(layout.replicaFile('v1'))))).toBe(sha256(model.imageAt(seq)));
    store.close();
  });

  it('an apply thread that dies fails the step; recovery opens the volume on a fresh thread and applies exactly', async () => {
    const root = tmp('thread-death');
    const layout = new DataLayout(root);
    const spec = { volumeId: 'v1', sizeBytes: SIZE, blockSize: 4096 };
    const model = new VolumeModel(SIZE);
    const store = VolumeStore.open(layout, spec, 0, 1 << 16);
    let seq = 0;
    const ingestSome = async (from: number, to: number): Promise<void> => {
      for (let b = from; b < to; b++) {
        const records = [write((b % 8) * 65536, 65536, 0x30 + b), write(4096 * b, 4096, 0x70 + b)];
        records.forEach((r, i) => model.add(seq + 1 + i, r));
        const cs = buildChangeSet('v1', seq + 1, records, 'exact');
        await store.ingest(encodeFrame({ changeSet: cs }), validateChangeSet(cs, SIZE));
        seq += records.length;
      }
    };
    await ingestSome(0, 4);
    await store.applyNextAsync(60_000);
    await stopApplyThreads();
    await ingestSome(4, 8);
    await expect(store.applyNextAsync(60_000)).rejects.toThrow(/apply thread/);
    expect(store.applyFailure).toBeDefined();
    store.recoverApply();
    while (store.hasWork()) await store.applyNextAsync(60_000);
    expect(store.appliedSeq).toBe(seq);
    expect(sha256(Buffer.from(fs.readFileSync(layout.replicaFile('v1'))))).toBe(sha256(model.imageAt(seq)));
    store.close();
  });

  it('opening a volume after a crash mid-apply rolls back and re-applies to the exact state', async () => {
    const root = tmp('recover');
    const layout = new DataLayout(root);
    const spec = { volumeId: 'v1', sizeBytes: SIZE, blockSize: 4096 };
    const model = new VolumeModel(SIZE);
    const store = VolumeStore.open(layout, spec, 0, 1 << 16);
    let seq = 0;
    for (let b = 0; b < 6; b++) {
      const records = [write(b * 8192, 65536, b + 1), write(4096 * b, 4096, 0x80 + b)];
      records.forEach((r, i) => model.add(seq + 1 + i, r));
      const cs = buildChangeSet('v1', seq + 1, records, 'exact');
      await store.ingest(encodeFrame({ changeSet: cs }), validateChangeSet(cs, SIZE));
      seq += records.length;
    }
    // One change set per step (maxBytes 1), so the crash lands between change sets.
    store.applyNext(1);
    store.saveCheckpoint();
    store.applyNext(1);
    store.applyNext(1); // applied and journaled, but no checkpoint: a crash now leaves work to undo
    const applied = store.appliedSeq;
    expect(readCheckpoint(layout.checkpointFile('v1'))).toBeLessThan(applied);
    // Simulate the crash: drop the store without closing (no final checkpoint).
    const reopened = VolumeStore.open(layout, spec, 0, 1 << 16);
    expect(reopened.openReport.rolledBackRecords).toBeGreaterThan(0);
    expect(reopened.appliedSeq).toBe(reopened.openReport.checkpointSeq);
    while (reopened.applyNext());
    reopened.saveCheckpoint();
    expect(reopened.appliedSeq).toBe(seq);
    const replica = Replica.open(layout.replicaFile('v1'), SIZE);
    expect(sha256(replica.read(0, SIZE))).toBe(sha256(model.imageAt(seq)));
    replica.close();
    reopened.close();
  });
});

for (const journal of JOURNALS) {
  describe(`checkpoints while apply keeps up (${journal})`, () => {
    useJournal(journal);
    it('a step that catches up while change sets keep arriving saves no checkpoint (one idle does); a crash then re-applies from the spool, losing nothing', async () => {
      const root = tmp(`caught-up-${journal}`);
      const layout = new DataLayout(root);
      const spec = { volumeId: 'v1', sizeBytes: SIZE, blockSize: 4096 };
      const model = new VolumeModel(SIZE);
      const store = VolumeStore.open(layout, spec, 0, 1 << 16);
      let seq = 0;
      // Resolves once durable in the spool: what the receiver acknowledges.
      const ingestOne = (b: number): Promise<void> => {
        const records = [write((b % 4) * 65536, 65536, 0x11 + b), write(4096 * b, 4096, 0x51 + b)];
        records.forEach((r, i) => model.add(seq + 1 + i, r));
        const cs = buildChangeSet('v1', seq + 1, records, 'exact');
        seq += records.length;
        return store.ingest(encodeFrame({ changeSet: cs }), validateChangeSet(cs, SIZE));
      };
      await ingestOne(0);
      for (let b = 1; b < 6; b++) {
        // The next change set is being spooled while apply catches up with the durable ones.
        const arriving = ingestOne(b);
        // One step: it ends with the new one still being spooled or already durable (work left).
        expect(await store.applyNextAsync(60_000)).toBeDefined();
        expect(store.checkpointSeq).toBe(0);
        await arriving;
      }
      expect(readCheckpoint(layout.checkpointFile('v1'))).toBe(0);
      // A kill -9 now: the store is dropped without a close; everything acknowledged comes back.
      const reopened = VolumeStore.open(layout, spec, 0, 1 << 16);
      expect(reopened.durableSeq).toBe(seq);
      // Caught up with nothing arriving: checkpointed at once (an export may follow right away).
      while (reopened.hasWork()) await reopened.applyNextAsync(60_000);
      expect(reopened.appliedSeq).toBe(seq);
      expect(reopened.checkpointSeq).toBe(seq);
      reopened.close();
      // Under undo the replica is the image at the applied seq (redo's is checked by its own suite).
      if (journal === 'undo') expect(sha256(Replica.open(layout.replicaFile('v1'), SIZE).read(0, SIZE))).toBe(sha256(model.imageAt(seq)));
    });
  });
}

describe('Spool with replayed change sets', () => {
  it('keeps segment names unique when a replay starts below the newest segment', async () => {
    const dir = tmp('spool-replay');
    const spool = Spool.open(dir, 16);
    await spool.append(Buffer.alloc(32, 1), 1, 10);
    await spool.append(Buffer.alloc(32, 2), 1, 12); // a replay that overlaps, then extends
    await spool.append(Buffer.alloc(32, 3), 5, 20);
    expect(new Set(fs.readdirSync(dir)).size).toBe(3);
    // Reading on from any applied seq still reaches every later seq (replays overlap, never gap).
    for (let applied = 0; applied < 20; applied++) {
      const cursor = spool.cursor(applied);
      const first = cursor.next();
      expect(first && first.firstSeq <= applied + 1 && first.lastSeq > applied, `after ${applied}`).toBe(true);
      cursor.close();
    }
    spool.close();
  });
});

describe('segment scans tell a torn tail from damage', () => {
  const format = { magic: 0x32505346, magic1: 0x31505346, metaBytes: 16, maxBodyBytes: 1 << 20 };
  const meta = (first: number, last: number): Buffer => {
    const m = Buffer.alloc(16);
    m.writeBigUInt64LE(BigInt(first), 0);
    m.writeBigUInt64LE(BigInt(last), 8);
    return m;
  };
  const segment = (bodies: Buffer[]): { file: string; offsets: number[] } => {
    const file = path.join(tmp('scan'), 'seg');
    const offsets: number[] = [];
    const parts: Buffer[] = [];
    let pos = 0;
    bodies.forEach((b, i) => {
      offsets.push(pos);
      const rec = encodeRecordParts(format, meta(i * 10 + 1, i * 10 + 10), b);
      parts.push(...rec);
      pos += rec[0].length + rec[1].length;
    });
    fs.writeFileSync(file, Buffer.concat(parts));
    return { file, offsets };
  };
  const scan = (file: string): ReturnType<typeof scanSegment> => {
    const fd = fs.openSync(file, 'r');
    try {
      return scanSegment(fd, format, true);
    } finally {
      fs.closeSync(fd);
    }
  };
  const flip = (file: string, at: number): void => {
    const buf = fs.readFileSync(file);
    buf[at] ^= 0x40;
    fs.writeFileSync(file, buf);
  };
  const bodies = [Buffer.alloc(3000, 1), Buffer.alloc(5000, 2), Buffer.alloc(7000, 3)];

  it('a file ending inside a record is a torn tail, nothing else', () => {
    const { file, offsets } = segment(bodies);
    fs.truncateSync(file, offsets[2] + 100);
    const s = scan(file);
    expect(s.records).toHaveLength(2);
    expect(s.damage).toEqual([]);
    expect(s.tornBytes).toBe(100);
    expect(s.validEnd).toBe(offsets[2]);
  });

  it('zeroes to the end of the file (appends whose writes failed) are a torn tail; zeroes before a record or bytes after them are damage', () => {
    const { file, offsets } = segment(bodies);
    const end = fs.statSync(file).size;
    const zeroTail = (from: number, to: number): void => {
      const fd = fs.openSync(file, 'r+');
      fs.writeSync(fd, Buffer.alloc(to - from), 0, to - from, from);
      fs.closeSync(fd);
    };
    zeroTail(offsets[2], end);
    let s = scan(file);
    expect(s.records).toHaveLength(2);
    expect(s.damage).toEqual([]);
    expect(s.tornBytes).toBe(end - offsets[2]);
    // The same zeroes followed by something that is not zero: damage, kept for the repair.
    fs.appendFileSync(file, Buffer.from([7]));
    s = scan(file);
    expect(s.tornBytes).toBe(0);
    expect(s.damage).toEqual([{ offset: offsets[2], length: end + 1 - offsets[2] }]);
    // Zeroes over a record with a valid one after it: damage in the middle.
    const mid = segment(bodies);
    const fd = fs.openSync(mid.file, 'r+');
    fs.writeSync(fd, Buffer.alloc(mid.offsets[2] - mid.offsets[1]), 0, mid.offsets[2] - mid.offsets[1], mid.offsets[1]);
    fs.closeSync(fd);
    s = scan(mid.file);
    expect(s.tornBytes).toBe(0);
    expect(s.damage).toEqual([{ offset: mid.offsets[1], length: mid.offsets[2] - mid.offsets[1] }]);
  });

  it('a complete record whose body fails its CRC is damage, with its seqs, in the middle or at the end', () => {
    for (const victim of [1, 2]) {
      const { file, offsets } = segment(bodies);
      flip(file, offsets[victim] + 32 + 10);
      const s = scan(file);
      expect(s.tornBytes).toBe(0);
      expect(s.records.map((r) => r.offset)).toEqual(offsets.filter((_, i) => i !== victim));
      expect(s.damage).toHaveLength(1);
      expect(s.damage[0].offset).toBe(offsets[victim]);
      expect(s.damage[0].record?.meta.readBigUInt64LE(0)).toBe(BigInt(victim * 10 + 1));
    }
  });

  it('a damaged header makes a stretch without seqs, and the scan finds the next record after it', () => {
    const { file, offsets } = segment(bodies);
    flip(file, offsets[1] + 5);
    const s = scan(file);
    expect(s.records.map((r) => r.offset)).toEqual([offsets[0], offsets[2]]);
    expect(s.damage).toEqual([{ offset: offsets[1], length: offsets[2] - offsets[1] }]);
  });
});

describe('VolumeHealth', () => {
  it('retries a failure after a growing delay, and a full disk as soon as clearly more is free', () => {
    const h = new VolumeHealth();
    const eio = Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
    expect(h.fail('ingest', eio, 0, 1000).full).toBe(false);
    expect(h.state).toBe('failed');
    expect(h.due('ingest', 0, 1500)).toBe(false);
    expect(h.due('ingest', 0, 2000)).toBe(true);
    h.fail('ingest', eio, 0, 2000);
    expect(h.due('ingest', 0, 3500)).toBe(false); // 2 s now
    expect(h.due('ingest', 0, 4000)).toBe(true);
    expect(h.recovered('ingest')).toBe(true);
    expect(h.state).toBe('healthy');

    const full = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    expect(h.fail('apply', full, 10 << 20, 0).full).toBe(true);
    expect(h.state).toBe('full');
    expect(h.due('apply', 11 << 20, 1000)).toBe(false); // 1 MiB more: not clearly
    expect(h.due('apply', 20 << 20, 1000)).toBe(true);
    expect(h.due('apply', 10 << 20, 30_000)).toBe(true); // and every 30 s in any case
    expect(h.describe()).toMatch(/apply waits for space: ENOSPC/);
  });

  it('a failure soon after a recovery goes on with the same backoff (a disk that still fails)', () => {
    const h = new VolumeHealth();
    const eio = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
    h.fail('apply', eio, 0, 0);
    h.fail('apply', eio, 0, 1000); // retry in 2 s
    h.recovered('apply', 3000);
    h.fail('apply', eio, 0, 3500); // the third failure in a row: 4 s
    expect(h.due('apply', 0, 7000)).toBe(false);
    expect(h.due('apply', 0, 7500)).toBe(true);
    h.recovered('apply', 7500);
    h.fail('apply', eio, 0, 7500 + 120_000); // long after: a new fault, 1 s again
    expect(h.due('apply', 0, 7500 + 121_000)).toBe(true);
  });

  it('classifies errors by their code, also when wrapped', () => {
    expect(classifyStorageError(Object.assign(new Error('x'), { code: 'EDQUOT' })).full).toBe(true);
    expect(classifyStorageError({ message: 'wrapped', failure: { code: 'ENOSPC' } }).full).toBe(true);
    expect(classifyStorageError(new Error('plain')).full).toBe(false);
  });
});
