import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildChangeSet, ChangeRecord } from '../../agent/transport/change-set';
import { blockHashes } from '../../common/block-hash';
import { encodeFrame } from '../../proto/frames';
import { validateChangeSet } from '../../proto/validate';
import { stopApplyThreads } from '../../receiver/apply/apply-thread';
import { Catalog } from '../../receiver/catalog';
import { exportPoint } from '../../receiver/export';
import { DataLayout } from '../../receiver/layout';
import { redoBaseFile, VolumeStore } from '../../receiver/volume-store';
import { tempDirs } from '../helpers/temp-dirs';
import { waitFor } from '../helpers/agent-lab';
import { prng, randomRecords, sha256, VolumeModel } from '../helpers/volume-model';
import { useJournal } from '../helpers/journal';

const tmp = tempDirs();
afterAll(() => stopApplyThreads());
const SIZE = 2 * 1024 * 1024;
const VOL = 'vol-redo';
const spec = { volumeId: VOL, sizeBytes: SIZE, blockSize: 4096 };

/** A receiver data directory with a catalog, one redo volume, and the source's model. */
class StoreLab {
  readonly layout: DataLayout;
  readonly model = new VolumeModel(SIZE);
  store: VolumeStore;
  seq = 0;
  private t = 1_000_000;
  private readonly rand = prng(31);

  constructor(readonly root: string) {
    this.layout = new DataLayout(root);
    fs.mkdirSync(root, { recursive: true });
    const catalog = Catalog.open(this.layout.catalogFile);
    catalog.addAgent({ id: 'agent-1', name: 'a', credential: Buffer.alloc(32), createdUs: 1 });
    catalog.addVolume({ id: VOL, agentId: 'agent-1', sizeBytes: SIZE, blockSize: 4096, createdUs: 1 });
    catalog.close();
    this.store = VolumeStore.open(this.layout, spec, 0, 256 * 1024, 'redo');
  }

  async ingest(sets: number): Promise<void> {
    for (let i = 0; i < sets; i++) {
      const records: ChangeRecord[] = randomRecords(this.rand, 1 + Math.floor(this.rand() * 10), SIZE, () => (this.t += 300_000));
      const cs = buildChangeSet(VOL, this.seq + 1, records, 'exact');
      records.forEach((r, k) => this.model.add(this.seq + 1 + k, r));
      this.seq += records.length;
      await this.store.ingest(encodeFrame({ changeSet: cs }), validateChangeSet(cs, SIZE));
    }
  }

  apply(): void {
    while (this.store.hasWork()) this.store.applyNext();
    this.store.saveCheckpoint();
  }

  point(seq: number): number {
    const catalog = Catalog.open(this.layout.catalogFile);
    try {
      return catalog.addPoint({ volumeId: VOL, seq, timeUs: 1_000_000 + seq, kind: 'crash', accuracy: 'exact', origin: 'tag', groupId: `g${seq}`, name: '' });
    } finally {
      catalog.close();
    }
  }

  exportHash(pointId: number): string {
    const out = path.join(this.root, `export-${pointId}.img`);
    exportPoint({ dataDir: this.root, volumeId: VOL, point: String(pointId), out, format: 'raw' });
    const h = sha256(fs.readFileSync(out));
    fs.rmSync(out);
    return h;
  }
}

describe('VolumeStore with the redo journal', () => {
  it('applies by indexing, answers hashes and exports points through the index, ages out, and reopens', async () => {
    const lab = new StoreLab(tmp('redo-store'));
    expect(lab.store.journal).toBe('redo');
    expect(fs.existsSync(redoBaseFile(lab.layout, VOL))).toBe(true);
    await lab.ingest(30);
    lab.apply();
    expect(lab.store.appliedSeq).toBe(lab.seq);
    expect(fs.statSync(lab.layout.replicaFile(VOL)).blocks).toBe(0);
    expect(fs.existsSync(lab.layout.journalDir(VOL))).toBe(false);
    const hashes = await lab.store.replicaHashesAsync(0, 4096, SIZE / 4096);
    expect(hashes.equals(blockHashes(lab.model.imageAt(lab.seq), 4096))).toBe(true);

    const early = Math.floor(lab.seq / 3);
    const mid = Math.floor(lab.seq / 2);
    const [pEarly, pMid, pLatest] = [lab.point(early), lab.point(mid), lab.point(lab.seq)];
    expect(lab.exportHash(pEarly)).toBe(sha256(lab.model.imageAt(early)));
    expect(lab.exportHash(pMid)).toBe(sha256(lab.model.imageAt(mid)));
    expect(lab.exportHash(pLatest)).toBe(sha256(lab.model.imageAt(lab.seq)));

    // Retention: points before `mid` age out; the replica becomes the image at mid.
    expect(lab.store.pruneJournalThrough(mid)).toBe(1);
    expect(sha256(fs.readFileSync(lab.layout.replicaFile(VOL)))).toBe(sha256(lab.model.imageAt(mid)));
    expect(() => lab.exportHash(pEarly)).toThrow(/no longer retained/);
    expect(lab.exportHash(pMid)).toBe(sha256(lab.model.imageAt(mid)));

    await lab.ingest(10);
    lab.apply();
    lab.store.close();
    lab.store = VolumeStore.open(lab.layout, spec, 0, 256 * 1024);
    expect(lab.store.journal).toBe('redo');
    expect(lab.store.appliedSeq).toBe(lab.seq);
    expect(lab.exportHash(lab.point(lab.seq))).toBe(sha256(lab.model.imageAt(lab.seq)));
    expect(lab.exportHash(pMid)).toBe(sha256(lab.model.imageAt(mid)));
    lab.store.close();
  });

  it('after a crash (no checkpoint saved, nothing closed) the reopened store has every durable change set', async () => {
    const lab = new StoreLab(tmp('redo-store-crash'));
    await lab.ingest(12);
    lab.apply();
    await lab.ingest(8);
    while (lab.store.hasWork()) lab.store.applyNext();
    lab.store.abandon();
    lab.store = VolumeStore.open(lab.layout, spec, 0, 256 * 1024);
    lab.apply();
    expect(lab.store.appliedSeq).toBe(lab.seq);
    expect(lab.exportHash(lab.point(lab.seq))).toBe(sha256(lab.model.imageAt(lab.seq)));
    lab.store.close();
  });

  it('a damaged retained change set: hashes of its blocks never match (a hash-compare resync resends them); export refuses with the file named', async () => {
    const lab = new StoreLab(tmp('redo-store-damage'));
    await lab.ingest(6);
    lab.apply();
    const spoolDir = lab.layout.spoolDir(VOL);
    const seg = path.join(spoolDir, fs.readdirSync(spoolDir).sort()[0]);
    const fd = fs.openSync(seg, 'r+');
    fs.writeSync(fd, Buffer.from([0xa5, 0x5a]), 0, 2, 80);
    fs.closeSync(fd);
    const hashes = await lab.store.replicaHashesAsync(0, 4096, SIZE / 4096);
    const model = blockHashes(lab.model.imageAt(lab.seq), 4096);
    let differing = 0;
    for (let i = 0; i < SIZE / 4096; i++) if (!hashes.subarray(i * 16, i * 16 + 16).equals(model.subarray(i * 16, i * 16 + 16))) differing++;
    expect(differing).toBeGreaterThan(0);
    expect(() => lab.exportHash(lab.point(lab.seq))).toThrow(new RegExp(`damaged data: ${seg.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));
    lab.store.close();
  });
});

describe('VolumeStore journal choice', () => {
  useJournal('undo');
  it('an undo volume is migrated to redo when it opens without FERRY_JOURNAL=undo; with it volumes stay undo', async () => {
    const root = tmp('redo-choice');
    const layout = new DataLayout(root);
    const undo = VolumeStore.open(layout, spec, 0);
    expect(undo.journal).toBe('undo');
    const records: ChangeRecord[] = [{ kind: 'write', offset: 4096, length: 8192, captureTimeUs: 5, data: Buffer.alloc(8192, 9) }];
    const cs = buildChangeSet(VOL, 1, records, 'exact');
    await undo.ingest(encodeFrame({ changeSet: cs }), validateChangeSet(cs, SIZE));
    while (undo.hasWork()) undo.applyNext();
    undo.close();
    const stays = VolumeStore.open(layout, spec, 0);
    expect(stays.journal).toBe('undo');
    stays.close();
    delete process.env.FERRY_JOURNAL;
    try {
      const redo = VolumeStore.open(layout, spec, 0);
      expect(redo.journal).toBe('redo');
      expect(fs.existsSync(layout.journalDir(VOL))).toBe(false);
      expect((await redo.replicaHashesAsync(4096, 4096, 2)).equals(blockHashes(Buffer.alloc(8192, 9), 4096))).toBe(true);
      redo.close();
    } finally {
      process.env.FERRY_JOURNAL = 'undo';
    }
    const again = VolumeStore.open(layout, spec, 0);
    expect(again.journal).toBe('redo');
    again.close();
  });
});

describe('VolumeStore with the redo journal: retained history is not backlog', () => {
  it('once applied, the retained spool counts as no unapplied bytes; an age-out frees the segments it passes on the disk', async () => {
    const lab = new StoreLab(tmp('redo-store-backlog'));
    await lab.ingest(40);
    expect(lab.store.unappliedBytes).toBeGreaterThan(0);
    lab.apply();
    // Applied = indexed: the spool keeps every segment (the retention) but none is backlog.
    expect(lab.store.unappliedBytes).toBe(0);
    const held = lab.store.spoolSegments();
    expect(held.length).toBeGreaterThan(2);
    expect(lab.store.retainsSpool).toBe(true);
    const spoolDir = lab.layout.spoolDir(VOL);
    const deletedOpen = (): string[] =>
      fs
        .readdirSync('/proc/self/fd')
        .map((fd) => {
          try {
            return fs.readlinkSync(`/proc/self/fd/${fd}`);
          } catch {
            return '';
          }
        })
        .filter((target) => target.startsWith(spoolDir) && target.endsWith('(deleted)'));
    // Export reads retained records (opening their segments), then retention passes them.
    const through = held[held.length - 1].firstSeq - 1;
    const p = lab.point(lab.seq);
    expect(lab.exportHash(p)).toBe(sha256(lab.model.imageAt(lab.seq)));
    expect(lab.store.pruneJournalThrough(through)).toBe(1);
    expect(lab.store.oldestRetainedSeq).toBe(through);
    expect(lab.store.spoolSegments().length).toBe(1);
    const freed = held.slice(0, -1).reduce((n, s) => n + s.bytes, 0);
    expect(lab.store.spoolBytesBeingFreed).toBeLessThanOrEqual(freed);
    await waitFor('the pruned segments to be deleted', () => lab.store.spoolBytesBeingFreed === 0);
    // No reader keeps a deleted segment's space allocated.
    expect(deletedOpen()).toEqual([]);
    expect(lab.exportHash(p)).toBe(sha256(lab.model.imageAt(lab.seq)));
    lab.store.close();
  });
});

describe('hash requests under the redo journal', () => {
  it('a request larger than a slice is answered a slice at a time, all of it as indexed when it came', async () => {
    const size = 40 * 1024 * 1024; // three 16 MiB slices of 64 KiB blocks
    const big = { volumeId: VOL, sizeBytes: size, blockSize: 4096 };
    const layout = new DataLayout(tmp('redo-hash-slices'));
    const store = VolumeStore.open(layout, big, 0, 4 * 1024 * 1024, 'redo');
    const model = new VolumeModel(size);
    const rand = prng(7);
    let seq = 0;
    let t = 1_000_000;
    const ingest = async (sets: number): Promise<void> => {
      for (let i = 0; i < sets; i++) {
        const records = randomRecords(rand, 20, size, () => (t += 1000));
        const cs = buildChangeSet(VOL, seq + 1, records, 'exact');
        records.forEach((r, k) => model.add(seq + 1 + k, r));
        seq += records.length;
        await store.ingest(encodeFrame({ changeSet: cs }), validateChangeSet(cs, size));
      }
    };
    try {
      await ingest(10);
      while (store.hasWork()) store.applyNext();
      const asked = seq;
      await ingest(10); // durable, indexed only once the request has begun
      const answer = store.replicaHashesAsync(0, 65536, size / 65536);
      let otherWorkRan = false;
      setImmediate(() => (otherWorkRan = true));
      while (store.hasWork()) store.applyNext();
      expect(store.appliedSeq).toBe(seq);
      const hashes = await answer.then((h) => {
        expect(otherWorkRan).toBe(true); // the thread was let go between slices
        return h;
      });
      expect(hashes.equals(blockHashes(model.imageAt(asked), 65536))).toBe(true);
      // The records indexed meanwhile changed the later slices: a request now sees them.
      const tail = 32 * 1024 * 1024;
      expect(blockHashes(model.imageAt(seq).subarray(tail), 65536).equals(blockHashes(model.imageAt(asked).subarray(tail), 65536))).toBe(false);
      expect((await store.replicaHashesAsync(0, 65536, size / 65536)).equals(blockHashes(model.imageAt(seq), 65536))).toBe(true);
    } finally {
      store.close();
    }
  });
});
