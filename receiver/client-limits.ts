import { Limits } from '../proto/limits';

/**
 * What the receiver grants a client before and after it proves who it is. Every bound is a
 * receiver option (and a `ferry receiver run` flag) so tests can make it small.
 */
export interface ClientLimits {
  /** TCP accept to a successful login (TLS, HTTP upgrade, Hello, proof). */
  handshakeTimeoutMs: number;
  /** A logged-in session that sends nothing for this long is closed (agents send a heartbeat every second). */
  idleTimeoutMs: number;
  /** Bytes a connection may send before it has logged in. */
  preLoginBytes: number;
  /** Open connections from one peer address. */
  maxConnectionsPerPeer: number;
  /** Open connections in total. */
  maxConnections: number;
  /** Failed logins or registrations from one address after which it is locked out. */
  authLockoutAfter: number;
  /** The first lockout; it doubles with every further failure... */
  authLockoutMs: number;
  /** ...up to this. */
  authLockoutMaxMs: number;
  /** Failed registrations per second, all peers together, beyond which registrations pause. */
  failedRegistrationsPerSecond: number;
  /** How far past the receiver's clock a capture or tag time may be. */
  maxTimeAheadMs: number;
  /** After an Error frame, how long the peer has to close before the socket is destroyed. */
  closeGraceMs: number;
  /** Over-cap connections kept open at once just long enough to be told TOO_MANY_CONNECTIONS. */
  refusalSlots: number;
}

export const DEFAULT_CLIENT_LIMITS: ClientLimits = {
  handshakeTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
  preLoginBytes: Limits.maxPreLoginBytes,
  maxConnectionsPerPeer: 16,
  maxConnections: 1024,
  authLockoutAfter: 5,
  authLockoutMs: 1_000,
  authLockoutMaxMs: 5 * 60_000,
  failedRegistrationsPerSecond: 10,
  maxTimeAheadMs: Limits.maxTimeAheadUs / 1000,
  closeGraceMs: 2_000,
  refusalSlots: 64,
};
