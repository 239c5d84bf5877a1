import { log } from '../common/log';
import type { EventFilter } from './contract';
import type { ControlEvent, EventSeverity } from './model';
import { SEVERITIES } from './severity';
import type { ControlStore, NewEvent } from './store';

type Listener = (event: ControlEvent) => void;

/**
 * The event log: every event is stored first, then handed to the subscribers (the webhooks,
 * the API's live stream) in the order stored. A subscriber that throws is logged and skipped.
 */
export class EventLog {
  private readonly listeners = new Set<Listener>();
  private readonly counts = new Map<EventSeverity, number>();

  constructor(
    private readonly store: ControlStore,
    private readonly now: () => number = Date.now,
  ) {
    for (const { severity, count } of store.eventCounts()) this.counts.set(severity, count);
  }

  /**
   * Stores and announces an event. A store that fails (a full or failing disk under the catalog)
   * loses the event, logged, and never fails the caller: replication does not wait on events.
   */
  add(event: Omit<NewEvent, 'timeMs'> & { timeMs?: number }): ControlEvent | undefined {
    let stored: ControlEvent;
    try {
      stored = this.store.addEvent({ ...event, timeMs: event.timeMs ?? this.now() });
    } catch (err) {
      log.error('event not stored', { kind: event.kind, subject: event.subjectId, text: event.text, error: (err as Error).message });
      return undefined;
    }
    this.counts.set(stored.severity, (this.counts.get(stored.severity) ?? 0) + 1);
    const level = stored.severity === 'error' ? 'error' : stored.severity === 'warning' ? 'warn' : 'info';
    log.log(level, 'event', { kind: stored.kind, subject: stored.subjectId, text: stored.text });
    for (const listener of [...this.listeners]) {
      try {
        listener(stored);
      } catch (err) {
        log.warn('event subscriber failed', { event: stored.id, error: (err as Error).message });
      }
    }
    return stored;
  }

  list(filter?: EventFilter): ControlEvent[] {
    return this.store.events(filter);
  }

  get(id: number): ControlEvent | undefined {
    return this.store.event(id);
  }

  acknowledge(id: number): ControlEvent | undefined {
    if (!this.store.event(id)) return undefined;
    this.store.acknowledgeEvent(id);
    return this.store.event(id);
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Events stored so far (this data directory's whole history), by severity. */
  totals(): Record<EventSeverity, number> {
    return Object.fromEntries(SEVERITIES.map((s) => [s, this.counts.get(s) ?? 0])) as Record<EventSeverity, number>;
  }
}
