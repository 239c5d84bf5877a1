import { ferry } from './generated/ferry';

export const ErrorCode = ferry.ErrorCode;
export type ErrorCode = ferry.ErrorCode;

/** A frame or request the peer must be told about with a stable code; the session then ends. */
export class ProtocolError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'ProtocolError';
  }

  get codeName(): string {
    return ErrorCode[this.code] ?? `CODE_${this.code}`;
  }
}

export function errorCodeName(code: number): string {
  return (ErrorCode as unknown as Record<number, string>)[code] ?? `CODE_${code}`;
}
