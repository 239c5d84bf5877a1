import type { ServerResponse } from 'http';
import type { ControlEvent } from '../model';

/** A client that reads slower than events come is cut off past this much unsent text (it reconnects). */
const MAX_BUFFERED_BYTES = 1024 * 1024;

/** One server-sent event, as written on the wire. */
export function formatServerSentEvent(event: ControlEvent): string {
  return `id: ${event.id}\nevent: event\ndata: ${JSON.stringify(event)}\n\n`;
}

/**
 * The open SSE streams: each gets every new event and a comment line every keep-alive
 * interval (so proxies and the client see that the stream is alive); close() ends them all.
 */
export class EventStreams {
  private readonly open = new Set<ServerResponse>();

  constructor(
    private readonly subscribe: (listener: (event: ControlEvent) => void) => () => void,
    /** Stored events newer than an id, oldest first (for a client that reconnects with Last-Event-ID). */
    private readonly since: (lastId: number) => ControlEvent[],
    private readonly keepAliveMs: number,
  ) {}

  get count(): number {
    return this.open.size;
  }

  /** `lastEventId`: the Last-Event-ID a reconnecting client sends; the events it missed come first. */
  attach(res: ServerResponse, lastEventId?: number): void {
    const send = (text: string): void => {
      if (res.writableLength > MAX_BUFFERED_BYTES) {
        res.destroy();
        return;
      }
      res.write(text);
    };
    // Subscribed before the answer's head goes out: a client that has the head misses no event.
    const unsubscribe = this.subscribe((event) => send(formatServerSentEvent(event)));
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-store',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.write(`retry: 2000\n: connected\n\n`);
    // Subscribing and replaying run in one synchronous stretch: no event can slip in between.
    if (lastEventId !== undefined) for (const event of this.since(lastEventId)) send(formatServerSentEvent(event));
    const timer = setInterval(() => send(': keep-alive\n\n'), this.keepAliveMs);
    this.open.add(res);
    res.once('close', () => {
      clearInterval(timer);
      unsubscribe();
      this.open.delete(res);
    });
  }

  closeAll(): void {
    for (const res of this.open) res.end();
  }
}
