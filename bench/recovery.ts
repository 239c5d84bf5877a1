// Recovery benchmark: a real receiver and a real agent (scan capture) protect a bootable Debian
// disk (test/vm/bootable/debian-image.sh); then a test failover, a failover and a failback run
// through the CLI, as an operator would. Figures, each beside a baseline from the same run:
//  - test failover RTO (start to healthy: export, overlay, boot, health check) against a bare
//    qemu boot of the same disk to its login prompt (the floor: no export, no overlay);
//  - failback bytes sent against the volume's size (what a full copy back would send);
//  - re-protection bytes (all the agent sends once back: its scan and the whole-volume compare)
//    against the volume's size.
// With --walkthrough it also prints each command and its output (what docs/recovery.md shows).
// Needs root (the image build), qemu, qemu-img. Usage:
//   node dist/bench/recovery.js [--churn MIB] [--dir DIR] [--walkthrough] [--shot FILE.png] [--json]

import { ChildProcess, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import type { AgentStatus } from '../agent/status';
import type { Machine } from '../control/model';
import type { Job } from '../recovery/model';
import { QemuTarget } from '../recovery/targets/qemu';
import { agentNodeFlags } from '../agent/node-flags';
import { FERRY_BIN, startReceiverChild } from '../receiver/child-process';
import { formatTable, integerOption, MiB, parseBenchArgs, runBench, until, withWorkDir } from './common';
import { sha256File } from '../common/file-hash';

const NAME = 'recovery bench';
const USAGE =
  'usage: node dist/bench/recovery.js [--churn MIB] [--dir DIR] [--walkthrough] [--shot FILE.png] [--json]\n' +
  '  --churn MIB     what the recovered machine writes at boot, in MiB (default 16): the changes failback brings home\n' +
  '  --dir DIR       parent of the temporary work directory\n' +
  '  --walkthrough   print every command and its output\n' +
  "  --shot FILE     keep the test failover's console screenshot\n" +
  '  --json          print one JSON object instead of the table';
const REPO = path.resolve(__dirname, '..', '..');

interface Image {
  path: string;
  sizeBytes: number;
  partStart: number;
  partSize: number;
}

function debianImage(): Image {
  const r = spawnSync('bash', [path.join(REPO, 'test', 'vm', 'bootable', 'debian-image.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) throw new Error('building the Debian image failed (it needs root, debootstrap and extlinux)');
  const kv = new Map(r.stdout.split('\n').flatMap((l) => (/^[A-Z_]+=/.test(l) ? [[l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as [string, string]] : [])));
  return { path: kv.get('FERRY_DEBIAN_IMAGE') ?? '', sizeBytes: Number(kv.get('FERRY_DEBIAN_SIZE')), partStart: Number(kv.get('FERRY_DEBIAN_PART_START')), partSize: Number(kv.get('FERRY_DEBIAN_PART_SIZE')) };
}

/** Writes /etc/ferry-churn into the image's root file system (a private mount namespace: nothing leaks into the host's). */
function setChurn(disk: string, img: Image, mib: number): void {
  const script = `set -e; m=$(mktemp -d); l=$(losetup -f --show -o ${img.partStart} --sizelimit ${img.partSize} "$1"); mount "$l" "$m"; echo ${mib} > "$m/etc/ferry-churn"; umount "$m"; losetup -d "$l"; rmdir "$m"`;
  const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'bash', '-c', script, 'x', disk], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cannot set the churn in ${disk}: ${r.stderr}`);
}

async function main(): Promise<void> {
  const args = parseBenchArgs(process.argv.slice(2), ['churn', 'dir', 'shot'], ['walkthrough']);
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const churnMiB = integerOption('--churn', args.values.churn, 16, 1, 1024);
  const walkthrough = args.flags.has('walkthrough');
  const img = debianImage();
  await withWorkDir(args.values.dir, 'ferry-bench-recovery-', async (dir) => {
    const env = { ...process.env, FERRY_CONFIG_DIR: path.join(dir, 'cli') };
    const ferry = (argv: string[], show = walkthrough): string => {
      const r = spawnSync(process.execPath, [FERRY_BIN, ...argv], { encoding: 'utf8', env, maxBuffer: 64 * MiB });
      if (show) process.stdout.write(`$ ferry ${argv.join(' ')}\n${r.stdout}${r.stderr}\n`);
      if (r.status !== 0) throw new Error(`ferry ${argv.join(' ')} exited ${r.status}: ${r.stderr}`);
      return r.stdout;
    };
    const passphraseFile = path.join(dir, 'passphrase');
    fs.writeFileSync(passphraseFile, 'bench passphrase for recovery\n', { mode: 0o600 });
    const disk = path.join(dir, 'web.img');
    fs.copyFileSync(img.path, disk);
    setChurn(disk, img, churnMiB);
    const dataDir = path.join(dir, 'rx');
    const rx = await startReceiverChild(dataDir, passphraseFile);
    let agent: ChildProcess | undefined;
    try {
      ferry(['login', '--api', rx.apiUrl ?? '', '--password-file', path.join(dataDir, 'admin-password'), '--fingerprint', rx.fingerprint], false);
      const config = path.join(dir, 'web.json');
      fs.writeFileSync(config, JSON.stringify({ receiver: { url: rx.url, fingerprint: rx.fingerprint }, name: 'web', stateDir: path.join(dir, 'state'), passphraseFile, capture: 'scan', volumes: [{ id: 'web-disk', path: disk }] }));
      const startAgent = (): ChildProcess => spawn(process.execPath, [...agentNodeFlags(), FERRY_BIN, 'agent', 'run', '--config', config], { stdio: 'ignore', env });
      const status = (): AgentStatus | undefined => {
        try {
          return JSON.parse(fs.readFileSync(path.join(dir, 'state', 'status.json'), 'utf8')) as AgentStatus;
        } catch {
          return undefined;
        }
      };
      agent = startAgent();
      await until('the machine protected', () => {
        const s = status();
        return s?.pid === agent?.pid && s?.connected && s.volumes.every((v) => v.state === 'protected' && v.backlogBytes === 0) ? s : undefined;
      }, 600_000);
      ferry(['agent', 'tag', '--config', config, '--name', 'before-test'], false);

      ferry(['plan', 'create', 'web-plan', '--boot-group', 'web', '--health-timeout', '15m']);
      const test = ferry(['failover', 'test', '--plan', 'web-plan', '--point', 'latest']);
      const testJob = JSON.parse(ferry(['job', 'show', String(JSON.parse(ferry(['jobs', '--plan', 'web-plan', '--json'], false))[0].id), '--json'], false)) as Job;
      if (testJob.state !== 'succeeded') throw new Error(`the test failover ${testJob.state}: ${testJob.reason}\n${test}`);
      if (args.values.shot) fs.copyFileSync(testJob.machines[0].screenshot, args.values.shot);
      ferry(['failover', 'cleanup', '--plan', 'web-plan']);

      // The baseline: the same disk booted bare (a qcow2 overlay over the image, no export).
      const target = new QemuTarget({ runtimeDir: path.join(dir, 'run') });
      const bareDir = path.join(dir, 'bare');
      fs.mkdirSync(bareDir, { recursive: true });
      const overlay = path.join(bareDir, 'disk.qcow2');
      spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', disk, '-F', 'raw', overlay]);
      const t0 = Date.now();
      const vm = await target.boot({ name: 'bare', vcpus: 1, memoryMiB: 1024, disks: [{ path: overlay, format: 'qcow2' }], network: { kind: 'sandbox', name: 'bare', address: '', mac: '52:54:00:00:00:01' }, serialLog: path.join(bareDir, 'serial.log'), workDir: bareDir, probePorts: [] });
      await vm.waitSerial(/login:/m, 900_000);
      const bareMs = Date.now() - t0;
      await vm.stop({ graceful: false });

      ferry(['failover', 'run', '--plan', 'web-plan', '--point', 'latest']);
      ferry(['machine', 'protection', 'web']);
      await until('the agent refused', () => (status()?.connected === false && /failed over/.test(status()?.lastError ?? '') ? true : undefined), 120_000);
      const stopped = new Promise((r) => agent?.once('exit', r));
      agent.kill('SIGTERM');
      await stopped;

      ferry(['failback', 'prepare', '--plan', 'web-plan', '--no-wait']);
      const pull = spawn(process.execPath, [FERRY_BIN, 'agent', 'failback', '--config', config, '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env });
      let pulled = '';
      let pullLog = '';
      pull.stdout?.on('data', (d: Buffer) => (pulled += d.toString()));
      pull.stderr?.on('data', (d: Buffer) => (pullLog += d.toString()));
      const pullExit = new Promise<number | null>((r) => pull.once('exit', r));
      const prepareJob = (JSON.parse(ferry(['jobs', '--plan', 'web-plan', '--kind', 'failback-prepare', '--json'], false)) as Job[])[0];
      ferry(['job', 'wait', String(prepareJob.id)], false);
      ferry(['failback', 'run', '--plan', 'web-plan']);
      if ((await pullExit) !== 0) throw new Error(`ferry agent failback failed: ${pullLog}`);
      if (walkthrough) process.stdout.write(`$ ferry agent failback --config web.json\n${pullLog}\n`);
      const summary = JSON.parse(pulled) as { volumes: Array<{ sentBytes: number; sizeBytes: number; passes: number }> };
      const machines = JSON.parse(ferry(['machine', 'list', '--json'], false)) as Machine[];
      const recovered = path.join(dataDir, 'recovery', 'machines', machines[0].id, 'web-disk.raw');
      const equal = sha256File(disk) === sha256File(recovered);
      if (!equal) throw new Error('after the failback the original disk differs from the recovered one');

      agent = startAgent();
      const again = await until('re-protection (the whole-volume compare)', () => {
        const s = status();
        return s?.pid === agent?.pid && s?.connected && s.volumes.every((v) => v.repair?.finished === true && /failback/.test(v.repair.reason) && v.state === 'protected') ? s : undefined;
      }, 900_000);
      if (walkthrough) ferry(['agent', 'status', '--config', config]);

      const v = summary.volumes[0];
      // Everything the agent sent once back (a fresh process): with scan capture its own scan finds
      // the changes before the whole-volume compare does; with dm-ferry the compare sends them.
      const reprotectBytes = again.sentBytes;
      const figures = {
        testFailoverRtoMs: testJob.rtoMs ?? NaN,
        bareBootMs: bareMs,
        failbackSentBytes: v.sentBytes,
        failbackPasses: v.passes,
        reprotectSentBytes: reprotectBytes,
        volumeBytes: v.sizeBytes,
        churnBytes: churnMiB * MiB,
        disksEqual: equal,
      };
      if (args.json) {
        process.stdout.write(`${JSON.stringify(figures)}\n`);
        return;
      }
      const mib = (b: number): string => `${(b / MiB).toFixed(1)} MiB`;
      process.stdout.write(
        `${formatTable(
          ['figure', 'Ferry', 'baseline', 'ratio'],
          [
            ['test failover RTO (start to healthy)', `${(figures.testFailoverRtoMs / 1000).toFixed(1)} s`, `${(bareMs / 1000).toFixed(1)} s bare boot`, (figures.testFailoverRtoMs / bareMs).toFixed(2)],
            [`failback sent (${v.passes} passes; ${churnMiB} MiB churn)`, mib(v.sentBytes), `${mib(v.sizeBytes)} volume`, (v.sentBytes / v.sizeBytes).toFixed(3)],
            ['re-protection sent (agent restarted)', mib(reprotectBytes), `${mib(v.sizeBytes)} volume`, (reprotectBytes / v.sizeBytes).toFixed(3)],
          ],
        )}\n`,
      );
    } finally {
      agent?.kill('SIGKILL');
      await rx.stop();
      for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
        try {
          if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
  });
}

runBench(NAME, USAGE, main);
