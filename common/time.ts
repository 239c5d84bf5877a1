/** Wall-clock time in microseconds since the epoch (capture and point times use this unit). */
export function nowUs(): number {
  return Date.now() * 1000;
}

export function usToIso(us: number): string {
  return new Date(Math.floor(us / 1000)).toISOString();
}
