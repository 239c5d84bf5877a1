import * as fs from 'fs';

/**
 * healthy; held (agents wait: free space low or spool above cap); damaged (damage found, a
 * repair pending or impossible); full (a write found no room: resumes when there is);
 * failed (I/O error or the files cannot be opened: retried).
 */
export type VolumeHealthState = 'healthy' | 'held' | 'damaged' | 'full' | 'failed';

export interface VolumeDamageStatus {
  kind: string;
  file: string;
  offset: number;
  seqFrom?: number;
  seqTo?: number;
  volumeOffset?: number;
  detail: string;
}

export interface ReceiverAlert {
  severity: 'warning' | 'error';
  /** A volume id or a path. */
  subject: string;
  message: string;
}

export interface VolumeRuntimeStatus {
  volumeId: string;
  connected: boolean;
  state: VolumeHealthState;
  /** Why the state is not healthy. */
  problem?: string;
  durableSeq: number;
  appliedSeq: number;
  checkpointSeq: number;
  /** now - capture time of the oldest change not yet durable here (agent-reported). */
  rpoSeconds: number;
  applyLagSeqs: number;
  applyLagSeconds: number;
  unappliedBytes: number;
  /** Change-set bytes made durable since the receiver started. */
  receivedBytes: number;
  journalSegments: number;
  /** Damage found and not healed yet. */
  damage: VolumeDamageStatus[];
  applyError?: string;
  /** Points aged out before their time for lack of space (redo journal), since the receiver started. */
  agedOutEarly?: AgedOutEarly;
}

/** What early age-outs for lack of space took from a redo volume (see ReceiverCore.ageOutForSpace). */
export interface AgedOutEarly {
  /** Points deleted from the catalog by them, in all. */
  points: number;
  /** Early age-outs run. */
  times: number;
  /** Spool bytes they freed, in all. */
  freedBytes: number;
  /** The oldest retained seq after the last one: points before it are gone. */
  oldestRetainedSeq: number;
  lastUs: number;
}

export interface ReceiverStatus {
  pid: number;
  updatedUs: number;
  listen: string;
  fingerprint: string;
  sessions: number;
  prunedPoints: number;
  prunedJournalSegments: number;
  /** Free space of every file system holding receiver data. */
  storage: Array<{ path: string; freeBytes: number; totalBytes: number; low: boolean }>;
  alerts: ReceiverAlert[];
  volumes: VolumeRuntimeStatus[];
}

/**
 * The status is a snapshot rewritten every second, never fsync'd: a data disk that fails
 * writes or fsyncs must not keep it from saying so (readers see the page cache), and after a
 * crash the reader checks that the pid still runs.
 */
export function writeStatusFile(file: string, status: ReceiverStatus): void {
  const text = statusText(status);
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    fs.writeFileSync(tmp, text, { mode: 0o644 });
    fs.renameSync(tmp, file);
  } catch {
    fs.rmSync(tmp, { force: true });
    overwriteInPlace(file, text);
  }
}

function statusText(status: ReceiverStatus): Buffer {
  return Buffer.from(JSON.stringify(status, null, 2));
}

// A full disk has no block for a new file, but the old one's blocks can be written over (a
// reader may see a torn file and retry).
function overwriteInPlace(file: string, text: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, text, 0, text.length, 0);
    fs.ftruncateSync(fd, text.length);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The receiver's status file. The periodic rewrites run on the thread pool: on ext4 a rename
 * over the old file starts writeback of the new one (`auto_da_alloc`), which waits behind the
 * spool's writeback and fsyncs and held the main thread (and so ingest) for up to 30 ms a time.
 * One rewrite runs at a time; a request made meanwhile is served after it, with a snapshot taken
 * then. The first and the last write are synchronous, and `settle` makes sure no periodic write
 * lands after the last one.
 */
export class StatusFile {
  private running: Promise<void> | undefined;
  private requested: (() => ReceiverStatus) | undefined;
  private settled = false;
  private serial = 0;

  constructor(
    readonly path: string,
    private readonly onError: (err: Error) => void,
  ) {}

  /** Rewrites the file now, on this thread. */
  writeNow(status: ReceiverStatus): void {
    writeStatusFile(this.path, status);
  }

  /** Rewrites the file off this thread with the snapshot `snapshot` gives when the write starts. */
  request(snapshot: () => ReceiverStatus): void {
    if (this.settled) return;
    this.requested = snapshot;
    this.start();
  }

  /** Resolves when no write runs or waits. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** No periodic write starts after this; resolves when the one running (if any) has ended. */
  async settle(): Promise<void> {
    this.settled = true;
    this.requested = undefined;
    await this.idle();
  }

  private start(): void {
    const snapshot = this.requested;
    if (this.running || !snapshot || this.settled) return;
    this.requested = undefined;
    this.running = this.write(snapshot).finally(() => {
      this.running = undefined;
      this.start();
    });
  }

  private async write(snapshot: () => ReceiverStatus): Promise<void> {
    try {
      await this.rewrite(statusText(snapshot()));
    } catch (err) {
      this.onError(err as Error);
    }
  }

  private async rewrite(text: Buffer): Promise<void> {
    const tmp = `${this.path}.tmp-${process.pid}-${++this.serial}`;
    try {
      await fs.promises.writeFile(tmp, text, { mode: 0o644 });
      if (this.settled) {
        await fs.promises.rm(tmp, { force: true });
        return;
      }
      await fs.promises.rename(tmp, this.path);
    } catch {
      await fs.promises.rm(tmp, { force: true });
      if (!this.settled) overwriteInPlace(this.path, text);
    }
  }
}

export function readStatusFile(file: string): ReceiverStatus | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as ReceiverStatus;
  } catch {
    return undefined;
  }
}
