import type { MetricsSnapshot } from './metrics';
import type { FinishedRound } from './rounds';

/** Hold times kept per group for the summary's quantiles. */
const RECENT_HOLDS = 1000;

interface GroupStats {
  done: number;
  aborted: number;
  holdCount: number;
  holdSumMs: number;
  recentHoldsMs: number[];
  /** The reason of the last aborted round while no round was done since. */
  lastAbort?: string;
}

/** Counts of finished rounds and their hold times per group, since the receiver started (for metrics). */
export class RoundStats {
  private readonly groups = new Map<string, GroupStats>();

  /**
   * Counts a finished round. Returns true when an aborted round is to raise an event: always
   * when asked for, and for scheduled ones only when the reason is new (a schedule that keeps
   * failing for one reason says so once, not every interval).
   */
  note({ round, outcome, scheduled }: FinishedRound): boolean {
    const s = this.groups.get(round.groupId) ?? { done: 0, aborted: 0, holdCount: 0, holdSumMs: 0, recentHoldsMs: [] };
    this.groups.set(round.groupId, s);
    if (outcome.state === 'done') {
      s.done++;
      s.lastAbort = undefined;
      if (outcome.holdMs !== null) {
        s.holdCount++;
        s.holdSumMs += outcome.holdMs;
        s.recentHoldsMs.push(outcome.holdMs);
        if (s.recentHoldsMs.length > RECENT_HOLDS) s.recentHoldsMs.shift();
      }
      return false;
    }
    s.aborted++;
    const repeated = scheduled && s.lastAbort === outcome.reason;
    s.lastAbort = outcome.reason;
    return !repeated;
  }

  forget(groupId: string): void {
    this.groups.delete(groupId);
  }

  snapshot(): Pick<MetricsSnapshot, 'rounds' | 'holds'> {
    const entries = [...this.groups];
    return {
      rounds: entries.map(([group, s]) => ({ group, done: s.done, aborted: s.aborted })),
      holds: entries.map(([group, s]) => ({ group, count: s.holdCount, sumSeconds: s.holdSumMs / 1000, recentSeconds: s.recentHoldsMs.map((ms) => ms / 1000) })),
    };
  }
}
