import * as fs from 'fs';
import * as path from 'path';
import { writeFileAtomic } from '../../common/fsutil';
import { log } from '../../common/log';
import { Signal } from '../../common/signal';
import { nowUs } from '../../common/time';
import { DirtyRanges } from './ebpf/dirty-ranges';
import { decodeEvents } from './ebpf/events';
import { bitmapRanges, diskToVolume, monotonicToWallUs, readGeometry, type VolumeGeometry } from './ebpf/geometry';
import { planEbpfAttach, type SavedEbpfState } from './ebpf/restart-plan';
import type { TraceEvent, WriteTracker } from './ebpf/tracker';
import { ScanSource } from './scan-source';
import type {
  ByteRange,
  CaptureBatch,
  CaptureMode,
  CaptureSource,
  ProtectedVolume,
  RemoteHashes,
  RepairProgress,
  RepairResult,
  ResyncKind,
  ResyncNeed,
  ResyncProgress,
  SettleResult,
  TagOptions,
  VolumeCut,
} from './types';

const STATE_FILE = 'ebpf-state.json';
const STATE_VERSION = 1;
/** Events taken from the ring per drain call. */
const DRAIN_EVENTS = 4096;
/** Dirty bitmaps are taken when the ring overflowed, and at least this often (a bit set late). */
const BITMAP_EVERY_MS = 1000;

export interface EbpfSourceOptions {
  tracker: WriteTracker;
  stateDirOf: (volumeId: string) => string;
  /** Block-hash granularity (as scan.blockSize): a written block is read back and compared whole. */
  blockSize: number;
  /** Data emitted but not yet committed, per volume, above which reading back pauses. */
  maxPendingBytes: number;
  /** Every volume the agent will attach: the tracker is drained once all of them are. */
  volumeIds: readonly string[];
  /** How often the tracker's ring is drained (default 50 ms). */
  drainIntervalMs?: number;
  /** Where a volume lies on its disk (default: sysfs). */
  geometryOf?: (devicePath: string) => VolumeGeometry;
  decode?: (buf: Buffer) => TraceEvent[];
}

interface EbpfVolume {
  spec: ProtectedVolume;
  geometry: VolumeGeometry;
  slot: number;
  dirty: DirtyRanges;
  stateFile: string;
  /** Ranges a planned delta resync reads (until startResync takes them). */
  delta?: ByteRange[];
}

function readSavedState(file: string): SavedEbpfState | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
  const s = raw as { version?: unknown; instanceId?: unknown; clean?: unknown; pending?: unknown };
  if (s.version !== STATE_VERSION || typeof s.instanceId !== 'string' || typeof s.clean !== 'boolean' || !Array.isArray(s.pending)) return undefined;
  const pending: ByteRange[] = [];
  for (const r of s.pending as unknown[]) {
    if (!Array.isArray(r) || r.length !== 2 || !Number.isSafeInteger(r[0]) || !Number.isSafeInteger(r[1])) return undefined;
    pending.push({ offset: r[0] as number, length: r[1] as number });
  }
  return { instanceId: s.instanceId, clean: s.clean, pending };
}

/**
 * Capture with the eBPF write tracker: the tracker reports which ranges of the disks were
 * written (events, or dirty bitmap bits after its ring overflowed); this source maps them to
 * the protected volumes, reads them back and streams the blocks that changed, in seq order,
 * as approximate records (like dm-ferry's METADATA mode). The passes, the scan table of what
 * the receiver holds, resyncs and repairs are the scan source's, scoped to the written ranges.
 */
export class EbpfSource implements CaptureSource {
  readonly kind = 'ebpf' as const;
  private readonly passes: ScanSource;
  private readonly tracker: WriteTracker;
  private readonly volumes = new Map<string, EbpfVolume>();
  private readonly decode: (buf: Buffer) => TraceEvent[];
  private drainLoop: Promise<void> | undefined;
  private readonly stopSignal = new Signal();
  private closed = false;
  private lastOverflowed = -1;
  private readonly lastBitmapTakeUs = new Map<number, number>();
  private lastBitmapMs = 0;
  private lastSettleReadBytes = 0;
  /** The tracker failed (its events could not be read): writes may have been lost. */
  private failure: Error | undefined;

  constructor(private readonly opts: EbpfSourceOptions) {
    this.tracker = opts.tracker;
    this.decode = opts.decode ?? decodeEvents;
    this.passes = new ScanSource({ stateDirOf: opts.stateDirOf, intervalMs: 1000, blockSize: opts.blockSize, maxPendingBytes: opts.maxPendingBytes });
  }

  get blockSize(): number {
    return this.opts.blockSize;
  }

  get pendingCapBytes(): number {
    return this.opts.maxPendingBytes;
  }

  /** The tracker instance this source reads (status, tests). */
  get trackerInstance(): string {
    return this.tracker.instanceId;
  }

  async attach(spec: ProtectedVolume, receiverDurableSeq: number): Promise<ResyncNeed> {
    if (this.volumes.has(spec.id)) throw new Error(`volume ${spec.id} is already attached`);
    const geometry = (this.opts.geometryOf ?? readGeometry)(spec.path);
    if (geometry.sizeBytes !== spec.sizeBytes) throw new Error(`volume ${spec.id}: sysfs says ${geometry.sizeBytes} bytes, ${spec.path} has ${spec.sizeBytes}`);
    const { slot, trackedBefore } = this.track(geometry);
    const dir = this.opts.stateDirOf(spec.id);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const stateFile = path.join(dir, STATE_FILE);
    const saved = readSavedState(stateFile);
    const dirty = new DirtyRanges(spec.sizeBytes, this.opts.blockSize);
    const { need: table, stale } = await this.passes.open(spec, receiverDurableSeq, dirty);
    const plan = planEbpfAttach({ table, tableStale: stale, saved, instanceId: this.tracker.instanceId, trackedBefore });
    const v: EbpfVolume = { spec, geometry, slot, dirty, stateFile, delta: plan.delta };
    dirty.addRanges(plan.dirty, nowUs());
    this.volumes.set(spec.id, v);
    // From now on a stop that does not save the unsent ranges must be noticed by the next agent.
    this.saveState(v, false);
    if (plan.need.kind === 'none') this.passes.startCapture(spec.id);
    log.info('ebpf capture attached', {
      volume: spec.id,
      disk: `${geometry.disk.major}:${geometry.disk.minor}`,
      partition: geometry.partition,
      startBytes: geometry.startBytes,
      slot,
      tracker: this.tracker.instanceId,
      reused: this.tracker.reused,
    });
    if (this.opts.volumeIds.every((id) => this.volumes.has(id))) this.startDraining();
    return plan.need;
  }

  /** Tracks the volume's disk; `trackedBefore`: the tracker already tracked it as asked. */
  private track(g: VolumeGeometry): { slot: number; trackedBefore: boolean } {
    const chunkShift = Math.log2(this.opts.blockSize);
    const want = { major: g.disk.major, minor: g.disk.minor, chunkShift, sizeBytes: g.disk.sizeBytes };
    for (const [slot, d] of this.tracker.tracked()) {
      if (d.major !== want.major || d.minor !== want.minor) continue;
      if (d.chunkShift === want.chunkShift && d.sizeBytes === want.sizeBytes) return { slot: this.tracker.track(want), trackedBefore: true };
      log.warn('the tracker tracked the disk with another geometry: tracking it again', { disk: `${d.major}:${d.minor}`, was: d, now: want });
      this.tracker.untrack(slot);
    }
    return { slot: this.tracker.track(want), trackedBefore: false };
  }

  private startDraining(): void {
    if (this.drainLoop) return;
    const every = this.opts.drainIntervalMs ?? 50;
    this.drainLoop = (async () => {
      while (!this.closed) {
        try {
          this.drain(false);
        } catch (err) {
          // Events taken and not understood are lost: stop, and let the next start compare everything.
          this.failure = new Error(`ebpf capture: cannot read the write tracker: ${(err as Error).message}`);
          log.error('ebpf capture stopped: writes may have gone untracked', { error: (err as Error).message });
          return;
        }
        await this.stopSignal.wait(every);
      }
    })();
  }

  /**
   * Moves what the tracker saw into the volumes' dirty ranges: the ring's events, then the dirty
   * bitmaps when the ring overflowed (or `bitmaps`, or now and then, in case a bit was set after
   * the overflow count was read). Wakes the volumes that got work.
   */
  private drain(bitmaps: boolean): void {
    const wallUs = nowUs();
    const monoNs = process.hrtime.bigint();
    const woken = new Set<EbpfVolume>();
    const overflowed = this.tracker.counters().overflowed;
    for (;;) {
      const events = this.decode(this.tracker.drain(DRAIN_EVENTS));
      for (const e of events) {
        if (e.op === 'flush' || e.bytes === 0) continue;
        const atUs = Math.min(wallUs, monotonicToWallUs(e.timeNs, wallUs, monoNs));
        for (const v of this.volumes.values()) {
          if (v.slot !== e.slot) continue;
          const r = diskToVolume(v.geometry, e.sector * 512, e.bytes);
          if (!r) continue;
          v.dirty.add(r.offset, r.length, atUs);
          woken.add(v);
        }
      }
      if (events.length < DRAIN_EVENTS) break;
    }
    const nowMs = Date.now();
    if (bitmaps || overflowed !== this.lastOverflowed || nowMs - this.lastBitmapMs >= BITMAP_EVERY_MS) {
      this.lastOverflowed = overflowed;
      this.lastBitmapMs = nowMs;
      for (const slot of new Set([...this.volumes.values()].map((v) => v.slot))) {
        const take = this.tracker.takeBitmap(slot);
        // A bit was set some time after the previous take: the RPO counts from there.
        const sinceUs = this.lastBitmapTakeUs.get(slot) ?? wallUs;
        this.lastBitmapTakeUs.set(slot, wallUs);
        if (take.dirty === 0) continue;
        const ranges = bitmapRanges(take.bits, take.nbits, take.chunkShift);
        for (const v of this.volumes.values()) {
          if (v.slot !== slot) continue;
          for (const d of ranges) {
            const r = diskToVolume(v.geometry, d.offset, d.length);
            if (!r) continue;
            v.dirty.add(r.offset, r.length, sinceUs, true);
            woken.add(v);
          }
        }
        log.info('write tracker ring overflowed: reading back dirty bitmap regions', { slot, regions: take.dirty, bytes: take.dirty * 2 ** take.chunkShift });
      }
    }
    for (const v of woken) this.passes.wake(v.spec.id);
  }

  private saveState(v: EbpfVolume, clean: boolean): void {
    const pending = clean ? [...v.dirty.unsent(), ...this.passes.unsentRanges(v.spec.id), ...(v.delta ?? [])] : [];
    const state = { version: STATE_VERSION, instanceId: this.tracker.instanceId, clean, pending: pending.map((r) => [r.offset, r.length]), savedMs: Date.now() };
    writeFileAtomic(v.stateFile, `${JSON.stringify(state)}\n`);
  }

  startResync(volumeId: string, kind: ResyncKind, remote: RemoteHashes): void {
    const v = this.volume(volumeId);
    const delta = v.delta;
    v.delta = undefined;
    if (kind === 'delta' && delta) this.passes.startResync(volumeId, kind, remote, delta);
    else this.passes.startResync(volumeId, kind, remote);
  }

  resyncProgress(volumeId: string): ResyncProgress | undefined {
    return this.passes.resyncProgress(volumeId);
  }

  repair(volumeId: string, ranges: readonly ByteRange[], remote: RemoteHashes, reason: string): Promise<RepairResult> {
    return this.passes.repair(volumeId, ranges, remote, reason);
  }

  repairProgress(volumeId: string): RepairProgress | undefined {
    return this.passes.repairProgress(volumeId);
  }

  mode(volumeId: string): CaptureMode {
    return this.volume(volumeId).dirty.drainingBitmap ? 'bitmap-draining' : 'approximate';
  }

  next(maxBytes: number, timeoutMs: number): Promise<CaptureBatch | undefined> {
    if (this.failure) return Promise.reject(this.failure);
    return this.passes.next(maxBytes, timeoutMs);
  }

  commit(batchId: number): Promise<void> {
    return this.passes.commit(batchId);
  }

  /** Writes drained but not read back count: their event time is when the change happened. */
  oldestQueuedCaptureUs(): number {
    return this.passes.oldestQueuedCaptureUs();
  }

  unsentSinceUs(volumeId: string): number {
    return this.passes.unsentSinceUs(volumeId);
  }

  async tag(volumeIds: string[], options: TagOptions): Promise<VolumeCut[]> {
    if (options.vssVolumes?.length) throw new Error('ebpf capture cannot cut at a VSS freeze point');
    if (options.completedWritesByMs !== undefined) {
      const settled = await this.settle(volumeIds, options.completedWritesByMs);
      if (!settled.settled) log.warn('the point is cut before every completed write was read back', { volumes: volumeIds, failure: settled.failure });
    }
    return this.passes.tag(volumeIds, options);
  }

  /**
   * The volumes are frozen: every write has completed and its event is in the ring. Drains it
   * (and the bitmaps), then waits for a pass that reads back what was written since the last one.
   */
  async settle(volumeIds: string[], deadlineMs: number): Promise<SettleResult> {
    for (const id of volumeIds) this.volume(id);
    const readBefore = volumeIds.reduce((n, id) => n + this.passes.readBytes(id), 0);
    if (this.failure) throw this.failure;
    this.drain(true);
    const result = await this.passes.settle(volumeIds, deadlineMs);
    this.lastSettleReadBytes = volumeIds.reduce((n, id) => n + this.passes.readBytes(id), 0) - readBefore;
    return result;
  }

  /** Bytes the last settle read back (an app point's freeze lasts about as long as reading them). */
  get settleReadBytes(): number {
    return this.lastSettleReadBytes;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.stopSignal.notify();
    await this.drainLoop;
    await this.passes.close();
    // What was drained and not yet durable at the receiver: the next agent reads it back (what
    // is still in the ring and the bitmaps stays there for it).
    for (const v of this.volumes.values()) {
      try {
        this.saveState(v, this.failure === undefined);
      } catch (err) {
        log.warn('cannot save the ebpf capture state: the next start compares the whole volume', { volume: v.spec.id, error: (err as Error).message });
      }
    }
    this.tracker.close({ unload: false });
  }

  private volume(volumeId: string): EbpfVolume {
    const v = this.volumes.get(volumeId);
    if (!v) throw new Error(`volume ${volumeId} is not attached`);
    return v;
  }
}
