import { deflateSync } from 'node:zlib';

/**
 * Console pictures as PNG. qemu >= 7.1 (through QMP or `virsh screenshot` with libvirt >= 8.x)
 * writes PNG itself; older ones write binary PPM (P6), which ppmToPng converts.
 */

export const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export function isPng(data: Buffer): boolean {
  return data.length > PNG_SIGNATURE.length && data.subarray(0, PNG_SIGNATURE.length).equals(PNG_SIGNATURE);
}

export function isPpm(data: Buffer): boolean {
  return data.length > 2 && data[0] === 0x50 && data[1] === 0x36; // "P6"
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(data: Buffer): number {
  let c = 0xffffffff;
  for (const b of data) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(body.length, 0);
  head.write(type, 4, 'ascii');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), body])), 0);
  return Buffer.concat([head, body, crc]);
}

/** Parses a binary PPM (P6, maxval 255) header: width, height and where the pixels start. */
export function parsePpm(data: Buffer): { width: number; height: number; offset: number } {
  const fields: number[] = [];
  let i = 2;
  while (fields.length < 3) {
    while (i < data.length && /\s/.test(String.fromCharCode(data[i]))) i++;
    if (data[i] === 0x23) {
      while (i < data.length && data[i] !== 0x0a) i++;
      continue;
    }
    const start = i;
    while (i < data.length && data[i] >= 0x30 && data[i] <= 0x39) i++;
    if (i === start) throw new Error('not a binary PPM image (bad header)');
    fields.push(Number(data.subarray(start, i).toString('ascii')));
  }
  const [width, height, maxval] = fields;
  if (!isPpm(data) || maxval !== 255 || width < 1 || height < 1) throw new Error('not an 8-bit binary PPM (P6) image');
  const offset = i + 1; // one whitespace byte after maxval
  if (data.length < offset + width * height * 3) throw new Error(`PPM image is truncated (${width}x${height})`);
  return { width, height, offset };
}

export function ppmToPng(ppm: Buffer): Buffer {
  const { width, height, offset } = parsePpm(ppm);
  const stride = width * 3;
  const raw = Buffer.alloc((stride + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (stride + 1)] = 0; // filter: none
    ppm.copy(raw, y * (stride + 1) + 1, offset + y * stride, offset + (y + 1) * stride);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB
  return Buffer.concat([PNG_SIGNATURE, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

/** Width and height from a PNG's IHDR. */
export function pngSize(png: Buffer): { width: number; height: number } {
  if (!isPng(png) || png.length < 24 || png.subarray(12, 16).toString('ascii') !== 'IHDR') throw new Error('not a PNG image');
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}
