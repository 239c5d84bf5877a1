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
  const text = Buffer.from(JSON.stringify(status, null, 2));
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    fs.writeFileSync(tmp, text, { mode: 0o644 });
    fs.renameSync(tmp, file);
  } catch {
    fs.rmSync(tmp, { force: true });
    // A full disk has no block for a new file, but the old one's blocks can be written over
    // (a reader may see a torn file and retry).
    const fd = fs.openSync(file, 'r+');
    try {
      fs.writeSync(fd, text, 0, text.length, 0);
      fs.ftruncateSync(fd, text.length);
    } finally {
      fs.closeSync(fd);
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
