import { BLOCK_HASH_BYTES } from '../../common/block-hash';
import { BlockHasher, sharedBuffer } from '../capture/block-hasher';
import type { ByteRange, CaptureSource, ProtectedVolume, RemoteHashes } from '../capture/types';
import { VolumeReader } from '../capture/volume-reader';
import { BlockCheck, classifyBlock } from './classify';

/** Bytes read and compared per step. */
const CHUNK_BYTES = 4 * 1024 * 1024;
/** Checks of a suspect block at most: busy blocks are retried, a divergence is confirmed once. */
export const MAX_CHECKS = 6;
/** Longest wait for the capture source to catch up (a scan pass, a drain) in one check. */
const CATCH_UP_MS = 30 * 60_000;
const TAG_HOLD_MS = 300;
/** Cuts refused in a row (a device in BITMAP mode, suspended...) before a check gives up. */
const TAG_TRIES = 30;
const TAG_RETRY_MS = 1000;
const PROGRESS_EVERY_MS = 250;

export interface VerifyDeps {
  source: CaptureSource;
  remote: RemoteHashes;
  /** Resolves once the receiver holds the volume durably through `seq`. */
  whenDurable(volumeId: string, seq: number): Promise<void>;
  /** The agent is stopping, or whoever asked for the verify went away. */
  isStopping(): boolean;
}

export interface VerifyOptions {
  repair: boolean;
  /** Offsets listed in the report at most (the counts are always complete). */
  maxListed: number;
  onProgress(p: VerifyProgress): void;
}

export interface VerifyProgress {
  volumeId: string;
  phase: 'compare' | 'check' | 'repair';
  doneBytes: number;
  totalBytes: number;
  /** Blocks that differed and are not settled yet. */
  suspects: number;
  /** Number of the running check of the suspects (0 during the first compare). */
  check: number;
}

export interface VolumeVerifyReport {
  volumeId: string;
  sizeBytes: number;
  blockSize: number;
  checkedBytes: number;
  blocksCompared: number;
  divergedBlocks: number;
  /** Byte offsets of the first diverged blocks (at most maxListed). */
  divergedOffsets: number[];
  busyBlocks: number;
  busyOffsets: number[];
  /** Checks the suspects needed after the first compare. */
  checks: number;
  repaired: boolean;
  repairSentBytes?: number;
  repairThroughSeq?: number;
  durationMs: number;
}

/** What `ferry agent verify` gets back. */
export interface VerifyReport {
  volumes: VolumeVerifyReport[];
}

interface Suspect {
  block: number;
  checks: BlockCheck[];
  /** Source hash at its latest read. */
  last: Buffer;
}

/** Consecutive blocks as runs of at most `maxBlocks`. */
export function blockRuns(blocks: readonly number[], maxBlocks: number): Array<{ first: number; count: number }> {
  const runs: Array<{ first: number; count: number }> = [];
  for (const b of blocks) {
    const run = runs[runs.length - 1];
    if (run && b === run.first + run.count && run.count < maxBlocks) run.count++;
    else runs.push({ first: b, count: 1 });
  }
  return runs;
}

/**
 * Online verify of one volume: every block of the source is compared with the receiver's
 * replica (block hashes) while the volume is in use. A block that differs is checked again
 * after the stream has caught up with everything captured before it was read (classify.ts
 * decides, check by check); real divergence is then repaired through the capture source.
 */
export class VolumeVerifier {
  private readonly bs: number;
  private readonly blocks: number;
  private readonly chunkBlocks: number;
  private readonly buffer = sharedBuffer(CHUNK_BYTES);
  private readonly hasher = new BlockHasher();
  private lastProgressMs = 0;

  constructor(
    private readonly deps: VerifyDeps,
    private readonly volume: ProtectedVolume,
    private readonly opts: VerifyOptions,
  ) {
    this.bs = deps.source.blockSize;
    this.blocks = Math.ceil(volume.sizeBytes / this.bs);
    this.chunkBlocks = Math.max(1, Math.floor(CHUNK_BYTES / this.bs));
  }

  async run(): Promise<VolumeVerifyReport> {
    const started = Date.now();
    const reader = await VolumeReader.open(this.volume);
    try {
      const suspects = await this.compareAll(reader);
      const diverged: number[] = [];
      const busy: number[] = [];
      let check = 0;
      while (suspects.size > 0) {
        check++;
        await this.checkSuspects(reader, suspects, check, diverged, busy);
      }
      diverged.sort((a, b) => a - b);
      busy.sort((a, b) => a - b);
      const report: VolumeVerifyReport = {
        volumeId: this.volume.id,
        sizeBytes: this.volume.sizeBytes,
        blockSize: this.bs,
        checkedBytes: this.volume.sizeBytes,
        blocksCompared: this.blocks,
        divergedBlocks: diverged.length,
        divergedOffsets: diverged.slice(0, this.opts.maxListed).map((b) => b * this.bs),
        busyBlocks: busy.length,
        busyOffsets: busy.slice(0, this.opts.maxListed).map((b) => b * this.bs),
        checks: check,
        repaired: false,
        durationMs: 0,
      };
      if (diverged.length > 0 && this.opts.repair) {
        this.progress('repair', 0, diverged.length * this.bs, 0, check, true);
        const ranges: ByteRange[] = blockRuns(diverged, Number.MAX_SAFE_INTEGER).map((r) => ({ offset: r.first * this.bs, length: r.count * this.bs }));
        const result = await this.deps.source.repair(this.volume.id, ranges, this.deps.remote, 'verify found divergence');
        report.repaired = true;
        report.repairSentBytes = result.sentBytes;
        report.repairThroughSeq = result.throughSeq;
      }
      report.durationMs = Date.now() - started;
      return report;
    } finally {
      await reader.close();
      await this.hasher.close();
    }
  }

  /** First pass: source and receiver hashes of every block; the blocks that differ are suspects. */
  private async compareAll(reader: VolumeReader): Promise<Map<number, Suspect>> {
    const suspects = new Map<number, Suspect>();
    const size = this.volume.sizeBytes;
    for (let first = 0; first < this.blocks; first += this.chunkBlocks) {
      this.checkStopping();
      const count = Math.min(this.chunkBlocks, this.blocks - first);
      const offset = first * this.bs;
      const length = Math.min(count * this.bs, size - offset);
      const mine = await this.hasher.hash(await reader.read(offset, length, this.buffer), this.bs);
      const theirs = await this.deps.remote(this.volume.id, offset, this.bs, count);
      for (let i = 0; i < count; i++) {
        const h = hashAt(mine, i);
        if (!h.equals(hashAt(theirs, i))) suspects.set(first + i, { block: first + i, checks: [], last: Buffer.from(h) });
      }
      this.progress('compare', offset + length, size, suspects.size, 0, false);
    }
    return suspects;
  }

  /** One check of every suspect: catch up, the receiver's hashes, the source read again, a verdict each. */
  private async checkSuspects(reader: VolumeReader, suspects: Map<number, Suspect>, check: number, diverged: number[], busy: number[]): Promise<void> {
    const total = suspects.size * this.bs;
    this.progress('check', 0, total, suspects.size, check, true);
    await this.catchUp();
    const runs = blockRuns([...suspects.keys()].sort((a, b) => a - b), this.chunkBlocks);
    const receiver = new Map<number, Buffer>();
    for (const run of runs) {
      this.checkStopping();
      const hashes = await this.deps.remote(this.volume.id, run.first * this.bs, this.bs, run.count);
      for (let i = 0; i < run.count; i++) receiver.set(run.first + i, hashAt(hashes, i));
    }
    let done = 0;
    for (const run of runs) {
      this.checkStopping();
      const offset = run.first * this.bs;
      const length = Math.min(run.count * this.bs, this.volume.sizeBytes - offset);
      const after = await this.hasher.hash(await reader.read(offset, length, this.buffer), this.bs);
      for (let i = 0; i < run.count; i++) {
        const s = suspects.get(run.first + i) as Suspect;
        const sourceAfter = hashAt(after, i);
        s.checks.push({ sourceBefore: s.last, receiver: receiver.get(s.block) as Buffer, sourceAfter });
        s.last = sourceAfter;
        const verdict = classifyBlock(s.checks, MAX_CHECKS);
        if (verdict.kind === 'check-again') continue;
        suspects.delete(s.block);
        if (verdict.kind === 'diverged') diverged.push(s.block);
        else if (verdict.kind === 'busy') busy.push(s.block);
      }
      done += length;
      this.progress('check', done, total, suspects.size, check, false);
    }
  }

  /**
   * Waits until the receiver has applied everything captured before now: the source settles
   * (scan capture: a full pass that started now), a cut of the stream is taken where the stream
   * carries every write before it (not during a drain of dirty regions, a resync or a repair:
   * their cuts are `none`), and the receiver must hold it durably. Its hashes are answered
   * after it applied all it accepted.
   */
  private async catchUp(): Promise<void> {
    const id = this.volume.id;
    const deadline = Date.now() + CATCH_UP_MS;
    const settled = await this.deps.source.settle([id], deadline);
    if (!settled.settled) {
      this.checkStopping();
      const f = settled.failure;
      const why =
        f.kind === 'resync-running'
          ? `a ${f.resync} resync is running`
          : f.kind === 'deadline'
            ? `no scan pass finished within ${CATCH_UP_MS / 60_000} minutes${f.waitingForAcks ? ' (reading waited for the receiver)' : ''}`
            : 'the agent is stopping';
      throw new Error(`volume ${id}: the capture source could not catch up: ${why}`);
    }
    let cutSeq: number | undefined;
    for (let refused = 0; cutSeq === undefined; ) {
      this.checkStopping();
      let why: string;
      try {
        const [cut] = await this.deps.source.tag([id], { holdMs: TAG_HOLD_MS, quiesced: false });
        if (cut.accuracy !== 'none') cutSeq = cut.seq;
        why = 'the stream does not carry every write yet (a resync, a repair or a drain of dirty regions runs)';
      } catch (err) {
        why = (err as Error).message;
        if (++refused >= TAG_TRIES) throw new Error(`volume ${id}: cannot cut the stream to catch up: ${why}`);
      }
      if (cutSeq !== undefined) break;
      if (Date.now() > deadline) throw new Error(`volume ${id}: could not catch up within ${CATCH_UP_MS / 60_000} minutes: ${why}`);
      await new Promise((resolve) => setTimeout(resolve, TAG_RETRY_MS));
    }
    await this.deps.whenDurable(id, cutSeq);
    // A resync that started meanwhile (the stream lost records) makes every difference real
    // until it ends: what verify would find then says nothing about silent divergence.
    const resync = this.deps.source.resyncProgress(id);
    if (resync && resync.finishedMs === undefined) throw new Error(`volume ${id}: a ${resync.kind} resync started during the verify: verify again once it is done`);
  }

  private checkStopping(): void {
    if (this.deps.isStopping()) throw new Error('the verify was stopped (the agent is stopping, or its client went away)');
  }

  private progress(phase: VerifyProgress['phase'], doneBytes: number, totalBytes: number, suspects: number, check: number, force: boolean): void {
    const now = Date.now();
    if (!force && doneBytes < totalBytes && now - this.lastProgressMs < PROGRESS_EVERY_MS) return;
    this.lastProgressMs = now;
    this.opts.onProgress({ volumeId: this.volume.id, phase, doneBytes, totalBytes, suspects, check });
  }
}

/** The i-th block hash of a hash list; empty when the list is short (it then matches nothing). */
function hashAt(hashes: Buffer, i: number): Buffer {
  return hashes.subarray(i * BLOCK_HASH_BYTES, (i + 1) * BLOCK_HASH_BYTES);
}
