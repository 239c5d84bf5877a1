import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildChangeSet, ChangeRecord } from '../../agent/transport/change-set';
import { encodeFrame } from '../../proto/frames';
import { BaseFileError, decodeBase, encodeBase } from '../../receiver/redo/base-file';
import { blocksNotCovered, partlyTouchedBlocks } from '../../receiver/redo/block-coverage';
import { BlockSums, blockSumsOf } from '../../receiver/storage/block-sums';
import { RedoVolume, PointAgedOutError } from '../../receiver/redo/redo-volume';
import { RetainedDataDamagedError } from '../../receiver/redo/retained-records';
import { RetainedExtent, visiblePieces } from '../../receiver/redo/visible-pieces';
import { Spool } from '../../receiver/storage/spool';
import { REPO_ROOT } from '../helpers/receiver-process';
import { tempDirs } from '../helpers/temp-dirs';
import { prng, randomRecords, sha256, VolumeModel } from '../helpers/volume-model';

const tmp = tempDirs();
const ext = (seq: number, offset: number, length: number): RetainedExtent => ({ seq, offset, length, segment: 1, recordOffset: seq * 100, dataOffset: 0 });

describe('visiblePieces (pure)', () => {
  it('gives each byte to the newest extent that covers it, leaving gaps to the replica', () => {
    const pieces = visiblePieces([ext(3, 1024, 512), ext(2, 512, 2048), ext(1, 0, 4096)], 0, 8192);
    expect(pieces.map((p) => [p.offset, p.length, p.extent.seq, p.skip])).toEqual([
      [0, 512, 1, 0],
      [512, 512, 2, 0],
      [1024, 512, 3, 0],
      [1536, 1024, 2, 1024],
      [2560, 1536, 1, 2560],
    ]);
  });

  it('clips to the asked range and stops once it is covered', () => {
    const pieces = visiblePieces([ext(5, 0, 65536), ext(4, 4096, 512)], 4096, 8192);
    expect(pieces.map((p) => [p.offset, p.length, p.extent.seq, p.skip])).toEqual([[4096, 4096, 5, 4096]]);
  });

  it('merges abutting coverage and refuses extents out of seq order', () => {
    const pieces = visiblePieces([ext(9, 0, 512), ext(8, 1024, 512), ext(7, 512, 512), ext(6, 0, 2048)], 0, 2048);
    expect(pieces.map((p) => [p.offset, p.length, p.extent.seq])).toEqual([
      [0, 512, 9],
      [512, 512, 7],
      [1024, 512, 8],
      [1536, 512, 6],
    ]);
    expect(() => visiblePieces([ext(1, 0, 512), ext(2, 0, 512)], 0, 1024)).toThrow(/newest first/);
  });

  it('matches a byte-by-byte model on random extents', () => {
    const rand = prng(7);
    for (let round = 0; round < 50; round++) {
      const extents = Array.from({ length: 30 }, (_, i) => ext(100 - i, Math.floor(rand() * 60) * 512, (1 + Math.floor(rand() * 8)) * 512));
      const from = Math.floor(rand() * 20) * 512;
      const to = from + (1 + Math.floor(rand() * 40)) * 512;
      const owner = new Array<number>(to).fill(0);
      for (const p of visiblePieces(extents, from, to)) for (let b = p.offset; b < p.offset + p.length; b++) owner[b] = owner[b] === 0 ? p.extent.seq : -1;
      for (let b = from; b < to; b += 512) {
        const want = extents.find((e) => e.offset <= b && b < e.offset + e.length)?.seq ?? 0;
        expect(owner[b]).toBe(want);
      }
    }
  });
});

describe('base file', () => {
  it('round-trips and refuses damage with the file named', () => {
    expect(decodeBase('f', encodeBase({ baseSeq: 7, advancingTo: 9 }))).toEqual({ baseSeq: 7, advancingTo: 9 });
    expect(decodeBase('f', encodeBase({ baseSeq: 7 }))).toEqual({ baseSeq: 7 });
    const text = encodeBase({ baseSeq: 7 }).replace('7', '8');
    expect(() => decodeBase('/x/base', text)).toThrow(BaseFileError);
    expect(() => decodeBase('/x/base', text)).toThrow(/\/x\/base: fails its CRC/);
  });
});

const SIZE = 2 * 1024 * 1024;

/** A spool + redo volume with a model of the source, built change set by change set. */
class Lab {
  readonly model = new VolumeModel(SIZE);
  seq = 0;
  spool: Spool;
  redo: RedoVolume;

  constructor(
    readonly dir: string,
    segmentBytes = 256 * 1024,
  ) {
    this.spool = Spool.open(path.join(dir, 'spool'), segmentBytes);
    this.redo = RedoVolume.open({ dir, spoolDir: path.join(dir, 'spool'), sizeBytes: SIZE });
  }

  async ingest(records: ChangeRecord[]): Promise<void> {
    const first = this.seq + 1;
    const cs = buildChangeSet('vol-1', first, records, 'exact');
    records.forEach((r, i) => this.model.add(first + i, r));
    this.seq += records.length;
    await this.spool.append(encodeFrame({ changeSet: cs }), first, this.seq);
  }

  /** Apply: index every durable record after what the index holds. */
  indexAll(): void {
    const cursor = this.spool.cursor(this.redo.replayAfter);
    const recs = [];
    for (let r = cursor.next(); r; r = cursor.next()) recs.push({ segment: r.segment, recordOffset: r.recordOffset, lastSeq: r.lastSeq, frame: r.frame });
    cursor.close();
    this.redo.indexRecords(recs);
  }

  exportHash(seq: number): string {
    const out = path.join(this.dir, `export-${seq}.img`);
    const fd = fs.openSync(out, 'w+');
    try {
      this.redo.exportTo(fd, seq);
    } finally {
      fs.closeSync(fd);
    }
    const hash = sha256(fs.readFileSync(out));
    fs.rmSync(out);
    return hash;
  }

  private closed = false;

  reopen(): void {
    if (!this.closed) this.close();
    this.closed = false;
    this.spool = Spool.open(path.join(this.dir, 'spool'), 256 * 1024);
    this.redo = RedoVolume.open({ dir: this.dir, spoolDir: path.join(this.dir, 'spool'), sizeBytes: SIZE });
  }

  close(): void {
    this.closed = true;
    this.spool.close();
    this.redo.close();
  }
}

async function filledLab(seed: number, sets: number): Promise<Lab> {
  const lab = new Lab(tmp('redo'));
  const rand = prng(seed);
  let t = 1;
  for (let i = 0; i < sets; i++) await lab.ingest(randomRecords(rand, 1 + Math.floor(rand() * 12), SIZE, () => t++));
  lab.indexAll();
  return lab;
}

describe('RedoVolume', () => {
  it('serves latest and every retained point through the index; apply writes no replica byte', async () => {
    const lab = await filledLab(11, 40);
    expect(fs.statSync(path.join(lab.dir, 'replica.img')).blocks).toBe(0);
    for (const seq of [0, 1, Math.floor(lab.seq / 3), Math.floor(lab.seq / 2), lab.seq]) {
      expect(lab.exportHash(seq)).toBe(sha256(lab.model.imageAt(seq)));
    }
    expect(sha256(lab.redo.read(0, SIZE))).toBe(sha256(lab.model.imageAt(lab.seq)));
    const mid = Math.floor(lab.seq / 2);
    expect(lab.redo.read(4096 + 512, 70_000, mid).equals(lab.model.imageAt(mid).subarray(4608, 4608 + 70_000))).toBe(true);
    lab.close();
  });

  it('advances the replica, refuses aged-out points, keeps later ones, and survives a reopen without a full replay', async () => {
    const lab = await filledLab(12, 60);
    const to = Math.floor(lab.seq / 2);
    const written = lab.redo.advance(to);
    expect(written).toBeGreaterThan(0);
    expect(lab.redo.baseSeq).toBe(to);
    expect(lab.spool.pruneThrough(to)).toBeGreaterThan(0);
    expect(sha256(fs.readFileSync(path.join(lab.dir, 'replica.img')))).toBe(sha256(lab.model.imageAt(to)));
    expect(() => lab.redo.read(0, 512, to - 1)).toThrow(PointAgedOutError);
    for (const seq of [to, to + 5, lab.seq]) expect(lab.exportHash(seq)).toBe(sha256(lab.model.imageAt(seq)));
    lab.reopen();
    expect(lab.redo.replayAfter).toBe(lab.seq);
    expect(lab.redo.advancingTo).toBeUndefined();
    for (const seq of [to, lab.seq]) expect(lab.exportHash(seq)).toBe(sha256(lab.model.imageAt(seq)));
    lab.close();
  });

  it('replays only the spool after the index checkpoint on open', async () => {
    const lab = await filledLab(13, 20);
    const indexed = lab.seq;
    const rand = prng(99);
    let t = 10_000;
    for (let i = 0; i < 5; i++) await lab.ingest(randomRecords(rand, 4, SIZE, () => t++));
    lab.reopen();
    expect(lab.redo.replayAfter).toBe(indexed);
    lab.indexAll();
    expect(lab.redo.indexedThrough).toBe(lab.seq);
    expect(lab.exportHash(lab.seq)).toBe(sha256(lab.model.imageAt(lab.seq)));
    lab.close();
  });

  it('a damaged retained record is a clear error for the ranges it holds, never other bytes', async () => {
    const lab = new Lab(tmp('redo-damage'));
    const data = (fill: number, n: number): ChangeRecord => ({ kind: 'write', offset: n * 65536, length: 65536, captureTimeUs: n + 1, data: Buffer.alloc(65536, fill) });
    await lab.ingest([data(1, 0), data(2, 1)]);
    await lab.ingest([data(3, 4)]);
    lab.indexAll();
    const seg = path.join(lab.dir, 'spool', fs.readdirSync(path.join(lab.dir, 'spool'))[0]);
    const fd = fs.openSync(seg, 'r+');
    fs.writeSync(fd, Buffer.from([0x5a]), 0, 1, 60); // inside the first record's body
    fs.closeSync(fd);
    let err: unknown;
    try {
      lab.redo.read(0, 4096);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RetainedDataDamagedError);
    const damage = (err as RetainedDataDamagedError).damage;
    expect(damage).toMatchObject({ kind: 'spool', file: seg, seqFrom: 1, volumeOffset: 0 });
    expect((err as Error).message).toMatch(/fails its CRC/);
    expect(() => lab.exportHash(lab.seq)).toThrow(RetainedDataDamagedError);
    expect(() => lab.redo.advance(lab.seq)).toThrow(RetainedDataDamagedError);
    // The base says the advance is unfinished: every point before it is refused, not guessed.
    expect(lab.redo.advancingTo).toBe(lab.seq);
    expect(lab.redo.read(4 * 65536, 65536).equals(Buffer.alloc(65536, 3))).toBe(true);
    // What to ask the agent for: the ranges of latest the damaged record serves.
    const segment = Number(path.basename(seg).split('.')[0]);
    expect(lab.redo.rangesServedBy(segment, damage.offset)).toEqual([{ offset: 0, length: 2 * 65536 }]);
    // A repair (the agent sends the range again, newer) heals latest for what it covers.
    await lab.ingest([data(7, 0)]);
    lab.indexAll();
    expect(lab.redo.read(0, 65536).equals(Buffer.alloc(65536, 7))).toBe(true);
    expect(lab.redo.rangesServedBy(segment, damage.offset)).toEqual([{ offset: 65536, length: 65536 }]);
    expect(() => lab.redo.read(65536, 512)).toThrow(RetainedDataDamagedError);
    // The unfinished advance can be taken further, never back; past the repair of the whole
    // range it no longer needs the damaged record.
    expect(() => lab.redo.advance(2)).toThrow(/cannot be taken back/);
    await lab.ingest([data(8, 1)]);
    lab.indexAll();
    lab.redo.advance(lab.seq);
    expect(lab.redo.baseSeq).toBe(lab.seq);
    expect(sha256(fs.readFileSync(path.join(lab.dir, 'replica.img')))).toBe(sha256(lab.model.imageAt(lab.seq)));
    lab.close();
  });

  it('kill -9 in the middle of an advance: open finishes it, and the new oldest point is the source at that point', async () => {
    const lab = await filledLab(14, 80);
    const to = Math.floor((lab.seq * 2) / 3);
    const want = sha256(lab.model.imageAt(to));
    const latest = sha256(lab.model.imageAt(lab.seq));
    lab.close();
    const script = `
      const { RedoVolume } = require(${JSON.stringify(path.join(REPO_ROOT, 'dist/receiver/redo/redo-volume.js'))});
      const v = RedoVolume.open({ dir: ${JSON.stringify(lab.dir)}, spoolDir: ${JSON.stringify(path.join(lab.dir, 'spool'))}, sizeBytes: ${SIZE} });
      v.advance(${to}, { afterWritePass: () => process.kill(process.pid, 'SIGKILL') });
      process.exit(3);
    `;
    const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(child.signal).toBe('SIGKILL');
    lab.reopen();
    expect(lab.redo.advancingTo).toBe(to);
    expect(lab.redo.finishAdvance()).toBeGreaterThan(0);
    expect(lab.redo.baseSeq).toBe(to);
    expect(lab.exportHash(to)).toBe(want);
    expect(lab.exportHash(lab.seq)).toBe(latest);
    lab.close();
  });
});

describe('RedoVolume hashes', () => {
  it('hashes latest through the index, as the replica would hash it under undo', async () => {
    const lab = await filledLab(15, 30);
    const { blockHashes } = await import('../../common/block-hash');
    const image = lab.model.imageAt(lab.seq);
    expect(lab.redo.hashes(65536, 4096, 64).equals(blockHashes(image.subarray(65536, 65536 + 64 * 4096), 4096))).toBe(true);
    lab.close();
  });

  it('read in slices through a range plan, every slice is the plain read, and nothing stays put aside', async () => {
    const lab = await filledLab(16, 60);
    const mid = Math.floor(lab.seq / 2);
    for (const seq of [mid, lab.seq]) {
      const image = lab.model.imageAt(seq);
      const from = 4096 + 512;
      const plan = lab.redo.planRange(from, SIZE, seq);
      let heldMidway = 0;
      // Slices of an odd length, so that pieces are cut at their edges.
      for (let at = from; at < SIZE; at += 53_248) {
        const end = Math.min(SIZE, at + 53_248);
        expect(lab.redo.read(at, end - at, seq, plan).equals(image.subarray(at, end))).toBe(true);
        heldMidway = Math.max(heldMidway, plan.heldBytes);
      }
      expect(heldMidway).toBeGreaterThan(0);
      expect(plan.heldBytes).toBe(0);
      expect(() => lab.redo.read(from, 4096, seq, plan)).toThrow(/expected from/);
    }
    lab.close();
  });

  it('a range plan is stale once an advance or a forgetting of records moved the volume', async () => {
    const lab = await filledLab(17, 30);
    const plan = lab.redo.planRange(0, SIZE, lab.seq);
    expect(lab.redo.planCurrent(plan)).toBe(true);
    lab.redo.advance(Math.floor(lab.seq / 2));
    expect(lab.redo.planCurrent(plan)).toBe(false);
    const again = lab.redo.planRange(0, SIZE, lab.seq);
    lab.redo.forgetAfter(lab.seq - 1);
    expect(lab.redo.planCurrent(again)).toBe(false);
    lab.close();
  });
});

describe('block coverage (pure)', () => {
  it('tells blocks covered whole from blocks the replica shows through', () => {
    const ranges = [
      { offset: 512, length: 3584 },
      { offset: 4096, length: 4096 },
      { offset: 8192, length: 1024 },
      { offset: 16384, length: 8192 },
    ];
    expect(blocksNotCovered(ranges, 0, 7)).toEqual([0, 2, 3, 6]);
    expect(partlyTouchedBlocks(ranges)).toEqual([0, 2]);
  });
});

describe('RedoVolume replica sums', () => {
  it('keeps the replica sums true through advances of 512-byte extents, and a flipped replica byte is damage where the replica shows', async () => {
    const lab = await filledLab(16, 60);
    lab.redo.advance(Math.floor(lab.seq / 3));
    lab.redo.advance(Math.floor((lab.seq * 2) / 3));
    const replicaFile = path.join(lab.dir, 'replica.img');
    const sums = BlockSums.open(path.join(lab.dir, 'replica.sums'), SIZE, true);
    expect(Buffer.from(sums.read(0, SIZE / 4096).buffer).equals(Buffer.from(blockSumsOf(fs.readFileSync(replicaFile)).buffer))).toBe(true);
    sums.close();
    expect(lab.redo.read(0, SIZE).equals(lab.model.imageAt(lab.seq))).toBe(true);
    // Flip a byte of a block no retained version covers (the replica shows through it).
    const latest = lab.model.imageAt(lab.seq);
    const base = lab.model.imageAt(lab.redo.baseSeq);
    let block = -1;
    for (let b = 0; b < SIZE / 4096 && block < 0; b++) {
      const at = b * 4096;
      if (latest.subarray(at, at + 4096).equals(base.subarray(at, at + 4096))) {
        const before = lab.redo.read(at, 4096);
        const fd = fs.openSync(replicaFile, 'r+');
        fs.writeSync(fd, Buffer.from([before[100] ^ 0xff]), 0, 1, at + 100);
        fs.closeSync(fd);
        try {
          lab.redo.read(at, 4096);
        } catch (err) {
          if (err instanceof RetainedDataDamagedError && err.damage.kind === 'replica') block = b;
        }
        if (block < 0) {
          // Covered by a retained version after all: undo the flip and try the next block.
          const fd2 = fs.openSync(replicaFile, 'r+');
          fs.writeSync(fd2, Buffer.from([before[100]]), 0, 1, at + 100);
          fs.closeSync(fd2);
        }
      }
    }
    expect(block).toBeGreaterThanOrEqual(0);
    expect(() => lab.exportHash(lab.seq)).toThrow(RetainedDataDamagedError);
    const hashes = lab.redo.hashes(block * 4096, 4096, 1);
    const { blockHashes } = await import('../../common/block-hash');
    expect(hashes.equals(blockHashes(latest.subarray(block * 4096, block * 4096 + 4096), 4096))).toBe(false);
    lab.close();
  });
});

describe('RedoVolume advance in slices', () => {
  it('between slices, ingest and indexing go on, later points and latest read exact, earlier ones are refused; the end state is the plain advance', async () => {
    const lab = await filledLab(21, 60);
    const rand = prng(22);
    let t = 10_000;
    const to = Math.floor(lab.seq / 2);
    const slices = lab.redo.advanceSlices(to, { gatherBytes: 64 * 1024 });
    let count = 0;
    let begun = false;
    for (let r = slices.next(); !r.done; r = slices.next()) {
      count++;
      // The first slice only checks; from the base's `advancingTo` on, earlier points are refused.
      if (begun) expect(lab.redo.advancingTo).toBe(to);
      begun = lab.redo.advancingTo !== undefined;
      if (begun) expect(() => lab.redo.read(0, 512, to - 1)).toThrow(PointAgedOutError);
      else expect(lab.exportHash(to - 1)).toBe(sha256(lab.model.imageAt(to - 1)));
      // The owner's other work, between two slices: a change set comes in and is indexed.
      await lab.ingest(randomRecords(rand, 3, SIZE, () => t++));
      lab.indexAll();
      expect(sha256(lab.redo.read(0, SIZE))).toBe(sha256(lab.model.imageAt(lab.seq)));
      if (count === 1) expect(lab.exportHash(to + 1)).toBe(sha256(lab.model.imageAt(to + 1)));
    }
    expect(count).toBeGreaterThan(3);
    expect(lab.redo.baseSeq).toBe(to);
    expect(lab.redo.advancingTo).toBeUndefined();
    expect(sha256(fs.readFileSync(path.join(lab.dir, 'replica.img')))).toBe(sha256(lab.model.imageAt(to)));
    for (const seq of [to, lab.seq]) expect(lab.exportHash(seq)).toBe(sha256(lab.model.imageAt(seq)));
    lab.close();
  });

  it('stopped between slices (its owner closed), the advance is unfinished and the next open finishes it', async () => {
    const lab = await filledLab(23, 60);
    const to = Math.floor(lab.seq / 2);
    let written = 0;
    const slices = lab.redo.advanceSlices(to, { gatherBytes: 64 * 1024, afterWritePass: (n) => (written = n) });
    // Stopped after the base said advancingTo and a write pass went to the replica.
    while (written === 0) expect(slices.next().done).toBe(false);
    expect(lab.redo.advancingTo).toBe(to);
    lab.reopen();
    expect(lab.redo.advancingTo).toBe(to);
    lab.redo.finishAdvance();
    expect(lab.redo.baseSeq).toBe(to);
    expect(sha256(fs.readFileSync(path.join(lab.dir, 'replica.img')))).toBe(sha256(lab.model.imageAt(to)));
    expect(lab.exportHash(lab.seq)).toBe(sha256(lab.model.imageAt(lab.seq)));
    lab.close();
  });
});
