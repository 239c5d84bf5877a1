// Capture times are microseconds since the epoch, with 0 meaning "none": the oldest of a set
// is the smallest non-zero value, and 0 when every value is 0.

/** The older of two capture times, ignoring a 0 (none). */
export function olderCapture(a: number, b: number): number {
  if (a === 0) return b;
  if (b === 0) return a;
  return a < b ? a : b;
}

/** The oldest non-zero capture time of `times`, or 0. */
export function oldestCapture(times: Iterable<number>): number {
  let oldest = 0;
  for (const t of times) oldest = olderCapture(oldest, t);
  return oldest;
}
