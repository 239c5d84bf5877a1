const WINDOW_MS = 10_000;
const SLOT_MS = 500;

/** Bytes per second over the last ten seconds, plus a running total. */
export class Throughput {
  private readonly slots = new Map<number, number>();
  total = 0;

  add(bytes: number, nowMs = Date.now()): void {
    const slot = Math.floor(nowMs / SLOT_MS);
    this.slots.set(slot, (this.slots.get(slot) ?? 0) + bytes);
    this.total += bytes;
    if (this.slots.size > (WINDOW_MS / SLOT_MS) * 2) this.prune(slot);
  }

  private prune(currentSlot: number): void {
    for (const slot of this.slots.keys()) if (slot <= currentSlot - WINDOW_MS / SLOT_MS) this.slots.delete(slot);
  }

  bytesPerSecond(nowMs = Date.now()): number {
    const current = Math.floor(nowMs / SLOT_MS);
    this.prune(current);
    let bytes = 0;
    for (const [slot, n] of this.slots) if (slot > current - WINDOW_MS / SLOT_MS) bytes += n;
    return bytes / (WINDOW_MS / 1000);
  }
}
