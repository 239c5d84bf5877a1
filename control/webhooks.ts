import { log } from '../common/log';
import type { ControlEvent, Webhook, WebhookDelivery } from './model';
import { meetsSeverity } from './severity';
import type { ControlStore } from './store';

export interface WebhookOptions {
  /** Delay before the first retry; it doubles with each failure up to maxDelayMs. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** Attempts in all before a delivery is given up (failed). */
  maxAttempts: number;
  /** One POST may take this long. */
  timeoutMs: number;
}

export const DEFAULT_WEBHOOK_OPTIONS: WebhookOptions = { baseDelayMs: 1000, maxDelayMs: 5 * 60_000, maxAttempts: 10, timeoutMs: 10_000 };

/** The wait after `attempts` failed attempts: base, 2 base, 4 base... at most max. */
export function retryDelayMs(attempts: number, options: Pick<WebhookOptions, 'baseDelayMs' | 'maxDelayMs'>): number {
  return Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** Math.max(0, attempts - 1));
}

/** After an attempt: the delivery's next state. Pure. */
export function afterAttempt(d: WebhookDelivery, error: string | undefined, nowMs: number, options: WebhookOptions): WebhookDelivery {
  const attempts = d.attempts + 1;
  if (error === undefined) return { ...d, state: 'delivered', attempts, lastError: '', nextAttemptMs: null };
  if (attempts >= options.maxAttempts) return { ...d, state: 'failed', attempts, lastError: error, nextAttemptMs: null };
  return { ...d, state: 'pending', attempts, lastError: error, nextAttemptMs: nowMs + retryDelayMs(attempts, options) };
}

/** Checks a webhook URL: http or https, with a host. */
export function checkWebhookUrl(url: string): string | undefined {
  if (typeof url !== 'string' || url.length > 2048) return 'a webhook URL is at most 2048 characters';
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `${JSON.stringify(url)} is not a URL`;
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return `a webhook URL must be http or https, not ${parsed.protocol}`;
  if (!parsed.hostname) return 'a webhook URL needs a host';
  return undefined;
}

const key = (webhookId: number, eventId: number): string => `${webhookId}/${eventId}`;

/**
 * Delivers events to webhooks: an HTTP(S) POST of the event's JSON to every webhook whose
 * minimum severity it meets, retried with a doubling delay, each delivery's state stored (so
 * pending ones go on after a restart). One attempt per delivery at a time.
 */
export class WebhookDispatcher {
  private timer: NodeJS.Timeout | undefined;
  private readonly inFlight = new Set<string>();
  private stopped = false;

  constructor(
    private readonly store: ControlStore,
    private readonly options: WebhookOptions = DEFAULT_WEBHOOK_OPTIONS,
    private readonly now: () => number = Date.now,
  ) {}

  /** Picks up the deliveries a previous run left pending. */
  start(): void {
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** A new event: a delivery for each webhook it concerns, tried at once. */
  onEvent(event: ControlEvent): void {
    if (this.stopped) return;
    for (const hook of this.store.webhooks()) {
      if (!meetsSeverity(event.severity, hook.minSeverity)) continue;
      const delivery: WebhookDelivery = { webhookId: hook.id, eventId: event.id, state: 'pending', attempts: 0, lastError: '', nextAttemptMs: this.now() };
      this.store.putDelivery(delivery);
      this.attempt(hook, event, delivery);
    }
  }

  /** Tries every pending delivery that is due, then sleeps until the next one is. */
  private schedule(): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    const now = this.now();
    let next = Infinity;
    const hooks = new Map(this.store.webhooks().map((h) => [h.id, h]));
    for (const d of this.store.deliveries({ state: 'pending', limit: 10_000 })) {
      if (this.inFlight.has(key(d.webhookId, d.eventId))) continue;
      const due = d.nextAttemptMs ?? now;
      if (due > now) {
        next = Math.min(next, due);
        continue;
      }
      const hook = hooks.get(d.webhookId);
      const event = this.store.event(d.eventId);
      if (!hook || !event) {
        this.store.putDelivery({ ...d, state: 'failed', lastError: hook ? 'the event is gone' : 'the webhook is gone', nextAttemptMs: null });
        continue;
      }
      this.attempt(hook, event, d);
    }
    if (next !== Infinity) {
      this.timer = setTimeout(() => this.schedule(), Math.max(0, next - now));
      this.timer.unref();
    }
  }

  private attempt(hook: Webhook, event: ControlEvent, delivery: WebhookDelivery): void {
    const k = key(hook.id, event.id);
    if (this.inFlight.has(k)) return;
    this.inFlight.add(k);
    void this.post(hook.url, event).then((error) => {
      this.inFlight.delete(k);
      if (this.stopped) return;
      const next = afterAttempt(delivery, error, this.now(), this.options);
      try {
        // The webhook may have been deleted meanwhile: its deliveries went with it.
        if (this.store.webhooks().some((h) => h.id === hook.id)) this.store.putDelivery(next);
      } catch (err) {
        log.warn('webhook delivery state not stored', { webhook: hook.id, event: event.id, error: (err as Error).message });
      }
      if (next.state === 'failed') log.warn('webhook delivery given up', { url: hook.url, event: event.id, attempts: next.attempts, error: next.lastError });
      if (next.state === 'pending') this.schedule();
    });
  }

  /** One POST; resolves with why it failed, or undefined on a 2xx answer. */
  private async post(url: string, event: ControlEvent): Promise<string | undefined> {
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'ferry-receiver', 'x-ferry-event-id': String(event.id) },
        body: JSON.stringify(event),
        signal: AbortSignal.timeout(this.options.timeoutMs),
        redirect: 'error',
      });
      await res.arrayBuffer().catch(() => undefined);
      return res.ok ? undefined : `HTTP ${res.status}`;
    } catch (err) {
      const cause = (err as { cause?: { message?: string } }).cause?.message;
      return cause ? `${(err as Error).message}: ${cause}` : (err as Error).message;
    }
  }
}
