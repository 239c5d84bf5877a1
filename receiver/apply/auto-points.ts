import type { AutoPoint } from './apply-engine';

const AUTO_POINT_INTERVAL_US = 1_000_000;

/** Where the automatic points of a stream stand: the last one's capture time, and the last applied record's. */
export interface AutoPointClock {
  autoAfterUs: number;
  capturedUs: number;
}

/**
 * The crash-consistent points one change set yields: one per second of capture time of a
 * write-ordered (exact) stream. Extents at or below `afterSeq` were applied before (a replay).
 * Advances `clock` and appends to `points`.
 */
export function collectAutoPoints(extents: ReadonlyArray<{ seq: number; captureTimeUs: number }>, exact: boolean, afterSeq: number, clock: AutoPointClock, points: AutoPoint[]): void {
  for (const ext of extents) {
    if (ext.seq <= afterSeq) continue;
    clock.capturedUs = ext.captureTimeUs;
    if (exact && ext.captureTimeUs >= clock.autoAfterUs + AUTO_POINT_INTERVAL_US) {
      points.push({ seq: ext.seq, timeUs: ext.captureTimeUs });
      clock.autoAfterUs = ext.captureTimeUs;
    }
  }
}
