import type { ClientLimits } from './client-limits';

/** The key of per-peer limits: the address without port; an IPv4-mapped IPv6 address reads as IPv4. */
export function peerAddress(remoteAddress: string | undefined): string {
  if (!remoteAddress) return 'unknown';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(remoteAddress);
  return mapped ? mapped[1] : remoteAddress;
}

/**
 * What happens to a new TCP connection: admitted; over a cap but kept just long enough to be
 * told so (TOO_MANY_CONNECTIONS); or over a cap with no refusal slot left, closed at once.
 * `release` must be called exactly once, when the connection closes.
 */
export type Admission =
  | { kind: 'admitted'; release: () => void }
  | { kind: 'refused'; message: string; release: () => void }
  | { kind: 'dropped' };

/** Counts open connections per peer address and in total, and admits new ones within the caps. */
export class ConnectionGate {
  private readonly perPeer = new Map<string, number>();
  private total = 0;
  private refusing = 0;

  constructor(private readonly limits: Pick<ClientLimits, 'maxConnections' | 'maxConnectionsPerPeer' | 'refusalSlots'>) {}

  admit(peer: string): Admission {
    const fromPeer = this.perPeer.get(peer) ?? 0;
    let why: string | undefined;
    if (fromPeer >= this.limits.maxConnectionsPerPeer) {
      why = `${fromPeer} connections from ${peer} are open already (cap ${this.limits.maxConnectionsPerPeer} per address)`;
    } else if (this.total >= this.limits.maxConnections) {
      why = `the receiver has ${this.total} connections open (cap ${this.limits.maxConnections})`;
    }
    if (why === undefined) {
      this.perPeer.set(peer, fromPeer + 1);
      this.total++;
      return { kind: 'admitted', release: once(() => this.release(peer)) };
    }
    if (this.refusing >= this.limits.refusalSlots) return { kind: 'dropped' };
    this.refusing++;
    return { kind: 'refused', message: `${why}: retry later`, release: once(() => this.refusing--) };
  }

  get openConnections(): number {
    return this.total;
  }

  private release(peer: string): void {
    this.total--;
    const left = (this.perPeer.get(peer) ?? 1) - 1;
    if (left > 0) this.perPeer.set(peer, left);
    else this.perPeer.delete(peer);
  }
}

function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    fn();
  };
}
