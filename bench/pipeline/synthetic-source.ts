import { Signal } from '../../common/signal';
import { nowUs } from '../../common/time';
import type { CaptureBatch, CaptureMode, CaptureSource, CapturedRecord, RepairProgress, RepairResult, ResyncNeed, ResyncProgress, SettleResult, VolumeCut } from '../../agent/capture/types';

/**
 * A capture source for the pipeline bench: sequential writes of `recordBytes` over a volume,
 * as fast as the pipeline takes them or at a fixed rate, each stamped with its creation time.
 * It stands in for the kernel source, whose records arrive with their data.
 */
export class SyntheticSource implements CaptureSource {
  readonly kind = 'kernel' as const;
  private nextSeq = 1;
  private offset = 0;
  private emitted = 0;
  private queue: CapturedRecord[] = [];
  private readonly available = new Signal();
  private timer: NodeJS.Timeout | undefined;
  private batchId = 1;

  constructor(
    private readonly volumeId: string,
    private readonly volumeBytes: number,
    private readonly recordBytes: number,
    private readonly data: (index: number) => Buffer,
    /** Bytes to produce in all. */
    readonly totalBytes: number,
  ) {}

  get lastSeq(): number {
    return Math.ceil(this.totalBytes / this.recordBytes);
  }

  /** Produces at `bytesPerSecond` on a 10 ms tick instead of on demand. */
  startRate(bytesPerSecond: number): void {
    const tickMs = 10;
    let due = 0;
    this.timer = setInterval(() => {
      due += (bytesPerSecond * tickMs) / 1000;
      while (due >= this.recordBytes && this.emitted < this.totalBytes) {
        this.queue.push(this.make());
        due -= this.recordBytes;
      }
      this.available.notify();
      if (this.emitted >= this.totalBytes) clearInterval(this.timer);
    }, tickMs);
  }

  private make(): CapturedRecord {
    const seq = this.nextSeq++;
    const record: CapturedRecord = { volumeId: this.volumeId, seq, kind: 'write', offset: this.offset, length: this.recordBytes, captureTimeUs: nowUs(), data: this.data(seq), accuracy: 'exact' };
    this.offset = (this.offset + this.recordBytes) % this.volumeBytes;
    this.emitted += this.recordBytes;
    return record;
  }

  async attach(): Promise<ResyncNeed> {
    return { kind: 'none', reason: 'synthetic' };
  }

  startResync(): void {}

  resyncProgress(): ResyncProgress | undefined {
    return undefined;
  }

  readonly blockSize = 65536;

  async repair(): Promise<RepairResult> {
    throw new Error('the synthetic source cannot repair');
  }

  repairProgress(): RepairProgress | undefined {
    return undefined;
  }

  mode(): CaptureMode {
    return 'exact';
  }

  async next(maxBytes: number, timeoutMs: number): Promise<CaptureBatch | undefined> {
    if (this.timer === undefined) {
      let bytes = 0;
      while (bytes < maxBytes && this.emitted < this.totalBytes) {
        this.queue.push(this.make());
        bytes += this.recordBytes;
      }
    }
    if (this.queue.length === 0) await this.available.wait(timeoutMs);
    if (this.queue.length === 0) return undefined;
    const records = this.queue;
    this.queue = [];
    return { id: this.batchId++, records };
  }

  async commit(): Promise<void> {}

  oldestQueuedCaptureUs(): number {
    return this.queue[0]?.captureTimeUs ?? 0;
  }

  async tag(): Promise<VolumeCut[]> {
    return [{ volumeId: this.volumeId, seq: this.nextSeq - 1, accuracy: 'exact' }];
  }

  async settle(): Promise<SettleResult> {
    return { settled: true };
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
  }
}
