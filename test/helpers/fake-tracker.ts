import { EVENT_BYTES, type BitmapTake, type TrackedDisk, type TrackerCounters, type WriteTracker } from '../../agent/capture/ebpf/tracker';

const REQ_OP_WRITE = 1;

/**
 * An in-memory WriteTracker for unit tests of the ebpf source: the test reports writes (as the
 * BPF program would on completion); a full ring sends them to the disk's dirty bitmap instead.
 * Its state outlives a source (as the pinned program does) until `reload`.
 */
export class FakeTracker implements WriteTracker {
  instanceId: string;
  reused = false;
  /** Events the ring holds at most; beyond that writes set bitmap bits. */
  ringCapacity = 1 << 20;
  private ring: Buffer[] = [];
  private readonly disks = new Map<number, TrackedDisk>();
  private readonly bitmaps = new Map<number, Buffer>();
  private readonly count: TrackerCounters = { events: 0, overflowed: 0, lost: 0 };
  private loads = 1;
  closed = 0;

  constructor(readonly name = 'fake') {
    this.instanceId = `${name}-1`;
  }

  /** A reboot or an unload: a new instance that tracks nothing. */
  reload(): void {
    this.loads++;
    this.instanceId = `${this.name}-${this.loads}`;
    this.ring = [];
    this.disks.clear();
    this.bitmaps.clear();
  }

  /** A write of `bytes` at byte `diskOffset` of the disk (major:minor) completed now. */
  write(major: number, minor: number, diskOffset: number, bytes: number): void {
    for (const [slot, d] of this.disks) {
      if (d.major !== major || d.minor !== minor) continue;
      if (this.ring.length < this.ringCapacity) {
        const e = Buffer.alloc(EVENT_BYTES);
        e.writeBigUInt64LE(process.hrtime.bigint(), 0);
        e.writeBigUInt64LE(BigInt(diskOffset / 512), 8);
        e.writeUInt32LE(bytes, 16);
        e.writeUInt32LE(slot, 20);
        e.writeUInt16LE(REQ_OP_WRITE, 24);
        this.ring.push(e);
        this.count.events++;
        continue;
      }
      this.count.overflowed++;
      const bits = this.bitmaps.get(slot) as Buffer;
      const chunk = 2 ** d.chunkShift;
      for (let c = Math.floor(diskOffset / chunk); c * chunk < diskOffset + bytes; c++) bits[c >> 3] |= 1 << (c & 7);
    }
  }

  /** An event the decoder refuses (an unknown op): a program and agent that do not match. */
  garble(): void {
    const e = Buffer.alloc(EVENT_BYTES);
    e.writeUInt16LE(77, 24);
    this.ring.push(e);
  }

  track(disk: TrackedDisk): number {
    for (const [slot, d] of this.disks) {
      if (d.major !== disk.major || d.minor !== disk.minor) continue;
      if (d.chunkShift !== disk.chunkShift || d.sizeBytes !== disk.sizeBytes) throw new Error('geometry changed');
      return slot;
    }
    let slot = 0;
    while (this.disks.has(slot)) slot++;
    this.disks.set(slot, { ...disk });
    this.bitmaps.set(slot, Buffer.alloc(Math.ceil(Math.ceil(disk.sizeBytes / 2 ** disk.chunkShift) / 8)));
    return slot;
  }

  tracked(): Map<number, TrackedDisk> {
    return new Map([...this.disks].map(([s, d]) => [s, { ...d }]));
  }

  untrack(slot: number): void {
    this.disks.delete(slot);
    this.bitmaps.delete(slot);
  }

  drain(maxEvents: number): Buffer {
    return Buffer.concat(this.ring.splice(0, maxEvents));
  }

  takeBitmap(slot: number): BitmapTake {
    const d = this.disks.get(slot);
    const bits = this.bitmaps.get(slot);
    if (!d || !bits) throw new Error(`slot ${slot} is not tracked`);
    const taken = Buffer.from(bits);
    bits.fill(0);
    let dirty = 0;
    for (const byte of taken) for (let b = byte; b; b &= b - 1) dirty++;
    return { bits: taken, nbits: Math.ceil(d.sizeBytes / 2 ** d.chunkShift), chunkShift: d.chunkShift, dirty };
  }

  counters(): TrackerCounters {
    return { ...this.count };
  }

  close(options: { unload: boolean }): void {
    this.closed++;
    if (options.unload) this.reload();
  }
}
