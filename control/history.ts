/**
 * What the console charts: each machine's worst RPO and ingest throughput over the last hour
 * (a sample every HOUR_STEP_MS) and the last day (buckets of DAY_STEP_MS: the worst RPO and the
 * mean throughput of the bucket). Kept in memory by the control plane: a restarted receiver
 * starts its charts afresh.
 */

export type HistoryWindow = 'hour' | 'day';
export const HISTORY_WINDOWS: readonly HistoryWindow[] = ['hour', 'day'];

export interface HistorySample {
  timeMs: number;
  rpoSeconds: number;
  bytesPerSecond: number;
}

export interface MachineHistory {
  window: HistoryWindow;
  stepMs: number;
  /** Oldest first. */
  samples: HistorySample[];
}

export const HOUR_STEP_MS = 5_000;
export const DAY_STEP_MS = 5 * 60_000;
const HOUR_SAMPLES = 3600_000 / HOUR_STEP_MS;
const DAY_SAMPLES = (24 * 3600_000) / DAY_STEP_MS;

/** A volume's ingest rate from its cumulative received-byte counter, over the last `spanMs`. */
export class ThroughputMeter {
  private readonly readings = new Map<string, Array<{ timeMs: number; bytes: number }>>();

  constructor(private readonly spanMs = 5_000) {}

  note(volumeId: string, timeMs: number, receivedBytes: number): void {
    const list = this.readings.get(volumeId) ?? [];
    this.readings.set(volumeId, list);
    // A counter that went back (the receiver reopened the volume) starts over.
    if (list.length > 0 && receivedBytes < list[list.length - 1].bytes) list.length = 0;
    list.push({ timeMs, bytes: receivedBytes });
    // Keep one reading at or before the span's start as its base.
    while (list.length > 2 && list[1].timeMs <= timeMs - this.spanMs) list.shift();
  }

  /** Bytes per second; 0 until two readings are apart. */
  rate(volumeId: string): number {
    const list = this.readings.get(volumeId);
    if (!list || list.length < 2) return 0;
    const first = list[0];
    const last = list[list.length - 1];
    const dt = last.timeMs - first.timeMs;
    return dt > 0 ? ((last.bytes - first.bytes) * 1000) / dt : 0;
  }

  forget(keep: ReadonlySet<string>): void {
    for (const id of this.readings.keys()) if (!keep.has(id)) this.readings.delete(id);
  }
}

interface Bucket {
  startMs: number;
  worstRpo: number;
  sumRate: number;
  count: number;
}

class MachineSeries {
  readonly hour: HistorySample[] = [];
  readonly day: HistorySample[] = [];
  private bucket: Bucket | undefined;

  add(sample: HistorySample): void {
    this.hour.push(sample);
    if (this.hour.length > HOUR_SAMPLES) this.hour.shift();
    const startMs = Math.floor(sample.timeMs / DAY_STEP_MS) * DAY_STEP_MS;
    if (this.bucket && this.bucket.startMs !== startMs) {
      this.day.push(bucketSample(this.bucket));
      if (this.day.length > DAY_SAMPLES) this.day.shift();
      this.bucket = undefined;
    }
    this.bucket ??= { startMs, worstRpo: 0, sumRate: 0, count: 0 };
    this.bucket.worstRpo = Math.max(this.bucket.worstRpo, sample.rpoSeconds);
    this.bucket.sumRate += sample.bytesPerSecond;
    this.bucket.count++;
  }

  daySamples(): HistorySample[] {
    return this.bucket ? [...this.day, bucketSample(this.bucket)] : [...this.day];
  }
}

function bucketSample(b: Bucket): HistorySample {
  return { timeMs: b.startMs, rpoSeconds: b.worstRpo, bytesPerSecond: b.count > 0 ? b.sumRate / b.count : 0 };
}

/** Every machine's samples; `record` is called often and keeps one sample per HOUR_STEP_MS. */
export class HistoryRecorder {
  private readonly series = new Map<string, MachineSeries>();
  private lastSampleMs = -Infinity;

  record(timeMs: number, machines: ReadonlyArray<{ id: string; rpoSeconds: number; bytesPerSecond: number }>): void {
    if (timeMs < this.lastSampleMs + HOUR_STEP_MS) return;
    this.lastSampleMs = timeMs;
    const present = new Set<string>();
    for (const m of machines) {
      present.add(m.id);
      let s = this.series.get(m.id);
      if (!s) this.series.set(m.id, (s = new MachineSeries()));
      s.add({ timeMs, rpoSeconds: m.rpoSeconds, bytesPerSecond: m.bytesPerSecond });
    }
    for (const id of this.series.keys()) if (!present.has(id)) this.series.delete(id);
  }

  history(machineId: string, window: HistoryWindow): MachineHistory {
    const s = this.series.get(machineId);
    if (window === 'hour') return { window, stepMs: HOUR_STEP_MS, samples: s ? [...s.hour] : [] };
    return { window, stepMs: DAY_STEP_MS, samples: s ? s.daySamples() : [] };
  }
}
