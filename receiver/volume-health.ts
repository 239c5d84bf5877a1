/** Errors that mean "no room": they clear by themselves once space is freed. */
const FULL_CODES = new Set(['ENOSPC', 'EDQUOT', 'SQLITE_FULL', 'EFBIG']);

export interface StorageErrorInfo {
  /** The file system is full (or a quota): retry once there is room again. */
  full: boolean;
  /** A record failed its checksum: the files must be scanned again, not just retried. */
  damaged: boolean;
  /** errno name when there is one. */
  code?: string;
  message: string;
}

/** What a storage error means for the volume: full (waits for space) or failed (I/O error). */
export function classifyStorageError(err: unknown): StorageErrorInfo {
  const e = err as { code?: unknown; failure?: { code?: unknown }; message?: unknown };
  const code = typeof e.code === 'string' ? e.code : typeof e.failure?.code === 'string' ? e.failure.code : undefined;
  const message = typeof e.message === 'string' ? e.message : String(err);
  const damaged = (err as { name?: unknown }).name === 'RecordDamageError';
  return { full: code !== undefined && FULL_CODES.has(code), damaged, code, message };
}

export type Side = 'open' | 'ingest' | 'apply';

interface Failure {
  reason: string;
  full: boolean;
  damaged: boolean;
  sinceMs: number;
  attempts: number;
  retryAtMs: number;
  /** Free bytes where the volume lives when it failed for lack of space. */
  freeAtFailure: number;
}

const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 60_000;
/** A full disk is tried again once this much more is free than when it filled up... */
const FULL_HEADROOM_BYTES = 4 * 1024 * 1024;
/** ...or at least this often (space may come back where nobody looks, e.g. a quota). */
const FULL_RETRY_MS = 30_000;

export type HealthState = 'healthy' | 'full' | 'failed';

/**
 * The failure state of one volume, per side: opening its files, ingest (spool) and apply
 * (journal, replica, checkpoint). Each side fails and recovers on its own; a failure is
 * retried with a growing delay, a full disk as soon as there is room again.
 */
export class VolumeHealth {
  private readonly failures = new Map<Side, Failure>();
  /** The last recovery per side: a failure soon after it goes on with the same backoff. */
  private readonly recoveries = new Map<Side, { attempts: number; atMs: number }>();

  fail(side: Side, err: unknown, freeBytes = 0, nowMs = Date.now()): StorageErrorInfo {
    const info = classifyStorageError(err);
    const previous = this.failures.get(side);
    // A disk that still fails lets recovery succeed (it only reads and cuts back) and the next
    // write fail again: that is the same fault, retried later each time, not a new one.
    const recovery = this.recoveries.get(side);
    const relapse = recovery !== undefined && nowMs - recovery.atMs < MAX_RETRY_MS ? recovery.attempts : 0;
    const attempts = (previous?.attempts ?? relapse) + 1;
    const delay = info.full ? FULL_RETRY_MS : Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** (attempts - 1));
    this.failures.set(side, { reason: info.message, full: info.full, damaged: info.damaged, sinceMs: previous?.sinceMs ?? nowMs, attempts, retryAtMs: nowMs + delay, freeAtFailure: freeBytes });
    return info;
  }

  recovered(side: Side, nowMs = Date.now()): boolean {
    const f = this.failures.get(side);
    if (f) this.recoveries.set(side, { attempts: f.attempts, atMs: nowMs });
    return this.failures.delete(side);
  }

  /** Room was made for a side that failed for lack of it: it is due at once. */
  retryNow(side: Side): void {
    const f = this.failures.get(side);
    if (f?.full) f.retryAtMs = 0;
  }

  failure(side: Side): Readonly<Failure> | undefined {
    return this.failures.get(side);
  }

  /**
   * True when `side` failed and is due for another attempt: after its delay, or for a full
   * disk as soon as clearly more is free (`freeBytes`: free where the volume lives now).
   */
  due(side: Side, freeBytes: number, nowMs = Date.now()): boolean {
    const f = this.failures.get(side);
    if (!f) return false;
    return nowMs >= f.retryAtMs || (f.full && freeBytes >= f.freeAtFailure + FULL_HEADROOM_BYTES);
  }

  get state(): HealthState {
    let state: HealthState = 'healthy';
    for (const f of this.failures.values()) {
      if (!f.full) return 'failed';
      state = 'full';
    }
    return state;
  }

  /** One line per failed side, for status and logs. */
  describe(): string | undefined {
    const parts = [...this.failures.entries()].map(([side, f]) => `${side} ${f.full ? 'waits for space' : 'failed'}: ${f.reason}`);
    return parts.length > 0 ? parts.join('; ') : undefined;
  }
}
