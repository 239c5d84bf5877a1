import * as fs from 'fs';
import { writeFileAtomic } from '../common/fsutil';

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
  journalSegments: number;
  /** Damage found and not healed yet. */
  damage: VolumeDamageStatus[];
  applyError?: string;
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

export function writeStatusFile(file: string, status: ReceiverStatus): void {
  const text = JSON.stringify(status, null, 2);
  try {
    writeFileAtomic(file, text, 0o644);
  } catch (err) {
    // A full disk has no block for a new file, but the old one's blocks can be written over:
    // the status must still say what is wrong (a reader may see a torn file and retry).
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
    const fd = fs.openSync(file, 'r+');
    try {
      const buf = Buffer.from(text);
      fs.writeSync(fd, buf, 0, buf.length, 0);
      fs.ftruncateSync(fd, buf.length);
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
