// The redo advance's write passes on an apply thread (receiver/redo/write-pass.ts, HostedPassWriter):
// the ingest thread hands a pass over and goes on; a kill -9 or a close while a pass is being
// written leaves the replica exact at every retained point.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildChangeSet } from '../../agent/transport/change-set';
import { encodeFrame } from '../../proto/frames';
import { HostedPassWriter } from '../../receiver/apply/apply-thread';
import { DataLayout } from '../../receiver/layout';
import { BaseFile } from '../../receiver/redo/base-file';
import { RedoEngine } from '../../receiver/redo/redo-engine';
import { RedoVolume } from '../../receiver/redo/redo-volume';
import { packPass } from '../../receiver/redo/write-pass';
import { blockSumsOf } from '../../receiver/storage/block-sums';
import { Spool } from '../../receiver/storage/spool';
import { REPO_ROOT } from '../helpers/receiver-process';
import { tempDirs } from '../helpers/temp-dirs';
import { prng, randomRecords, sha256, VolumeModel } from '../helpers/volume-model';

const tmp = tempDirs();
const SIZE = 2 * 1024 * 1024;
const VOLUME = 'vol-h';
const SEGMENT_BYTES = 256 * 1024;

describe('HostedPassWriter', () => {
  it('writes and sums a pass on an apply thread: submit returns before it is written; wait and done both give its sums', async () => {
    const dir = tmp('pass');
    const file = path.join(dir, 'replica.img');
    const fd = fs.openSync(file, 'w+');
    const writer = new HostedPassWriter();
    try {
      const a = Buffer.alloc(3 * 4096 + 512, 0x5a);
      const b = Buffer.alloc(8192, 0xa5);
      const pass = packPass(fd, [
        { offset: 65536 + a.length, data: b },
        { offset: 65536, data: a },
      ]);
      expect(pass.runs).toEqual([{ offset: 65536, start: 0, end: a.length + b.length }]);
      const ticket = writer.submit(pass);
      // The pass went to another thread: nothing of it is known on this one yet.
      expect(ticket.result).toBeUndefined();
      await ticket.done;
      const written = fs.readFileSync(file);
      expect(written.subarray(65536, 65536 + a.length).equals(a)).toBe(true);
      expect(written.subarray(65536 + a.length, 65536 + a.length + b.length).equals(b)).toBe(true);
      const sums = writer.wait(ticket);
      const whole = written.subarray(65536, 65536 + 5 * 4096);
      expect(sums.runs).toEqual([{ first: 16, sums: blockSumsOf(whole) }]);
      // Waited for on this thread (a close finishing an advance): the same, without an await.
      const again = writer.submit(packPass(fd, [{ offset: 0, data: Buffer.alloc(4096, 1) }]));
      expect(writer.wait(again).runs).toEqual([{ first: 0, sums: blockSumsOf(Buffer.alloc(4096, 1)) }]);
    } finally {
      writer.release();
      fs.closeSync(fd);
    }
  });
});

/** A volume's spool and redo store with a model of the source; change sets indexed as apply does. */
class EngineLab {
  readonly layout: DataLayout;
  readonly model = new VolumeModel(SIZE);
  seq = 0;
  spool: Spool;
  engine: RedoEngine;

  constructor(readonly root: string) {
    this.layout = new DataLayout(root);
    fs.mkdirSync(this.layout.volumeDir(VOLUME), { recursive: true });
    this.spool = Spool.open(this.layout.spoolDir(VOLUME), SEGMENT_BYTES);
    this.engine = RedoEngine.open(this.layout, VOLUME, SIZE, this.spool).engine;
  }

  async fill(seed: number, sets: number): Promise<void> {
    const rand = prng(seed);
    let t = 1;
    for (let i = 0; i < sets; i++) {
      const records = randomRecords(rand, 1 + Math.floor(rand() * 12), SIZE, () => t++);
      const first = this.seq + 1;
      records.forEach((r, k) => this.model.add(first + k, r));
      this.seq += records.length;
      await this.spool.append(encodeFrame({ changeSet: buildChangeSet(VOLUME, first, records, 'exact') }), first, this.seq);
    }
    const cursor = this.spool.cursor(0);
    const records = [];
    for (let r = cursor.next(); r; r = cursor.next()) records.push({ firstSeq: r.firstSeq, lastSeq: r.lastSeq, afterSeq: r.firstSeq - 1, segment: r.segment, recordOffset: r.recordOffset, frame: r.frame });
    cursor.close();
    this.engine.stepSync({ records, autoAfterUs: 0, capturedUs: 0 });
    this.engine.syncData();
  }

  close(): void {
    this.engine.close();
    this.spool.close();
  }

  reopen(): void {
    this.spool = Spool.open(this.layout.spoolDir(VOLUME), SEGMENT_BYTES);
    this.engine = RedoEngine.open(this.layout, VOLUME, SIZE, this.spool).engine;
  }

  base(): { baseSeq: number; advancingTo?: number } {
    return BaseFile.read(path.join(this.layout.volumeDir(VOLUME), 'base')).state;
  }

  /** The image of every given point (read as an export in another process reads it) matches the model. */
  expectExact(seqs: number[]): void {
    const dir = this.layout.volumeDir(VOLUME);
    const volume = RedoVolume.openReadOnly({ dir, spoolDir: this.layout.spoolDir(VOLUME), sizeBytes: SIZE });
    try {
      for (const seq of seqs) expect(sha256(volume.read(0, SIZE, seq)), `point ${seq}`).toBe(sha256(this.model.imageAt(seq)));
    } finally {
      volume.close();
    }
    const replica = fs.readFileSync(path.join(dir, 'replica.img'));
    const sums = fs.readFileSync(path.join(dir, 'replica.sums'));
    expect(sums.equals(Buffer.from(blockSumsOf(Buffer.concat([replica, Buffer.alloc(SIZE - replica.length)])).buffer))).toBe(true);
  }
}

describe('RedoEngine advance with its passes on an apply thread', () => {
  it('kill -9 while a hosted pass is being written: the reopened store finishes the advance and every retained point is exact', async () => {
    const lab = new EngineLab(tmp('hosted-kill'));
    await lab.fill(31, 80);
    const to = Math.floor((lab.seq * 2) / 3);
    lab.close();
    const dist = (m: string): string => JSON.stringify(path.join(REPO_ROOT, 'dist/receiver', m));
    const script = `
      const { DataLayout } = require(${dist('layout.js')});
      const { Spool } = require(${dist('storage/spool.js')});
      const { RedoEngine } = require(${dist('redo/redo-engine.js')});
      const layout = new DataLayout(${JSON.stringify(lab.root)});
      const spool = Spool.open(layout.spoolDir(${JSON.stringify(VOLUME)}), ${SEGMENT_BYTES});
      const { engine } = RedoEngine.open(layout, ${JSON.stringify(VOLUME)}, ${SIZE}, spool);
      let slices = 0;
      // Killed at a slice end after a pass was handed to the apply thread (it may be mid-write).
      engine.sliceHooks = { gatherBytes: 64 * 1024, betweenSlices: async () => { if (++slices === 4) process.kill(process.pid, 'SIGKILL'); } };
      engine.pruneThroughAsync(${to}).then(() => process.exit(3));
    `;
    const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(child.stderr).toBe('');
    expect(child.signal).toBe('SIGKILL');
    expect(lab.base()).toEqual({ baseSeq: 0, advancingTo: to });
    lab.reopen();
    expect(lab.base()).toEqual({ baseSeq: to });
    lab.close();
    lab.expectExact([to, Math.floor((to + lab.seq) / 2), lab.seq]);
  });

  it('a close while a hosted pass is being written finishes the advance first', async () => {
    const lab = new EngineLab(tmp('hosted-close'));
    await lab.fill(32, 80);
    const to = Math.floor(lab.seq / 2);
    let slices = 0;
    lab.engine.sliceHooks = {
      gatherBytes: 64 * 1024,
      betweenSlices: async () => {
        if (++slices === 4) lab.close();
      },
    };
    expect(await lab.engine.pruneThroughAsync(to)).toBe(0);
    expect(slices).toBe(4);
    expect(lab.base()).toEqual({ baseSeq: to });
    lab.expectExact([to, lab.seq]);
  });
});
