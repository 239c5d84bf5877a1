import { log } from '../common/log';
import { nowUs } from '../common/time';
import type { ferry } from '../proto/frames';
import { EventSeverity, severityValue } from '../proto/validate-control';

/** Stable keys of the events an agent reports (the receiver stores them; alerts key on them). */
export type AgentEventKind =
  | 'app-point-failed'
  | 'app-point-missed'
  | 'resync-started'
  | 'resync-finished'
  | 'round-hold-expired'
  | 'policy-invalid'
  | 'capture-degraded';

export interface AgentEventInput {
  severity: EventSeverity;
  kind: AgentEventKind;
  /** '' or absent: the machine. */
  volumeId?: string;
  text: string;
}

const TEXT_MAX = 1000;

/**
 * Events waiting for a session that can take them: bounded, the oldest dropped first (and
 * counted) while the agent is cut off from the receiver for long.
 */
export class EventOutbox {
  private readonly queue: ferry.IAgentEvent[] = [];
  private droppedCount = 0;

  constructor(private readonly capacity = 256) {}

  push(e: AgentEventInput): void {
    const logged = { kind: e.kind, volume: e.volumeId || undefined, text: e.text };
    if (e.severity === 'info') log.info('event', logged);
    else log.warn('event', logged);
    this.queue.push({ severity: severityValue(e.severity), kind: e.kind, volumeId: e.volumeId ?? '', text: e.text.slice(0, TEXT_MAX), timeUs: nowUs() });
    while (this.queue.length > this.capacity) {
      this.queue.shift();
      this.droppedCount++;
    }
  }

  /** Sends queued events in order until `send` fails (returns false); what was not sent stays queued. */
  flush(send: (event: ferry.IAgentEvent) => boolean): void {
    while (this.queue.length > 0) {
      if (!send(this.queue[0])) return;
      this.queue.shift();
    }
  }

  get queued(): number {
    return this.queue.length;
  }

  get dropped(): number {
    return this.droppedCount;
  }
}
