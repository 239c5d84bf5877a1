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
  writeFileAtomic(file, JSON.stringify(status, null, 2), 0o644);
}

export function readStatusFile(file: string): ReceiverStatus | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as ReceiverStatus;
  } catch {
    return undefined;
  }
}
