import { randomBytes } from 'crypto';

const VHD_EPOCH_MS = Date.UTC(2000, 0, 1);
export const VHD_FOOTER_BYTES = 512;

/** Cylinders/heads/sectors-per-track as the VHD specification derives them from the size. */
export function vhdGeometry(sizeBytes: number): { cylinders: number; heads: number; sectorsPerTrack: number } {
  let totalSectors = Math.floor(sizeBytes / 512);
  if (totalSectors > 65535 * 16 * 255) totalSectors = 65535 * 16 * 255;
  let sectorsPerTrack: number;
  let heads: number;
  let cylTimesHeads: number;
  if (totalSectors >= 65535 * 16 * 63) {
    sectorsPerTrack = 255;
    heads = 16;
    cylTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
  } else {
    sectorsPerTrack = 17;
    cylTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    heads = Math.max(4, Math.floor((cylTimesHeads + 1023) / 1024));
    if (cylTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31;
      heads = 16;
      cylTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
    if (cylTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63;
      heads = 16;
      cylTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
  }
  return { cylinders: Math.floor(cylTimesHeads / heads), heads, sectorsPerTrack };
}

/** The 512-byte footer that turns a raw image into a fixed VHD (disk type 2). */
export function vhdFixedFooter(sizeBytes: number, now = new Date(), uniqueId: Buffer = randomBytes(16)): Buffer {
  if (sizeBytes % 512 !== 0) throw new Error(`a VHD's size must be a multiple of 512 bytes, not ${sizeBytes}`);
  const f = Buffer.alloc(VHD_FOOTER_BYTES);
  f.write('conectix', 0, 'ascii');
  f.writeUInt32BE(2, 8); // features: reserved bit, always set
  f.writeUInt32BE(0x00010000, 12); // file format version 1.0
  f.writeBigUInt64BE(0xffffffffffffffffn, 16); // data offset: none for a fixed disk
  f.writeUInt32BE(Math.max(0, Math.floor((now.getTime() - VHD_EPOCH_MS) / 1000)), 24);
  f.write('fery', 28, 'ascii');
  f.writeUInt32BE(0x00010000, 32);
  f.write('Wi2k', 36, 'ascii'); // creator host OS, the value every tool writes
  f.writeBigUInt64BE(BigInt(sizeBytes), 40);
  f.writeBigUInt64BE(BigInt(sizeBytes), 48);
  const g = vhdGeometry(sizeBytes);
  f.writeUInt16BE(g.cylinders, 56);
  f.writeUInt8(g.heads, 58);
  f.writeUInt8(g.sectorsPerTrack, 59);
  f.writeUInt32BE(2, 60); // disk type: fixed
  uniqueId.copy(f, 68, 0, 16);
  f.writeUInt32BE(vhdChecksum(f), 64);
  return f;
}

/** One's complement of the byte sum, with the checksum field itself counted as zero. */
export function vhdChecksum(footer: Buffer): number {
  let sum = 0;
  for (let i = 0; i < footer.length; i++) if (i < 64 || i >= 68) sum += footer[i];
  return ~sum >>> 0;
}
