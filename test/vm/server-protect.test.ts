/**
 * A plain Debian server protects its own boot disk with Ferry's installer, end to end
 * (issue 13, "Tests in the VM lab"): the server (test/vm/bootable/server-image.sh: root on the
 * plain partition /dev/vda1, booted by its own EXTLINUX, kernel and initramfs under qemu TCG)
 * gets the agent package from make-package.sh and runs install.sh itself; a real receiver runs
 * on the host (the guest reaches it at 10.0.2.2). Each step is one boot, driven through the
 * server's test-only step runner (a FERRYSTEP disk, output on ttyS1):
 *   a. install.sh --protect-boot /dev/vda1: protected at once (ebpf capture); a marker, a point,
 *      the point exported on the host holds the marker; reboot;
 *   b. the root is on /dev/mapper/ferry-boot-p1, the agent a systemd service with kernel capture;
 *      a marker and a point; clean reboot;
 *   c. the resync after the clean reboot was a delta only (bytes printed); a power cut;
 *   d. after the crash: a hash-compare resync (bytes printed); the module is blacklisted; reboot;
 *   e. booted from the plain partition, ebpf capture, hash-compare resync, a capture-degraded
 *      warning on the receiver; blacklist removed; install.sh --uninstall; reboot;
 *   f. plain partition, nothing of Ferry left;
 *   g. the recovered disk at step c's point boots to its login prompt in a test failover.
 * Prints the boot times with and without dm-ferry and the resync bytes.
 * Needs root (loop devices, the image build); skipped otherwise unless CI is set.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Job } from '../../recovery/model';
import { runCli } from '../helpers/api-lab';
import { runFerryAsync, startReceiverProcess, type ReceiverProcess } from '../helpers/receiver-process';
import { cloneImage, type DebianImage } from './bootable/image';
import { prepareServerImage, stepFacts } from './bootable/server-image';
import { isRoot, REPO_ROOT, runCommand } from './lab';
import { bootStep, type StepFiles, type StepRun } from './server-vm';

const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false' && process.env.CI !== '0';
const skip = !isRoot() && !inCi;
if (skip) console.warn('test/vm/server-protect.test.ts: SKIPPED: the server image and its boots need root. With CI=true it fails instead of skipping.');

const MiB = 1024 * 1024;
const MACHINE = 'srv';
const GUEST_DIR = path.join(__dirname, 'guest', 'server-step');
const AFTER_REBOOT = 'systemctl reboot\n';
const AFTER_POWER_CUT = 'sync\necho o > /proc/sysrq-trigger\n';
const AFTER_POWEROFF = 'systemctl poweroff\n';

interface VolumeStatusJson {
  volumeId: string;
  state: string;
  mode: string;
  sizeBytes: number;
  resync?: { kind: string; sentBytes: number; totalBytes: number; finished: boolean };
}
interface StatusJson {
  running: boolean;
  capture: string;
  volumes: VolumeStatusJson[];
}

/** The names of the files in /var/lib/ferry-markers of the ext4 file system at `offset` in `image` (debugfs, no mount). */
async function markersIn(image: string, offset: number): Promise<string[]> {
  const r = await runCommand('debugfs', ['-R', 'ls -p /var/lib/ferry-markers', `${image}?offset=${offset}`], { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` });
  if (r.code !== 0) throw new Error(`debugfs on ${image}: ${r.stderr}`);
  // ls -p: /inode/mode/uid/gid/name/size/
  return r.stdout
    .split('\n')
    .map((l) => l.split('/'))
    .filter((f) => f.length >= 7 && f[5] !== '.' && f[5] !== '..' && f[2].startsWith('10'))
    .map((f) => f[5])
    .sort();
}

describe.skipIf(skip)('a plain Debian server protects its own boot disk with install.sh --protect-boot', () => {
  let img: DebianImage;
  let dir: string;
  let disk: string;
  let pkgDir: string;
  let rx: ReceiverProcess;
  let dataDir: string;
  let passphrase: string;
  let env: Record<string, string>;
  const runs = new Map<string, StepRun>();
  const statusOf = new Map<string, StatusJson>();
  const pointOf = new Map<string, number>();
  let failed: string | undefined;

  const cli = async (args: string[], timeoutMs = 120_000): Promise<string> => {
    const r = await runCli(args, env, undefined, timeoutMs);
    if (r.status !== 0) throw new Error(`ferry ${args.join(' ')} exited ${r.status}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  };
  const cliJson = async <T>(args: string[], timeoutMs?: number): Promise<T> => JSON.parse(await cli([...args, '--json'], timeoutMs)) as T;

  /** One boot running `body` (after lib.sh) then `after`; fails with both logs unless the step succeeded. */
  const step = async (label: string, body: string, after: string, extra: StepFiles = {}, signal?: AbortSignal): Promise<Map<string, string>> => {
    if (failed) throw new Error(`skipped: step ${failed} failed`);
    failed = label;
    const files: StepFiles = {
      'lib.sh': fs.readFileSync(path.join(GUEST_DIR, 'lib.sh'), 'utf8'),
      'status.js': fs.readFileSync(path.join(GUEST_DIR, 'status.js'), 'utf8'),
      'step.sh': `#!/bin/bash\n. ./lib.sh\nset -x\n${body}\n`,
      'after.sh': after,
      ...extra,
    };
    const run = await bootStep(disk, files, dir, label, { deadlineMs: 1_200_000, signal });
    runs.set(label, run);
    const where = `step ${label}: rc ${run.report.rc}\n--- step (ttyS1) ---\n${run.stepLog.slice(-8000)}\n--- console (ttyS0) ---\n${run.console.slice(-4000)}`;
    expect(run.report.rc, where).toBe(0);
    console.log(`step ${label}: runner at ${((run.msToStep ?? 0) / 1000).toFixed(1)} s after qemu start (kernel uptime ${run.report.uptimeAtStart} s), boot done in ${(run.msTotal / 1000).toFixed(1)} s`);
    const facts = stepFacts(run.report.output);
    const status = facts.get('status');
    if (status) statusOf.set(label, JSON.parse(status) as StatusJson);
    const points = facts.get('points');
    if (points) pointOf.set(label, Number(points.split(',')[0]));
    failed = undefined;
    return facts;
  };

  /** The boot volume's status after step `label` (the one volume the machine protects). */
  const bootVolume = (label: string): VolumeStatusJson => {
    const v = statusOf.get(label)?.volumes[0];
    if (!v) throw new Error(`step ${label} printed no status`);
    return v;
  };

  /** Exports `point` of the machine's volume and lists the markers in its root file system. */
  const markersAtPoint = async (point: number): Promise<string[]> => {
    const points = JSON.parse((await runFerryAsync(['points', '--data', dataDir, '--json'])).stdout) as Array<{ id: number; volumeId: string }>;
    const p = points.find((x) => x.id === point);
    if (!p) throw new Error(`the receiver has no point ${point}: ${JSON.stringify(points)}`);
    const out = path.join(dir, `export-${point}.img`);
    const r = await runFerryAsync(['export', '--data', dataDir, '--volume', p.volumeId, '--point', String(point), '--out', out]);
    if (r.status !== 0) throw new Error(`export of ${p.volumeId} at ${point}: ${r.stderr}`);
    try {
      // The whole disk (the boot volume) or, without boot protection, the partition alone.
      const whole = fs.statSync(out).size === img.sizeBytes;
      return await markersIn(out, whole ? img.partStartBytes : 0);
    } finally {
      fs.rmSync(out, { force: true });
    }
  };

  beforeAll(async () => {
    if (!fs.existsSync(path.join(REPO_ROOT, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is missing: run `npm run build` first');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-server-protect-'));
    const started = Date.now();
    img = await prepareServerImage();
    console.log(`server image ready in ${((Date.now() - started) / 1000).toFixed(1)} s: ${img.path} (${(img.sizeBytes / MiB).toFixed(0)} MiB, kernel ${img.kernelRelease})`);
    disk = path.join(dir, 'server.img');
    await cloneImage(img.path, disk);

    // FERRY_SERVER_PACKAGE: an agent package made beforehand (make-package.sh --source ...).
    let tarball = process.env.FERRY_SERVER_PACKAGE;
    if (!tarball) {
      tarball = path.join(dir, 'agent.tar.gz');
      const pkg = await runCommand('bash', [path.join(REPO_ROOT, 'installer', 'make-package.sh'), '--out', tarball]);
      if (pkg.code !== 0) throw new Error(`make-package.sh failed: ${pkg.stderr}`);
    }
    pkgDir = path.join(dir, 'pkg');
    fs.mkdirSync(pkgDir);
    const untar = await runCommand('tar', ['-xzf', tarball, '-C', pkgDir, '--strip-components=1']);
    if (untar.code !== 0) throw new Error(`tar: ${untar.stderr}`);
    fs.rmSync(path.join(dir, 'agent.tar.gz'), { force: true });

    passphrase = 'boot protect lab passphrase';
    const passphraseFile = path.join(dir, 'passphrase');
    fs.writeFileSync(passphraseFile, `${passphrase}\n`, { mode: 0o600 });
    dataDir = path.join(dir, 'rx');
    rx = await startReceiverProcess(dataDir, passphraseFile);
    env = { FERRY_CONFIG_DIR: path.join(dir, 'cli') };
    await cli(['login', '--api', rx.apiUrl ?? '', '--password-file', path.join(dataDir, 'admin-password'), '--fingerprint', rx.fingerprint]);
  }, 900_000);

  afterAll(async () => {
    await rx?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a: install.sh --protect-boot protects the running server at once with ebpf capture; a point holds the marker', async ({ signal }) => {
    const facts = await step(
      'a',
      `
show uname -r
fact root "$(findmnt -n -o SOURCE /)"
echo '${passphrase}' > /run/ferry-passphrase
bash ./pkg/installer/install.sh --receiver wss://10.0.2.2:${rx.port} --fingerprint ${rx.fingerprint} \\
  --passphrase-file /run/ferry-passphrase --name ${MACHINE} --protect-boot /dev/vda1
fact agent "$(systemctl is-active ferry-agent)"
wait_protected 900
marker m1
tag`,
      AFTER_REBOOT,
      { pkg: { copyFrom: pkgDir } },
      signal,
    );
    expect(facts.get('root')).toBe('/dev/vda1');
    expect(facts.get('agent')).toBe('active');
    const st = statusOf.get('a');
    expect(st?.capture).toBe('ebpf');
    const v = bootVolume('a');
    expect(v.resync?.kind).toBe('full');
    console.log(`step a: initial full resync of ${(v.sizeBytes / MiB).toFixed(0)} MiB sent ${((v.resync?.sentBytes ?? 0) / MiB).toFixed(1)} MiB`);
    const machines = await cliJson<Array<{ name: string }>>(['machine', 'list']);
    expect(machines.map((m) => m.name)).toContain(MACHINE);
    expect(await markersAtPoint(pointOf.get('a') ?? -1)).toEqual(['m1']);
  }, 1_300_000);

  it('b: after a reboot the root is on dm-ferry and the agent runs as a service with kernel capture', async ({ signal }) => {
    const facts = await step(
      'b',
      `
fact root "$(findmnt -n -o SOURCE /)"
fact agent "$(systemctl is-active ferry-agent)"
show dmsetup table
wait_protected 900
marker m2
tag`,
      AFTER_REBOOT,
      {},
      signal,
    );
    expect(facts.get('root')).toBe('/dev/mapper/ferry-boot-p1');
    expect(facts.get('agent')).toBe('active');
    expect(statusOf.get('b')?.capture).toBe('kernel');
    expect(await markersAtPoint(pointOf.get('b') ?? -1)).toEqual(['m1', 'm2']);
  }, 1_300_000);

  it('c: a clean reboot costs a delta resync only; then a power cut', async ({ signal }) => {
    const facts = await step(
      'c',
      `
fact root "$(findmnt -n -o SOURCE /)"
wait_protected 900
marker m3
tag`,
      AFTER_POWER_CUT,
      {},
      signal,
    );
    expect(facts.get('root')).toBe('/dev/mapper/ferry-boot-p1');
    const v = bootVolume('c');
    console.log(`step c: resync after the clean reboot: ${v.resync?.kind ?? 'none'}, ${((v.resync?.sentBytes ?? 0) / MiB).toFixed(2)} MiB sent of ${(v.sizeBytes / MiB).toFixed(0)} MiB`);
    expect(v.resync?.kind ?? 'delta').toBe('delta');
    expect(v.resync?.sentBytes ?? 0).toBeLessThan(v.sizeBytes / 20);
  }, 1_300_000);

  it('d: after the power cut a hash-compare resync; the module is then made unloadable', async ({ signal }) => {
    const facts = await step(
      'd',
      `
fact root "$(findmnt -n -o SOURCE /)"
wait_protected 900
sed -i '/^ *APPEND /s/$/ modprobe.blacklist=dm_ferry/' /boot/extlinux/extlinux.conf
grep -q 'modprobe.blacklist=dm_ferry' /boot/extlinux/extlinux.conf
sync`,
      AFTER_REBOOT,
      {},
      signal,
    );
    expect(facts.get('root')).toBe('/dev/mapper/ferry-boot-p1');
    const v = bootVolume('d');
    console.log(`step d: resync after the power cut: ${v.resync?.kind}, ${((v.resync?.sentBytes ?? 0) / MiB).toFixed(2)} MiB sent of ${(v.sizeBytes / MiB).toFixed(0)} MiB`);
    expect(v.resync?.kind).toBe('hash-compare');
  }, 1_300_000);

  it('e: without the module the server boots from the plain partition, ebpf capture, an alert; then --uninstall', async ({ signal }) => {
    const facts = await step(
      'e',
      `
fact root "$(findmnt -n -o SOURCE /)"
fact agent "$(systemctl is-active ferry-agent)"
wait_protected 900
sed -i 's/ modprobe.blacklist=dm_ferry//' /boot/extlinux/extlinux.conf
! grep -q 'modprobe.blacklist' /boot/extlinux/extlinux.conf
/opt/ferry/installer/install.sh --uninstall
sync`,
      AFTER_REBOOT,
      {},
      signal,
    );
    expect(facts.get('root')).toBe('/dev/vda1');
    expect(facts.get('agent')).toBe('active');
    expect(statusOf.get('e')?.capture).toBe('ebpf');
    const v = bootVolume('e');
    console.log(`step e: resync with the module missing: ${v.resync?.kind}, ${((v.resync?.sentBytes ?? 0) / MiB).toFixed(2)} MiB sent`);
    expect(v.resync?.kind).toBe('hash-compare');
    const events = await cliJson<Array<{ kind: string; severity: string; message?: string }>>(['events', '--kind', 'capture-degraded']);
    console.log(`step e: receiver events: ${JSON.stringify(events)}`);
    expect(events).toEqual(expect.arrayContaining([expect.objectContaining({ kind: 'capture-degraded', severity: 'warning' })]));
  }, 1_300_000);

  it('f: after --uninstall and a reboot: the plain partition, nothing of Ferry left', async ({ signal }) => {
    const facts = await step(
      'f',
      `
fact root "$(findmnt -n -o SOURCE /)"
fact left "$(ls -d /opt/ferry /etc/ferry /var/lib/ferry /etc/systemd/system/ferry-agent.service /usr/local/bin/ferry /usr/src/dm-ferry* /var/lib/dkms/dm-ferry /etc/initramfs-tools/*/ferry* 2>/dev/null | tr '\\n' ' ')"
fact unit "$(systemctl list-unit-files 'ferry-agent*' --no-legend | wc -l)"
# (dkms itself may print "echo: write error: Broken pipe" on stderr when it lists nothing)
fact dkms "$(dkms status 2>/dev/null | tr '\\n' ' ')"
fact initramfs "$(lsinitramfs /boot/initrd.img-$(uname -r) | grep -i ferry | tr '\\n' ' ')"
fact dm "$(dmsetup ls 2>/dev/null | grep -i ferry | tr '\\n' ' ')"
fact module "$(grep -c '^dm_ferry ' /proc/modules || true)"`,
      AFTER_POWEROFF,
      {},
      signal,
    );
    expect(facts.get('root')).toBe('/dev/vda1');
    expect({ left: facts.get('left'), unit: facts.get('unit'), dkms: facts.get('dkms'), initramfs: facts.get('initramfs'), dm: facts.get('dm'), module: facts.get('module') }).toEqual({
      left: '',
      unit: '0',
      dkms: '',
      initramfs: '',
      dm: '',
      module: '0',
    });
  }, 1_300_000);

  it('g: the recovered boot disk boots to its login prompt in a test failover', async () => {
    if (failed) throw new Error(`skipped: step ${failed} failed`);
    const point = pointOf.get('b');
    expect(point, 'a point from step b').toBeDefined();
    await cli(['plan', 'create', 'srv-plan', '--boot-group', MACHINE, '--health-pattern', 'login:', '--health-timeout', '10m']);
    const out = await cli(['failover', 'test', '--plan', 'srv-plan', '--point', String(point)], 1_200_000);
    const jobs = await cliJson<Job[]>(['jobs', '--plan', 'srv-plan']);
    const job = jobs.filter((j) => j.kind === 'test-failover').sort((a, b) => b.id - a.id)[0];
    expect(job?.state, `${out}\n${JSON.stringify(job, null, 1)}`).toBe('succeeded');
    for (const m of job.machines) {
      const serial = fs.readFileSync(m.serialLog, 'utf8');
      expect(serial, `${m.vmName} console`).toMatch(/login:/);
      console.log(`step g: test failover of ${m.vmName}: boot to login ${((m.bootMs ?? 0) / 1000).toFixed(1)} s`);
    }
    await cli(['failover', 'cleanup', '--plan', 'srv-plan'], 300_000);
  }, 1_500_000);

  it('figures: boot time with and without dm-ferry', () => {
    const t = (label: string): string => {
      const r = runs.get(label);
      return r ? `${((r.msToStep ?? 0) / 1000).toFixed(1)} s (kernel uptime ${r.report.uptimeAtStart} s)` : 'n/a';
    };
    console.log(`boot to the step runner: plain (before install) ${t('a')}; dm-ferry ${t('b')}, ${t('c')}, after a crash ${t('d')}; module missing ${t('e')}; uninstalled ${t('f')}`);
    expect(runs.size).toBe(6);
  });
});
