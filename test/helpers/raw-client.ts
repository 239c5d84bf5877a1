import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { errorCodeName } from '../../proto/errors';
import { decodeFrame, DecodedFrame, encodeFrame, OutgoingFrame } from '../../proto/frames';

/**
 * Hand-made clients for hostile tests: a TCP or TLS connection that says nothing, and a
 * WebSocket client over TLS that writes frames byte by byte as it is told (a frame header
 * announcing more than it sends, say), which no well-behaved library would do.
 */
export interface RawTarget {
  port: number;
  /** The address to dial from: each 127.0.0.0/8 address is another peer to the receiver. */
  localAddress: string;
}

/** Resolves `value` or rejects once `ms` passed: waiting for an event with a deadline. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

function closedPromise(socket: net.Socket): Promise<void> {
  socket.on('error', () => undefined); // a reset is one way of being closed
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

/** A TCP connection that never speaks; `closed` resolves when the receiver closes it. */
export async function openTcp(target: RawTarget): Promise<{ socket: net.Socket; closed: Promise<void> }> {
  const socket = net.connect({ port: target.port, host: '127.0.0.1', localAddress: target.localAddress });
  const closed = closedPromise(socket);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return { socket, closed };
}

/** A TLS 1.3 session that never sends a byte of HTTP. */
export async function openTls(target: RawTarget): Promise<{ socket: tls.TLSSocket; closed: Promise<void> }> {
  const tcp = await openTcp(target);
  const socket = tls.connect({ socket: tcp.socket, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
  const closed = closedPromise(socket);
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  return { socket, closed };
}

export interface ReceivedError {
  code: string;
  message: string;
}

/** A WebSocket client over TLS written by hand (RFC 6455 framing, client frames masked). */
export class RawWss {
  private pending = Buffer.alloc(0);
  readonly frames: DecodedFrame[] = [];
  readonly closed: Promise<void>;
  private readonly errorWaiters: Array<(e: ReceivedError | undefined) => void> = [];
  private isClosed = false;

  private constructor(private readonly socket: tls.TLSSocket) {
    this.closed = closedPromise(socket).then(() => {
      this.isClosed = true;
      for (const w of this.errorWaiters.splice(0)) w(this.error);
    });
  }

  /** Connects, upgrades to WebSocket and resolves once the receiver answered 101. */
  static async open(target: RawTarget): Promise<RawWss> {
    const { socket } = await openTls(target);
    const client = new RawWss(socket);
    socket.write(
      'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    let head = Buffer.alloc(0);
    await new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer): void => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        socket.off('data', onData);
        if (!head.subarray(0, end).toString().startsWith('HTTP/1.1 101')) return reject(new Error(`upgrade refused: ${head.subarray(0, end).toString()}`));
        socket.on('data', (c: Buffer) => client.onData(c));
        client.onData(head.subarray(end + 4));
        resolve();
      };
      socket.on('data', onData);
      socket.once('close', () => reject(new Error('closed during the upgrade')));
    });
    return client;
  }

  /** The first Error frame the receiver sent, if any. */
  get error(): ReceivedError | undefined {
    const e = this.frames.find((f) => f.error)?.error;
    return e ? { code: errorCodeName(e.code ?? 0), message: e.message ?? '' } : undefined;
  }

  /** Resolves with the receiver's Error frame, or undefined when it closed without one. */
  nextError(): Promise<ReceivedError | undefined> {
    if (this.error || this.isClosed) return Promise.resolve(this.error);
    return new Promise((resolve) => this.errorWaiters.push(resolve));
  }

  /** Resolves with the first frame `pick` accepts. */
  async waitFrame<T>(pick: (f: DecodedFrame) => T | undefined | null): Promise<T> {
    for (;;) {
      for (const f of this.frames) {
        const v = pick(f);
        if (v !== undefined && v !== null) return v;
      }
      if (this.isClosed) throw new Error('closed before the frame arrived');
      await Promise.race([new Promise<void>((resolve) => this.socket.once('data', () => setImmediate(resolve))), this.closed]);
    }
  }

  sendFrame(frame: OutgoingFrame): void {
    const payload = encodeFrame(frame);
    this.socket.write(Buffer.concat([frameHeader(payload.length), payload]));
  }

  /** The header of a binary frame of `length` bytes, whose payload the caller then streams. */
  startFrame(length: number): void {
    this.socket.write(frameHeader(length));
  }

  /**
   * Streams `total` payload bytes from a reused chunk, honouring backpressure, until all is
   * written or the receiver closes the connection or sends an Error; returns the bytes written.
   */
  async stream(total: number, chunk: Buffer): Promise<number> {
    let sent = 0;
    while (sent < total && !this.isClosed && !this.error) {
      const part = chunk.subarray(0, Math.min(chunk.length, total - sent));
      sent += part.length;
      if (!this.socket.write(part)) {
        await Promise.race([new Promise((resolve) => this.socket.once('drain', resolve)), this.closed, this.nextError()]);
      }
    }
    return sent;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.pending = Buffer.concat([this.pending, chunk]);
    for (;;) {
      if (this.pending.length < 2) return;
      const opcode = this.pending[0] & 0x0f;
      let length = this.pending[1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.pending.length < 4) return;
        length = this.pending.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.pending.length < 10) return;
        length = Number(this.pending.readBigUInt64BE(2));
        offset = 10;
      }
      if (this.pending.length < offset + length) return;
      const payload = this.pending.subarray(offset, offset + length);
      this.pending = this.pending.subarray(offset + length);
      if (opcode === 2) {
        this.frames.push(decodeFrame(Buffer.from(payload)));
        if (this.error) for (const w of this.errorWaiters.splice(0)) w(this.error);
      }
    }
  }
}

/** FIN + binary opcode, the masked length, and a zero mask key (payload bytes go out as they are). */
function frameHeader(length: number): Buffer {
  if (length < 126) return Buffer.from([0x82, 0x80 | length, 0, 0, 0, 0]);
  if (length < 65536) {
    const h = Buffer.from([0x82, 0x80 | 126, 0, 0, 0, 0, 0, 0]);
    h.writeUInt16BE(length, 2);
    return h;
  }
  const h = Buffer.alloc(14);
  h[0] = 0x82;
  h[1] = 0x80 | 127;
  h.writeBigUInt64BE(BigInt(length), 2);
  return h;
}
