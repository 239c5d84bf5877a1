import { describe, expect, it } from 'vitest';
import { BufferPool, SharedLease } from '../../common/buffer-pool';

describe('BufferPool', () => {
  it('hands back a released buffer instead of allocating, and keeps at most maxFree', () => {
    const pool = new BufferPool(1024, 2);
    const a = pool.take(1000);
    const b = pool.take(10);
    const c = pool.take(1024);
    expect(pool.allocated).toBe(3);
    expect(a.buffer.length).toBe(1024);
    a.release();
    b.release();
    c.release();
    expect(pool.freeCount).toBe(2);
    const d = pool.take(500);
    expect([b.buffer, c.buffer]).toContain(d.buffer);
    expect(pool.reused).toBe(1);
    expect(pool.allocated).toBe(3);
  });

  it('counts a second release of one lease once', () => {
    const pool = new BufferPool(64, 4);
    const a = pool.take(64);
    a.release();
    a.release();
    expect(pool.freeCount).toBe(1);
    const b = pool.take(64);
    const c = pool.take(64);
    expect(b.buffer).not.toBe(c.buffer);
  });

  it('gives sizes above the pool or below its minimum a buffer of their own, never pooled', () => {
    const pool = new BufferPool(1024, 4, 100);
    const big = pool.take(4096);
    const small = pool.take(50);
    expect(big.buffer.length).toBe(4096);
    expect(small.buffer.length).toBe(50);
    big.release();
    small.release();
    expect(pool.freeCount).toBe(0);
    expect(pool.allocated).toBe(0);
  });
});

describe('SharedLease', () => {
  it('goes back to the pool once sealed and every user is done, each user counted once', () => {
    const pool = new BufferPool(64, 4);
    const shared = new SharedLease(pool.take(64));
    const one = shared.user();
    const two = shared.user();
    one();
    one();
    shared.seal();
    expect(pool.freeCount).toBe(0);
    expect(() => shared.user()).toThrow(/after seal/);
    two();
    expect(pool.freeCount).toBe(1);
  });

  it('a lease sealed with no users goes back at once; users before the seal hold it', () => {
    const pool = new BufferPool(64, 4);
    new SharedLease(pool.take(64)).seal();
    expect(pool.freeCount).toBe(1);
    const held = new SharedLease(pool.take(64));
    const done = held.user();
    done();
    expect(pool.freeCount).toBe(0); // not sealed yet: a resend may still take a user
    held.seal();
    expect(pool.freeCount).toBe(1);
  });
});
