/**
 * Recovery end to end, on real kernels and real disks: two bootable Debian disks
 * (test/vm/bootable: a partition table, ext4 root, EXTLINUX) protected whole by dm-ferry and
 * the real agent, each machine in its own VM-lab guest (dm-ferry's change stream has one owner
 * per kernel), replicated to a real receiver on the host, in a group with
 * multi-machine consistency. The guest writes a marker file into each root file system before
 * each group round (test/vm/guest/recovery-driver.ts). Then:
 *  - a test failover of a 2-machine recovery plan (two boot groups, a script, a manual step the
 *    test resumes) at round 2 boots both recovered disks by their own bootloader under qemu in
 *    an isolated sandbox: each reaches its login prompt and shows markers m1 m2 (not m3); the
 *    evidence (serial log, PNG screenshot) is kept; cleanup leaves no VM and no overlay;
 *  - replication ran on throughout: a round cut after it exports with every marker;
 *  - a planned failover (a final application-consistent round once m5 is written, every write
 *    applied) boots the machines from persistent disks with m5 (no data loss) and churning;
 *    they are marked failed over and their old streams are refused;
 *  - failback: the original disks pull only what differs while the recovered machines run; the
 *    failback run stops them, and the original disks end byte-identical to the recovered ones;
 *  - re-protection: the agents compare their whole volume and send only the differences; a new
 *    round exports with every marker and the recovered machines' churn.
 * Needs root (the lab, loop mounts); skipped otherwise unless CI is set.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GroupRound, Machine } from '../../control/model';
import type { Job } from '../../recovery/model';
import { runCli } from '../helpers/api-lab';
import { runFerryAsync, startReceiverProcess, type ReceiverProcess } from '../helpers/receiver-process';
import { cloneImage, markersInSerial, prepareDebianImage, readChurn, readMarkers, type DebianImage } from './bootable/image';
import { transpileGuestScript } from './guest-script';
import { HostControl } from './host-control';
import { isRoot, prepareLab, REPO_ROOT, type Lab } from './lab';
import { killAllLabProcesses } from './processes';
import { sha256File } from '../../common/file-hash';

const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false' && process.env.CI !== '0';
const skip = !isRoot() && !inCi;
if (skip) console.warn('test/vm/recovery.test.ts: SKIPPED: the VM lab needs root. With CI=true it fails instead of skipping.');

const MiB = 1024 * 1024;
const NAMES = ['db', 'web'];
/** What each recovered machine writes at boot (ferry-churn.service): the changes failback must bring home. */
const CHURN_MIB = 4;

function qemuProcessesMatching(text: string): number[] {
  return fs
    .readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((pid) => {
      try {
        const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        return cmd.includes('qemu-system') && cmd.includes(text);
      } catch {
        return false;
      }
    })
    .map(Number);
}

/**
 * The machines' drivers call each host action in step: the action runs once, when every
 * machine has asked for it (the n-th call of an action by each machine is one rendezvous), and
 * all of them get its answer. A driver that failed breaks every rendezvous, so the other one
 * does not wait for ever.
 */
class Rendezvous {
  private readonly meetings = new Map<string, { args: Map<string, string>; waiters: Array<{ resolve: (v: string) => void; reject: (e: Error) => void }> }>();
  private readonly calls = new Map<string, number>();
  private broken: Error | undefined;

  constructor(private readonly machines: readonly string[]) {}

  action(name: string, act: (args: Map<string, string>) => Promise<string | void>): (raw: string) => Promise<string> {
    return (raw) => {
      const bar = raw.indexOf('|');
      const machine = raw.slice(0, bar);
      const arg = raw.slice(bar + 1);
      if (this.broken) return Promise.reject(this.broken);
      const n = (this.calls.get(`${name}|${machine}`) ?? 0) + 1;
      this.calls.set(`${name}|${machine}`, n);
      const key = `${name}#${n}`;
      const meeting = this.meetings.get(key) ?? { args: new Map<string, string>(), waiters: [] };
      this.meetings.set(key, meeting);
      meeting.args.set(machine, arg);
      const answer = new Promise<string>((resolve, reject) => meeting.waiters.push({ resolve, reject }));
      if (this.machines.every((m) => meeting.args.has(m))) {
        act(meeting.args).then(
          (v) => meeting.waiters.forEach((w) => w.resolve(v ?? 'ok')),
          (e: Error) => meeting.waiters.forEach((w) => w.reject(e)),
        );
      }
      return answer;
    };
  }

  break(raw: string): string {
    this.broken = new Error(`the other machine failed: ${raw}`);
    for (const m of this.meetings.values()) m.waiters.forEach((w) => w.reject(this.broken as Error));
    return 'ok';
  }
}

interface FailbackSummary {
  volumes: Array<{ volumeId: string; sizeBytes: number; sentBytes: number; passes: number; differingBlocks: number }>;
}

describe.skipIf(skip)('recovery: test failover, planned failover and failback of bootable Debian disks under dm-ferry', () => {
  let lab: Lab;
  let ko: string;
  let dir: string;
  let img: DebianImage;
  let rx: ReceiverProcess;
  let control: HostControl;
  let env: Record<string, string>;

  const cli = async (args: string[], timeoutMs = 120_000): Promise<string> => {
    const r = await runCli(args, env, undefined, timeoutMs);
    if (r.status !== 0) throw new Error(`ferry ${args.join(' ')} exited ${r.status}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  };
  const cliJson = async <T>(args: string[], timeoutMs?: number): Promise<T> => JSON.parse(await cli([...args, '--json'], timeoutMs)) as T;
  const lastJob = async (kind: Job['kind']): Promise<Job> => {
    const job = (await cliJson<Job[]>(['jobs', '--plan', 'app-plan'])).filter((j) => j.kind === kind).sort((a, b) => b.id - a.id)[0];
    if (!job) throw new Error(`no ${kind} job`);
    return job;
  };
  /** The markers (and churn files) of every member volume's point of a round, exported. */
  const roundContents = async (dataDir: string, round: string): Promise<Record<string, { markers: string[]; churn: number[] }>> => {
    const points = await cliJson<Array<{ id: number; volumeId: string; groupRound: number }>>(['points', '--data', dataDir]);
    const out: Record<string, { markers: string[]; churn: number[] }> = {};
    for (const p of points.filter((x) => x.groupRound === Number(round))) {
      const image = path.join(dir, `check-${p.volumeId}.img`);
      const r = await runFerryAsync(['export', '--data', dataDir, '--volume', p.volumeId, '--point', String(p.id), '--out', image]);
      if (r.status !== 0) throw new Error(`export of ${p.volumeId} at ${p.id}: ${r.stderr}`);
      out[p.volumeId] = { markers: await readMarkers(image, img), churn: [...(await readChurn(image, img)).values()] };
      fs.rmSync(image);
    }
    return out;
  };

  beforeAll(async () => {
    if (!fs.existsSync(path.join(REPO_ROOT, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is missing: run `npm run build` first');
    lab = await prepareLab();
    ko = await lab.buildModule(path.join(REPO_ROOT, 'native', 'linux'));
    img = await prepareDebianImage();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-recovery-'));
  }, 1_800_000);

  afterAll(async () => {
    await control?.close();
    await rx?.stop();
    for (const pid of dir ? qemuProcessesMatching(dir) : []) process.kill(pid, 'SIGKILL');
    await killAllLabProcesses();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('test failover at a round, replication throughout, planned failover without data loss, failback sending only differences, re-protection', async ({ signal }) => {
    const passphraseFile = path.join(dir, 'passphrase');
    fs.writeFileSync(passphraseFile, 'vm lab passphrase for recovery\n', { mode: 0o600 });
    const dataDir = path.join(dir, 'rx');
    rx = await startReceiverProcess(dataDir, passphraseFile, ['--round-hold', '5s', '--app-round-hold', '5s']);
    env = { FERRY_CONFIG_DIR: path.join(dir, 'cli') };
    await cli(['login', '--api', rx.apiUrl ?? '', '--password-file', path.join(dataDir, 'admin-password'), '--fingerprint', rx.fingerprint]);
    await cli(['group', 'create', 'app', '--multi-machine', 'on', '--crash-interval', '1h', '--app-interval', 'off']);

    const scriptOut = path.join(dir, 'script-env.txt');
    const found: Record<string, unknown> = {};
    let prepareJob = 0;
    /** Follows a job the CLI runs, resuming it (as an operator would) at its manual step before group 2. */
    const resumingManualSteps = async (running: Promise<string>, kind: Job['kind']): Promise<string> => {
      let finished = false;
      const out = running.finally(() => (finished = true));
      out.catch(() => undefined);
      while (!finished) {
        const job = await lastJob(kind).catch(() => undefined);
        if (job?.state === 'waiting') {
          found[`${kind}WaitedAt`] = job.steps.find((s) => s.state === 'waiting')?.name;
          await cli(['job', 'resume', String(job.id)]);
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
      return out;
    };
    const meet = new Rendezvous(NAMES);
    control = await HostControl.start({
      failed: (raw) => meet.break(raw),
      ready: meet.action('ready', async () => {
        for (const n of NAMES) await cli(['group', 'add', 'app', n]);
        await cli(['plan', 'create', 'app-plan', '--boot-group', 'db', '--boot-group', 'web', '--script-after', `1:db-up:echo "$FERRY_PLAN $FERRY_BOOT_GROUP $FERRY_MACHINES" >> ${scriptOut}`, '--manual-before', '2:check-db:confirm the database answers', '--health-timeout', '15m']);
      }),
      round: meet.action('round', async () => {
        const r = await cliJson<GroupRound>(['group', 'round', 'app'], 300_000);
        if (r.state !== 'done') throw new Error(`round ${r.id} ${r.state}: ${r.reason}`);
        return String(r.id);
      }),
      'test-failover': meet.action('test-failover', async (args) => {
        const round = args.get(NAMES[0]) ?? '';
        found.testOutput = await resumingManualSteps(cli(['failover', 'test', '--plan', 'app-plan', '--point', `round:${round}`], 1_800_000), 'test-failover');
        const job = await lastJob('test-failover');
        found.testJob = job;
        found.testSerial = Object.fromEntries(job.machines.map((m) => [m.vmName, fs.readFileSync(m.serialLog, 'utf8')]));
        found.screenshots = Object.fromEntries(job.machines.map((m) => [m.vmName, fs.readFileSync(m.screenshot)]));
        found.vmsDuringTest = qemuProcessesMatching(`ferry-test-${job.id}-`).length;
        await cli(['failover', 'cleanup', '--plan', 'app-plan'], 300_000);
        found.vmsAfterCleanup = qemuProcessesMatching(`ferry-test-${job.id}-`).length;
        found.disksAfterCleanup = fs.existsSync(path.join(dataDir, 'recovery', 'jobs', String(job.id), 'disks'));
        return `job ${job.id} ${job.state}`;
      }),
      check: meet.action('check', async (args) => {
        found.after = await roundContents(dataDir, args.get(NAMES[0]) ?? '');
        return 'checked';
      }),
      failover: meet.action('failover', async () => {
        found.failoverOutput = await resumingManualSteps(cli(['failover', 'run', '--plan', 'app-plan', '--planned'], 1_800_000), 'failover');
        const job = await lastJob('failover');
        found.failoverJob = job;
        found.failoverSerial = Object.fromEntries(job.machines.map((m) => [m.vmName, fs.readFileSync(m.serialLog, 'utf8')]));
        found.protection = await Promise.all(NAMES.map((n) => cliJson<{ state: string; runsOn: string }>(['machine', 'protection', n])));
        return 'failed over';
      }),
      'failback-prepare': meet.action('failback-prepare', async () => {
        prepareJob = (await cliJson<Job>(['failback', 'prepare', '--plan', 'app-plan', '--no-wait'])).id;
        return String(prepareJob);
      }),
      'failback-run': meet.action('failback-run', async () => {
        await cli(['job', 'wait', String(prepareJob)], 1_800_000);
        found.failbackOutput = await cli(['failback', 'run', '--plan', 'app-plan'], 1_800_000);
        found.failbackJob = await lastJob('failback');
        return 'failed back';
      }),
      'disks-compared': meet.action('disks-compared', async () => {
        const machines = await cliJson<Machine[]>(['machine', 'list']);
        found.recoveredHashes = Object.fromEntries(NAMES.map((n) => {
          const id = machines.find((m) => m.name === n)?.id ?? '?';
          return [n, sha256File(path.join(dataDir, 'recovery', 'machines', id, `${n}-disk.raw`))];
        }));
        return 'compared';
      }),
      reprotected: meet.action('reprotected', async (args) => {
        found.reprotect = await roundContents(dataDir, args.get(NAMES[0]) ?? '');
        found.protectionAfter = await Promise.all(NAMES.map((n) => cliJson<{ state: string }>(['machine', 'protection', n])));
        return 'checked';
      }),
    });

    const driver = transpileGuestScript('test/vm/guest/recovery-driver.ts', dir);
    const boot = async (name: string): Promise<{ facts: Record<string, unknown> }> => {
      const disk = path.join(dir, `${name}.img`);
      await cloneImage(img.path, disk);
      const params = path.join(dir, `params-${name}.json`);
      fs.writeFileSync(
        params,
        JSON.stringify({
          repo: REPO_ROOT,
          receiverUrl: `wss://10.0.2.2:${rx.port}`,
          fingerprint: rx.fingerprint,
          passphraseFile,
          hostctl: control.guestUrl,
          diskSectors: img.sizeBytes / 512,
          partStartSector: img.partStartSector,
          partSectors: img.partSectors,
          churnMiB: CHURN_MIB,
          machine: { name, disk: '/dev/vda', meta: '/dev/vdb' },
        }),
      );
      const r = await lab.run({
        script: `set -euo pipefail\nnode ${driver} ${params}`,
        disks: [{ path: disk }, { path: path.join(dir, `${name}-meta.img`), sizeBytes: 8 * MiB }],
        modules: [ko],
        timeoutMs: 3_000_000,
        cpus: 1,
        memoryMiB: 1024,
        signal,
      });
      const where = `${name}: exit ${r.exitCode}\n${r.output.slice(-6000)}\n(run dir ${r.runDir})`;
      expect(r.kernelProblems, where).toEqual([]);
      expect(r.exitCode, where).toBe(0);
      const line = r.output.split('\n').find((l) => l.startsWith('FERRY-RESULT '));
      expect(line, where).toBeDefined();
      const report = JSON.parse((line as string).slice('FERRY-RESULT '.length)) as { failures: string[]; facts: Record<string, unknown> };
      expect(report.failures, `${name}: ${JSON.stringify(report.facts, null, 1)}`).toEqual([]);
      return report;
    };
    const done = Object.fromEntries(await Promise.all(NAMES.map(async (n) => [n, await boot(n)] as const)));

    // The test failover: both machines booted at round 2 (m1 m2, not m3), in boot-group order.
    const job = found.testJob as Job;
    expect(job.state, JSON.stringify(job, null, 1)).toBe('succeeded');
    expect(found['test-failoverWaitedAt']).toMatch(/check-db/);
    expect(found.failoverWaitedAt).toMatch(/check-db/);
    for (const m of job.machines) {
      const serial = (found.testSerial as Record<string, string>)[m.vmName];
      expect(serial, `${m.vmName} console`).toMatch(/login:/);
      expect(markersInSerial(serial), `${m.vmName} console`).toEqual(['m1', 'm2']);
      expect(m.state).toBe('healthy');
      const png = (found.screenshots as Record<string, Buffer>)[m.vmName];
      expect(png.subarray(0, 8).toString('hex')).toBe('89504e470d0a1a0a');
      expect(png.length).toBeGreaterThan(1000);
    }
    expect(fs.readFileSync(scriptOut, 'utf8')).toMatch(/^app-plan 1 db=10\.77\.0\.\d+,web=10\.77\.0\.\d+/);
    expect(found.vmsDuringTest).toBe(2);
    expect(found.vmsAfterCleanup).toBe(0);
    expect(found.disksAfterCleanup).toBe(false);
    console.log(`test failover: RTO ${((job.rtoMs ?? 0) / 1000).toFixed(1)} s (start to both healthy); boot to login ${job.machines.map((m) => `${m.vmName} ${((m.bootMs ?? 0) / 1000).toFixed(1)} s`).join(', ')}`);

    // For the docs: FERRY_RECOVERY_ARTIFACTS=<dir> keeps the evidence and the CLI's output.
    const artifacts = process.env.FERRY_RECOVERY_ARTIFACTS;
    if (artifacts) {
      fs.mkdirSync(artifacts, { recursive: true });
      for (const m of job.machines) fs.copyFileSync(m.screenshot, path.join(artifacts, `test-failover-${m.vmName}.png`));
      for (const k of ['testOutput', 'failoverOutput', 'failbackOutput']) fs.writeFileSync(path.join(artifacts, `${k}.txt`), String(found[k]));
    }

    // Replication ran on throughout: the round after the test failover holds every marker.
    expect(found.after).toEqual({ 'db-disk': { markers: ['m1', 'm2', 'm3', 'm4'], churn: [] }, 'web-disk': { markers: ['m1', 'm2', 'm3', 'm4'], churn: [] } });

    // The planned failover: m5 (the last write) is on both machines; they churn; old streams refused.
    const failover = found.failoverJob as Job;
    expect(failover.state, JSON.stringify(failover, null, 1)).toBe('succeeded');
    for (const m of failover.machines) {
      const serial = (found.failoverSerial as Record<string, string>)[m.vmName];
      expect(markersInSerial(serial), `${m.vmName} console after the failover`).toEqual(['m1', 'm2', 'm3', 'm4', 'm5']);
      expect(serial).toMatch(new RegExp(`ferry-churn: done ${CHURN_MIB}`));
    }
    expect(found.protection).toEqual(NAMES.map(() => expect.objectContaining({ state: 'failed-over' })));
    for (const n of NAMES) expect(String(done[n].facts.refusal)).toMatch(/failed over/);

    // Failback: only what differs traveled; the original disks equal the recovered ones.
    expect((found.failbackJob as Job).state, JSON.stringify(found.failbackJob, null, 1)).toBe('succeeded');
    expect(Object.fromEntries(NAMES.map((n) => [n, done[n].facts.diskHash]))).toEqual(found.recoveredHashes);
    for (const s of NAMES.map((n) => done[n].facts.failbackSummary as FailbackSummary)) {
      for (const v of s.volumes) {
        console.log(`failback of ${v.volumeId}: ${(v.sentBytes / MiB).toFixed(1)} MiB sent of ${(v.sizeBytes / MiB).toFixed(0)} MiB (${((100 * v.sentBytes) / v.sizeBytes).toFixed(1)}%), ${v.passes} passes`);
        expect(v.sentBytes).toBeGreaterThanOrEqual(CHURN_MIB * MiB);
        expect(v.sentBytes / v.sizeBytes).toBeLessThan(0.1);
      }
    }

    // Re-protection: a whole-volume compare sent only the differences; the new round holds
    // every marker and the recovered machines' churn.
    for (const n of NAMES) {
      const v = done[n].facts.reprotected as { sizeBytes: number; repair: { sentBytes: number } };
      console.log(`re-protection of ${n}: ${(v.repair.sentBytes / MiB).toFixed(1)} MiB sent of ${(v.sizeBytes / MiB).toFixed(0)} MiB (${((100 * v.repair.sentBytes) / v.sizeBytes).toFixed(1)}%)`);
      expect(v.repair.sentBytes / v.sizeBytes).toBeLessThan(0.1);
    }
    const reprotect = found.reprotect as Record<string, { markers: string[]; churn: number[] }>;
    for (const n of NAMES) {
      expect(reprotect[`${n}-disk`].markers).toEqual(['m1', 'm2', 'm3', 'm4', 'm5']);
      expect(reprotect[`${n}-disk`].churn).toContain(CHURN_MIB * MiB);
    }
    expect(found.protectionAfter).toEqual(NAMES.map(() => expect.objectContaining({ state: 'protected' })));
  }, 3_600_000);
});
