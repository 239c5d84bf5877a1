import { ExitCode, FerryError } from '../../common/errors';
import type { ConnectionError } from './receiver-connection';

/** Turns a connection failure into an operator-facing error with the CLI's exit code. */
export function connectionFailure(err: ConnectionError): FerryError {
  if (err.kind === 'untrusted' || err.kind === 'unreachable') return new FerryError(err.message, ExitCode.unreachable);
  if (err.code === 'AUTH_FAILED') return new FerryError(err.message, ExitCode.auth);
  return new FerryError(err.message, ExitCode.failure);
}
