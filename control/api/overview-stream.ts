import type { ServerResponse } from 'http';

/** A client that reads slower than the overview changes is cut off past this much unsent text (it reconnects). */
const MAX_BUFFERED_BYTES = 1024 * 1024;

/**
 * The overview's SSE streams: every client gets the overview at once, then each time it
 * changes, read once a second while any client is open (one read serves them all, so many
 * open consoles cost what one does). Quiet stretches carry a comment line every keep-alive.
 */
export class OverviewStreams {
  private readonly open = new Set<ServerResponse>();
  private timer: NodeJS.Timeout | undefined;
  private last = '';
  private quietMs = 0;

  constructor(
    /** The overview as JSON text. */
    private readonly read: () => string,
    private readonly intervalMs: number,
    private readonly keepAliveMs: number,
  ) {}

  attach(res: ServerResponse): void {
    const text = this.read();
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-store',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
    });
    res.write(`retry: 2000\n${frame(text)}`);
    this.open.add(res);
    res.once('close', () => {
      this.open.delete(res);
      if (this.open.size === 0) this.stop();
    });
    if (!this.timer) {
      this.last = text;
      this.timer = setInterval(() => this.tick(), this.intervalMs);
    }
  }

  private tick(): void {
    let text: string;
    try {
      text = this.read();
    } catch {
      return;
    }
    if (text !== this.last) {
      this.last = text;
      this.quietMs = 0;
      this.send(frame(text));
      return;
    }
    this.quietMs += this.intervalMs;
    if (this.quietMs >= this.keepAliveMs) {
      this.quietMs = 0;
      this.send(': keep-alive\n\n');
    }
  }

  private send(text: string): void {
    for (const res of this.open) {
      if (res.writableLength > MAX_BUFFERED_BYTES) res.destroy();
      else res.write(text);
    }
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  closeAll(): void {
    this.stop();
    for (const res of this.open) res.end();
  }
}

function frame(json: string): string {
  return `event: overview\ndata: ${json}\n\n`;
}
