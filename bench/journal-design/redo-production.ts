// The receiver's redo code (receiver/redo/) driven the way a volume store drives it: frames go
// to the production Spool (group commit), apply indexes the durable records (the frames it holds
// from ingest, the spool read for record headers only), age-out advances the replica and then
// prunes the spool through the new base.

import * as fs from 'fs';
import * as path from 'path';
import { fsyncDir } from '../../common/fsutil';
import { RedoVolume } from '../../receiver/redo/redo-volume';
import { Spool } from '../../receiver/storage/spool';

/** A crash the crash check simulates part-way through an advance's replica writes. */
export class SimulatedCrash extends Error {
  constructor() {
    super('simulated crash mid-advance');
  }
}

export class ProductionRedo {
  private held = new Map<number, { lastSeq: number; frame: Buffer }>();
  private pendingDurable: Array<Promise<void>> = [];

  private constructor(
    private readonly dir: string,
    private readonly spool: Spool,
    readonly volume: RedoVolume,
  ) {}

  /** Opens spool and redo store; replays (indexes) the spool after the index checkpoint; finishes an advance. */
  static open(dir: string, volumeBytes: number, segmentBytes: number): ProductionRedo {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const spool = Spool.open(path.join(dir, 'spool'), segmentBytes);
    const volume = RedoVolume.open({ dir, spoolDir: path.join(dir, 'spool'), sizeBytes: volumeBytes });
    const store = new ProductionRedo(dir, spool, volume);
    store.indexDurable();
    volume.finishAdvance();
    return store;
  }

  get newestSeq(): number {
    return Math.max(this.volume.indexedThrough, this.volume.baseSeq);
  }

  get replicaFile(): string {
    return path.join(this.dir, 'replica.img');
  }

  get spoolFiles(): string[] {
    const spoolDir = path.join(this.dir, 'spool');
    return fs.readdirSync(spoolDir).map((f) => path.join(spoolDir, f));
  }

  get indexFiles(): string[] {
    return fs.readdirSync(this.dir).filter((f) => f.startsWith('redo-index.db')).map((f) => path.join(this.dir, f));
  }

  get spoolFirstSeq(): number {
    return this.spool.firstSeqHeld;
  }

  /** Ingest, first half: the spool append (durable at `sync`). */
  append(frame: Buffer, firstSeq: number, lastSeq: number): void {
    this.pendingDurable.push(this.spool.append(frame, firstSeq, lastSeq));
    this.held.set(firstSeq, { lastSeq, frame });
  }

  async sync(): Promise<void> {
    this.spool.flush();
    await Promise.all(this.pendingDurable);
    this.pendingDurable = [];
  }

  /** Apply: indexes every durable record after the index checkpoint, from the frames held since ingest. */
  indexDurable(): void {
    const cursor = this.spool.cursor(this.volume.replayAfter);
    const skip = (first: number, last: number): boolean => this.held.get(first)?.lastSeq === last;
    const records = [];
    try {
      for (let r = cursor.next(undefined, skip); r; r = cursor.next(undefined, skip)) {
        if (r.lostOnly) throw new Error(`spool records ${r.firstSeq}..${r.lastSeq} are damaged`);
        const frame = r.frame.length > 0 ? r.frame : (this.held.get(r.firstSeq)?.frame as Buffer);
        records.push({ segment: r.segment, recordOffset: r.recordOffset, lastSeq: r.lastSeq, frame });
      }
    } finally {
      cursor.close();
    }
    this.volume.indexRecords(records);
    this.held.clear();
  }

  /** Ages out every point before `toSeq`, then deletes the spool segments the base no longer needs. */
  advance(toSeq: number, crashAfterPass = false): number {
    const written = this.volume.advance(toSeq, crashAfterPass ? { afterWritePass: () => { throw new SimulatedCrash(); } } : {});
    this.spool.pruneThrough(this.volume.baseSeq);
    return written;
  }

  exportPoint(seq: number, out: string): void {
    const fd = fs.openSync(out, 'w+', 0o600);
    try {
      this.volume.exportTo(fd, seq);
    } finally {
      fs.closeSync(fd);
    }
  }

  close(): void {
    this.spool.close();
    this.volume.close();
  }

  destroy(): void {
    this.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
    fsyncDir(path.dirname(this.dir));
  }
}
