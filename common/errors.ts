/** Exit codes of the ferry CLI; stable, documented in the README. */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  notFound: 3,
  notReady: 4,
  auth: 5,
  unreachable: 6,
  /** The recovery point was recorded, but weaker than asked (an app tag became a crash point). */
  pointDowngraded: 7,
  /** A verify found damage (receiver) or divergence between source and replica (agent). */
  damageFound: 8,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** An error meant for an operator: printed as one line, never with a stack trace. */
export class FerryError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCodeValue = ExitCode.failure,
  ) {
    super(message);
    this.name = 'FerryError';
  }
}

export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}

export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
