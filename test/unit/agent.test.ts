import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ScanTable } from '../../agent/capture/scan-table';
import { parseAgentConfig } from '../../agent/config';
import { FerryError } from '../../common/errors';
import { blockHash } from '../../common/block-hash';
import { tempDirs } from '../helpers/temp-dirs';

const tmp = tempDirs();

const BLOCK = 4096;
const SIZE = 16 * BLOCK;
const hashOf = (fill: number): Buffer => blockHash(Buffer.alloc(BLOCK, fill));

describe('ScanTable', () => {
  it('after a crash, knows exactly the blocks the receiver holds durably: logged entries up to its durable seq', async () => {
    const dir = tmp('scan-table');
    const { table, stale } = ScanTable.open(dir, SIZE, BLOCK, 0);
    expect(stale).toBe(true);
    table.noteReceiverHas(0, hashOf(0));
    table.noteCommitted([], 0);
    table.compact();
    // Seqs 1..4 handed out (logged), of which the receiver made 1..2 durable before the crash.
    await table.log([
      { seq: 1, block: 1, hash: hashOf(1) },
      { seq: 2, block: 2, hash: hashOf(2) },
      { seq: 3, block: 3, hash: hashOf(3) },
      { seq: 4, block: 1, hash: hashOf(4) },
    ]);
    table.close();
    const reopened = ScanTable.open(dir, SIZE, BLOCK, 2);
    expect(reopened.stale).toBe(false);
    const t = reopened.table;
    expect(t.sentMatches(0, hashOf(0))).toBe(true);
    expect(t.sentMatches(1, hashOf(1))).toBe(true); // seq 4 never became durable
    expect(t.sentMatches(2, hashOf(2))).toBe(true);
    expect(t.isKnown(3)).toBe(false); // seq 3 never became durable: must be sent again
    t.close();
  });

  it('ignores a torn log tail, and is stale when the receiver is behind its snapshot or the geometry changed', async () => {
    const dir = tmp('scan-table-torn');
    const { table } = ScanTable.open(dir, SIZE, BLOCK, 0);
    table.noteCommitted([{ seq: 5, block: 0, hash: hashOf(9) }], 5);
    table.compact();
    await table.log([{ seq: 6, block: 1, hash: hashOf(6) }]);
    table.close();
    const log = path.join(dir, 'scan-log');
    fs.appendFileSync(log, Buffer.alloc(17, 0xff)); // half an entry
    const again = ScanTable.open(dir, SIZE, BLOCK, 6);
    expect(again.stale).toBe(false);
    expect(again.table.sentMatches(1, hashOf(6))).toBe(true);
    again.table.close();
    expect(ScanTable.open(dir, SIZE, BLOCK, 4).stale).toBe(true); // receiver lost seq 5
    expect(ScanTable.open(dir, SIZE * 2, BLOCK, 6).stale).toBe(true);
  });

  it('replays resync progress entries up to the durable seq', () => {
    const progress = (durableSeq: number): unknown => {
      const dir = tmp('scan-table-resync');
      const { table } = ScanTable.open(dir, SIZE, BLOCK, 0);
      table.resync = { kind: 'full', cursor: 0, doneSeq: 0 };
      table.compact();
      table.logResync({ kind: 'full', cursor: 8 * BLOCK, doneSeq: 0 }, 10);
      table.logResync({ kind: 'full', cursor: 12 * BLOCK, doneSeq: 0 }, 20);
      table.logResync({ kind: 'none', cursor: 0, doneSeq: 25 }, 30);
      table.close();
      const reopened = ScanTable.open(dir, SIZE, BLOCK, durableSeq).table;
      reopened.close();
      return reopened.resync;
    };
    expect(progress(5)).toEqual({ kind: 'full', cursor: 0, doneSeq: 0 });
    expect(progress(15)).toEqual({ kind: 'full', cursor: 8 * BLOCK, doneSeq: 0 });
    expect(progress(30)).toEqual({ kind: 'none', cursor: 0, doneSeq: 25 });
  });

  it('closed while a log fdatasync is in flight, finishes the sync and keeps the entries', async () => {
    const dir = tmp('scan-table-close');
    const { table } = ScanTable.open(dir, SIZE, BLOCK, 0);
    table.compact();
    const logged = table.log([{ seq: 1, block: 2, hash: hashOf(7) }]);
    table.close(); // the agent shutting down mid-sync
    await expect(logged).resolves.toBeUndefined();
    const reopened = ScanTable.open(dir, SIZE, BLOCK, 1).table;
    expect(reopened.sentMatches(2, hashOf(7))).toBe(true);
    reopened.close();
  });
});

describe('agent config', () => {
  const base = 'receiver:\n  url: wss://rx.example:7443\n  fingerprint: "' + 'ab:'.repeat(31) + 'ab"\nvolumes:\n  - id: root\n    path: ./disk.img\n';

  it('parses YAML with units and defaults, resolving paths against the config file', () => {
    const cfg = parseAgentConfig(`${base}scan:\n  interval: 500ms\n  blockSize: 128KiB\npipeline:\n  windowBytes: 8MiB\n`, '/etc/ferry/agent.yaml');
    expect(cfg.volumes[0]).toEqual({ id: 'root', path: '/etc/ferry/disk.img', mount: undefined });
    expect(cfg.scan).toMatchObject({ intervalMs: 500, blockSize: 128 * 1024 });
    expect(cfg.pipeline.windowBytes).toBe(8 * 1024 * 1024);
    expect(cfg.tags.crashIntervalMs).toBe(1000);
    expect(cfg.capture).toBe('auto');
    expect(cfg.stateDir).toBe('/var/lib/ferry');
  });

  it('accepts the same config as JSON', () => {
    const doc = { receiver: { url: 'wss://rx:1', caFile: 'ca.pem' }, volumes: [{ id: 'v', path: '/dev/vg/v', mount: '/' }], capture: 'scan' };
    const cfg = parseAgentConfig(JSON.stringify(doc), '/x/agent.json');
    expect(cfg.receiver.caFile).toBe('/x/ca.pem');
    expect(cfg.volumes[0].mount).toBe('/');
  });

  it('names the key at fault', () => {
    const bad = (text: string): string => {
      try {
        parseAgentConfig(text, '/x/a.yaml');
      } catch (err) {
        expect(err).toBeInstanceOf(FerryError);
        return (err as Error).message;
      }
      throw new Error('accepted');
    };
    expect(bad(`${base}scan:\n  interval: soon\n`)).toMatch(/scan.intervalMs/);
    expect(bad(`${base}capture: turbo\n`)).toMatch(/capture must be auto, kernel, ebpf or scan/);
    expect(bad(`${base}tags:\n  freezeTimeoutMs: 5\n`)).toMatch(/tags.freezeTimeoutMs/);
    expect(bad(`${base}  - id: root\n    path: ./other.img\n`)).toMatch(/listed twice/);
    expect(bad(`${base}metrics:\n  listen: nowhere\n`)).toMatch(/metrics.listen/);
  });
});
