import type { ClientLimits } from './client-limits';

export type AuthIntent = 'register' | 'login';

/** Peers whose failures are remembered at once; the least recently failing are forgotten first. */
const MAX_TRACKED_PEERS = 65_536;

interface PeerFailures {
  failures: number;
  lastFailureMs: number;
  lockedUntilMs: number;
}

type AuthThrottleLimits = Pick<ClientLimits, 'authLockoutAfter' | 'authLockoutMs' | 'authLockoutMaxMs' | 'failedRegistrationsPerSecond'>;

/**
 * Slows down guessing of the passphrase and of credentials. Per peer address: after
 * `authLockoutAfter` failed logins or registrations the address is locked out, for a time that
 * doubles with every further failure up to `authLockoutMaxMs`; its failures are forgotten after
 * a quiet spell. Globally: failed registrations draw on a budget of `failedRegistrationsPerSecond`
 * (a token bucket); while it is spent, registrations from every address pause. Logins are never
 * held back by the global budget, so an attack on the passphrase does not stop agents that
 * already hold a credential.
 */
export class AuthThrottle {
  private readonly peers = new Map<string, PeerFailures>();
  private tokens: number;
  private tokensAtMs: number;

  constructor(
    private readonly limits: AuthThrottleLimits,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = limits.failedRegistrationsPerSecond;
    this.tokensAtMs = now();
  }

  /** Why `peer` may not try to log in or register now (with when to retry), or undefined. */
  refusal(peer: string, intent: AuthIntent): string | undefined {
    const now = this.now();
    const record = this.record(peer, now);
    if (record && record.lockedUntilMs > now) {
      return (
        `${record.failures} failed logins or registrations from ${peer}: locked out until ` +
        `${new Date(record.lockedUntilMs).toISOString()} (retry in ${seconds(record.lockedUntilMs - now)})`
      );
    }
    if (intent === 'register') {
      const tokens = this.refill(now);
      if (tokens < 1) {
        const rate = this.limits.failedRegistrationsPerSecond;
        return `registrations are paused: more than ${rate} failed registrations per second from all addresses (retry in ${seconds(((1 - tokens) / rate) * 1000)})`;
      }
    }
    return undefined;
  }

  noteFailure(peer: string, intent: AuthIntent): void {
    const now = this.now();
    const record = this.record(peer, now) ?? { failures: 0, lastFailureMs: now, lockedUntilMs: 0 };
    record.failures++;
    record.lastFailureMs = now;
    const over = record.failures - this.limits.authLockoutAfter;
    if (over >= 0) record.lockedUntilMs = now + Math.min(this.limits.authLockoutMaxMs, this.limits.authLockoutMs * 2 ** Math.min(over, 40));
    // Re-insert so that the map stays ordered by last failure (the oldest is evicted first).
    this.peers.delete(peer);
    this.peers.set(peer, record);
    if (this.peers.size > MAX_TRACKED_PEERS) this.peers.delete(this.peers.keys().next().value as string);
    if (intent === 'register') {
      const rate = this.limits.failedRegistrationsPerSecond;
      // Failures racing past an empty bucket leave a debt, at most one second's worth.
      this.tokens = Math.max(-rate, this.refill(now) - 1);
    }
  }

  /** A peer that proved the passphrase is no longer suspected. */
  noteRegistered(peer: string): void {
    this.peers.delete(peer);
  }

  private record(peer: string, now: number): PeerFailures | undefined {
    const record = this.peers.get(peer);
    if (!record) return undefined;
    // Failures are forgotten once the address has been quiet for a while after its lockout.
    if (now >= record.lockedUntilMs && now - record.lastFailureMs > 4 * this.limits.authLockoutMaxMs) {
      this.peers.delete(peer);
      return undefined;
    }
    return record;
  }

  private refill(now: number): number {
    const rate = this.limits.failedRegistrationsPerSecond;
    this.tokens = Math.min(rate, this.tokens + ((now - this.tokensAtMs) / 1000) * rate);
    this.tokensAtMs = now;
    return this.tokens;
  }
}

function seconds(ms: number): string {
  return `${Math.max(1, Math.ceil(ms / 1000))} s`;
}
