// The CPU that any design streaming these bytes with lz4 and payload CRCs must spend, measured on
// the same data in the same run: what the end-to-end figure (a) is bounded by on a machine whose
// cores both ends share.
import * as lz4 from 'lz4';
import { crc32 } from 'zlib';
import { MiB } from '../common';
import type { DataPool } from './stream';

export interface MandatoryWork {
  /** Compressed bytes per source byte (lz4 block per message; raw where it does not shrink). */
  compressedRatio: number;
  /** CPU seconds per GB of source bytes for each piece. */
  lz4Encode: number;
  lz4Decode: number;
  crcRaw: number;
  crcCompressed: number;
}

function cpuSeconds(fn: () => void): number {
  const start = process.cpuUsage();
  fn();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1e6;
}

/** Times each piece over `totalBytes` of the pool's 1 MiB messages (per GB of source bytes). */
export function measureMandatoryWork(pool: DataPool, totalBytes: number): MandatoryWork {
  const messages = totalBytes / MiB;
  const out = Buffer.allocUnsafe(lz4.encodeBound(MiB));
  const back = Buffer.allocUnsafe(MiB);
  // What goes on the wire for each distinct message of the pool.
  const lap: { payload: Buffer; compressed: boolean }[] = [];
  let sentBytes = 0;
  const lz4Encode = cpuSeconds(() => {
    for (let i = 0; i < messages; i++) {
      const raw = pool.message(i);
      const size = lz4.encodeBlock(raw, out);
      const compressed = size > 0 && size < raw.length;
      sentBytes += compressed ? size : raw.length;
      if (lap.length < pool.messageCount) lap.push({ payload: compressed ? Buffer.from(out.subarray(0, size)) : raw, compressed });
    }
  });
  const onWire = (i: number): { payload: Buffer; compressed: boolean } => lap[i % lap.length];
  const lz4Decode = cpuSeconds(() => {
    for (let i = 0; i < messages; i++) if (onWire(i).compressed) lz4.decodeBlock(onWire(i).payload, back);
  });
  const crcRaw = cpuSeconds(() => {
    for (let i = 0; i < messages; i++) crc32(pool.message(i));
  });
  const crcCompressed = cpuSeconds(() => {
    for (let i = 0; i < messages; i++) crc32(onWire(i).payload);
  });
  const gb = totalBytes / 1e9;
  return { compressedRatio: sentBytes / totalBytes, lz4Encode: lz4Encode / gb, lz4Decode: lz4Decode / gb, crcRaw: crcRaw / gb, crcCompressed: crcCompressed / gb };
}
