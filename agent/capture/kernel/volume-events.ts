/** Transitions of one volume that its loops wait for. */
export type VolumeEvent =
  /** A resync, repair or drain was asked for. */
  | 'request'
  /** The receiver holds more of the stream (a batch was committed; mark slots were freed). */
  | 'committed'
  /** Marks of a walk were converted (their data is in the stream). */
  | 'converted'
  /** A window of marks is fully placed. */
  | 'placed'
  /** The device's capture mode changed (a MODE record). */
  | 'mode'
  /** A walk finished clearing its bits. */
  | 'cleared'
  /** A walk stopped before it completed (an error): it is dropped from the walks clearing bits. */
  | 'cancelled'
  /** The device was reloaded: walks and marks of the old load are void. */
  | 'abandoned'
  /** The agent is stopping. */
  | 'stopped';

/** What waiters see of a volume's events (only the volume emits them). */
export interface VolumeEventWaits {
  readonly stamp: number;
  next(events: readonly VolumeEvent[], opts?: { since?: number; timeoutMs?: number }): Promise<VolumeEvent | 'timeout'>;
}

interface Waiter {
  events: readonly VolumeEvent[];
  wake: (e: VolumeEvent | 'timeout') => void;
}

/**
 * Edge-triggered events with a stamp, so that a loop that did some async work cannot miss an
 * event that happened meanwhile: take `stamp` before the work, pass it as `since` to `next`.
 */
export class VolumeEvents implements VolumeEventWaits {
  private count = 0;
  private readonly last = new Map<VolumeEvent, number>();
  private waiters: Waiter[] = [];

  get stamp(): number {
    return this.count;
  }

  emit(e: VolumeEvent): void {
    this.last.set(e, ++this.count);
    const waiting = this.waiters;
    this.waiters = [];
    for (const w of waiting) {
      if (w.events.includes(e)) w.wake(e);
      else this.waiters.push(w);
    }
  }

  /**
   * The first of `events` after `since` (default: from now on); with `timeoutMs`, 'timeout' when
   * none came in time. Only waits that stand for a state the kernel changes without telling the
   * agent pass a timeout.
   */
  next(events: readonly VolumeEvent[], opts: { since?: number; timeoutMs?: number } = {}): Promise<VolumeEvent | 'timeout'> {
    if (opts.since !== undefined) {
      for (const e of events) if ((this.last.get(e) ?? 0) > opts.since) return Promise.resolve(e);
    }
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const waiter: Waiter = {
        events,
        wake: (e) => {
          if (timer) clearTimeout(timer);
          resolve(e);
        },
      };
      if (opts.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          resolve('timeout');
        }, Math.max(0, opts.timeoutMs));
      }
      this.waiters.push(waiter);
    });
  }
}
