import * as fs from 'fs';
import { crc32 } from 'zlib';
import { readFully } from '../../common/fsutil';

const MAGIC = 0x31504346; // FCP1
const SLOT_BYTES = 512;

/**
 * The last applied seq of a volume, in two alternating 512-byte slots of one file: a write
 * torn by a crash damages only the slot being written, and the other still reads back.
 */
export class Checkpoint {
  private generation = 0;
  private current = 0;

  private constructor(private readonly fd: number) {}

  static open(file: string): Checkpoint {
    const fd = fs.openSync(file, fs.existsSync(file) ? 'r+' : 'w+', 0o600);
    const cp = new Checkpoint(fd);
    const best = readCheckpointSlots(fd);
    cp.generation = best.generation;
    cp.current = best.seq;
    return cp;
  }

  get seq(): number {
    return this.current;
  }

  /** Durably records `seq` as applied. The replica must already be fsync'd up to it. */
  save(seq: number): void {
    this.generation++;
    const slot = Buffer.alloc(SLOT_BYTES);
    slot.writeUInt32LE(MAGIC, 0);
    slot.writeUInt32LE(this.generation, 4);
    slot.writeBigUInt64LE(BigInt(seq), 8);
    slot.writeUInt32LE(crc32(slot.subarray(0, 16)), 16);
    fs.writeSync(this.fd, slot, 0, SLOT_BYTES, (this.generation % 2) * SLOT_BYTES);
    fs.fdatasyncSync(this.fd);
    this.current = seq;
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

function readCheckpointSlots(fd: number): { generation: number; seq: number } {
  let best = { generation: 0, seq: 0 };
  const slot = Buffer.alloc(SLOT_BYTES);
  for (let i = 0; i < 2; i++) {
    if (readFully(fd, slot, 0, SLOT_BYTES, i * SLOT_BYTES) < 20) continue;
    if (slot.readUInt32LE(0) !== MAGIC || crc32(slot.subarray(0, 16)) !== slot.readUInt32LE(16)) continue;
    const generation = slot.readUInt32LE(4);
    if (generation >= best.generation) best = { generation, seq: Number(slot.readBigUInt64LE(8)) };
  }
  return best;
}

/** Reads the checkpoint of a volume without opening it for writing (for export and status). */
export function readCheckpoint(file: string): number {
  if (!fs.existsSync(file)) return 0;
  const fd = fs.openSync(file, 'r');
  try {
    return readCheckpointSlots(fd).seq;
  } finally {
    fs.closeSync(fd);
  }
}
