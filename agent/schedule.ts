/** Calls a function every `periodMs` (0: never); the period can change at any time. */
export class Repeater {
  private timer: NodeJS.Timeout | undefined;
  private period = 0;

  constructor(private readonly fn: () => void) {}

  get periodMs(): number {
    return this.period;
  }

  /** A new period restarts the count from now; the same period changes nothing. */
  set(periodMs: number): void {
    if (periodMs === this.period) return;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.period = periodMs;
    if (periodMs > 0) {
      this.timer = setInterval(this.fn, periodMs);
      this.timer.unref();
    }
  }

  stop(): void {
    this.set(0);
  }
}
