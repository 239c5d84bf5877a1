import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readStatusFile, ReceiverStatus, StatusFile } from '../../receiver/status';

function status(pid: number): ReceiverStatus {
  return { pid, updatedUs: pid, listen: '127.0.0.1:1', fingerprint: 'f', sessions: 0, prunedPoints: 0, prunedJournalSegments: 0, storage: [], alerts: [], volumes: [] };
}

describe('StatusFile', () => {
  let dir: string;
  let file: string;
  const errors: Error[] = [];
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-status-'));
    file = path.join(dir, 'status.json');
    errors.length = 0;
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('serves requests made during a write with one later write of the newest snapshot', async () => {
    const s = new StatusFile(file, (err) => errors.push(err));
    const taken: number[] = [];
    const snapshot = (n: number) => () => {
      taken.push(n);
      return status(n);
    };
    s.request(snapshot(1));
    s.request(snapshot(2));
    s.request(snapshot(3));
    await s.idle();
    expect(taken).toEqual([1, 3]);
    expect(readStatusFile(file)?.pid).toBe(3);
    expect(fs.readdirSync(dir)).toEqual(['status.json']);
    expect(errors).toEqual([]);
  });

  it('lands no periodic write after settle, so the last synchronous write stays', async () => {
    const s = new StatusFile(file, (err) => errors.push(err));
    s.writeNow(status(1));
    s.request(() => status(2));
    await s.settle();
    s.writeNow(status(9));
    s.request(() => status(3));
    await s.idle();
    expect(readStatusFile(file)?.pid).toBe(9);
    expect(fs.readdirSync(dir)).toEqual(['status.json']);
  });

  it('reports a snapshot that throws and keeps serving later requests', async () => {
    const s = new StatusFile(file, (err) => errors.push(err));
    s.request(() => {
      throw new Error('no snapshot');
    });
    await s.idle();
    expect(errors.map((e) => e.message)).toEqual(['no snapshot']);
    s.request(() => status(4));
    await s.idle();
    expect(readStatusFile(file)?.pid).toBe(4);
  });
});
