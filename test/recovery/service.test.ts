/**
 * The recovery service's job logic (recovery/service.ts) over a fake target (test/helpers/
 * fake-target.ts), an in-memory control plane and a real recovery store, exports and qcow2
 * overlays (qemu-img): boot-group order, scripts and manual steps, health failures that clean up,
 * conflicts, failover state and the refusal of old streams, commit, failback. Real VMs:
 * test/recovery/qemu-target.test.ts; the whole path: test/vm/recovery.test.ts.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ControlError } from '../../control/contract';
import type { PointRow } from '../../receiver/catalog';
import type { Job } from '../../recovery/model';
import { RecoveryService } from '../../recovery/service';
import { RecoveryStore } from '../../recovery/store';
import { FakeTarget } from '../helpers/fake-target';
import { MemoryPlane } from '../helpers/memory-plane';

const MiB = 1024 * 1024;

function point(id: number, volumeId: string, seq: number, patch: Partial<PointRow> = {}): PointRow {
  return { id, volumeId, seq, timeUs: seq * 1_000_000, kind: 'crash', accuracy: 'exact', origin: 'tag', groupId: '', name: `p${id}`, groupRound: 0, ...patch };
}

function waitJob(service: RecoveryService, id: number, done: (j: Job) => boolean, timeoutMs = 20_000): Promise<Job> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`job ${id} did not reach the state in time: ${JSON.stringify(service.job(id), null, 1)}`));
    }, timeoutMs);
    const check = (): void => {
      const j = service.job(id);
      if (done(j)) {
        clearTimeout(timer);
        off();
        resolve(j);
      }
    };
    const off = service.subscribeJobs(check);
    check();
  });
}

const ended = (j: Job): boolean => j.state === 'succeeded' || j.state === 'failed' || j.state === 'cancelled';

describe('recovery service (fake target, real store, exports and overlays)', () => {
  let dir: string;
  let plane: MemoryPlane;
  let store: RecoveryStore;
  let target: FakeTarget;
  let service: RecoveryService;
  let points: PointRow[];
  const exported: string[] = [];
  const dropped: Array<{ volumeId: string; keep: readonly number[] }> = [];
  const compared: string[] = [];
  const endedStreams: string[] = [];
  /** What the receiver has applied and checkpointed, per the fake; `polled` hears each look. */
  let exportable = 1000;
  let polled: ((volumeId: string) => void) | undefined;

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-recsvc-'));
    plane = new MemoryPlane();
    plane.addMachine('db', 'db');
    plane.addMachine('web', 'web');
    points = [point(1, 'db-root', 10), point(2, 'web-root', 12), point(3, 'db-root', 20), point(4, 'web-root', 22), point(5, 'db-root', 30, { accuracy: 'none' })];
    store = RecoveryStore.open(path.join(dir, 'catalog.db'));
    target = new FakeTarget();
    exported.length = 0;
    dropped.length = 0;
    compared.length = 0;
    endedStreams.length = 0;
    exportable = 1000;
    polled = undefined;
    service = new RecoveryService({
      dataDir: dir,
      store,
      plane,
      points: (v) => points.filter((p) => p.volumeId === v),
      exportPoint: async (r) => {
        exported.push(`${r.volumeId}@${r.pointId}`);
        fs.writeFileSync(r.out, Buffer.alloc(MiB, r.pointId));
      },
      target,
      deletePointsExcept: (volumeId, keep) => {
        dropped.push({ volumeId, keep });
        return 1;
      },
      requestWholeVolumeCompare: (volumeId) => compared.push(volumeId),
      exportableSeq: (volumeId) => {
        polled?.(volumeId);
        return exportable;
      },
      endStreams: (machineId) => endedStreams.push(machineId),
    });
    await service.start();
  });

  afterEach(async () => {
    await service.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const twoGroupPlan = (scriptOut: string) =>
    service.createPlan({
      name: 'shop',
      bootGroups: [
        { machines: ['db'], after: [{ kind: 'script', name: 'env', command: `echo "$FERRY_PLAN $FERRY_BOOT_GROUP $FERRY_MACHINES" > ${scriptOut}`, timeoutMs: 10_000 }] },
        { machines: ['web'], before: [{ kind: 'manual', name: 'check-dns', instructions: 'point www at the sandbox' }] },
      ],
      health: { timeoutMs: 10_000 },
    });

  it('test failover: exports at the point, overlays, boots group by group, waits at the manual step, keeps evidence; cleanup leaves no VM and no disk', async () => {
    const scriptOut = path.join(dir, 'script.txt');
    twoGroupPlan(scriptOut);
    const started = service.testFailover('shop', { kind: 'time', timeMs: 25_000 });
    const waiting = await waitJob(service, started.id, (j) => j.state === 'waiting' || ended(j));
    expect(waiting.state).toBe('waiting');
    expect(waiting.steps.find((s) => s.state === 'waiting')?.name).toMatch(/check-dns/);
    // Group 1 is up and its script ran before group 2's manual step.
    expect(target.vms.map((v) => v.spec.name)).toEqual([`ferry-test-${started.id}-db`]);
    expect(fs.readFileSync(scriptOut, 'utf8')).toMatch(/^shop 1 db=10\.77\.0\.11,web=10\.77\.0\.12$/m);
    expect(() => service.testFailover('shop')).toThrow(ControlError);
    service.resumeJob(started.id);
    const job = await waitJob(service, started.id, ended);
    expect(job.state, JSON.stringify(job, null, 1)).toBe('succeeded');
    expect(exported.sort()).toEqual(['db-root@3', 'web-root@4']);
    expect(job.rtoMs).toBeGreaterThanOrEqual(0);
    for (const m of job.machines) {
      expect(m.state).toBe('healthy');
      expect(fs.existsSync(m.serialLog) && fs.existsSync(m.screenshot)).toBe(true);
    }
    const vm = target.vms[0];
    expect(vm.spec.network.kind).toBe('sandbox');
    expect(vm.spec.disks[0].format).toBe('qcow2');
    expect(target.running()).toHaveLength(2);

    const cleanup = await waitJob(service, service.cleanupTestFailover('shop').id, ended);
    expect(cleanup.state).toBe('succeeded');
    expect(target.running()).toHaveLength(0);
    expect(fs.existsSync(path.join(dir, 'recovery', 'jobs', String(job.id), 'disks'))).toBe(false);
    expect(fs.existsSync(job.machines[0].screenshot)).toBe(true);
    expect(() => service.cleanupTestFailover('shop')).toThrow(/no test failover/);
  });

  it('a machine whose disk does not boot: the job fails that machine clearly, keeps the evidence, and cleans up', async () => {
    service.createPlan({ name: 'one', bootGroups: [{ machines: ['db', 'web'] }], health: { timeoutMs: 10_000 } });
    target.broken.add('-web');
    const job = await waitJob(service, service.testFailover('one', { kind: 'latest' }).id, ended);
    expect(job.state).toBe('failed');
    expect(job.reason).toMatch(/web/);
    const web = job.machines.find((m) => m.machineId === 'web');
    expect(web?.state).toBe('unhealthy');
    expect(web?.detail).toMatch(/did not match/);
    expect(fs.readFileSync(web?.serialLog ?? '', 'utf8')).toMatch(/booting/);
    expect(target.running()).toHaveLength(0);
    expect(fs.existsSync(path.join(dir, 'recovery', 'jobs', String(job.id), 'disks'))).toBe(false);
    // Nothing is left to clean up: a new test failover may start.
    target.broken.clear();
    expect((await waitJob(service, service.testFailover('one', { kind: 'latest' }).id, ended)).state).toBe('succeeded');
  });

  it('exports a point only once the receiver has applied and checkpointed it', async () => {
    service.createPlan({ name: 'one', bootGroups: [{ machines: ['db'] }], health: { timeoutMs: 10_000 } });
    exportable = 15;
    const looked = new Promise<string>((resolve) => (polled = resolve));
    const started = service.testFailover('one', { kind: 'latest' });
    expect(await looked).toBe('db-root');
    expect(exported).toEqual([]);
    exportable = 20;
    const job = await waitJob(service, started.id, ended);
    expect(job.state, JSON.stringify(job, null, 1)).toBe('succeeded');
    expect(exported).toEqual(['db-root@3']);
  });

  it('refuses bad runs before a job starts: an unusable point, no point, no target, an unknown plan', async () => {
    service.createPlan({ name: 'one', bootGroups: [{ machines: ['db'] }] });
    expect(() => service.testFailover('one', { kind: 'point', pointId: 5 })).toThrow(/resync/);
    expect(() => service.testFailover('one', { kind: 'point', pointId: 99 })).toThrow(ControlError);
    expect(() => service.testFailover('one', { kind: 'time', timeMs: 1 })).toThrow(/db/);
    expect(() => service.testFailover('nope')).toThrow(/no recovery plan nope/);
    expect(() => service.createPlan({ name: 'bad', bootGroups: [{ machines: ['ghost'] }] })).toThrow(/ghost/);
    expect(service.jobs()).toEqual([]);
    target.available = false;
    const job = await waitJob(service, service.testFailover('one').id, ended);
    expect(job.state).toBe('failed');
    expect(job.reason).toMatch(/qemu-system-x86_64 not found/);
  });

  it('cancel at a manual step stops the VMs and deletes the overlays', async () => {
    twoGroupPlan(path.join(dir, 's.txt'));
    const started = service.testFailover('shop');
    await waitJob(service, started.id, (j) => j.state === 'waiting');
    service.cancelJob(started.id);
    const job = await waitJob(service, started.id, ended);
    expect(job.state).toBe('cancelled');
    expect(target.running()).toHaveLength(0);
    expect(fs.existsSync(path.join(dir, 'recovery', 'jobs', String(job.id), 'disks'))).toBe(false);
  });

  it('failover, commit and failback: persistent disks, old streams refused, other points dropped, failback re-protects with a whole-volume compare', async () => {
    service.createPlan({ name: 'one', bootGroups: [{ machines: ['db'] }] });
    const job = await waitJob(service, service.failover('one', { point: { kind: 'point', pointId: 3 }, planned: false }).id, ended);
    expect(job.state, JSON.stringify(job, null, 1)).toBe('succeeded');
    const vm = target.vms[0];
    expect(vm.spec.network.kind).toBe('site');
    expect(vm.spec.disks[0]).toEqual({ path: path.join(dir, 'recovery', 'machines', 'db', 'db-root.raw'), format: 'raw' });
    expect(service.protection('db')).toMatchObject({ state: 'failed-over', runsOn: 'fake:ferry-db', jobId: job.id });
    expect(service.streamRefusal('db')).toMatch(/failed over/);
    expect(endedStreams).toEqual(['db']);
    expect(service.streamRefusal('web')).toBeUndefined();
    expect(() => service.failover('one', { planned: false })).toThrow(/already failed-over/);

    expect((await waitJob(service, service.commitFailover('one').id, ended)).state).toBe('succeeded');
    expect(dropped).toEqual([{ volumeId: 'db-root', keep: [3] }]);

    const prepare = service.failbackPrepare('one');
    expect(service.failbackDisk('db', 'db-root')).toMatchObject({ ok: true, sizeBytes: MiB });
    expect(service.failbackDisk('web', 'web-root')).toMatchObject({ ok: false });
    service.noteFailbackProgress('db', 'db-root', { pass: 1, state: 'in-sync', sentBytes: 4096, differingBlocks: 1, comparedBytes: MiB, sizeBytes: MiB, detail: '' });
    expect((await waitJob(service, prepare.id, ended)).state).toBe('succeeded');
    expect(service.streamRefusal('db')).toMatch(/failing back/);

    const back = service.failback('one');
    await waitJob(service, back.id, () => service.failbackSourceStopped('db'));
    expect(vm.stoppedGraceful).toBe(true);
    service.noteFailbackProgress('db', 'db-root', { pass: 2, state: 'done', sentBytes: 8192, differingBlocks: 2, comparedBytes: MiB, sizeBytes: MiB, detail: '' });
    const done = await waitJob(service, back.id, ended);
    expect(done.state, JSON.stringify(done, null, 1)).toBe('succeeded');
    expect(compared).toEqual(['db-root']);
    expect(service.protection('db').state).toBe('protected');
    expect(service.streamRefusal('db')).toBeUndefined();
  });
});
