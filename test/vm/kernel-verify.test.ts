/**
 * Online verify and repair on the kernel path: dm-ferry in a real 6.1 kernel (the VM lab), the
 * real agent (capture: kernel) in the guest, a real receiver on the host. The guest driver
 * (test/vm/guest/verify-driver.ts) runs verify while fio writes (no false alarm), asks the host
 * to damage replica blocks with the receiver stopped, once every point aged out so that the
 * replica holds the latest state under either journal (verify must find exactly those and repair
 * them through resync marks), verifies again, and cuts a point whose export must equal the device.
 * Needs root (the lab) and a built tree; skipped otherwise unless CI is set.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/agent-lab';
import { runFerryAsync, startReceiverProcess, type ReceiverProcess } from '../helpers/receiver-process';
import { transpileGuestScript } from './guest-script';
import { HostControl } from './host-control';
import { isRoot, prepareLab, REPO_ROOT, type GuestResult, type Lab } from './lab';
import { killAllLabProcesses } from './processes';
import { sha256File } from '../../common/file-hash';

const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false' && process.env.CI !== '0';
const skip = !isRoot() && !inCi;
if (skip) console.warn('test/vm/kernel-verify.test.ts: SKIPPED: the VM lab needs root. With CI=true it fails instead of skipping.');

const MiB = 1024 * 1024;
const BLOCK = 64 * 1024;
const VOLUME = 'vol1';
const SEED = Number(process.env.FERRY_SEED ?? Date.now() % 100000);

interface DriverReport {
  failures: string[];
  facts: { point?: { pointId: number; accuracy: string; sha256: string }; underWrites?: { checks: number; busyBlocks: number } };
}

function describeRun(r: GuestResult): string {
  return `exit ${r.exitCode}\n--- output ---\n${r.output}\n--- console (tail) ---\n${r.console.split('\n').slice(-30).join('\n')}\n(run dir ${r.runDir})`;
}

describe.skipIf(skip)('online verify on dm-ferry in a real 6.1 kernel', () => {
  let lab: Lab;
  let ko: string;
  let dir: string;
  let driver: string;
  let receiver: ReceiverProcess | undefined;
  let control: HostControl | undefined;

  beforeAll(async () => {
    if (!fs.existsSync(path.join(REPO_ROOT, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is missing: run `npm run build` first');
    lab = await prepareLab();
    ko = await lab.buildModule(path.join(REPO_ROOT, 'native', 'linux'));
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-kverify-'));
    driver = transpileGuestScript('test/vm/guest/verify-driver.ts', dir);
  }, 600_000);

  afterAll(async () => {
    if (receiver && receiver.child.exitCode === null) await receiver.stop();
    await control?.close();
    await killAllLabProcesses();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it(`finds no divergence under writes, finds and repairs damaged replica blocks, exports equal to the device (seed ${SEED})`, async ({ signal }) => {
    const dataDir = path.join(dir, 'receiver');
    const passphraseFile = path.join(dir, 'passphrase');
    fs.writeFileSync(passphraseFile, 'vm lab passphrase for online verify\n', { mode: 0o600 });
    receiver = await startReceiverProcess(dataDir, passphraseFile, ['--listen', '127.0.0.1:0']);
    const port = receiver.port;
    const damage = [3 * MiB + 2 * BLOCK, 17 * MiB, 40 * MiB + 9 * BLOCK];
    control = await HostControl.start({
      // Stops the receiver, flips bytes inside the given blocks of its replica, starts it again.
      damage: async (arg) => {
        await receiver?.stop();
        // Under redo a block whose newest version is still retained is read from the spool, not
        // the replica: a run that ages every point out (on another port, no agent reaches it)
        // advances the replica to the latest state first, and a clean stop finishes the advance.
        receiver = await startReceiverProcess(dataDir, passphraseFile, ['--listen', '127.0.0.1:0', '--retention', '1ms', '--retention-interval', '1h']);
        await receiver.stop();
        const fd = fs.openSync(path.join(dataDir, 'volumes', VOLUME, 'replica.img'), 'r+');
        try {
          for (const offset of arg.split(',').map(Number)) fs.writeSync(fd, Buffer.from([0xde, 0xad, 0xbe, 0xef]), 0, 4, offset + 4000);
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
        receiver = await startReceiverProcess(dataDir, passphraseFile, ['--listen', `127.0.0.1:${port}`]);
        return `damaged ${arg}`;
      },
    });
    const params = path.join(dir, 'params.json');
    fs.writeFileSync(
      params,
      JSON.stringify({
        receiverUrl: `wss://10.0.2.2:${port}`,
        fingerprint: receiver.fingerprint,
        passphraseFile,
        workDir: '/run/ferry-work',
        stateDir: '/run/ferry-state',
        volumeId: VOLUME,
        device: '/dev/mapper/fv',
        damage,
        seed: SEED,
      }),
    );
    const size = 64 * MiB;
    const data = path.join(dir, 'data.img');
    fs.writeFileSync(data, crypto.createCipheriv('aes-256-ctr', crypto.createHash('sha256').update(String(SEED)).digest(), Buffer.alloc(16)).update(Buffer.alloc(size)));
    const r = await lab.run({
      script: `set -euo pipefail
mkdir -p /run/ferry-work /run/ferry-state
dmsetup create fv --table "0 ${size / 512} ferry /dev/vda /dev/vdb"
node "$D" ${params}
dmsetup remove fv`,
      disks: [{ path: data, sizeBytes: size }, { path: path.join(dir, 'meta.img'), sizeBytes: 4 * MiB }],
      modules: [ko],
      env: { FERRY_REPO: REPO_ROOT, HOSTCTL: control.guestUrl, D: driver },
      timeoutMs: 900_000,
      cpus: 2,
      signal,
    });
    expect(r.kernelProblems, describeRun(r)).toEqual([]);
    expect(r.exitCode, describeRun(r)).toBe(0);
    const line = r.output.split('\n').find((l) => l.startsWith('FERRY-RESULT '));
    expect(line, describeRun(r)).toBeDefined();
    const report = JSON.parse((line as string).slice('FERRY-RESULT '.length)) as DriverReport;
    expect(report.failures, describeRun(r)).toEqual([]);
    expect(control.calls).toEqual([`damage ${damage.join(',')}`]);
    const point = report.facts.point;
    expect(point?.accuracy).toBe('exact');
    const out = path.join(dir, 'point.img');
    await waitFor('the point to be applied and exported', async () => {
      const e = await runFerryAsync(['export', '--data', dataDir, '--volume', VOLUME, '--point', String(point?.pointId), '--out', out]);
      if (e.status === 4) return undefined;
      if (e.status !== 0) throw new Error(`export failed (${e.status}): ${e.stderr}`);
      return true;
    }, 120_000);
    expect(sha256File(out)).toBe(point?.sha256);
  }, 900_000);
});
