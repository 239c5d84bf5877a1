/**
 * Hands out slices of one large, reused slab. Hot paths that read megabytes per step take
 * their buffers here instead of allocating fresh ones: a fresh large buffer is a new mapping
 * whose every page faults in on first touch. `reset` recycles the slab, so nothing taken
 * before it may be used after it. Requests that do not fit get a buffer of their own.
 */
export class BufferArena {
  private slab: Buffer | undefined;
  private used = 0;

  constructor(private readonly slabBytes: number) {}

  take(length: number): Buffer {
    this.slab ??= Buffer.allocUnsafeSlow(this.slabBytes);
    if (this.used + length > this.slab.length) return Buffer.allocUnsafe(length);
    const buf = this.slab.subarray(this.used, this.used + length);
    this.used += length;
    return buf;
  }

  reset(): void {
    this.used = 0;
  }
}
