import { ExitCode, FerryError } from '../../common/errors';
import type { ConnectionError } from './receiver-connection';

const RETRY_LATER_CODES = new Set(['AUTH_LOCKED', 'TOO_MANY_CONNECTIONS', 'HANDSHAKE_TIMEOUT']);

/** Turns a connection failure into an operator-facing error with the CLI's exit code. */
export function connectionFailure(err: ConnectionError): FerryError {
  if (err.kind === 'untrusted' || err.kind === 'unreachable') return new FerryError(err.message, ExitCode.unreachable);
  if (err.code === 'AUTH_FAILED') return new FerryError(err.message, ExitCode.auth);
  // The receiver asks to come back later (a lockout after failed attempts, its connection caps,
  // a handshake that took too long): not a wrong passphrase, and the message says when.
  if (err.code !== undefined && RETRY_LATER_CODES.has(err.code)) return new FerryError(err.message, ExitCode.notReady);
  return new FerryError(err.message, ExitCode.failure);
}
