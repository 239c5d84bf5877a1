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
    private readonly keepAliveMs: number,
  ) {}

  get count(): number {
    return this.open.size;
  }

  attach(res: ServerResponse): void {
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
