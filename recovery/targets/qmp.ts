/**
 * A small QMP client (QEMU Machine Protocol over a unix socket): the greeting and capabilities
 * handshake, then commands answered in order (matched by id). Events are ignored.
 */
import * as net from 'node:net';
import { TargetError } from './target';

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/** One JSON object per line, as QMP sends them; returns the complete lines and the rest. */
export function splitQmpLines(buffer: string): { lines: string[]; rest: string } {
  const parts = buffer.split('\n');
  const rest = parts.pop() ?? '';
  return { lines: parts.map((l) => l.trim()).filter((l) => l !== ''), rest };
}

export class QmpClient {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private buffer = '';
  private closedError: Error | null = null;
  private greeted: (() => void) | null = null;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err) => this.fail(new TargetError(`QMP: ${err.message}`)));
    socket.on('close', () => this.fail(new TargetError('QMP: connection closed')));
  }

  /** Connects (retrying while the socket does not exist yet) and completes the handshake. */
  static async connect(socketPath: string, timeoutMs: number, isAlive: () => boolean = () => true): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    let lastError = '';
    for (;;) {
      if (!isAlive()) throw new TargetError(`QMP: qemu exited before its socket ${socketPath} answered`);
      try {
        const socket = await connectOnce(socketPath, Math.max(100, deadline - Date.now()));
        const client = new QmpClient(socket);
        await client.handshake(Math.max(100, deadline - Date.now()));
        return client;
      } catch (err) {
        lastError = (err as Error).message;
      }
      if (Date.now() >= deadline) throw new TargetError(`QMP: no answer on ${socketPath} within ${timeoutMs} ms (${lastError})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  private handshake(timeoutMs: number): Promise<void> {
    return withTimeout(
      new Promise<void>((resolve) => {
        this.greeted = resolve;
      }).then(() => this.execute('qmp_capabilities').then(() => undefined)),
      timeoutMs,
      'QMP handshake',
    );
  }

  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    const message: Record<string, unknown> = { execute: command, id };
    if (args) message.arguments = args;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.write(`${JSON.stringify(message)}\n`);
    });
  }

  close(): void {
    this.fail(new TargetError('QMP: closed'));
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    const { lines, rest } = splitQmpLines(this.buffer + chunk);
    this.buffer = rest;
    for (const line of lines) {
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('QMP' in msg) {
        this.greeted?.();
        this.greeted = null;
        continue;
      }
      const id = typeof msg.id === 'number' ? msg.id : -1;
      const waiter = this.pending.get(id);
      if (!waiter) continue;
      this.pending.delete(id);
      if ('error' in msg) {
        const e = msg.error as { class?: string; desc?: string };
        waiter.reject(new TargetError(`QMP: ${e.desc ?? 'error'} (${e.class ?? 'unknown'})`));
      } else {
        waiter.resolve(msg.return);
      }
    }
  }

  private fail(err: Error): void {
    if (this.closedError) return;
    this.closedError = err;
    for (const waiter of this.pending.values()) waiter.reject(err);
    this.pending.clear();
  }
}

function connectOnce(socketPath: string, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('connect timed out'));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new TargetError(`${what} timed out after ${ms} ms`)), ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
