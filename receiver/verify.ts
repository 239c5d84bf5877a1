import * as fs from 'fs';
import { readFully } from '../common/fsutil';
import { seekData } from '../native/addon';
import { Catalog, VolumeRow } from './catalog';
import { DataLayout } from './layout';
import { BlockSums, blockSum, SUM_BLOCK } from './storage/block-sums';
import { readCheckpointFile } from './storage/checkpoint';
import { StorageDamage } from './storage/damage';
import { verifyJournal } from './storage/journal';
import { scanSpoolSegment, SPOOL_SEGMENT_EXT, spoolStretchDamage } from './storage/spool';
import { listSegments } from './storage/segments';

/** Blocks read and checked at a time. */
const CHUNK_BLOCKS = 1024;
/** A block that reads different from its sum is read again after this long: apply may be writing it. */
const RECHECK_MS = 200;

export interface VolumeVerify {
  volumeId: string;
  replicaBlocksChecked: number;
  /** Blocks that changed while being checked (apply was writing them): not judged. */
  replicaBlocksBusy: number;
  spoolRecords: number;
  journalRecords: number;
  checkpointSeq: number;
  /** Torn tails (appends a crash cut short): dropped at the next start, never acknowledged. */
  tornBytes: number;
  damage: StorageDamage[];
}

export interface VerifyReport {
  catalog: { file: string; integrity: string[]; damage: StorageDamage[] };
  volumes: VolumeVerify[];
  /** Pieces of damage found in all. */
  damageCount: number;
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Checks the replica of a volume against its block sums, a chunk at a time. A block whose
 * content does not match is read again (with its sum) a moment later: if either changed,
 * apply is at work on it and it is not judged; if both are the same, it is damaged.
 */
function verifyReplica(layout: DataLayout, volume: VolumeRow, damage: StorageDamage[]): { checked: number; busy: number } {
  const replicaFile = layout.replicaFile(volume.id);
  const sumsFile = layout.sumsFile(volume.id);
  if (!fs.existsSync(replicaFile) || !fs.existsSync(sumsFile)) return { checked: 0, busy: 0 };
  const fd = fs.openSync(replicaFile, 'r');
  const sums = BlockSums.open(sumsFile, volume.sizeBytes, true);
  const buf = Buffer.allocUnsafe(CHUNK_BLOCKS * SUM_BLOCK);
  let checked = 0;
  let busy = 0;
  const readBlocks = (first: number, count: number): Uint32Array => {
    const start = first * SUM_BLOCK;
    const length = Math.min(volume.sizeBytes, start + count * SUM_BLOCK) - start;
    const next = seekData(fd, start);
    const out = new Uint32Array(count);
    if (next >= 0 && next < start + length) {
      const n = readFully(fd, buf, 0, length, start);
      if (n < length) buf.fill(0, n, length);
      for (let i = 0; i < count; i++) out[i] = blockSum(buf.subarray(i * SUM_BLOCK, Math.min(length, (i + 1) * SUM_BLOCK)));
    }
    return out;
  };
  try {
    for (let first = 0; first < sums.blocks; first += CHUNK_BLOCKS) {
      const count = Math.min(CHUNK_BLOCKS, sums.blocks - first);
      const actual = readBlocks(first, count);
      const stored = sums.read(first, count);
      checked += count;
      const suspects: number[] = [];
      for (let i = 0; i < count; i++) if (actual[i] !== stored[i]) suspects.push(i);
      if (suspects.length === 0) continue;
      // Once per chunk: apply writes a block and then its sum within one step.
      sleep(RECHECK_MS);
      const actualAgain = readBlocks(first, count);
      const storedAgain = sums.read(first, count);
      for (const i of suspects) {
        if (actualAgain[i] !== actual[i] || storedAgain[i] !== stored[i]) {
          if (actualAgain[i] !== storedAgain[i]) busy++;
          continue;
        }
        const b = first + i;
        const last = damage[damage.length - 1];
        if (last && last.kind === 'replica' && last.offset + last.length === b * SUM_BLOCK) {
          last.length += SUM_BLOCK;
          last.volumeLength = last.length;
        } else {
          damage.push({ kind: 'replica', file: replicaFile, offset: b * SUM_BLOCK, length: SUM_BLOCK, volumeOffset: b * SUM_BLOCK, volumeLength: SUM_BLOCK, detail: 'replica blocks do not match their checksums' });
        }
      }
    }
  } finally {
    sums.close();
    fs.closeSync(fd);
  }
  return { checked, busy };
}

function verifyVolume(layout: DataLayout, volume: VolumeRow): VolumeVerify {
  const damage: StorageDamage[] = [];
  const cpFile = layout.checkpointFile(volume.id);
  const cp = readCheckpointFile(cpFile);
  cp.slots.forEach((slot, i) => {
    if (slot !== 'damaged') return;
    damage.push({
      kind: 'checkpoint',
      file: cpFile,
      offset: i * 512,
      length: 512,
      detail: cp.lost ? 'both checkpoint slots are damaged: the receiver recovers the applied seq from the journal and spool when it opens the volume' : `slot ${i} is damaged; the other slot holds seq ${cp.seq}`,
    });
  });
  let spoolRecords = 0;
  let tornBytes = 0;
  const spoolDir = layout.spoolDir(volume.id);
  const segments = fs.existsSync(spoolDir) ? listSegments(spoolDir, SPOOL_SEGMENT_EXT) : [];
  segments.forEach((seg, i) => {
    const scan = scanSpoolSegment(seg.file);
    spoolRecords += scan.records.length;
    for (const d of scan.damage) damage.push(spoolStretchDamage(seg.file, d));
    if (scan.tornBytes > 0 && i < segments.length - 1) {
      damage.push({ kind: 'spool', file: seg.file, offset: scan.validEnd, length: scan.tornBytes, detail: 'an older segment ends inside a record' });
    } else tornBytes += scan.tornBytes;
  });
  const journalDir = layout.journalDir(volume.id);
  const journal = fs.existsSync(journalDir) ? verifyJournal(journalDir) : { records: 0, damage: [], tornBytes: 0 };
  damage.push(...journal.damage);
  tornBytes += journal.tornBytes;
  const replica = verifyReplica(layout, volume, damage);
  return {
    volumeId: volume.id,
    replicaBlocksChecked: replica.checked,
    replicaBlocksBusy: replica.busy,
    spoolRecords,
    journalRecords: journal.records,
    checkpointSeq: cp.seq,
    tornBytes,
    damage,
  };
}

/**
 * A scrub of a receiver's data directory, safe while the receiver runs: SQLite's own check of
 * the catalog and the checksum of every point and volume row, both checkpoint slots, every
 * spool and journal record, and every replica block against its sum. Damage it finds in the
 * replica and the journal is recorded in the catalog, where the running receiver picks it up
 * and asks the volume's agent to send the damaged replica ranges again.
 */
export function verifyDataDir(dataDir: string, volumeId?: string): VerifyReport {
  const layout = new DataLayout(dataDir);
  const catalogDamage: StorageDamage[] = [];
  let catalog: Catalog;
  try {
    catalog = Catalog.open(layout.catalogFile);
  } catch (err) {
    // Without the catalog the volumes are still checked, their sizes taken from the replicas.
    catalogDamage.push({ kind: 'catalog', file: layout.catalogFile, offset: 0, length: 0, detail: (err as Error).message });
    const ids = fs.existsSync(layout.volumesDir) ? fs.readdirSync(layout.volumesDir).filter((id) => volumeId === undefined || id === volumeId) : [];
    const results = ids
      .filter((id) => fs.existsSync(layout.replicaFile(id)))
      .map((id) => verifyVolume(layout, { id, agentId: '', sizeBytes: fs.statSync(layout.replicaFile(id)).size, blockSize: SUM_BLOCK, createdUs: 0 }));
    return { catalog: { file: layout.catalogFile, integrity: [], damage: catalogDamage }, volumes: results, damageCount: catalogDamage.length + results.reduce((n, r) => n + r.damage.length, 0) };
  }
  try {
    const integrity = catalog.integrityCheck();
    if (!(integrity.length === 1 && integrity[0] === 'ok')) {
      catalogDamage.push({ kind: 'catalog', file: layout.catalogFile, offset: 0, length: 0, detail: `SQLite reports: ${integrity.slice(0, 5).join('; ')}` });
    }
    const volumes = catalog.volumes().filter((v) => volumeId === undefined || v.id === volumeId);
    for (const v of catalog.volumes()) {
      if (v.damaged) catalogDamage.push({ kind: 'catalog', file: layout.catalogFile, offset: 0, length: 0, detail: v.damaged });
    }
    for (const p of catalog.points(volumeId)) {
      if (p.damaged) catalogDamage.push({ kind: 'catalog', file: layout.catalogFile, offset: 0, length: 0, seqFrom: p.seq, detail: `${p.damaged} (volume ${p.volumeId}); it is not exported` });
    }
    const results = volumes.filter((v) => !v.damaged).map((v) => verifyVolume(layout, v));
    for (const r of results) {
      for (const d of r.damage) if (d.kind === 'replica' || d.kind === 'journal') catalog.addDamage(r.volumeId, d, Date.now() * 1000);
    }
    return { catalog: { file: layout.catalogFile, integrity, damage: catalogDamage }, volumes: results, damageCount: catalogDamage.length + results.reduce((n, r) => n + r.damage.length, 0) };
  } finally {
    catalog.close();
  }
}
