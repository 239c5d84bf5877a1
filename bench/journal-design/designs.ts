// Runs the same workload through both designs on real files and measures each phase.

import { createHash } from 'crypto';
import * as fs from 'fs';
import * as lz4 from 'lz4';
import * as path from 'path';
import { writeFully } from '../../common/fsutil';
import { decodeFrame } from '../../proto/frames';
import { ChangeBatch, VolumeSpec } from '../../proto/types';
import { validateChangeSet } from '../../proto/validate';
import { DataLayout } from '../../receiver/layout';
import { undoRecordsNewestFirst } from '../../receiver/storage/journal';
import { listSegments } from '../../receiver/storage/segments';
import { VolumeStore } from '../../receiver/volume-store';
import { copyImage, diskBytesUnder, evict, filesUnder } from './image-file';
import { addPhases, measure, measureAsync, NO_PHASE, Phase } from './io-counter';
import { ProductionRedo, SimulatedCrash } from './redo-production';
import { fillReplica, MixedPool, SpooledFrame, totalWrites, VOLUME_ID, workloadFrames, WorkloadSpec } from './workload';

/** Segment size of spool and journal: small enough that retention can prune at fine grain. */
export const SEGMENT_BYTES = 16 * 1024 * 1024;
/** Change sets spooled per group commit, like a pipelining agent (as bench/receiver.ts). */
const INGEST_WINDOW = 16;

export interface DesignResult {
  ingest: Phase;
  /** Undo: ApplyGroup (read old data, journal + fsync, write replica, sums, checkpoint). Redo: index updates (SQLite). */
  apply: Phase;
  /** Redo: the advance that ages out every point before the oldest retained one. Undo: pruning journal segments. */
  ageOut: Phase;
  exportLatest: Phase;
  exportOldest: Phase;
  latestHash: string;
  oldestHash: string;
  /** Source bytes whose points were aged out by `ageOut`. */
  agedSourceBytes: number;
  /** Bytes of the retained history on disk (undo journal, or redo spool) after age-out. */
  retainedDiskBytes: number;
  /** Source bytes written in the seqs that history covers. */
  retainedSourceBytes: number;
}

export interface UndoResult extends DesignResult {
  /** Old data in the journal, and what lz4 (per record, raw where it does not shrink) makes of it. */
  oldDataBytes: number;
  oldDataLz4Bytes: number;
}

export interface RedoResult extends DesignResult {
  reopenSeconds: number;
  reopenSameIndex: boolean;
  /** Extents in the on-disk index with the whole churn retained, and the index files' size then. */
  index: { extents: number; diskBytes: number };
  crashCheck: { toSeq: number; sameImage: boolean; reopenSeconds: number } | undefined;
}

export interface RunContext {
  dir: string;
  spec: WorkloadSpec;
  pool: MixedPool;
  /** The oldest retained point: every point before it ages out. */
  oldestSeq: number;
  /** Redo: seqs aged out per advance (the whole aged range in one advance when >= oldestSeq). */
  advanceSeqs: number;
  progress: (what: string) => void;
}

function hashFile(file: string): string {
  const hash = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(4 * 1024 * 1024);
    for (let n = fs.readSync(fd, buf); n > 0; n = fs.readSync(fd, buf)) hash.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  fs.rmSync(file, { force: true });
  return hash.digest('hex');
}

/** Windows of INGEST_WINDOW frames; frames are built here, outside any measured phase. */
function* windows(spec: WorkloadSpec, pool: MixedPool): Generator<SpooledFrame[]> {
  let window: SpooledFrame[] = [];
  for (const f of workloadFrames(spec, pool)) {
    window.push(f);
    if (window.length === INGEST_WINDOW) {
      yield window;
      window = [];
    }
  }
  if (window.length > 0) yield window;
}

/** Receiver-side intake of one frame, as receiver/session.ts does it before storing. */
function intake(raw: Buffer, volumeBytes: number): ChangeBatch {
  const frame = decodeFrame(raw);
  if (!frame.changeSet) throw new Error('bench frame holds no change set');
  return validateChangeSet(frame.changeSet, volumeBytes);
}

// ---- undo: the receiver's own code ------------------------------------------------------------

async function ingestUndo(store: VolumeStore, ctx: RunContext): Promise<Phase> {
  let phase = NO_PHASE;
  for (const window of windows(ctx.spec, ctx.pool)) {
    phase = addPhases(
      phase,
      await measureAsync(async () => {
        await Promise.all(
          window.map(async (f) => {
            if ((await store.ingest(f.frame, intake(f.frame, ctx.spec.volumeBytes))) !== 'stored') throw new Error(`change set ${f.firstSeq} was not stored`);
          }),
        );
      }),
    );
  }
  return phase;
}

function applyUndo(store: VolumeStore): Phase {
  return measure(() => {
    while (store.hasWork()) {
      if (!store.applyNext()) throw new Error(`apply stalled at seq ${store.appliedSeq}`);
    }
    store.saveCheckpoint();
  });
}

/** Export of point `seq` as receiver/export.ts does it (without its sums check): clone, wind back. */
function exportUndo(layout: DataLayout, volumeBytes: number, seq: number, out: string): void {
  const src = fs.openSync(layout.replicaFile(VOLUME_ID), 'r');
  const dst = fs.openSync(out, 'w', 0o600);
  try {
    copyImage(src, dst, volumeBytes);
    for (const rec of undoRecordsNewestFirst(layout.journalDir(VOLUME_ID), seq)) {
      writeFully(dst, rec.zero ? Buffer.alloc(rec.length) : rec.data, rec.offset);
    }
    fs.fsyncSync(dst);
  } finally {
    fs.closeSync(dst);
    fs.closeSync(src);
  }
}

function oldDataCompression(journalDir: string): { raw: number; lz4: number } {
  let raw = 0;
  let packed = 0;
  for (const rec of undoRecordsNewestFirst(journalDir, 0)) {
    if (rec.zero) continue;
    const out = Buffer.allocUnsafe(lz4.encodeBound(rec.data.length));
    const size = lz4.encodeBlock(rec.data, out);
    raw += rec.data.length;
    packed += size > 0 && size < rec.data.length ? size : rec.data.length;
  }
  return { raw, lz4: packed };
}

function measureExport(files: () => string[], out: string, run: () => void): { phase: Phase; hash: string } {
  evict(files());
  const phase = measure(run);
  return { phase, hash: hashFile(out) };
}

export async function runUndo(ctx: RunContext): Promise<UndoResult> {
  const { spec } = ctx;
  const layout = new DataLayout(path.join(ctx.dir, 'undo'));
  const volumeSpec: VolumeSpec = { volumeId: VOLUME_ID, sizeBytes: spec.volumeBytes, blockSize: 4096 };
  fs.mkdirSync(layout.volumeDir(VOLUME_ID), { recursive: true });
  ctx.progress('undo: fill replica');
  fillReplica(layout.replicaFile(VOLUME_ID), spec.volumeBytes, ctx.pool);
  const store = VolumeStore.open(layout, volumeSpec, 0, SEGMENT_BYTES, 'undo');
  try {
    ctx.progress('undo: ingest');
    const ingest = await ingestUndo(store, ctx);
    ctx.progress('undo: apply');
    // A large replica is not in the page cache: old data comes from the disk (the hot set
    // comes back into the cache as apply reads it). The spool just written stays cached.
    evict([layout.replicaFile(VOLUME_ID)]);
    const apply = applyUndo(store);
    const newest = store.appliedSeq;
    const ageOut = measure(() => void store.pruneJournalThrough(ctx.oldestSeq));
    const journalDir = layout.journalDir(VOLUME_ID);
    const history = (): string[] => [layout.replicaFile(VOLUME_ID), ...filesUnder(journalDir)];
    ctx.progress('undo: export oldest');
    const out = path.join(ctx.dir, 'undo-export.img');
    const oldest = measureExport(history, out, () => exportUndo(layout, spec.volumeBytes, ctx.oldestSeq, out));
    ctx.progress('undo: export latest');
    const latest = measureExport(history, out, () => exportUndo(layout, spec.volumeBytes, newest, out));
    const firstHeld = listSegments(journalDir, 'jnl')[0]?.firstSeq ?? newest + 1;
    ctx.progress('undo: lz4 of old data');
    const compression = oldDataCompression(journalDir);
    return {
      ingest,
      apply,
      ageOut,
      exportLatest: latest.phase,
      exportOldest: oldest.phase,
      latestHash: latest.hash,
      oldestHash: oldest.hash,
      agedSourceBytes: ctx.oldestSeq * spec.writeBytes,
      retainedDiskBytes: diskBytesUnder(journalDir),
      retainedSourceBytes: (totalWrites(spec) - (firstHeld - 1)) * spec.writeBytes,
      oldDataBytes: compression.raw,
      oldDataLz4Bytes: compression.lz4,
    };
  } finally {
    store.close();
    fs.rmSync(layout.volumeDir(VOLUME_ID), { recursive: true, force: true });
  }
}

// ---- redo: the receiver's redo code (receiver/redo/) --------------------------------------

/** Ingest as for undo (intake, append, one fsync per window); the index updates are timed apart. */
async function ingestRedo(store: ProductionRedo, ctx: RunContext): Promise<{ ingest: Phase; apply: Phase }> {
  let ingest = NO_PHASE;
  let apply = NO_PHASE;
  for (const window of windows(ctx.spec, ctx.pool)) {
    ingest = addPhases(
      ingest,
      await measureAsync(async () => {
        for (const f of window) {
          const batch = intake(f.frame, ctx.spec.volumeBytes);
          store.append(f.frame, batch.firstSeq, batch.lastSeq);
        }
        await store.sync();
      }),
    );
    apply = addPhases(apply, measure(() => store.indexDurable()));
  }
  return { ingest, apply };
}

function reopen(dir: string, spec: WorkloadSpec, files: string[]): { store: ProductionRedo; seconds: number } {
  evict(files);
  let store: ProductionRedo | undefined;
  const { seconds } = measure(() => {
    store = ProductionRedo.open(dir, spec.volumeBytes, SEGMENT_BYTES);
  });
  return { store: store as ProductionRedo, seconds };
}

/**
 * Stops an advance after its first write pass (as a kill would: the base says advancingTo, the
 * replica holds part of the versions, unsynced), opens the store again (which finishes the
 * advance) and compares the image of the new oldest point with the one exported before.
 */
function crashCheck(store: ProductionRedo, ctx: RunContext, dir: string): { store: ProductionRedo; check: RedoResult['crashCheck'] } {
  const toSeq = Math.floor((ctx.oldestSeq + store.newestSeq) / 2);
  const out = path.join(ctx.dir, 'redo-crash.img');
  store.exportPoint(toSeq, out);
  const before = hashFile(out);
  try {
    store.advance(toSeq, true);
    throw new Error('the simulated crash did not happen');
  } catch (err) {
    if (!(err instanceof SimulatedCrash)) throw err;
  }
  store.close();
  const { store: reopened, seconds } = reopen(dir, ctx.spec, []);
  reopened.exportPoint(toSeq, out);
  return { store: reopened, check: { toSeq, sameImage: hashFile(out) === before, reopenSeconds: seconds } };
}

export async function runRedo(ctx: RunContext, withCrashCheck: boolean): Promise<RedoResult> {
  const { spec } = ctx;
  const dir = path.join(ctx.dir, 'redo');
  fs.mkdirSync(dir, { recursive: true });
  ctx.progress('redo: fill replica');
  fillReplica(path.join(dir, 'replica.img'), spec.volumeBytes, ctx.pool);
  let store = ProductionRedo.open(dir, spec.volumeBytes, SEGMENT_BYTES);
  try {
    ctx.progress('redo: ingest + index');
    const { ingest, apply } = await ingestRedo(store, ctx);
    const newest = store.newestSeq;
    // Index size per write while the whole churn is retained (SQLite keeps freed pages after age-out).
    const extents = store.volume.retainedExtents;
    const indexDiskBytes = store.indexFiles.reduce((n, f) => n + fs.statSync(f).size, 0);
    const history = (): string[] => [store.replicaFile, ...store.spoolFiles, ...store.indexFiles];
    evict(history());
    ctx.progress('redo: age-out (advance)');
    const ageOut = measure(() => {
      for (let to = Math.min(ctx.advanceSeqs, ctx.oldestSeq); ; to = Math.min(to + ctx.advanceSeqs, ctx.oldestSeq)) {
        store.advance(to);
        if (to === ctx.oldestSeq) break;
      }
    });
    const retainedAfterAgeOut = store.volume.retainedExtents;
    store.close();
    ctx.progress('redo: reopen (replays the spool after the index checkpoint)');
    const opened = reopen(dir, spec, history());
    store = opened.store;
    const reopenSameIndex = store.volume.retainedExtents === retainedAfterAgeOut && store.newestSeq === newest;
    ctx.progress('redo: export oldest');
    const out = path.join(ctx.dir, 'redo-export.img');
    const oldest = measureExport(history, out, () => store.exportPoint(ctx.oldestSeq, out));
    ctx.progress('redo: export latest');
    const latest = measureExport(history, out, () => store.exportPoint(newest, out));
    const retainedDiskBytes = diskBytesUnder(path.join(dir, 'spool'));
    const retainedSourceBytes = (totalWrites(spec) - (store.spoolFirstSeq - 1)) * spec.writeBytes;
    let check: RedoResult['crashCheck'];
    if (withCrashCheck) {
      ctx.progress('redo: crash mid-advance, reopen, compare');
      ({ store, check } = crashCheck(store, ctx, dir));
    }
    return {
      ingest,
      apply,
      ageOut,
      exportLatest: latest.phase,
      exportOldest: oldest.phase,
      latestHash: latest.hash,
      oldestHash: oldest.hash,
      agedSourceBytes: ctx.oldestSeq * spec.writeBytes,
      retainedDiskBytes,
      retainedSourceBytes,
      reopenSeconds: opened.seconds,
      reopenSameIndex,
      index: { extents, diskBytes: indexDiskBytes },
      crashCheck: check,
    };
  } finally {
    store.destroy();
  }
}
