import { log } from '../../common/log';
import { freezeFs, thawFs } from '../../native/addon';

export interface FreezeOps {
  freeze(mount: string): void;
  thaw(mount: string): void;
}

const fsFreeze: FreezeOps = { freeze: freezeFs, thaw: thawFs };

/**
 * Holds filesystems frozen (FIFREEZE) for at most `boundMs`: a watchdog thaws them when the
 * bound passes even if the caller is stuck, and `thaw` (idempotent) runs on every other path.
 */
export class FreezeGuard {
  private frozen: string[] = [];
  private watchdog: NodeJS.Timeout | undefined;
  private frozenAtMs = 0;
  /** True once the watchdog had to thaw: whatever was cut afterwards is not consistent. */
  expired = false;

  constructor(
    private readonly boundMs: number,
    private readonly ops: FreezeOps = fsFreeze,
  ) {}

  /** Freezes every mount or, when one fails, thaws those already frozen and throws. */
  freeze(mounts: readonly string[]): void {
    this.frozenAtMs = Date.now();
    this.watchdog = setTimeout(() => {
      this.expired = true;
      log.warn('freeze bound reached: thawing', { boundMs: this.boundMs, mounts: this.frozen });
      this.thaw();
    }, this.boundMs);
    for (const mount of mounts) {
      try {
        this.ops.freeze(mount);
      } catch (err) {
        this.thaw();
        throw new Error(`cannot freeze ${mount}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
      this.frozen.push(mount);
    }
  }

  /** When the freeze must end at the latest. */
  get deadlineMs(): number {
    return this.frozenAtMs + this.boundMs;
  }

  get isFrozen(): boolean {
    return this.frozen.length > 0;
  }

  /** Thaws everything still frozen; returns how long the freeze lasted. */
  thaw(): number {
    if (this.watchdog) clearTimeout(this.watchdog);
    this.watchdog = undefined;
    for (const mount of this.frozen.reverse()) {
      try {
        this.ops.thaw(mount);
      } catch (err) {
        log.error('thaw failed', { mount, error: (err as NodeJS.ErrnoException).code ?? (err as Error).message });
      }
    }
    this.frozen = [];
    return this.frozenAtMs > 0 ? Date.now() - this.frozenAtMs : 0;
  }
}
