/**
 * The agent's reconnect schedule: the delay doubles from `minMs` to `maxMs` while attempts fail,
 * and starts over once a session got as far as a login, so a receiver restart costs a fraction
 * of a second, not the step a long outage had grown to. Each delay is jittered by +-25% so that
 * many agents do not come back in lockstep.
 */
export class ReconnectBackoff {
  private stepMs: number;

  constructor(
    private readonly minMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {
    this.stepMs = minMs;
  }

  /** A session logged in and declared its volumes: the next retry comes at the minimum again. */
  reset(): void {
    this.stepMs = this.minMs;
  }

  /** The wait before the next attempt: its nominal step and the jittered delay. */
  next(): { stepMs: number; delayMs: number } {
    const stepMs = this.stepMs;
    this.stepMs = Math.min(this.maxMs, stepMs * 2);
    return { stepMs, delayMs: Math.round(stepMs * (0.75 + this.random() / 2)) };
  }
}
