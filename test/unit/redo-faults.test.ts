import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildChangeSet, ChangeRecord } from '../../agent/transport/change-set';
import { encodeFrame } from '../../proto/frames';
import { validateChangeSet } from '../../proto/validate';
import { DataLayout } from '../../receiver/layout';
import { migrateUndoVolume, needsMigration } from '../../receiver/redo/migrate';
import { PointAgedOutError, RedoVolume } from '../../receiver/redo/redo-volume';
import { stopApplyThreads } from '../../receiver/apply/apply-thread';
import { Spool } from '../../receiver/storage/spool';
import { VolumeStore } from '../../receiver/volume-store';
import { fillWithBallast, MountedFs, mountTmpfs } from '../helpers/small-fs';
import { tempDirs } from '../helpers/temp-dirs';
import { prng, randomRecords, sha256, VolumeModel } from '../helpers/volume-model';
import { useJournal } from '../helpers/journal';

const tmp = tempDirs();
const isRoot = process.getuid?.() === 0;
const SIZE = 2 * 1024 * 1024;
const mounts: MountedFs[] = [];
afterAll(async () => {
  for (const m of mounts.reverse()) m.unmount();
  await stopApplyThreads();
});

function indexAll(spool: Spool, redo: RedoVolume): void {
  const cursor = spool.cursor(redo.replayAfter);
  const recs = [];
  for (let r = cursor.next(); r; r = cursor.next()) recs.push({ segment: r.segment, recordOffset: r.recordOffset, lastSeq: r.lastSeq, frame: r.frame });
  cursor.close();
  redo.indexRecords(recs);
}

function exportHash(redo: RedoVolume, dir: string, seq: number): string {
  const out = path.join(dir, 'out.img');
  const fd = fs.openSync(out, 'w+');
  try {
    redo.exportTo(fd, seq);
  } finally {
    fs.closeSync(fd);
  }
  const h = sha256(fs.readFileSync(out));
  fs.rmSync(out);
  return h;
}

describe('redo migration from the undo design', () => {
  // Undo volumes are made first (the environment's default), then migrated.
  useJournal('undo');
  it('rolls the undo state back to its checkpoint, starts redo there, and replays the spool after it', async () => {
    const root = tmp('redo-migrate');
    const layout = new DataLayout(root);
    const spec = { volumeId: 'vol-1', sizeBytes: SIZE, blockSize: 4096 };
    const model = new VolumeModel(SIZE);
    const rand = prng(21);
    let seq = 0;
    let t = 1;
    const store = VolumeStore.open(layout, spec, 0);
    const ingest = async (records: ChangeRecord[]): Promise<void> => {
      const cs = buildChangeSet('vol-1', seq + 1, records, 'exact');
      records.forEach((r, i) => model.add(seq + 1 + i, r));
      seq += records.length;
      await store.ingest(encodeFrame({ changeSet: cs }), validateChangeSet(cs, SIZE));
    };
    for (let i = 0; i < 10; i++) await ingest(randomRecords(rand, 6, SIZE, () => t++));
    while (store.hasWork()) store.applyNext();
    store.saveCheckpoint();
    const checkpoint = store.appliedSeq;
    for (let i = 0; i < 6; i++) await ingest(randomRecords(rand, 6, SIZE, () => t++));
    store.close();
    expect(needsMigration(layout, 'vol-1')).toBe(true);

    const openUndo = (): VolumeStore => VolumeStore.open(layout, spec, 0, undefined, 'undo');
    const migrated = migrateUndoVolume(layout, spec, openUndo);
    expect(migrated?.baseSeq).toBe(checkpoint);
    expect(fs.existsSync(layout.journalDir('vol-1'))).toBe(false);
    expect(needsMigration(layout, 'vol-1')).toBe(false);
    expect(migrateUndoVolume(layout, spec, openUndo)).toBeUndefined();

    const spool = Spool.open(layout.spoolDir('vol-1'));
    const redo = RedoVolume.open({ dir: layout.volumeDir('vol-1'), spoolDir: layout.spoolDir('vol-1'), sizeBytes: SIZE });
    expect(redo.baseSeq).toBe(checkpoint);
    indexAll(spool, redo);
    expect(redo.indexedThrough).toBe(seq);
    const dir = layout.volumeDir('vol-1');
    expect(exportHash(redo, dir, checkpoint)).toBe(sha256(model.imageAt(checkpoint)));
    expect(exportHash(redo, dir, seq)).toBe(sha256(model.imageAt(seq)));
    expect(() => redo.read(0, 512, checkpoint - 1)).toThrow(PointAgedOutError);
    spool.close();
    redo.close();
  });
});

describe.skipIf(!isRoot)('redo on a full disk', () => {
  it('an advance that finds no room refuses, serves later points unchanged, and finishes once there is room', async () => {
    const dir = path.join(tmp('redo-full'), 'vol');
    const m = mountTmpfs(dir, 10);
    mounts.push(m);
    const spool = Spool.open(path.join(dir, 'spool'), 1024 * 1024);
    let redo = RedoVolume.open({ dir, spoolDir: path.join(dir, 'spool'), sizeBytes: SIZE });
    const model = new VolumeModel(SIZE);
    let seq = 0;
    for (let i = 0; i < 8; i++) {
      const data = Buffer.alloc(256 * 1024, i + 1);
      const rec: ChangeRecord = { kind: 'write', offset: i * 256 * 1024, length: data.length, captureTimeUs: i + 1, data };
      model.add(seq + 1, rec);
      seq++;
      await spool.append(encodeFrame({ changeSet: buildChangeSet('vol-1', seq, [rec], 'exact') }), seq, seq);
    }
    indexAll(spool, redo);
    const ballast = fillWithBallast(dir, 128 * 1024);
    let err: unknown;
    try {
      redo.advance(6);
    } catch (e) {
      err = e;
    }
    expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
    expect(redo.advancingTo).toBe(6);
    expect(() => redo.read(0, 512, 5)).toThrow(PointAgedOutError);
    expect(redo.read(0, SIZE).equals(model.imageAt(seq))).toBe(true);
    expect(redo.read(0, SIZE, 7).equals(model.imageAt(7))).toBe(true);
    redo.close();
    fs.rmSync(ballast);
    redo = RedoVolume.open({ dir, spoolDir: path.join(dir, 'spool'), sizeBytes: SIZE });
    expect(redo.finishAdvance()).toBeGreaterThan(0);
    expect(redo.baseSeq).toBe(6);
    expect(sha256(fs.readFileSync(path.join(dir, 'replica.img')))).toBe(sha256(model.imageAt(6)));
    expect(exportHash(redo, dir, seq)).toBe(sha256(model.imageAt(seq)));
    spool.close();
    redo.close();
  });
});
