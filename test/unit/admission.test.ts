import { describe, expect, it } from 'vitest';
import { ConnectionGate, peerAddress } from '../../receiver/admission';
import { AuthThrottle } from '../../receiver/auth-throttle';

describe('connection caps', () => {
  it('admits within the caps per address and in total, tells a few over-cap peers, drops the rest', () => {
    const gate = new ConnectionGate({ maxConnectionsPerPeer: 2, maxConnections: 3, refusalSlots: 1 });
    const a1 = gate.admit('a');
    const a2 = gate.admit('a');
    expect([a1.kind, a2.kind]).toEqual(['admitted', 'admitted']);
    const a3 = gate.admit('a');
    expect(a3).toMatchObject({ kind: 'refused', message: '2 connections from a are open already (cap 2 per address): retry later' });
    expect(gate.admit('a').kind).toBe('dropped'); // the one refusal slot is taken
    if (a3.kind === 'refused') a3.release();
    expect(gate.admit('b').kind).toBe('admitted');
    expect(gate.admit('c')).toMatchObject({ kind: 'refused', message: 'the receiver has 3 connections open (cap 3): retry later' });
    if (a1.kind === 'admitted') {
      a1.release();
      a1.release(); // twice is harmless
    }
    expect(gate.openConnections).toBe(2);
    expect(gate.admit('a').kind).toBe('admitted');
  });

  it('keys IPv4-mapped IPv6 peers by their IPv4 address', () => {
    expect(peerAddress('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(peerAddress('2001:db8::1')).toBe('2001:db8::1');
    expect(peerAddress(undefined)).toBe('unknown');
  });
});

describe('login lockout', () => {
  const limits = { authLockoutAfter: 3, authLockoutMs: 1000, authLockoutMaxMs: 5000, failedRegistrationsPerSecond: 2 };
  const clock = (): { now: () => number; advance: (ms: number) => void } => {
    let t = 1_000_000;
    return { now: () => t, advance: (ms) => (t += ms) };
  };

  it('locks an address out after a few failures, doubling per further failure up to the cap', () => {
    const c = clock();
    const auth = new AuthThrottle(limits, c.now);
    for (let i = 0; i < 2; i++) {
      auth.noteFailure('x', 'login');
      expect(auth.refusal('x', 'login')).toBeUndefined();
    }
    const lockouts: string[] = [];
    for (let i = 0; i < 5; i++) {
      auth.noteFailure('x', 'login');
      lockouts.push(/retry in (\d+) s/.exec(auth.refusal('x', 'login') ?? '')?.[1] ?? '');
      expect(auth.refusal('x', 'register')).toMatch(/failed logins or registrations from x: locked out until/);
      expect(auth.refusal('y', 'login')).toBeUndefined();
      c.advance(5000);
      expect(auth.refusal('x', 'login')).toBeUndefined();
    }
    expect(lockouts).toEqual(['1', '2', '4', '5', '5']);
  });

  it('forgets an address after a quiet spell, and at once when it proves the passphrase', () => {
    const c = clock();
    const auth = new AuthThrottle(limits, c.now);
    for (let i = 0; i < 3; i++) auth.noteFailure('x', 'login');
    c.advance(4 * 5000 + 1001);
    auth.noteFailure('x', 'login');
    expect(auth.refusal('x', 'login')).toBeUndefined(); // a first failure again
    for (let i = 0; i < 3; i++) auth.noteFailure('z', 'register');
    expect(auth.refusal('z', 'register')).toMatch(/locked out/);
    auth.noteRegistered('z');
    c.advance(2000);
    expect(auth.refusal('z', 'register')).toBeUndefined();
  });

  it('pauses registrations from all addresses beyond the budget of failures, never logins', () => {
    const c = clock();
    const auth = new AuthThrottle(limits, c.now);
    auth.noteFailure('p1', 'register');
    expect(auth.refusal('p9', 'register')).toBeUndefined();
    auth.noteFailure('p2', 'register');
    expect(auth.refusal('p9', 'register')).toMatch(/registrations are paused: more than 2 failed registrations per second from all addresses \(retry in 1 s\)/);
    expect(auth.refusal('p9', 'login')).toBeUndefined();
    c.advance(500); // refills one token at 2 per second
    expect(auth.refusal('p9', 'register')).toBeUndefined();
    // A burst beyond the budget leaves a debt of at most a second's worth.
    for (let i = 0; i < 10; i++) auth.noteFailure(`q${i}`, 'register');
    c.advance(1000);
    expect(auth.refusal('p9', 'register')).toMatch(/paused/);
    c.advance(500);
    expect(auth.refusal('p9', 'register')).toBeUndefined();
    // Failed logins do not draw on the registration budget.
    for (let i = 0; i < 10; i++) auth.noteFailure(`l${i}`, 'login');
    expect(auth.refusal('p9', 'register')).toBeUndefined();
  });
});
