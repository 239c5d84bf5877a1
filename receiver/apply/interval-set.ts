/** Disjoint half-open ranges [start, end), kept sorted; answers "does this range touch any?". */
export class IntervalSet {
  private starts: number[] = [];
  private ends: number[] = [];

  /** Index of the first range whose end is after `pos`. */
  private firstEndingAfter(pos: number): number {
    let lo = 0;
    let hi = this.ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid] <= pos) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  overlaps(start: number, end: number): boolean {
    const i = this.firstEndingAfter(start);
    return i < this.starts.length && this.starts[i] < end;
  }

  /** Adds a range that does not overlap any present one. */
  add(start: number, end: number): void {
    const i = this.firstEndingAfter(start);
    this.starts.splice(i, 0, start);
    this.ends.splice(i, 0, end);
  }

  clear(): void {
    this.starts = [];
    this.ends = [];
  }

  get size(): number {
    return this.starts.length;
  }
}
