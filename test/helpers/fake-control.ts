/**
 * A fake dm-ferry control device for fast unit tests of the kernel capture (no root, no kernel).
 * FakeKernel holds the driver's state: devices with their data, mode, seqs, ring and dirty bitmap,
 * the change stream's batches; open() gives a ControlDevice handle. Closing a handle makes its
 * uncommitted batches deliverable again (flagged REDELIVERED), as the driver does. It follows
 * native/common/README.md closely enough for the agent's decisions, not byte for byte.
 */
import type { ControlDevice } from '../../agent/capture/kernel/control-device';
import {
  DEVICE_MODES,
  HoldEndedError,
  RecordFlag,
  START_STATES,
  type BitmapChunk,
  type DeviceInfo,
  type DeviceMode,
  type HoldResult,
  type KernelBatch,
  type KernelRecord,
  type RecordKind,
  type ReleaseResult,
  type StartState,
  type TagResult,
  type VssTagResult,
} from '../../native/addon';

const MAX_BATCHES = 16;
const RECORD_BYTES = 48;

export function errno(code: string, message = code): Error {
  return Object.assign(new Error(message), { code });
}

export interface FakeDeviceOptions {
  sizeBytes: number;
  /** Bytes per bitmap bit. */
  granularity?: number;
  ringCapacity?: number;
  startState?: StartState;
  generation?: number;
  /** Bits set at start (a clean teardown's saved bitmap). */
  dirty?: Array<{ offset: number; length: number }>;
  /** First kernel seq of the load. */
  firstSeq?: number;
  major?: number;
  minor?: number;
}

export class FakeDevice {
  readonly data: Buffer;
  readonly granularity: number;
  ringCapacity: number;
  mode: DeviceMode = 'data';
  generation: number;
  startState: StartState;
  firstSeq: number;
  nextSeq: number;
  committedSeq = 0;
  suspended = false;
  bits: Uint8Array;
  epoch = 1;
  readonly major: number;
  readonly minor: number;

  constructor(
    private readonly kernel: FakeKernel,
    readonly index: number,
    opts: FakeDeviceOptions,
  ) {
    this.data = Buffer.alloc(opts.sizeBytes);
    this.granularity = opts.granularity ?? 65536;
    this.ringCapacity = opts.ringCapacity ?? 4096;
    this.generation = opts.generation ?? 1;
    this.startState = opts.startState ?? 'new';
    this.firstSeq = opts.firstSeq ?? 1;
    this.nextSeq = this.firstSeq;
    this.bits = new Uint8Array(Math.ceil(this.nbits / 8));
    this.major = opts.major ?? 253;
    this.minor = opts.minor ?? index;
    for (const r of opts.dirty ?? []) this.setBits(r.offset, r.length);
    this.emit('start', this.generation, START_STATES.indexOf(this.startState));
  }

  get sizeBytes(): number {
    return this.data.length;
  }

  get nbits(): number {
    return Math.ceil(this.data.length / this.granularity);
  }

  get dirtyBits(): number {
    let n = 0;
    for (let b = 0; b < this.nbits; b++) if (this.bits[b >> 3] & (1 << (b & 7))) n++;
    return n;
  }

  /** The path tests give the volume; readVolume maps it back to the device. */
  get path(): string {
    return `/dev/fake-ferry-${this.index}`;
  }

  /** A write completing: a record in DATA / METADATA / DRAINING mode, only dirty bits in BITMAP mode. */
  write(offset: number, data: Buffer, opts: { fua?: boolean } = {}): void {
    data.copy(this.data, offset);
    if (this.mode === 'bitmap') {
      this.setBits(offset, data.length);
      return;
    }
    const flags = opts.fua ? RecordFlag.FUA : 0;
    if (this.mode === 'metadata') this.emit('dirty', offset, data.length, Buffer.alloc(0), flags);
    else this.emit('write', offset, data.length, Buffer.from(data), flags);
  }

  discard(offset: number, length: number): void {
    this.data.fill(0, offset, offset + length);
    if (this.mode === 'bitmap') this.setBits(offset, length);
    else this.emit('discard', offset, length);
  }

  /** A mode change (MODE record: mode = the new one, length = the old one's code). */
  setMode(mode: DeviceMode): void {
    if (mode === this.mode) return;
    const from = this.mode;
    this.mode = mode;
    if (mode === 'bitmap') this.epoch++;
    this.emit('mode', 0, DEVICE_MODES.indexOf(from));
  }

  /** A new load of the table (protect, reload): a START record; uncommitted records of the old load are now dirty bits (clean) or lost. */
  reload(startState: StartState): void {
    for (const r of this.kernel.dropDevice(this.index)) if (r.length > 0 && r.kind !== 'tag' && r.kind !== 'mode') this.setBits(r.offset, r.length);
    this.generation++;
    this.startState = startState;
    this.firstSeq = this.nextSeq;
    this.committedSeq = 0;
    this.mode = this.dirtyBits > 0 ? 'draining' : 'data';
    this.emit('start', this.generation, START_STATES.indexOf(startState));
  }

  /** Records are lost (a kernel seq jumps). */
  skipSeqs(n: number): void {
    this.nextSeq += n;
  }

  setBits(offset: number, length: number): void {
    const last = Math.min(Math.floor((offset + length - 1) / this.granularity), this.nbits - 1);
    for (let b = Math.floor(offset / this.granularity); b <= last; b++) this.bits[b >> 3] |= 1 << (b & 7);
  }

  emit(kind: RecordKind, offset: number, length: number, data: Buffer = Buffer.alloc(0), flags = 0): number {
    const seq = this.nextSeq++;
    this.kernel.queue({
      seq,
      devIndex: this.index,
      kind,
      offset,
      length,
      timeNs: BigInt(Date.now()) * 1_000_000n,
      accuracy: this.mode === 'data' ? 'exact' : this.mode === 'metadata' ? 'approximate' : 'none',
      mode: this.mode,
      flags,
      data,
      bufferOffset: 0,
    });
    return seq;
  }

  info(): DeviceInfo {
    const ringUsed = this.kernel.recordsOf(this.index);
    return {
      name: `fake${this.index}`,
      index: this.index,
      mode: DEVICE_MODES.indexOf(this.mode),
      devMajor: this.major,
      devMinor: this.minor,
      dataMajor: 0,
      dataMinor: 0,
      metaMajor: 0,
      metaMinor: 0,
      sizeBytes: this.sizeBytes,
      granularity: this.granularity,
      startState: START_STATES.indexOf(this.startState),
      generation: this.generation,
      flags: this.suspended ? 1 : 0,
      firstSeq: this.firstSeq,
      nextSeq: this.nextSeq,
      committedSeq: this.committedSeq,
      seqLimit: 0,
      bitmapBits: this.nbits,
      dirtyBits: this.dirtyBits,
      bitmapEpoch: this.epoch,
      ringCapacity: this.ringCapacity,
      ringUsed,
      ringHandedOut: 0,
      poolSize: 0,
      poolUsed: 0,
      inflight: 0,
      counters: {
        writes: 0,
        writeBytes: 0,
        dirtyRecords: 0,
        discards: 0,
        flushes: 0,
        tags: 0,
        resyncMarks: 0,
        modeChanges: 0,
        bitmapWrites: 0,
        failedWrites: 0,
        droppedFlushes: 0,
        recordsCommitted: 0,
        bytesCommitted: 0,
        overlaps: 0,
        overlapDirty: 0,
      },
      modeName: this.mode,
      startStateName: this.startState,
      suspended: this.suspended,
    };
  }
}

interface HandedOut {
  id: number;
  records: KernelRecord[];
}

export class FakeKernel {
  readonly devices: FakeDevice[] = [];
  /** Records not handed out yet, in completion order over all devices. */
  private pending: KernelRecord[] = [];
  private handedOut: HandedOut[] = [];
  private nextBatchId = 1;
  private owner: FakeControlHandle | undefined;
  private waiters: Array<() => void> = [];
  /** At most this many records per batch (the real limit is the buffer). */
  maxRecordsPerBatch = 64;
  /** Calls made, by name, for tests that check what the agent asked. */
  readonly calls: string[] = [];
  /** The write hold in place (FERRY_IOC_HOLD); its bound is a real timer. */
  private held: { id: number; devices: number[]; owner: FakeControlHandle; timer: NodeJS.Timeout } | undefined;
  private lastHoldId = 0;
  /** How holds ended, as STATS counts them. */
  readonly holdsEnded = { ok: 0, expired: 0, aborted: 0 };

  addDevice(opts: FakeDeviceOptions): FakeDevice {
    const d = new FakeDevice(this, this.devices.length, opts);
    this.devices.push(d);
    return d;
  }

  device(index: number): FakeDevice {
    const d = this.devices[index];
    if (!d) throw errno('ENODEV', `no device ${index}`);
    return d;
  }

  open(): FakeControlHandle {
    return new FakeControlHandle(this);
  }

  /** Reads a device's data by its path (the capture's readVolume). */
  readonly readVolume = async (path: string, offset: number, length: number): Promise<Buffer> => {
    const d = this.devices.find((x) => x.path === path);
    if (!d) throw errno('ENOENT', path);
    return Buffer.from(d.data.subarray(offset, offset + length));
  };

  queue(rec: KernelRecord): void {
    this.pending.push(rec);
    for (const w of this.waiters.splice(0)) w();
  }

  /** Records of a device still in the ring (pending or handed out, not committed). */
  recordsOf(devIndex: number): number {
    return this.pending.filter((r) => r.devIndex === devIndex).length + this.handedOut.reduce((n, b) => n + b.records.filter((r) => r.devIndex === devIndex).length, 0);
  }

  /** A reload drops the old load's records of the device; returns them. */
  dropDevice(devIndex: number): KernelRecord[] {
    const dropped = this.pending.filter((r) => r.devIndex === devIndex);
    this.pending = this.pending.filter((r) => r.devIndex !== devIndex);
    for (const b of this.handedOut) {
      dropped.push(...b.records.filter((r) => r.devIndex === devIndex));
      b.records = b.records.filter((r) => r.devIndex !== devIndex);
    }
    return dropped;
  }

  get batchesOutstanding(): number {
    return this.handedOut.length;
  }

  get pendingRecords(): number {
    return this.pending.length;
  }

  // ---- what the handle calls ----

  getChanges(h: FakeControlHandle, buffer: Buffer): KernelBatch {
    this.calls.push('getChanges');
    if (this.owner && this.owner !== h) throw errno('EBUSY');
    this.owner = h;
    if (this.pending.length === 0) return { batchId: 0, records: [], redelivery: false, accuracy: 'exact', bytes: 0 };
    if (this.handedOut.length >= MAX_BATCHES) throw errno('ENOBUFS');
    const records: KernelRecord[] = [];
    let bytes = RECORD_BYTES;
    for (const r of this.pending) {
      const size = RECORD_BYTES + Math.ceil(r.data.length / 8) * 8;
      if (records.length >= this.maxRecordsPerBatch || bytes + size > buffer.length) {
        if (records.length === 0) throw Object.assign(errno('EMSGSIZE'), { needed: bytes + size });
        break;
      }
      records.push(r);
      bytes += size;
    }
    this.pending = this.pending.slice(records.length);
    const batch = { id: this.nextBatchId++, records };
    this.handedOut.push(batch);
    return { batchId: batch.id, records: records.map((r) => ({ ...r })), redelivery: records.some((r) => (r.flags & RecordFlag.REDELIVERED) !== 0), accuracy: 'exact', bytes };
  }

  commit(h: FakeControlHandle, batchId: number): void {
    this.calls.push(`commit ${batchId}`);
    if (this.owner !== h) throw errno('EINVAL');
    if (!this.handedOut.some((b) => b.id === batchId)) throw errno('EINVAL', `batch ${batchId} was never handed out`);
    while (this.handedOut.length > 0 && this.handedOut[0].id <= batchId) {
      const b = this.handedOut.shift() as HandedOut;
      for (const r of b.records) {
        const d = this.devices[r.devIndex];
        d.committedSeq = Math.max(d.committedSeq, r.seq);
      }
    }
  }

  release(h: FakeControlHandle): void {
    if (this.held?.owner === h) this.endHold('aborted');
    if (this.owner !== h) return;
    this.owner = undefined;
    const back = this.handedOut.flatMap((b) => b.records).map((r) => ({ ...r, flags: r.flags | RecordFlag.REDELIVERED }));
    this.handedOut = [];
    this.pending = [...back, ...this.pending];
    for (const w of this.waiters.splice(0)) w();
  }

  wait(timeoutMs: number): Promise<boolean> {
    if (this.pending.length > 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        resolve(this.pending.length > 0);
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== wake);
        resolve(false);
      }, timeoutMs);
      this.waiters.push(wake);
    });
  }

  tag(devices: number[], tagId: number): TagResult {
    this.calls.push('tag');
    const devs = devices.map((i) => this.device(i));
    if (this.held) throw errno('EBUSY');
    if (devs.some((d) => d.mode === 'bitmap')) throw errno('ENOSPC');
    if (devs.some((d) => d.suspended)) throw errno('EAGAIN');
    return { seqs: devs.map((d) => d.emit('tag', tagId, 0)), devices: [...devices], holdNs: 0 };
  }

  /** The hold in place: its id and devices (undefined: none). */
  get holding(): { id: number; devices: number[] } | undefined {
    return this.held && { id: this.held.id, devices: [...this.held.devices] };
  }

  hold(h: FakeControlHandle, devices: number[], holdMs: number): HoldResult {
    this.calls.push(`hold ${devices.join(',')} ${holdMs}`);
    if (devices.length === 0 || holdMs < 1 || holdMs > 5000) throw errno('EINVAL');
    const devs = devices.map((i) => this.device(i));
    if (this.held) throw errno('EBUSY');
    if (devs.some((d) => d.mode === 'bitmap')) throw errno('ENOSPC');
    if (devs.some((d) => d.suspended)) throw errno('EAGAIN');
    const id = ++this.lastHoldId;
    const timer = setTimeout(() => this.endHold('expired'), holdMs);
    this.held = { id, devices: [...devices], owner: h, timer };
    return { holdId: id, drainNs: 0 };
  }

  tagHold(holdId: number, tagId: number): TagResult {
    this.calls.push(`tagHold ${holdId}`);
    if (holdId < 1 || holdId > this.lastHoldId) throw errno('EINVAL');
    const held = this.held;
    if (held?.id !== holdId) throw new HoldEndedError(holdId, 'tag');
    const devs = held.devices.map((i) => this.device(i));
    const failed = devs.some((d) => d.mode === 'bitmap') ? 'ENOSPC' : devs.some((d) => d.suspended) ? 'EAGAIN' : undefined;
    this.endHold(failed ? 'aborted' : 'ok');
    if (failed) throw errno(failed);
    return { seqs: devs.map((d) => d.emit('tag', tagId, 0)), devices: [...held.devices], holdNs: 0 };
  }

  releaseHold(holdId: number): ReleaseResult {
    this.calls.push(`releaseHold ${holdId}`);
    if (holdId < 1 || holdId > this.lastHoldId) throw errno('EINVAL');
    if (this.held?.id !== holdId) throw new HoldEndedError(holdId, 'release');
    this.endHold('aborted');
    return { heldNs: 0 };
  }

  private endHold(how: 'ok' | 'expired' | 'aborted'): void {
    if (!this.held) return;
    clearTimeout(this.held.timer);
    this.held = undefined;
    this.holdsEnded[how]++;
  }

  resyncMark(devIndex: number, offset: number, length: number): number {
    this.calls.push('resyncMark');
    const d = this.device(devIndex);
    if (offset + length > d.sizeBytes) throw errno('ERANGE');
    if (d.suspended) throw errno('EAGAIN');
    if (this.recordsOf(devIndex) >= d.ringCapacity) throw errno('ENOSPC');
    return d.emit('resync-mark', offset, length);
  }

  readBitmap(devIndex: number): BitmapChunk {
    this.calls.push('readBitmap');
    const d = this.device(devIndex);
    if (d.mode === 'bitmap') throw errno('EBUSY');
    const data = Buffer.from(d.bits);
    return { returned: data.length, granularity: d.granularity, nbits: d.nbits, dirtyBits: d.dirtyBits, epoch: d.epoch, cutSeq: 0, data, startByte: 0 };
  }

  clearBitmap(devIndex: number, epoch: number, startBit: number, nbits: number): number {
    this.calls.push(`clearBitmap ${startBit}+${nbits}`);
    const d = this.device(devIndex);
    if (epoch !== d.epoch) throw errno('ESTALE');
    for (let b = startBit; b < startBit + nbits && b < d.nbits; b++) d.bits[b >> 3] &= ~(1 << (b & 7));
    const left = d.dirtyBits;
    if (left === 0 && d.mode === 'draining') d.setMode('data');
    return left;
  }
}

/** One open of the fake control device. */
export class FakeControlHandle implements ControlDevice {
  private closed = false;

  constructor(private readonly kernel: FakeKernel) {}

  private check(): void {
    if (this.closed) throw errno('EBADF');
  }

  async list(): Promise<DeviceInfo[]> {
    this.check();
    return this.kernel.devices.map((d) => d.info());
  }

  async stats(devIndex: number): Promise<{ device: DeviceInfo | null }> {
    this.check();
    return { device: this.kernel.device(devIndex).info() };
  }

  async getChanges(buffer: Buffer): Promise<KernelBatch> {
    this.check();
    return this.kernel.getChanges(this, buffer);
  }

  async commit(batchId: number): Promise<void> {
    this.check();
    this.kernel.commit(this, batchId);
  }

  async wait(timeoutMs: number): Promise<boolean> {
    this.check();
    return this.kernel.wait(timeoutMs);
  }

  async tag(devices: number[], options: { holdMs?: number; tagId?: number }): Promise<TagResult> {
    this.check();
    return this.kernel.tag(devices, options.tagId ?? 0);
  }

  async hold(devices: number[], holdMs: number): Promise<HoldResult> {
    this.check();
    return this.kernel.hold(this, devices, holdMs);
  }

  async tagHold(holdId: number, options: { tagId?: number }): Promise<TagResult> {
    this.check();
    return this.kernel.tagHold(holdId, options.tagId ?? 0);
  }

  async releaseHold(holdId: number): Promise<ReleaseResult> {
    this.check();
    return this.kernel.releaseHold(holdId);
  }

  async vssTag(volumes: string[], devices: number[], options: { tagId?: number; holdMs?: number }): Promise<VssTagResult> {
    this.check();
    const r = this.kernel.tag(devices, options.tagId ?? 0);
    return { tagId: options.tagId ?? 0, seqs: r.seqs, status: devices.map(() => 'ok'), bridged: devices.map(() => true), holdNs: 0, snapshotSetId: '', snapshotDevices: volumes.map(() => '') };
  }

  async resyncMark(devIndex: number, offset: number, length: number): Promise<number> {
    this.check();
    return this.kernel.resyncMark(devIndex, offset, length);
  }

  async readBitmap(devIndex: number): Promise<BitmapChunk> {
    this.check();
    return this.kernel.readBitmap(devIndex);
  }

  async clearBitmap(devIndex: number, epoch: number, startBit: number, nbits: number): Promise<number> {
    this.check();
    return this.kernel.clearBitmap(devIndex, epoch, startBit, nbits);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.kernel.release(this);
  }
}
