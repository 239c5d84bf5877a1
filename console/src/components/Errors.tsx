import type { ComponentChildren } from 'preact';
import { ApiError } from '../api';

/** The words for anything a call threw. */
export function errorText(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  if (err instanceof Error) return err.message;
  return String(err);
}

/** A refusal or failure, announced (role="alert"). */
export function ErrorNote({ error, children }: { error?: unknown; children?: ComponentChildren }) {
  if (error === undefined && children === undefined) return null;
  return (
    <p class="note note-error" role="alert">
      {children ?? errorText(error)}
    </p>
  );
}

/** A success message, announced politely. */
export function OkNote({ children }: { children: ComponentChildren }) {
  return (
    <p class="note note-ok" role="status">
      {children}
    </p>
  );
}

/** A page that failed to load: says why; a 404 says the thing is not there. */
export function LoadError({ error, what }: { error: unknown; what: string }) {
  const notFound = error instanceof ApiError && error.status === 404;
  return <ErrorNote>{notFound ? `${what} was not found. ${errorText(error)}` : `Could not load ${what}: ${errorText(error)}`}</ErrorNote>;
}

export function Loading({ what }: { what: string }) {
  return (
    <p class="muted" aria-live="polite">
      Loading {what}…
    </p>
  );
}
