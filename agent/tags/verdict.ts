import { formatBytes, formatDuration } from '../../common/units';
import type { SettleFailure, SettleResult } from '../capture/types';

/** Why an application-consistent tag became a crash point; stable, for scripts (`--json`). */
export type DowngradeCode = 'pre-hook-failed' | 'freeze-failed' | 'no-mount' | 'resync-running' | 'settle-deadline' | 'stopping' | 'freeze-bound';

/** What happened while an app tag was cut: the only input of the verdict. */
export interface AppTagFacts {
  /** The mount points the config names for the volumes (frozen when none of the steps below failed). */
  mounts: readonly string[];
  /** The pre-hook failed (its message): nothing was frozen or settled. */
  preHookError?: string;
  /** Freezing a mount failed (its message): whatever had been frozen was thawed at once. */
  freezeError?: string;
  /** What the source's settle said; absent when it did not run. */
  settle?: SettleResult;
  /** How long settle was given. */
  settleBudgetMs: number;
  /** The watchdog thawed the filesystems before the cut was taken. */
  freezeExpired: boolean;
  /** The freeze bound (tags.freezeTimeoutMs). */
  freezeTimeoutMs: number;
}

export interface AppTagVerdict {
  appConsistent: boolean;
  /** The first reason: the one to act on. */
  code?: DowngradeCode;
  /** Every reason that holds, in the words an operator acts on. */
  reason?: string;
}

/**
 * Decides whether a cut is application-consistent and, when it is not, says why: every reason
 * that holds, the cause first (a failed pre-hook or freeze, no mount point), then what the
 * source reported (a resync, the settle deadline), then the freeze bound.
 */
export function appTagVerdict(f: AppTagFacts): AppTagVerdict {
  const reasons: Array<[DowngradeCode, string]> = [];
  const froze = !f.preHookError && !f.freezeError && f.mounts.length > 0;
  if (f.preHookError) reasons.push(['pre-hook-failed', `the pre-hook failed, so nothing was frozen (${f.preHookError})`]);
  else if (f.freezeError) reasons.push(['freeze-failed', `${f.freezeError}, so nothing stayed frozen`]);
  else if (f.mounts.length === 0) reasons.push(['no-mount', 'no mount point is configured for the volumes, so nothing was frozen']);
  if (f.settle && !f.settle.settled) reasons.push(settleReason(f.settle.failure, f, froze));
  if (froze && f.freezeExpired) {
    reasons.push(['freeze-bound', `the freeze bound (tags.freezeTimeoutMs, ${formatDuration(f.freezeTimeoutMs)}) passed before the cut: the watchdog thawed the filesystems`]);
  }
  if (reasons.length === 0) return { appConsistent: true };
  return { appConsistent: false, code: reasons[0][0], reason: reasons.map(([, text]) => text).join('; ') };
}

function settleReason(failure: SettleFailure, f: AppTagFacts, froze: boolean): [DowngradeCode, string] {
  switch (failure.kind) {
    case 'resync-running': {
      const percent = failure.totalBytes > 0 ? Math.floor((100 * failure.doneBytes) / failure.totalBytes) : 0;
      return ['resync-running', `a ${failure.resync} resync of ${failure.volumeId} is running (${percent}% read): its stream matches the volume only once the resync is done`];
    }
    case 'deadline': {
      const since = froze ? 'since the freeze' : 'since the tag was asked for';
      const paused = failure.waitingForAcks ? ', and reading was paused until the receiver acknowledges the changes already read' : '';
      return [
        'settle-deadline',
        `the settle deadline passed: after ${formatDuration(failure.waitedMs)} ${failure.volumeId} had not been read in full ${since} ` +
          `(${formatBytes(failure.doneBytes)} of ${formatBytes(failure.totalBytes)}${paused}); ` +
          `the wait is bounded by tags.freezeTimeoutMs (${formatDuration(f.freezeTimeoutMs)}, less ${formatDuration(f.freezeTimeoutMs - f.settleBudgetMs)} kept for the cut)`,
      ];
    }
    case 'stopping':
      return ['stopping', 'the agent is stopping, so the streams were not settled'];
  }
}
