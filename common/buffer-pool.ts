/**
 * Buffers of one size, handed out and given back. A fresh multi-megabyte Buffer is a new
 * mapping whose pages all fault in, and V8 frees it only at a full collection, which it starts
 * once ~64 MiB more of them exist than at the last one: churning them per chunk or per frame
 * keeps that much dead memory resident. Reusing a few keeps the peak at what is live.
 *
 * A lease is given back once (`release`); a second release does nothing. A lease never given
 * back is collected like any buffer: the pool does not track what it handed out.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];
  /** Buffers allocated (pooled size only) and takes served from the free list: for tests and figures. */
  allocated = 0;
  reused = 0;

  constructor(
    readonly bufferBytes: number,
    /** Free buffers kept at most; more given back are left to the collector. */
    readonly maxFree: number,
    /** Smaller asks get a plain buffer of their size: a pooled one would hold its pages for little. */
    readonly minPooledBytes = 0,
  ) {
    if (!(bufferBytes > 0) || !(maxFree >= 0)) throw new RangeError(`bad buffer pool geometry: ${bufferBytes} bytes, ${maxFree} kept`);
  }

  /**
   * A buffer of at least `size` bytes. Larger than the pool's size or under `minPooledBytes`:
   * an unpooled buffer of its own (released into nothing).
   */
  take(size: number): BufferLease {
    if (size < this.minPooledBytes) return new BufferLease(Buffer.allocUnsafe(size), undefined);
    if (size > this.bufferBytes) return new BufferLease(Buffer.allocUnsafeSlow(size), undefined);
    let buf = this.free.pop();
    if (buf) this.reused++;
    else {
      buf = Buffer.allocUnsafeSlow(this.bufferBytes);
      this.allocated++;
    }
    return new BufferLease(buf, this);
  }

  /** Free buffers held now. */
  get freeCount(): number {
    return this.free.length;
  }

  /** @internal BufferLease.release */
  giveBack(buf: Buffer): void {
    if (this.free.length < this.maxFree) this.free.push(buf);
  }
}

/** One buffer handed out by a BufferPool. */
export class BufferLease {
  constructor(
    readonly buffer: Buffer,
    private pool: BufferPool | undefined,
  ) {}

  /** Gives the buffer back: whoever still reads or writes it after this may see other data. */
  release(): void {
    const pool = this.pool;
    this.pool = undefined;
    pool?.giveBack(this.buffer);
  }
}

/**
 * Counts the users of one lease (records that are views into one buffer); the lease is given
 * back when the last one is done. `done` of one user twice counts once.
 */
export class SharedLease {
  private users = 0;
  private sealed = false;

  constructor(private readonly lease: BufferLease) {}

  get buffer(): Buffer {
    return this.lease.buffer;
  }

  /** A new user; its `done` callback gives back the lease when it is the last one. */
  user(): () => void {
    if (this.sealed) throw new Error('no users may be added to a lease after seal()');
    this.users++;
    let called = false;
    return () => {
      if (called) return;
      called = true;
      this.users--;
      this.maybeRelease();
    };
  }

  /** No more users will be added: release as soon as the current ones are done (now if none). */
  seal(): void {
    this.sealed = true;
    this.maybeRelease();
  }

  private maybeRelease(): void {
    if (this.sealed && this.users === 0) this.lease.release();
  }
}
