import type { ControlEvent } from './model';

/** The event kind that ends each latched condition (control/alerts.ts raises both). */
const CLEARED_BY: Readonly<Record<string, string>> = {
  'rpo-recovered': 'rpo-exceeded',
  'machine-reconnected': 'machine-disconnected',
  'disk-ok': 'disk-low',
  'retention-restored': 'retention-shortfall',
};

/**
 * The alerts open now, newest first: warnings and errors not acknowledged and not ended by
 * their condition's end event (a machine that reconnected closes its disconnect alert). An
 * event with no end event (a round that aborted) stays open until acknowledged. Pure.
 */
export function openAlerts(events: readonly ControlEvent[]): ControlEvent[] {
  const open = new Map<string, ControlEvent>();
  for (const e of [...events].sort((a, b) => a.id - b.id)) {
    const ended = CLEARED_BY[e.kind];
    if (ended !== undefined) {
      open.delete(`${ended}\u0000${e.subjectId}`);
      continue;
    }
    if (e.severity === 'info' || e.acknowledged) continue;
    // A kind without an end event keeps each occurrence; a latched one keeps its latest.
    const latched = Object.values(CLEARED_BY).includes(e.kind);
    open.set(latched ? `${e.kind}\u0000${e.subjectId}` : `#${e.id}`, e);
  }
  return [...open.values()].sort((a, b) => b.id - a.id);
}
