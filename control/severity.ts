import type { EventSeverity } from './model';

const RANK: Record<EventSeverity, number> = { info: 0, warning: 1, error: 2 };

export const SEVERITIES: readonly EventSeverity[] = ['info', 'warning', 'error'];

export function severityRank(s: EventSeverity): number {
  return RANK[s];
}

/** True when `s` is at or above `min`. */
export function meetsSeverity(s: EventSeverity, min: EventSeverity): boolean {
  return RANK[s] >= RANK[min];
}

export function isSeverity(value: unknown): value is EventSeverity {
  return typeof value === 'string' && (SEVERITIES as readonly string[]).includes(value);
}
