import * as fs from 'fs';
import { writeFileAtomic } from '../common/fsutil';

export interface VolumeRuntimeStatus {
  volumeId: string;
  connected: boolean;
  durableSeq: number;
  appliedSeq: number;
  checkpointSeq: number;
  /** now - capture time of the oldest change not yet durable here (agent-reported). */
  rpoSeconds: number;
  applyLagSeqs: number;
  applyLagSeconds: number;
  unappliedBytes: number;
  journalSegments: number;
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
