/** A set of fixed-size blocks of a volume (one bit each): the blocks some record touched. */
export class BlockSet {
  private readonly bits: Uint8Array;

  constructor(
    private readonly blockSize: number,
    sizeBytes: number,
  ) {
    this.bits = new Uint8Array(Math.ceil(Math.ceil(sizeBytes / blockSize) / 8));
  }

  addRange(offset: number, length: number): void {
    if (length <= 0) return;
    const last = Math.min(Math.floor((offset + length - 1) / this.blockSize), this.bits.length * 8 - 1);
    for (let b = Math.floor(offset / this.blockSize); b <= last; b++) this.bits[b >> 3] |= 1 << (b & 7);
  }

  has(block: number): boolean {
    return (this.bits[block >> 3] & (1 << (block & 7))) !== 0;
  }
}
