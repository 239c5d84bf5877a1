import { AccuracyName, weakerAccuracy } from '../../proto/types';
import type { CaptureSource, VolumeCut } from '../capture/types';
import { FreezeGuard, FreezeOps } from './freeze';
import { hookFailure } from './quiesce';
import { appTagVerdict, AppTagFacts, DowngradeCode } from './verdict';

export interface AppTagSettings {
  freezeTimeoutMs: number;
  holdMs: number;
  preHook?: string;
  postHook?: string;
  hookTimeoutMs: number;
}

export interface AppTagCut {
  cuts: VolumeCut[];
  accuracy: AccuracyName;
  /** How long the filesystems stayed frozen; absent when nothing was frozen. */
  frozenMs?: number;
  /** The cut was taken while every filesystem was frozen and the streams had settled. */
  appConsistent: boolean;
  /** Why the point is not application-consistent, when it is not: the first reason's code... */
  reasonCode?: DowngradeCode;
  /** ...and every reason, in words. */
  note?: string;
  /** The post-hook failed after the cut (the point stands; the application may need a hand). */
  postHookError?: string;
}

/** The accuracy of a multi-volume point: that of its weakest cut. */
export function weakestCut(cuts: readonly VolumeCut[]): AccuracyName {
  return cuts.reduce<AccuracyName>((worst, c) => weakerAccuracy(worst, c.accuracy), 'exact');
}

/**
 * Cuts an application-consistent point: pre-hook, freeze the mounted filesystems, make the
 * streams reflect the frozen volumes, cut, thaw, post-hook. The filesystems are thawed on every
 * path and never stay frozen past the bound. When a step fails (the pre-hook, a freeze, the
 * settle) the cut is still taken, as a crash-consistent point, and the verdict says why. The
 * post-hook runs whenever the pre-hook succeeded.
 */
export async function cutAppConsistent(
  source: CaptureSource,
  volumeIds: string[],
  mounts: string[],
  settings: AppTagSettings,
  freezeOps?: FreezeOps,
): Promise<AppTagCut> {
  const preHookError = settings.preHook ? await hookFailure(settings.preHook, 'pre', settings.hookTimeoutMs) : undefined;
  const guard = new FreezeGuard(settings.freezeTimeoutMs, freezeOps);
  // The settle may use the bound but for a little kept for the cut itself.
  const cutReserveMs = Math.min(500, settings.freezeTimeoutMs / 10);
  const facts: AppTagFacts = { mounts, preHookError, settleBudgetMs: settings.freezeTimeoutMs - cutReserveMs, freezeExpired: false, freezeTimeoutMs: settings.freezeTimeoutMs };
  let result: AppTagCut | undefined;
  try {
    if (!preHookError) {
      try {
        guard.freeze(mounts);
      } catch (err) {
        facts.freezeError = (err as Error).message;
      }
      if (!facts.freezeError) facts.settle = await source.settle(volumeIds, guard.deadlineMs - cutReserveMs);
    }
    facts.freezeExpired = guard.expired;
    const quiesced = appTagVerdict(facts).appConsistent;
    const cuts = await source.tag(volumeIds, { holdMs: settings.holdMs, quiesced });
    facts.freezeExpired = guard.expired;
    const frozenMs = guard.isFrozen ? guard.thaw() : undefined;
    const verdict = appTagVerdict(facts);
    result = { cuts, accuracy: weakestCut(cuts), frozenMs, appConsistent: verdict.appConsistent, reasonCode: verdict.code, note: verdict.reason };
  } finally {
    guard.thaw();
    if (settings.postHook && !preHookError) {
      const postHookError = await hookFailure(settings.postHook, 'post', settings.hookTimeoutMs);
      if (result) result.postHookError = postHookError;
    }
  }
  return result;
}

/**
 * Windows: pre-hook, a cut at the VSS freeze point of `volumes` (the kernel source runs the VSS
 * requester and the filter inserts the tag while the writers are frozen), post-hook. A failed
 * pre-hook leaves a crash-consistent cut without VSS.
 */
export async function cutWithVss(source: CaptureSource, volumeIds: string[], volumes: string[], settings: AppTagSettings): Promise<AppTagCut> {
  if (volumes.length === 0) throw new Error('an application-consistent tag on Windows needs the volumes\' mount points (e.g. "C:\\") in the config');
  const preHookError = settings.preHook ? await hookFailure(settings.preHook, 'pre', settings.hookTimeoutMs) : undefined;
  if (preHookError) {
    const cuts = await source.tag(volumeIds, { holdMs: settings.holdMs, quiesced: false });
    const verdict = appTagVerdict({ mounts: volumes, preHookError, settleBudgetMs: 0, freezeExpired: false, freezeTimeoutMs: settings.freezeTimeoutMs });
    return { cuts, accuracy: weakestCut(cuts), appConsistent: false, reasonCode: verdict.code, note: verdict.reason };
  }
  const started = Date.now();
  let result: AppTagCut | undefined;
  try {
    const cuts = await source.tag(volumeIds, { holdMs: settings.holdMs, quiesced: true, vssVolumes: volumes });
    result = { cuts, accuracy: weakestCut(cuts), frozenMs: Date.now() - started, appConsistent: true };
  } finally {
    if (settings.postHook) {
      const postHookError = await hookFailure(settings.postHook, 'post', settings.hookTimeoutMs);
      if (result) result.postHookError = postHookError;
    }
  }
  return result;
}
