import { performance } from 'node:perf_hooks';
import { describeError, errnoCode } from '../../common/errors';
import { log } from '../../common/log';
import { Signal } from '../../common/signal';
import { BatchFormatError, readDirect, type KernelRecord, type TagResult } from '../../native/addon';
import { planAttach } from './kernel/attach-plan';
import type { ControlDevice, ReadVolume } from './kernel/control-device';
import { convertKernelRecords, type ConvertContext } from './kernel/converter';
import { blockDeviceNumber, ferryDeviceFor, sameDevice, type DeviceNumber } from './kernel/devices';
import { coveredReadBacks } from './kernel/records';
import { StreamLog } from './kernel/stream-log';
import { DEVICE_MODE_TO_CAPTURE, KernelVolume } from './kernel/volume';
import { VolumeWalker } from './kernel/walker';
import { KernelWriteHold } from './kernel/write-hold';
import { blockRanges, rangeBytes } from './ranges';
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
  WriteHold,
} from './types';

/** The kernel refuses a 17th uncommitted batch (ENOBUFS). */
const MAX_KERNEL_BATCHES = 16;
/** Longest single poll() of the control device (it holds a libuv worker thread). */
const POLL_MS = 250;
const EMPTY = Buffer.alloc(0);
/** GET buffer: payloads of up to this much per kernel batch. */
const GET_BYTES = 1024 * 1024;
/**
 * GET buffer while the stream carries DIRTY records (header only, read back at hand-out): about
 * 340 of them per kernel batch, so that a batch commits (and frees its ring slots) once a few
 * MiB of read-backs are durable, not after tens of MiB.
 */
const READ_BACK_GET_BYTES = 16 * 1024;
/** A tag's cut is known once its TAG record is converted; give up after this long. */
const TAG_WAIT_MS = 30_000;

export interface KernelSourceOptions {
  control: ControlDevice;
  /** Reads volume data the kernel records do not carry (default: readDirect). */
  readVolume?: ReadVolume;
  /** The device number of a volume's path (default: stat of the block device). */
  deviceOf?: (path: string) => DeviceNumber | undefined;
  stateDirOf: (volumeId: string) => string;
  resyncBlockSize: number;
  /** Every volume the agent will attach: the stream is read once all of them are. */
  volumeIds: readonly string[];
}

interface Outstanding {
  kernelBatchId: number;
  /** The batch ends its kernel batch: committing it commits the kernel batch. */
  endsKernelBatch: boolean;
  lastStream: Map<KernelVolume, number>;
  marks: Map<KernelVolume, number>;
}

/** A kernel batch being handed out, possibly as several capture batches. */
interface KernelBatch {
  id: number;
  records: KernelRecord[];
  /** Read-backs that an earlier read-back of the batch carries (sent as NOOPs). */
  covered: Set<number>;
  next: number;
}

/**
 * Kernel capture through dm-ferry (/dev/ferry-ctl): every completed write of a protected volume
 * comes with its data, in completion order. A kernel batch is handed out as one capture batch,
 * or as several when its read-backs would make one too large; it is committed in the kernel when
 * the pipeline commits the last of them (the receiver holds all of it durably). Records are
 * converted, and data read back, only when the pipeline asks for them.
 *
 * Each volume's stream is numbered here, not by the kernel: kernel seqs jump after a crash,
 * BITMAP-mode writes have none, and resync data is inserted. A kernel record takes a fixed
 * number of stream seqs; an anchor per handed-out batch (stream-log.ts) lets a restarted agent
 * give the batches the kernel hands out again the very seqs they had.
 */
export class KernelSource implements CaptureSource {
  readonly kind = 'kernel' as const;
  private readonly control: ControlDevice;
  private readonly readVolume: ReadVolume;
  private readonly volumes = new Map<string, KernelVolume>();
  private byIndex = new Map<number, KernelVolume>();
  /** Devices whose records are dropped (no configured volume is them). */
  private readonly ignored = new Set<number>();
  private readonly convertContext: ConvertContext;
  private current: KernelBatch | undefined;
  private kernelBatchesOut = 0;
  private getBuffer = Buffer.allocUnsafe(GET_BYTES);
  private readBackHeavy = false;
  private readonly outstanding = new Map<number, Outstanding>();
  private nextBatchId = 1;
  private nextTagId = 1;
  private started = false;
  private closed = false;
  private failure: Error | undefined;
  private readonly available = new Signal();
  private readonly room = new Signal();
  private readonly loops: Array<Promise<void>> = [];
  private remote: RemoteHashes | undefined;
  /** Write holds the driver may still have in place (one at a time there). */
  private readonly holds = new Set<KernelWriteHold>();

  constructor(private readonly opts: KernelSourceOptions) {
    this.control = opts.control;
    this.readVolume = opts.readVolume ?? readDirect;
    this.convertContext = {
      control: this.control,
      readVolume: this.readVolume,
      volumes: {
        at: (i) => this.byIndex.get(i),
        refresh: () => this.refreshIndexes(),
        isIgnored: (i) => this.ignored.has(i),
        ignore: (i) => {
          if (this.ignored.has(i)) return false;
          this.ignored.add(i);
          return true;
        },
      },
    };
  }

  async attach(configured: ProtectedVolume, receiverDurableSeq: number): Promise<ResyncNeed> {
    if (this.volumes.has(configured.id)) throw new Error(`volume ${configured.id} is already attached`);
    const dev = (this.opts.deviceOf ?? blockDeviceNumber)(configured.path);
    if (!dev) throw new Error(`volume ${configured.id}: ${configured.path} is not a block device`);
    const info = ferryDeviceFor(await this.control.list(), dev);
    if (!info) throw new Error(`volume ${configured.id}: ${configured.path} is not a ferry device`);
    // A plain disk or partition wrapped at boot: captured, and read, through the wrapping device.
    const wrapped = !sameDevice(info, dev);
    const device: DeviceNumber = { major: info.devMajor, minor: info.devMinor };
    const spec: ProtectedVolume = wrapped ? { ...configured, path: `/dev/mapper/${info.name}` } : configured;
    if (info.sizeBytes !== spec.sizeBytes) throw new Error(`volume ${spec.id}: the ferry device is ${info.sizeBytes} bytes, ${spec.path} ${spec.sizeBytes}`);
    const streamLog = StreamLog.open(this.opts.stateDirOf(spec.id), spec.sizeBytes, this.opts.resyncBlockSize);
    const plan = planAttach(
      { generation: info.generation, startState: info.startStateName, firstSeq: info.firstSeq, committedSeq: info.committedSeq, dirtyBits: info.dirtyBits },
      streamLog,
      receiverDurableSeq,
    );
    const v = new KernelVolume(
      spec,
      device,
      streamLog,
      receiverDurableSeq,
      {
        devIndex: info.index,
        generation: info.generation,
        loadFirstSeq: info.firstSeq,
        mode: info.modeName,
        nextStream: plan.nextStream,
        firstKseq: plan.firstKseq,
      },
      () => this.remote,
    );
    this.volumes.set(spec.id, v);
    this.byIndex.set(info.index, v);
    if (plan.need.kind !== 'none') {
      // Runs once the agent calls startResync (with the receiver's hashes), at the plan's cursor.
      v.needResync(plan.need.kind, plan.resumeCursor);
    } else if (plan.drain || info.modeName === 'bitmap' || info.modeName === 'draining') {
      v.noteBitmapEpisode();
      if (plan.drain || info.dirtyBits > 0) v.requestDrain();
    }
    log.info('kernel capture attached', {
      volume: spec.id,
      device: info.name,
      wraps: wrapped ? configured.path : undefined,
      load: info.generation,
      start: info.startStateName,
      mode: info.modeName,
      dirtyBits: info.dirtyBits,
      streamFrom: plan.nextStream,
    });
    if (this.opts.volumeIds.every((id) => this.volumes.has(id))) this.start();
    return plan.need;
  }

  startResync(volumeId: string, kind: ResyncKind, remote: RemoteHashes): void {
    const v = this.volume(volumeId);
    this.remote = remote;
    v.startResync(kind, remote);
  }

  resyncProgress(volumeId: string): ResyncProgress | undefined {
    return this.volumes.get(volumeId)?.lastResync;
  }

  get blockSize(): number {
    return this.opts.resyncBlockSize;
  }

  /** The walker places resync marks over the blocks of the ranges and sends those that differ. */
  repair(volumeId: string, ranges: readonly ByteRange[], remote: RemoteHashes, reason: string): Promise<RepairResult> {
    const v = this.volume(volumeId);
    if (this.closed) return Promise.reject(new Error('the agent is stopping'));
    this.remote ??= remote;
    const blocks = blockRanges(ranges, this.opts.resyncBlockSize, v.spec.sizeBytes);
    return new Promise((resolve, reject) => {
      const progress: RepairProgress = { reason, doneBytes: 0, totalBytes: rangeBytes(blocks), sentBytes: 0, startedMs: Date.now() };
      v.queueRepair({ ranges: blocks, remote, progress, resolve, reject });
    });
  }

  repairProgress(volumeId: string): RepairProgress | undefined {
    return this.volumes.get(volumeId)?.lastRepair;
  }

  mode(volumeId: string): CaptureMode {
    return DEVICE_MODE_TO_CAPTURE[this.volume(volumeId).mode];
  }

  private volume(volumeId: string): KernelVolume {
    const v = this.volumes.get(volumeId);
    if (!v) throw new Error(`volume ${volumeId} is not attached`);
    return v;
  }

  // ---- reading the kernel stream -------------------------------------------------------------

  private start(): void {
    if (this.started) return;
    this.started = true;
    const walkerCtx = { control: this.control, blockSize: this.opts.resyncBlockSize, readVolume: this.readVolume };
    for (const v of this.volumes.values()) {
      this.loops.push(this.guard(new VolumeWalker(walkerCtx, v).run(), `walker of ${v.id}`));
    }
    this.available.notify();
  }

  private guard(p: Promise<void>, what: string): Promise<void> {
    return p.catch((err: unknown) => this.fail(err instanceof Error ? err : new Error(String(err)), what));
  }

  private fail(err: Error, what: string): void {
    if (this.closed) return;
    log.error('kernel capture failed', { in: what, error: err.message });
    this.failure ??= new Error(`kernel capture: ${what}: ${err.message}`);
    this.available.notify();
  }

  /** Takes the next kernel batch (copied out of the shared buffer); false if none came in time. */
  private async takeKernelBatch(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.closed) return false;
      const left = deadline - Date.now();
      if (this.kernelBatchesOut >= MAX_KERNEL_BATCHES) {
        if (left <= 0) return false;
        await this.room.wait(left);
        continue;
      }
      let batch;
      const size = this.readBackHeavy ? READ_BACK_GET_BYTES : this.getBuffer.length;
      try {
        batch = await this.control.getChanges(this.getBuffer.subarray(0, size));
      } catch (err) {
        const code = errnoCode(err);
        const needed = (err as { needed?: number }).needed;
        if (code === 'EMSGSIZE' && needed !== undefined) {
          // One record (a large write) needs more: grow for it.
          if (needed > this.getBuffer.length) this.getBuffer = Buffer.allocUnsafe(Math.ceil(needed / GET_BYTES) * GET_BYTES);
          this.readBackHeavy = false;
          continue;
        }
        if (code === 'ENOBUFS') {
          // The kernel counts batches this source does not (a previous consumer's): a commit frees
          // one, or look again shortly.
          if (left <= 0) return false;
          await this.room.wait(Math.min(left, POLL_MS));
          continue;
        }
        if (code === 'EBUSY') throw new Error('another process owns the dm-ferry change stream (is another agent running?)');
        if (err instanceof BatchFormatError) throw new Error(`the dm-ferry module sent a malformed batch: ${err.message}`);
        throw err;
      }
      if (batch.batchId !== 0) {
        const records = ownPayloads(batch.records, this.getBuffer);
        this.readBackHeavy = records.some((r) => r.kind === 'dirty');
        this.current = { id: batch.batchId, records, covered: coveredReadBacks(records), next: 0 };
        this.kernelBatchesOut++;
        return true;
      }
      if (left <= 0) return false;
      await this.control.wait(Math.min(left, POLL_MS));
    }
  }

  private async refreshIndexes(): Promise<void> {
    const devices = await this.control.list();
    const map = new Map<number, KernelVolume>();
    for (const v of this.volumes.values()) {
      const info = devices.find((d) => sameDevice(d, v.device));
      if (!info) continue;
      v.moveTo(info.index);
      map.set(info.index, v);
    }
    this.byIndex = map;
  }

  // ---- CaptureSource: hand-out and commit ----------------------------------------------------

  async next(maxBytes: number, timeoutMs: number): Promise<CaptureBatch | undefined> {
    if (this.failure) throw this.failure;
    if (!this.started || this.closed) {
      await this.available.wait(timeoutMs);
      if (this.failure) throw this.failure;
      return undefined;
    }
    if (!this.current && !(await this.takeKernelBatch(timeoutMs))) return undefined;
    const kb = this.current as KernelBatch;
    const { batch, consumed } = await convertKernelRecords(this.convertContext, kb.records, kb.next, maxBytes, kb.covered);
    kb.next += consumed;
    const endsKernelBatch = kb.next >= kb.records.length;
    if (endsKernelBatch) this.current = undefined;
    // Log before hand-out: a restart gives a redelivered batch the same stream seqs.
    for (const [v, anchor] of batch.anchors) v.log.appendAnchors([anchor]);
    const lastStream = new Map<KernelVolume, number>();
    for (const r of batch.records) lastStream.set(this.volume(r.volumeId), r.seq);
    const id = this.nextBatchId++;
    this.outstanding.set(id, { kernelBatchId: kb.id, endsKernelBatch, lastStream, marks: batch.marks });
    for (const t of batch.tags) t.volume.noteTag(t.kseq, t.cut);
    return { id, records: batch.records };
  }

  async commit(batchId: number): Promise<void> {
    const o = this.outstanding.get(batchId);
    if (!o) throw new Error(`capture batch ${batchId} is not outstanding`);
    const oldest = this.outstanding.keys().next().value;
    if (oldest !== batchId) throw new Error(`capture batch ${batchId} committed before batch ${oldest}`);
    if (o.endsKernelBatch) {
      try {
        await this.control.commit(o.kernelBatchId);
      } catch (err) {
        throw new Error(`dm-ferry refused to commit batch ${o.kernelBatchId}: ${describeError(err)}`);
      }
      this.kernelBatchesOut--;
    }
    this.outstanding.delete(batchId);
    for (const v of new Set([...o.lastStream.keys(), ...o.marks.keys()])) v.noteCommitted(o.lastStream.get(v) ?? 0, o.marks.get(v) ?? 0);
    this.room.notify();
  }

  /** Records still in the kernel are not seen until handed out: the oldest of the current kernel batch. */
  oldestQueuedCaptureUs(): number {
    const kb = this.current;
    if (!kb || kb.next >= kb.records.length) return 0;
    return Number(kb.records[kb.next].timeNs / 1000n);
  }

  // ---- tags ------------------------------------------------------------------------------------

  /**
   * One TAG ioctl over every device: new writes are held (at most holdMs) until the writes in
   * flight complete, then each stream gets a TAG record at that same cut. A volume's cut is the
   * stream seq of its last record before the TAG, known once the converter reaches it.
   */
  async tag(volumeIds: string[], options: TagOptions): Promise<VolumeCut[]> {
    const vols = volumeIds.map((id) => this.volume(id));
    let result;
    try {
      result = options.vssVolumes?.length
        ? await this.vssCut(vols.map((v) => v.devIndex), options.vssVolumes, options.holdMs)
        : await this.control.tag(
            vols.map((v) => v.devIndex),
            { holdMs: options.holdMs, tagId: this.nextTagId++ },
          );
    } catch (err) {
      throw new Error(tagFailure(err, options.holdMs));
    }
    return this.cutsAt(vols.map((v, i) => ({ v, kseq: result.seqs[i] })));
  }

  /** Each volume's cut: the stream seq of its last record before its TAG record (kseq). */
  private async cutsAt(tags: Array<{ v: KernelVolume; kseq: number }>): Promise<VolumeCut[]> {
    const cuts = await Promise.all(tags.map(({ v, kseq }) => v.waitTag(kseq, TAG_WAIT_MS)));
    for (const c of cuts) if (c.seq < 1) throw new Error(`volume ${c.volumeId}: nothing has been captured yet, so there is nothing to cut`);
    return cuts;
  }

  /**
   * The first phase of a group round: the driver holds new writes on every volume (FERRY_IOC_HOLD)
   * until the hold's commit (a TAG at the held moment, then the release), its release, or
   * `boundMs`, and resolves once nothing is in flight. The driver ends the hold by itself at the
   * bound, also when this agent dies (the close of the control device releases it).
   */
  async hold(volumeIds: string[], boundMs: number): Promise<WriteHold> {
    if (this.closed) throw new Error('the agent is stopping');
    const vols = volumeIds.map((id) => this.volume(id));
    if (vols.length === 0) throw new Error('a write hold needs at least one volume');
    const started = performance.now();
    let held;
    try {
      held = await this.control.hold(
        vols.map((v) => v.devIndex),
        boundMs,
      );
    } catch (err) {
      throw new Error(holdFailure(err, boundMs));
    }
    const hold = new KernelWriteHold(
      {
        control: this.control,
        cuts: (result) => this.cutsOfHold(vols, result),
        nextTagId: () => this.nextTagId++,
        ended: (h) => this.holds.delete(h),
      },
      held.holdId,
      volumeIds,
      boundMs,
      started,
      held.drainNs,
    );
    this.holds.add(hold);
    log.info('writes held', { volumes: volumeIds, holdId: held.holdId, boundMs, drainMs: held.drainNs / 1e6 });
    return hold;
  }

  /** The cuts of a committed hold; the driver lists the held devices with their TAG seqs. */
  private cutsOfHold(vols: KernelVolume[], result: TagResult): Promise<VolumeCut[]> {
    const seqOf = new Map(result.devices.map((d, i) => [d, result.seqs[i]]));
    return this.cutsAt(
      vols.map((v) => {
        const kseq = seqOf.get(v.devIndex);
        if (kseq === undefined) throw new Error(`volume ${v.id}: the driver did not tag its device ${v.devIndex} at the hold's cut`);
        return { v, kseq };
      }),
    );
  }

  /**
   * Windows: a VSS copy backup of `volumes`; ferryflt inserts the TAG records when the freeze
   * request passes it. vssTag rejects unless every device was tagged and the write hold bridged
   * to volsnap's own hold (else the cut is not one application-consistent instant).
   */
  private async vssCut(devices: number[], volumes: string[], holdMs: number): Promise<{ seqs: number[] }> {
    return this.control.vssTag(volumes, devices, { tagId: this.nextTagId++, holdMs });
  }

  /** Kernel streams hold every write as it completes: nothing to wait for. */
  async settle(): Promise<SettleResult> {
    return { settled: true };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.available.notify();
    this.room.notify();
    for (const v of this.volumes.values()) v.stop();
    await Promise.all(this.loops);
    for (const v of this.volumes.values()) v.failUnfinishedRepairs();
    // Closing the control device makes every uncommitted batch deliverable again, and ends a hold.
    await this.control.close();
    for (const h of this.holds) h.closed();
    this.holds.clear();
    for (const v of this.volumes.values()) v.log.close();
  }
}

function holdFailure(err: unknown, boundMs: number): string {
  switch (errnoCode(err)) {
    case 'EBUSY':
      return 'another write hold is in place (one group round at a time)';
    case 'ETIMEDOUT':
      return `the writes in flight did not complete within the ${boundMs} ms bound: nothing is held`;
    case 'EINVAL':
      return `the driver refused the hold (bound ${boundMs} ms; it allows 1 to 5000 ms): ${describeError(err)}`;
    default:
      return tagFailure(err, boundMs).replace('the kernel refused the tag', 'the kernel refused the hold');
  }
}

/**
 * The records of a GET are views into `shared`, which the next GET reuses: their payloads are
 * copied out in one piece, one allocation per kernel batch rather than one per record (under
 * load a batch holds hundreds of 4 KiB writes); the copy lives as long as any record of the
 * batch does. Views into other memory are copied one by one.
 */
export function ownPayloads(records: KernelRecord[], shared: Buffer): KernelRecord[] {
  // Where each payload sits in `shared` (-1: empty, or a view into other memory).
  const places = records.map((r) => {
    const at = r.data.byteOffset - shared.byteOffset;
    return r.data.length > 0 && r.data.buffer === shared.buffer && at >= 0 && at + r.data.length <= shared.length ? at : -1;
  });
  const end = records.reduce((n, r, i) => (places[i] >= 0 ? Math.max(n, places[i] + r.data.length) : n), 0);
  const own = end > 0 ? Buffer.from(shared.subarray(0, end)) : EMPTY;
  return records.map((r, i) => {
    if (r.data.length === 0) return { ...r, data: EMPTY };
    const at = places[i];
    return { ...r, data: at >= 0 ? own.subarray(at, at + r.data.length) : Buffer.from(r.data) };
  });
}

function tagFailure(err: unknown, holdMs: number): string {
  switch (errnoCode(err)) {
    case 'ENOSPC':
      return 'a device is in bitmap mode (the agent is behind): no consistent cut until its dirty regions are drained';
    case 'EAGAIN':
      return 'a device is suspended: try the tag again';
    case 'ETIMEDOUT':
      return `the writes in flight did not complete within the ${holdMs} ms hold: the tag was revoked`;
    case 'EBUSY':
      return 'a group round holds the writes right now (a write hold is in place): try the tag again once it ends';
    case 'ENODEV':
      return 'a ferry device went away';
    default:
      return `the kernel refused the tag: ${describeError(err)}`;
  }
}
