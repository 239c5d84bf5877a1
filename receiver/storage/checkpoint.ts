import * as fs from 'fs';
import { crc32 } from 'zlib';
import { readFully } from '../../common/fsutil';
import { dropCache } from '../../native/addon';

const MAGIC = 0x31504346; // FCP1
const SLOT_BYTES = 512;

export type SlotState = 'valid' | 'empty' | 'damaged';

/** What the two slots of a checkpoint file hold. */
export interface CheckpointRead {
  seq: number;
  generation: number;
  slots: [SlotState, SlotState];
  /** Something was written here, yet no slot reads back valid: the applied seq is not known. */
  lost: boolean;
}

/**
 * The last applied seq of a volume, in two alternating 512-byte slots of one file: a write
 * torn by a crash damages only the slot being written, and the other still reads back. When
 * both are damaged the applied seq is not known: `lost` says so (never a silent 0).
 */
export class Checkpoint {
  private generation = 0;
  private current = 0;
  private lostAtOpen = false;
  private slotStates: [SlotState, SlotState] = ['empty', 'empty'];

  private constructor(private readonly fd: number) {}

  static open(file: string): Checkpoint {
    const fd = fs.openSync(file, fs.existsSync(file) ? 'r+' : 'w+', 0o600);
    const cp = new Checkpoint(fd);
    dropCache(fd);
    const best = readCheckpointSlots(fd);
    cp.generation = best.generation;
    cp.current = best.seq;
    cp.lostAtOpen = best.lost;
    cp.slotStates = best.slots;
    return cp;
  }

  get seq(): number {
    return this.current;
  }

  /** Both slots were damaged when the file was opened (and nothing was saved since). */
  get lost(): boolean {
    return this.lostAtOpen;
  }

  get slots(): [SlotState, SlotState] {
    return this.slotStates;
  }

  /** Durably records `seq` as applied. The replica must already be fsync'd up to it. */
  save(seq: number): void {
    const generation = this.generation + 1;
    const slot = Buffer.alloc(SLOT_BYTES);
    slot.writeUInt32LE(MAGIC, 0);
    slot.writeUInt32LE(generation, 4);
    slot.writeBigUInt64LE(BigInt(seq), 8);
    slot.writeUInt32LE(crc32(slot.subarray(0, 16)), 16);
    fs.writeSync(this.fd, slot, 0, SLOT_BYTES, (generation % 2) * SLOT_BYTES);
    fs.fdatasyncSync(this.fd);
    this.generation = generation;
    this.current = seq;
    this.lostAtOpen = false;
    this.slotStates[generation % 2] = 'valid';
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

function readCheckpointSlots(fd: number): CheckpointRead {
  let best = { generation: 0, seq: 0 };
  const slots: [SlotState, SlotState] = ['empty', 'empty'];
  const slot = Buffer.alloc(SLOT_BYTES);
  for (let i = 0; i < 2; i++) {
    const n = readFully(fd, slot, 0, SLOT_BYTES, i * SLOT_BYTES);
    if (n === 0 || slot.subarray(0, n).every((b) => b === 0)) continue;
    if (n < 20 || slot.readUInt32LE(0) !== MAGIC || crc32(slot.subarray(0, 16)) !== slot.readUInt32LE(16)) {
      slots[i] = 'damaged';
      continue;
    }
    slots[i] = 'valid';
    const generation = slot.readUInt32LE(4);
    if (generation >= best.generation) best = { generation, seq: Number(slot.readBigUInt64LE(8)) };
  }
  const lost = slots.every((s) => s !== 'valid') && slots.some((s) => s === 'damaged');
  return { ...best, slots, lost };
}

/** Reads the checkpoint of a volume without opening it for writing (for export, status and verify). */
export function readCheckpointFile(file: string): CheckpointRead {
  if (!fs.existsSync(file)) return { seq: 0, generation: 0, slots: ['empty', 'empty'], lost: false };
  const fd = fs.openSync(file, 'r');
  try {
    return readCheckpointSlots(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** The applied seq of a volume as its checkpoint file says (0 when none). */
export function readCheckpoint(file: string): number {
  return readCheckpointFile(file).seq;
}
