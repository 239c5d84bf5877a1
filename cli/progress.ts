import { MultiBar, Presets, SingleBar } from 'cli-progress';
import type { AgentStatus } from '../agent/status';

const REFRESH_MS = 500;

/** Resync progress bars on a terminal, one per volume while it resyncs. */
export class ResyncProgressBars {
  private readonly multi = new MultiBar(
    { format: ' {volume} {kind} resync |{bar}| {percentage}% {rate} MB/s ETA {eta_formatted}', hideCursor: true, clearOnComplete: false, stream: process.stderr },
    Presets.shades_classic,
  );
  private readonly bars = new Map<string, SingleBar>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly status: () => AgentStatus) {
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
    this.timer.unref();
  }

  private refresh(): void {
    for (const v of this.status().volumes) {
      const r = v.resync;
      if (!r) continue;
      let bar = this.bars.get(v.volumeId);
      if (!bar) {
        if (r.finished) continue;
        bar = this.multi.create(r.totalBytes, r.doneBytes, { volume: v.volumeId, kind: r.kind, rate: '0.0' });
        this.bars.set(v.volumeId, bar);
      }
      bar.update(r.doneBytes, { volume: v.volumeId, kind: r.kind, rate: (r.rateBytesPerSecond / 1e6).toFixed(1) });
      if (r.finished) bar.stop();
    }
  }

  stop(): void {
    clearInterval(this.timer);
    this.multi.stop();
  }
}
