import { createHmac, randomBytes, scryptSync, timingSafeEqual } from 'crypto';
import { Limits } from './limits';

export type ProofPurpose = 'register' | 'login';

/** The key a passphrase stands for; the receiver stores only this, never the passphrase. */
export function passphraseKey(passphrase: string, salt: Buffer): Buffer {
  return scryptSync(passphrase.normalize('NFKC'), salt, 32, { N: 16384, r: 8, p: 1 });
}

/** HMAC-SHA256(key, nonce || purpose || name): proves knowledge of `key` without sending it. */
export function computeProof(key: Buffer, nonce: Buffer, purpose: ProofPurpose, name: string): Buffer {
  return createHmac('sha256', key).update(nonce).update(purpose).update('\0').update(name).digest();
}

export function proofMatches(expected: Buffer, actual: Buffer): boolean {
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

export function newNonce(): Buffer {
  return randomBytes(Limits.nonceBytes);
}

export function newCredential(): Buffer {
  return randomBytes(Limits.credentialBytes);
}

/** A passphrase an operator can read out: 6 groups of 5 base32 characters (~150 bits). */
export function generatePassphrase(): string {
  const alphabet = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789';
  const bytes = randomBytes(30);
  const chars = Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
  return chars.match(/.{5}/g)?.join('-') ?? chars;
}
