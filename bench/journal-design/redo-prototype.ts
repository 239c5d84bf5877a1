// A redo-style retention journal (the design of journal-based CDP products), as a prototype
// beside the receiver's undo journal:
// - the spool records (frames as they arrive, lz4 inside) ARE the retained journal;
// - apply only indexes them (ExtentIndex): nothing is read from or written to the replica;
// - the replica holds the image at the oldest retained point (`baseSeq`) and is advanced as
//   points age out: the newest version of each block up to the new base is written ONCE;
// - export of point P = replica + the newest version <= P of each block, through the index.
//
// Crash safety: a record is durable once the spool append is fsync'd (as today). The index is
// memory only and rebuilt from the spool on open. `base` (a small file, replaced atomically)
// holds baseSeq and, during an advance, the seq it advances to: written before the replica
// is touched, so an open after a crash mid-advance finds it and runs the advance again. Redo
// records are idempotent (each block gets the newest version <= the target, whatever the
// replica held), and no spool segment the advance needs is deleted before `base` says done.

import * as fs from 'fs';
import * as path from 'path';
import { fsyncDir, writeFileAtomic, writeParts } from '../../common/fsutil';
import { decodeFrame, ferry } from '../../proto/frames';
import { ChangeBatch, ChangeExtent, ExtentKind } from '../../proto/types';
import { validateChangeSet } from '../../proto/validate';
import { BLOCK, ExtentIndex, VersionRun } from './extent-index';
import { copyImage } from './image-file';
import { FrameLocation, RedoLog } from './redo-log';

/** Decompressed record payloads held at once while versions are gathered for one write pass. */
const GATHER_BYTES = 64 * 1024 * 1024;
const MAX_WRITEV_PARTS = 512;

interface BaseState {
  baseSeq: number;
  /** Set while an advance runs: the replica may hold any version up to it. */
  advancingTo?: number;
}

/** Test hook: throws part-way through an advance's replica writes, like a kill -9 would stop it. */
export interface AdvanceFaults {
  crashAfterWrites?: number;
}

export class RedoStore {
  private constructor(
    private readonly dir: string,
    private readonly volumeBytes: number,
    private readonly replicaFd: number,
    private readonly log: RedoLog,
    private readonly index: ExtentIndex,
    private base: BaseState,
  ) {}

  /** Opens (or creates) the store: rebuilds the index from the spool, finishes an interrupted advance. */
  static open(dir: string, volumeBytes: number, segmentBytes: number): RedoStore {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const baseFile = path.join(dir, 'base');
    const base: BaseState = fs.existsSync(baseFile) ? (JSON.parse(fs.readFileSync(baseFile, 'utf8')) as BaseState) : { baseSeq: 0 };
    const index = new ExtentIndex(volumeBytes);
    const log = RedoLog.open(path.join(dir, 'spool'), segmentBytes, (where, frame) => {
      const extents = extentsOf(frame).filter((e) => e.seq > base.baseSeq);
      index.add(where, extents);
    });
    const replicaFile = path.join(dir, 'replica.img');
    const fd = fs.openSync(replicaFile, fs.existsSync(replicaFile) ? 'r+' : 'w+', 0o600);
    if (fs.fstatSync(fd).size !== volumeBytes) fs.ftruncateSync(fd, volumeBytes);
    const store = new RedoStore(dir, volumeBytes, fd, log, index, base);
    if (base.advancingTo !== undefined) store.advance(base.advancingTo);
    return store;
  }

  get baseSeq(): number {
    return this.base.baseSeq;
  }

  get newestSeq(): number {
    return Math.max(this.index.newestSeq, this.base.baseSeq);
  }

  get spoolFiles(): string[] {
    return this.log.files;
  }

  get replicaFile(): string {
    return path.join(this.dir, 'replica.img');
  }

  get spoolFirstSeq(): number {
    return this.log.firstSeqHeld;
  }

  /** Ingest, first half: the frame goes to the spool as it arrived (durable at `sync`). */
  append(frame: Buffer, batch: ChangeBatch): FrameLocation {
    return this.log.append(frame, batch.firstSeq, batch.lastSeq);
  }

  sync(): void {
    this.log.sync();
  }

  /** Apply: index a durable record. Reads and writes nothing. */
  apply(where: FrameLocation, batch: ChangeBatch): void {
    this.index.add(where, batch.extents);
  }

  indexFigures(): { extents: number; records: number; memory: ReturnType<ExtentIndex['memoryBytes']> } {
    return { extents: this.index.retainedExtents, records: this.index.retainedRecords, memory: this.index.memoryBytes() };
  }

  /** Newest retained seq of each block (0: the replica's), for comparing two opens. */
  blockSeqs(): Float64Array {
    const seqs = new Float64Array(this.volumeBytes / BLOCK);
    for (const run of this.index.versionsAt(Infinity)) seqs.fill(this.index.seqOf(run.extent), run.offset / BLOCK, (run.offset + run.length) / BLOCK);
    return seqs;
  }

  /**
   * Ages out every point before `toSeq`: the replica becomes the image at `toSeq`. Returns the
   * bytes written to the replica.
   */
  advance(toSeq: number, faults: AdvanceFaults = {}): number {
    if (toSeq < this.base.baseSeq) throw new Error(`cannot advance back from ${this.base.baseSeq} to ${toSeq}`);
    this.saveBase({ baseSeq: this.base.baseSeq, advancingTo: toSeq });
    const written = this.writeVersions(this.replicaFd, this.index.versionsAt(toSeq), faults);
    fs.fdatasyncSync(this.replicaFd);
    this.saveBase({ baseSeq: toSeq });
    this.index.dropThrough(toSeq);
    this.log.dropThrough(toSeq);
    return written;
  }

  /** Writes the image of point `seq` (baseSeq..newest) to `out`, fsync'd. */
  exportPoint(seq: number, out: string): void {
    if (seq < this.base.baseSeq || this.base.advancingTo !== undefined) throw new Error(`point ${seq} is no longer retained`);
    const fd = fs.openSync(out, 'w', 0o600);
    try {
      copyImage(this.replicaFd, fd, this.volumeBytes);
      this.writeVersions(fd, this.index.versionsAt(seq), {});
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  private saveBase(state: BaseState): void {
    writeFileAtomic(path.join(this.dir, 'base'), JSON.stringify(state));
    this.base = state;
  }

  /**
   * Writes the chosen versions: records are read in spool order (each once, decompressed),
   * and each pass's runs are written sorted by volume offset, adjacent runs in one pwritev.
   */
  private writeVersions(fd: number, runs: VersionRun[], faults: AdvanceFaults): number {
    const byRecord = new Map<number, VersionRun[]>();
    for (const run of runs) {
      const { recordId } = this.index.location(run.extent);
      const list = byRecord.get(recordId);
      if (list) list.push(run);
      else byRecord.set(recordId, [run]);
    }
    let pending: Array<{ offset: number; data: Buffer }> = [];
    let pendingBytes = 0;
    let written = 0;
    const flush = (): void => {
      written += writeSorted(fd, pending);
      if (faults.crashAfterWrites !== undefined && written >= faults.crashAfterWrites) throw new SimulatedCrash();
      pending = [];
      pendingBytes = 0;
    };
    for (const recordId of [...byRecord.keys()].sort((a, b) => a - b)) {
      const recRuns = byRecord.get(recordId) as VersionRun[];
      const data = this.payloadOf(this.index.location(recRuns[0].extent).record);
      for (const run of recRuns) {
        const { dataOffset } = this.index.location(run.extent);
        const from = dataOffset + (run.offset - this.index.extentOffset(run.extent));
        pending.push({ offset: run.offset, data: dataOffset < 0 ? Buffer.alloc(run.length) : data.subarray(from, from + run.length) });
      }
      pendingBytes += data.length;
      if (pendingBytes >= GATHER_BYTES) flush();
    }
    flush();
    return written;
  }

  /** The decompressed payload of a spool record (the spool record's CRC is checked on read). */
  private payloadOf(where: FrameLocation): Buffer {
    const frame = decodeFrame(this.log.read(where));
    if (!frame.changeSet) throw new Error('redo record holds no change set');
    return validateChangeSet(frame.changeSet, this.volumeBytes, false).data;
  }

  close(): void {
    this.log.close();
    fs.closeSync(this.replicaFd);
  }

  /** Removes everything (the bench's cleanup). */
  destroy(): void {
    this.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
    fsyncDir(path.dirname(this.dir));
  }
}

export class SimulatedCrash extends Error {
  constructor() {
    super('simulated crash mid-advance');
  }
}

/**
 * The extents of a spooled frame, without decompressing its payload (rebuilding the index):
 * the frame was validated at ingest and its spool record's CRC was checked on this read.
 */
function extentsOf(frame: Buffer): ChangeExtent[] {
  const cs = decodeFrame(frame).changeSet;
  if (!cs) throw new Error('redo record holds no change set');
  const firstSeq = cs.firstSeq ?? 0;
  let dataOffset = 0;
  return (cs.extents ?? []).map((ext, i) => {
    const kind = EXTENT_KINDS[ext.kind ?? ferry.Extent.Kind.WRITE] ?? 'noop';
    const out: ChangeExtent = { seq: firstSeq + i, kind, offset: ext.offset ?? 0, length: ext.length ?? 0, captureTimeUs: ext.captureTimeUs ?? 0, dataOffset };
    if (kind === 'write') dataOffset += out.length;
    return out;
  });
}

const EXTENT_KINDS: Partial<Record<number, ExtentKind>> = {
  [ferry.Extent.Kind.WRITE]: 'write',
  [ferry.Extent.Kind.DISCARD]: 'discard',
  [ferry.Extent.Kind.FLUSH]: 'flush',
  [ferry.Extent.Kind.NOOP]: 'noop',
};

/** Writes `pieces` sorted by offset, contiguous ones in one pwritev; returns the bytes. */
function writeSorted(fd: number, pieces: Array<{ offset: number; data: Buffer }>): number {
  pieces.sort((a, b) => a.offset - b.offset);
  let written = 0;
  for (let i = 0; i < pieces.length; ) {
    const parts = [pieces[i].data];
    let end = pieces[i].offset + pieces[i].data.length;
    let j = i + 1;
    while (j < pieces.length && pieces[j].offset === end && parts.length < MAX_WRITEV_PARTS) {
      parts.push(pieces[j].data);
      end += pieces[j].data.length;
      j++;
    }
    written += writeParts(fd, parts, pieces[i].offset);
    i = j;
  }
  return written;
}
