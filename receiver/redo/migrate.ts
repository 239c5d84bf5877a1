// Migration of a volume the undo design left on disk to the redo store: whatever the undo
// journal had applied past the checkpoint is rolled back (VolumeStore.open does that, as after
// a crash), and redo starts with its base at the checkpoint: the replica as it stands is the
// image of that point. The spool after the checkpoint is what the redo index then replays.
// Points older than the checkpoint are given up (the undo journal that rebuilt them is deleted);
// the caller marks them aged out in the catalog.

import * as fs from 'fs';
import * as path from 'path';
import { fsyncDir } from '../../common/fsutil';
import { VolumeSpec } from '../../proto/types';
import { DataLayout } from '../layout';
import { RedoVolume } from './redo-volume';

export interface Migrated {
  /** The redo base: the undo checkpoint the replica was rolled back to. */
  baseSeq: number;
  /** Undo records rolled back on the way (applied past the checkpoint before a crash). */
  rolledBackRecords: number;
}

/** The volume opened the undo way (VolumeStore with the undo journal): open finished its recovery. */
export interface UndoVolume {
  readonly checkpointSeq: number;
  readonly openReport: { rolledBackRecords: number };
  close(): void;
}

/** True when the volume's directory holds the undo design's files and no redo base yet. */
export function needsMigration(layout: DataLayout, volumeId: string): boolean {
  return !fs.existsSync(path.join(layout.volumeDir(volumeId), 'base')) && fs.existsSync(layout.journalDir(volumeId));
}

/**
 * Migrates one closed volume (`openUndo` opens it with the undo journal, which rolls back what
 * a crash left past the checkpoint). Idempotent: a crash before the base file is written leaves the
 * undo files (the next run migrates again); after it, only the journal's deletion is left,
 * which the next run finishes.
 */
export function migrateUndoVolume(layout: DataLayout, spec: VolumeSpec, openUndo: () => UndoVolume): Migrated | undefined {
  const dir = layout.volumeDir(spec.volumeId);
  const journal = layout.journalDir(spec.volumeId);
  if (!needsMigration(layout, spec.volumeId)) {
    removeJournal(journal, dir);
    return undefined;
  }
  const store = openUndo();
  let baseSeq: number;
  let rolledBackRecords: number;
  try {
    baseSeq = store.checkpointSeq;
    rolledBackRecords = store.openReport.rolledBackRecords;
  } finally {
    store.close();
  }
  RedoVolume.open({ dir, spoolDir: layout.spoolDir(spec.volumeId), sizeBytes: spec.sizeBytes }, baseSeq).close();
  removeJournal(journal, dir);
  return { baseSeq, rolledBackRecords };
}

function removeJournal(journal: string, dir: string): void {
  if (!fs.existsSync(journal)) return;
  fs.rmSync(journal, { recursive: true, force: true });
  fsyncDir(dir);
}
