import { DecodedFrame, ferry } from '../../proto/frames';
import type { ReceiverConnection } from './receiver-connection';

interface HashWaiter {
  request: ferry.IHashRequest;
  resolve: (hashes: Buffer) => void;
  reject: (err: Error) => void;
  sent: boolean;
}

/**
 * Block-hash requests to the receiver (hash-compare resync, repair, verify): each waits through
 * reconnects until the receiver answers it, and is sent again on every new connection until then.
 */
export class HashRequests {
  private readonly waiters = new Map<number, HashWaiter>();
  private nextRequestId = 1;
  private conn: ReceiverConnection | undefined;
  private stopped = false;
  private readonly onFrame = (frame: DecodedFrame): void => this.answer(frame);

  /** Asks the receiver for the hashes of `count` blocks from `offset`; the RemoteHashes of the capture sources. */
  request = (volumeId: string, offset: number, blockSize: number, count: number): Promise<Buffer> => {
    return new Promise((resolve, reject) => {
      if (this.stopped) return reject(new Error('the agent is stopping'));
      const requestId = this.nextRequestId++;
      this.waiters.set(requestId, { request: { volumeId, offset, blockSize, count, requestId }, resolve, reject, sent: false });
      this.sendPending();
    });
  };

  /** Uses a logged-in connection whose volumes are declared: every unanswered request is sent on it. */
  attach(conn: ReceiverConnection): void {
    this.detach();
    this.conn = conn;
    conn.on('frame', this.onFrame);
    for (const waiter of this.waiters.values()) waiter.sent = false;
    this.sendPending();
  }

  detach(): void {
    this.conn?.off('frame', this.onFrame);
    this.conn = undefined;
  }

  /** Rejects every request still waiting, and every later one. */
  stop(): void {
    this.stopped = true;
    this.detach();
    const stopped = new Error('the agent is stopping');
    for (const waiter of this.waiters.values()) waiter.reject(stopped);
    this.waiters.clear();
  }

  private sendPending(): void {
    if (!this.conn?.isOpen) return;
    for (const waiter of this.waiters.values()) {
      if (waiter.sent) continue;
      waiter.sent = true;
      this.conn.send({ hashRequest: waiter.request });
    }
  }

  private answer(frame: DecodedFrame): void {
    const answer = frame.blockHashes;
    if (!answer) return;
    const requestId = answer.requestId ?? 0;
    const waiter = this.waiters.get(requestId);
    if (!waiter) return;
    this.waiters.delete(requestId);
    const h = answer.hashes ?? new Uint8Array();
    waiter.resolve(Buffer.from(h.buffer, h.byteOffset, h.byteLength));
  }
}
