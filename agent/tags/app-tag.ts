import { log } from '../../common/log';
import { AccuracyName, weakerAccuracy } from '../../proto/types';
import type { CaptureSource, VolumeCut } from '../capture/types';
import { FreezeGuard, FreezeOps } from './freeze';
import { runHook } from './hooks';

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
  frozenMs: number;
  /** The cut was taken while every filesystem was frozen and the streams had settled. */
  appConsistent: boolean;
  /** Why the point is not application-consistent, when it is not. */
  note?: string;
}

/** The accuracy of a multi-volume point: that of its weakest cut. */
export function weakestCut(cuts: readonly VolumeCut[]): AccuracyName {
  return cuts.reduce<AccuracyName>((worst, c) => weakerAccuracy(worst, c.accuracy), 'exact');
}

/**
 * Cuts an application-consistent point: pre-hook, freeze the mounted filesystems, make the
 * streams reflect the frozen volumes, cut, thaw, post-hook. The filesystems are thawed on every
 * path and never stay frozen past the bound. The post-hook runs whenever the pre-hook ran.
 */
export async function cutAppConsistent(
  source: CaptureSource,
  volumeIds: string[],
  mounts: string[],
  settings: AppTagSettings,
  freezeOps?: FreezeOps,
): Promise<AppTagCut> {
  if (settings.preHook) await runHook(settings.preHook, 'pre', settings.hookTimeoutMs);
  const guard = new FreezeGuard(settings.freezeTimeoutMs, freezeOps);
  let result: AppTagCut;
  try {
    guard.freeze(mounts);
    // Leave a little of the bound for the cut itself.
    const settled = await source.settle(volumeIds, guard.deadlineMs - Math.min(500, settings.freezeTimeoutMs / 10));
    const consistent = settled && !guard.expired;
    const cuts = await source.tag(volumeIds, { holdMs: settings.holdMs, quiesced: consistent && mounts.length > 0 });
    const frozenMs = guard.thaw();
    const note = guard.expired
      ? `the freeze bound of ${settings.freezeTimeoutMs} ms passed before the streams settled`
      : !settled
        ? 'the volumes could not be settled (resync still running?)'
        : mounts.length === 0
          ? 'no mount point is configured, so nothing was frozen'
          : undefined;
    result = { cuts, accuracy: weakestCut(cuts), frozenMs, appConsistent: note === undefined, note };
  } finally {
    guard.thaw();
    if (settings.postHook) {
      await runHook(settings.postHook, 'post', settings.hookTimeoutMs).catch((err: Error) => log.error('post-hook failed', { error: err.message }));
    }
  }
  return result;
}

/**
 * Windows: pre-hook, a cut at the VSS freeze point of `volumes` (the kernel source runs the VSS
 * requester and the filter inserts the tag while the writers are frozen), post-hook.
 */
export async function cutWithVss(source: CaptureSource, volumeIds: string[], volumes: string[], settings: AppTagSettings): Promise<AppTagCut> {
  if (volumes.length === 0) throw new Error('an application-consistent tag on Windows needs the volumes\' mount points (e.g. "C:\\") in the config');
  if (settings.preHook) await runHook(settings.preHook, 'pre', settings.hookTimeoutMs);
  try {
    const started = Date.now();
    const cuts = await source.tag(volumeIds, { holdMs: settings.holdMs, quiesced: true, vssVolumes: volumes });
    return { cuts, accuracy: weakestCut(cuts), frozenMs: Date.now() - started, appConsistent: true };
  } finally {
    if (settings.postHook) {
      await runHook(settings.postHook, 'post', settings.hookTimeoutMs).catch((err: Error) => log.error('post-hook failed', { error: err.message }));
    }
  }
}
