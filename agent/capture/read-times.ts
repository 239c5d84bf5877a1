/**
 * When a scan pass last read each chunk of a volume, and the oldest of those times. A write
 * right after a chunk was read is seen only when the next pass reads it, so a change a pass
 * finds may date back to the previous read of its chunk, and while nothing is found the oldest
 * read time is how far back an unseen write may lie. A min segment tree: `set` is O(log n),
 * `oldest` O(1), 16 bytes per chunk.
 */
export class ChunkReadTimes {
  private readonly leaves: number;
  private readonly tree: Float64Array;

  constructor(
    readonly chunks: number,
    initialUs: number,
  ) {
    let leaves = 1;
    while (leaves < chunks) leaves *= 2;
    this.leaves = leaves;
    this.tree = new Float64Array(2 * leaves).fill(Infinity);
    for (let i = 0; i < chunks; i++) this.tree[leaves + i] = initialUs;
    for (let i = leaves - 1; i >= 1; i--) this.tree[i] = Math.min(this.tree[2 * i], this.tree[2 * i + 1]);
  }

  get(chunk: number): number {
    this.check(chunk);
    return this.tree[this.leaves + chunk];
  }

  set(chunk: number, us: number): void {
    this.check(chunk);
    let i = this.leaves + chunk;
    this.tree[i] = us;
    for (i >>= 1; i >= 1; i >>= 1) this.tree[i] = Math.min(this.tree[2 * i], this.tree[2 * i + 1]);
  }

  /** The least recent read time (0 for a volume without chunks). */
  oldest(): number {
    return this.chunks > 0 ? this.tree[1] : 0;
  }

  private check(chunk: number): void {
    if (!Number.isInteger(chunk) || chunk < 0 || chunk >= this.chunks) throw new RangeError(`chunk ${chunk} is outside 0..${this.chunks - 1}`);
  }
}
