import { createHash, timingSafeEqual } from 'crypto';

/**
 * Console sessions: the operator's token rides in an HttpOnly cookie that scripts cannot read,
 * and every change made with the cookie must also carry the session's CSRF token in a header,
 * which another site's page cannot learn (SameSite=Strict is the first fence, this the second).
 * The CSRF token is derived from the session token, so the server keeps no second secret. Pure.
 */

export const SESSION_COOKIE = 'ferry_session';
export const CSRF_HEADER = 'x-csrf-token';
/** A console session lasts this long; signing in again starts a new one. */
export const SESSION_TTL_MS = 12 * 3600 * 1000;
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
const TOKEN_TEXT = /^[A-Za-z0-9_\-.~+/]+=*$/;

export function csrfTokenFor(sessionToken: string): string {
  return createHash('sha256').update(`ferry-csrf\u0000${sessionToken}`).digest('base64url');
}

/** The session token of a Cookie header, or undefined. */
export function sessionFromCookie(header: string | undefined): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim() !== SESSION_COOKIE) continue;
    const value = part.slice(eq + 1).trim();
    return TOKEN_TEXT.test(value) ? value : undefined;
  }
  return undefined;
}

export function sessionCookie(token: string, maxAgeMs: number): string {
  return `${SESSION_COOKIE}=${token}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=${Math.max(0, Math.floor(maxAgeMs / 1000))}`;
}

export function clearedSessionCookie(): string {
  return `${SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0`;
}

/** Why a cookie-authenticated request must be refused for CSRF, or undefined when it may go on. */
export function csrfProblem(method: string, headerValue: string | string[] | undefined, sessionToken: string): string | undefined {
  if (SAFE_METHODS.has(method.toUpperCase())) return undefined;
  if (typeof headerValue !== 'string' || headerValue === '') return 'a change made with the session cookie needs the X-CSRF-Token header (the csrfToken of POST or GET /api/v1/session)';
  const expected = Buffer.from(csrfTokenFor(sessionToken));
  const given = Buffer.from(headerValue);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return 'the X-CSRF-Token header does not match the session: reload the console';
  return undefined;
}
