import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ChunkReadTimes } from '../../agent/capture/read-times';
import { ScanSource } from '../../agent/capture/scan-source';
import type { CaptureBatch } from '../../agent/capture/types';
import { ReconnectBackoff } from '../../agent/transport/backoff';
import { formatDuration, formatSize, parseDurationMs, parseSizeBytes } from '../../common/units';
import { makeTempDir } from '../helpers/receiver-process';

const MiB = 1024 * 1024;
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

describe('reconnect backoff', () => {
  it('doubles from 0.5 s to 30 s while attempts fail, and starts over after a session that logged in', () => {
    const b = new ReconnectBackoff(500, 30_000, () => 0.5);
    const steps = Array.from({ length: 9 }, () => b.next().stepMs);
    expect(steps).toEqual([500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
    b.reset();
    expect(b.next()).toEqual({ stepMs: 500, delayMs: 500 });
    expect(b.next().stepMs).toBe(1000);
  });

  it('jitters each delay within +-25% of its step', () => {
    expect(new ReconnectBackoff(500, 30_000, () => 0).next().delayMs).toBe(375);
    expect(new ReconnectBackoff(500, 30_000, () => 0.999999).next().delayMs).toBe(625);
  });
});

describe('chunk read times', () => {
  it('knows the least recently read chunk whatever the order of reads', () => {
    const t = new ChunkReadTimes(5, 100);
    expect(t.oldest()).toBe(100);
    for (const [chunk, us] of [[0, 200], [1, 210], [2, 220], [3, 230]] as const) t.set(chunk, us);
    expect(t.oldest()).toBe(100); // chunk 4 was never read again
    t.set(4, 240);
    expect(t.oldest()).toBe(200);
    t.set(0, 300); // a pass restarted at chunk 0
    expect(t.oldest()).toBe(210);
    expect(t.get(0)).toBe(300);
    expect(() => t.get(5)).toThrow(RangeError);
    expect(new ChunkReadTimes(0, 5).oldest()).toBe(0);
  });
});

describe('scan capture time and exposure', () => {
  it('dates a change back to the previous read of its chunk, and counts unseen writes while nothing is pending', async () => {
    const dir = makeTempDir('scan-rpo');
    dirs.push(dir);
    const image = path.join(dir, 'vol.img');
    fs.writeFileSync(image, Buffer.alloc(8 * MiB));
    const source = new ScanSource({ stateDirOf: (id) => path.join(dir, 'state', id), intervalMs: 60_000, blockSize: 64 * 1024, maxPendingBytes: 64 * MiB });
    const spec = { id: 'v', path: image, sizeBytes: 8 * MiB, blockSize: 4096, isBlockDevice: false };
    const attachedUs = Date.now() * 1000;
    expect((await source.attach(spec, 0)).kind).toBe('full');
    source.startResync('v', 'full', () => Promise.reject(new Error('no receiver')));
    const drain = async (): Promise<CaptureBatch[]> => {
      const out: CaptureBatch[] = [];
      for (let b = await source.next(64 * MiB, 200); b; b = await source.next(64 * MiB, 50)) {
        out.push(b);
        await source.commit(b.id);
      }
      return out;
    };
    // The initial resync read every chunk; a zero volume sends nothing.
    await waitUntil(() => source.resyncProgress('v')?.finishedMs !== undefined);
    await drain();
    const afterResyncUs = Date.now() * 1000;
    // Nothing is pending, but a write right after a chunk was read is not seen yet: the
    // exposure starts at the least recent read, which the resync did after attach.
    const exposure = source.unsentSinceUs('v');
    expect(exposure).toBeGreaterThanOrEqual(attachedUs);
    expect(exposure).toBeLessThanOrEqual(afterResyncUs);
    expect(source.oldestQueuedCaptureUs()).toBe(exposure);
    // A write in the second chunk, then a pass (settle) finds it: it is dated at the resync's
    // read of that chunk, not at the time the pass found it.
    const fd = fs.openSync(image, 'r+');
    fs.writeSync(fd, Buffer.alloc(4096, 7), 0, 4096, 4 * MiB + 8192);
    fs.closeSync(fd);
    const beforeSettleUs = Date.now() * 1000;
    expect(await source.settle(['v'], Date.now() + 30_000)).toEqual({ settled: true });
    const records = (await drain()).flatMap((b) => b.records);
    expect(records.map((r) => r.offset)).toEqual([4 * MiB]);
    expect(records[0].captureTimeUs).toBeGreaterThanOrEqual(exposure);
    expect(records[0].captureTimeUs).toBeLessThan(beforeSettleUs);
    // The pass read every chunk again: the exposure moved up to it.
    expect(source.unsentSinceUs('v')).toBeGreaterThanOrEqual(beforeSettleUs);
    await source.close();
  });
});

describe('units as an operator writes them', () => {
  it('formats durations and sizes so that they parse back to the same value', () => {
    const durations: Array<[number, string]> = [[86_400_000, '24h'], [60_000, '1m'], [15_000, '15s'], [600_000, '10m'], [1500, '1.5s'], [250, '250ms'], [7 * 86_400_000, '7d']];
    for (const [ms, text] of durations) {
      expect(formatDuration(ms)).toBe(text);
      expect(parseDurationMs(text)).toBe(ms);
    }
    const sizes: Array<[number, string]> = [[1024 ** 3, '1GiB'], [64 * MiB, '64MiB'], [8 * MiB, '8MiB'], [65536, '64KiB'], [100, '100B']];
    for (const [bytes, text] of sizes) {
      expect(formatSize(bytes)).toBe(text);
      expect(parseSizeBytes(text)).toBe(bytes);
    }
  });
});

async function waitUntil(check: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
