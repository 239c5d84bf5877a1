import { MultiBar, Presets, SingleBar } from 'cli-progress';
import type { AgentStatus } from '../agent/status';
import type { VerifyProgress } from '../agent/verify/verifier';

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

/** `ferry agent verify` on a terminal: one bar for the running phase of the running volume. */
export class VerifyProgressBar {
  private readonly bar = new SingleBar(
    { format: ' {volume} {phase} |{bar}| {percentage}% {suspects}', hideCursor: true, clearOnComplete: true, stream: process.stderr },
    Presets.shades_classic,
  );
  private key = '';
  private started = false;

  update(p: VerifyProgress): void {
    const key = `${p.volumeId} ${p.phase} ${p.check}`;
    const payload = {
      volume: p.volumeId,
      phase: p.phase === 'compare' ? 'compare' : p.phase === 'check' ? `check ${p.check}` : 'repair',
      suspects: p.phase === 'repair' ? '' : `${p.suspects} block(s) differ${p.phase === 'compare' ? ' so far' : ', being checked'}`,
    };
    if (key !== this.key) {
      if (this.started) this.bar.stop();
      this.bar.start(Math.max(1, p.totalBytes), p.doneBytes, payload);
      this.started = true;
      this.key = key;
    }
    this.bar.update(p.doneBytes, payload);
  }

  stop(): void {
    if (this.started) this.bar.stop();
    this.started = false;
  }
}
