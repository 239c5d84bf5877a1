import type { Socket } from 'net';
import { log } from '../common/log';
import { ErrorCode, ProtocolError } from '../proto/errors';
import type { ClientLimits } from './client-limits';

/** Whoever can tell the peer why it is cut off: the session, once the WebSocket exists. */
export interface Refusable {
  fail(err: ProtocolError): void;
}

type GuardLimits = Pick<ClientLimits, 'handshakeTimeoutMs' | 'idleTimeoutMs' | 'preLoginBytes'>;

/**
 * The time and byte bounds of one TCP connection, from accept to close:
 * - until login: the whole handshake (TLS, HTTP upgrade, Hello, proof) within
 *   `handshakeTimeoutMs`, and at most `preLoginBytes` received, counted on the TLS socket
 *   itself so that the WebSocket library never buffers a large frame from a stranger;
 * - after login: closed when nothing arrives for `idleTimeoutMs`.
 * A crossing is reported to the session (an Error frame, then close) or, before there is one,
 * closes the socket.
 */
export class ConnectionGuard {
  private session: Refusable | undefined;
  private stream: Socket | undefined;
  private preLoginBytes = 0;
  private loggedIn = false;
  private overCap = false;
  private lastHeardMs = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private disposed = false;

  constructor(
    private readonly raw: Socket,
    /** `address:port`, for the log. */
    private readonly peer: string,
    private readonly limits: GuardLimits,
  ) {
    this.arm(limits.handshakeTimeoutMs, () =>
      this.violate(ErrorCode.HANDSHAKE_TIMEOUT, `no login within ${formatMs(limits.handshakeTimeoutMs)} of connecting (TLS, upgrade, Hello and proof must complete in that time)`),
    );
  }

  /** The TLS socket over the raw one: every byte it delivers counts. */
  watch(stream: Socket): void {
    this.stream = stream;
    stream.on('data', (chunk: Buffer) => this.onData(chunk.length));
  }

  bindSession(session: Refusable): void {
    this.session = session;
  }

  /** The peer proved who it is: the pre-login bounds end and the idle bound starts. */
  onLogin(): void {
    if (this.disposed || this.loggedIn) return;
    this.loggedIn = true;
    this.lastHeardMs = Date.now();
    this.armIdle(this.limits.idleTimeoutMs);
  }

  dispose(): void {
    this.disposed = true;
    clearTimeout(this.timer);
  }

  private onData(bytes: number): void {
    this.lastHeardMs = Date.now();
    if (this.loggedIn) return;
    this.preLoginBytes += bytes;
    const cap = this.limits.preLoginBytes;
    if (this.preLoginBytes <= cap) return;
    if (!this.overCap) {
      this.overCap = true;
      // Read no more: the Error frame still goes out, and nothing else piles up.
      this.stream?.pause();
      this.violate(ErrorCode.TOO_LARGE, `${this.preLoginBytes} bytes arrived before login; at most ${cap} are accepted until an agent has logged in`);
    } else if (this.preLoginBytes > 2 * cap) {
      // Something resumed reading: do not let the peer fill memory while the close completes.
      (this.stream ?? this.raw).destroy();
    }
  }

  private violate(code: ErrorCode, message: string): void {
    if (this.disposed) return;
    clearTimeout(this.timer);
    if (this.session) return this.session.fail(new ProtocolError(code, message));
    log.warn('connection closed before it was a session', { peer: this.peer, reason: message });
    (this.stream ?? this.raw).destroy();
  }

  private armIdle(ms: number): void {
    const dueMs = Date.now() + ms;
    this.arm(ms, () => {
      // Late means the event loop was busy (a long fsync on a failing disk): what the peer sent
      // meanwhile is not read yet. Judge after the next poll of the sockets has read it.
      if (Date.now() - dueMs > LATE_TIMER_MS) setImmediate(() => this.judgeIdle());
      else this.judgeIdle();
    });
  }

  private judgeIdle(): void {
    if (this.disposed) return;
    const silentMs = Date.now() - this.lastHeardMs;
    if (silentMs < this.limits.idleTimeoutMs) return this.armIdle(this.limits.idleTimeoutMs - silentMs);
    this.violate(ErrorCode.IDLE_TIMEOUT, `nothing received for ${formatMs(silentMs)} (agents send a heartbeat every second; the bound is ${formatMs(this.limits.idleTimeoutMs)})`);
  }

  private arm(ms: number, fire: () => void): void {
    clearTimeout(this.timer);
    if (this.disposed) return;
    this.timer = setTimeout(fire, ms);
    this.timer.unref();
  }
}

/** A timer this late says the event loop was blocked, not that the peer was silent. */
const LATE_TIMER_MS = 1000;

function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}
