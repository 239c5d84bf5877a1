/** Wall-clock time in microseconds since the epoch (capture and point times use this unit). */
export function nowUs(): number {
  return Date.now() * 1000;
}

/**
 * ISO-8601 form of a µs time. A value no Date can hold (a stored time from before times were
 * bounded, say 2^64-1) reads "out-of-range time (N us)" instead of throwing.
 */
export function usToIso(us: number): string {
  const date = new Date(Math.floor(us / 1000));
  return Number.isFinite(date.getTime()) ? date.toISOString() : `out-of-range time (${String(us)} us)`;
}
