import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CaptureSource, VolumeCut } from '../../agent/capture/types';
import { cutAppConsistent } from '../../agent/tags/app-tag';
import type { FreezeOps } from '../../agent/tags/freeze';
import { freezeFs, thawFs } from '../../native/addon';
import { ExitCode } from '../../common/errors';
import { AgentLab, waitFor } from '../helpers/agent-lab';
import { runFerry, runFerryAsync } from '../helpers/receiver-process';

const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI) throw new Error('the freeze tests need root (loop devices, mount, FIFREEZE) and CI runs them');
const TOOLS = { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` };
const run = (cmd: string, args: string[]): string => execFileSync(cmd, args, { env: TOOLS, encoding: 'utf8' }).trim();

/** Resolves when a write to `dir` completes: it blocks while the filesystem is frozen. */
function writeCompletes(dir: string, name: string): Promise<number | null> {
  return new Promise((resolve) => {
    const child = spawn('sh', ['-c', `echo data > ${path.join(dir, name)} && sync -f ${dir}`], { stdio: 'ignore' });
    child.once('exit', (code) => resolve(code));
  });
}

/** A loop-mounted ext4 filesystem on an image in `dir`. */
class LoopFs {
  readonly image: string;
  readonly mount: string;
  device = '';

  constructor(dir: string, name: string, sizeMiB: number) {
    this.image = path.join(dir, `${name}.img`);
    this.mount = path.join(dir, `${name}-mnt`);
    fs.writeFileSync(this.image, Buffer.alloc(0));
    fs.truncateSync(this.image, sizeMiB * 1024 * 1024);
    run('mkfs.ext4', ['-q', '-F', this.image]);
    this.device = run('losetup', ['-f', '--show', this.image]);
    fs.mkdirSync(this.mount, { recursive: true });
    run('mount', [this.device, this.mount]);
  }

  release(): void {
    try {
      run('fsfreeze', ['--unfreeze', this.mount]);
    } catch {
      // not frozen: the normal case
    }
    try {
      run('umount', [this.mount]);
    } finally {
      run('losetup', ['-d', this.device]);
    }
  }
}

/** A capture source whose settle hangs until released: stands in for a stuck pass. */
function stuckSource(): { source: CaptureSource; release: () => void } {
  let release = (): void => undefined;
  const settled = new Promise<void>((r) => (release = r));
  const source = {
    kind: 'scan',
    settle: async () => {
      await settled;
      return { settled: true };
    },
    tag: async (ids: string[]): Promise<VolumeCut[]> => ids.map((volumeId) => ({ volumeId, seq: 1, accuracy: 'exact' as const })),
  } as unknown as CaptureSource;
  return { source, release };
}

describe.skipIf(!isRoot)('app-consistent tags: FIFREEZE on a real ext4 (root)', () => {
  let lab: AgentLab;
  let loop: LoopFs;
  beforeAll(() => {
    lab = new AgentLab('freeze');
    loop = new LoopFs(lab.dir, 'fs', 64);
  });
  afterAll(async () => {
    loop.release();
    await lab.cleanup();
  });

  it('cuts an exact point of a mounted ext4 on a loop device: the export passes fsck and holds the files written before it', async () => {
    await lab.startReceiver();
    lab.writeConfig({ volumes: [{ id: 'fs1', path: loop.device, mount: loop.mount }] });
    lab.register();
    const agent = lab.startAgent();
    const pid = agent.child.pid as number;
    await lab.waitProtected('fs1', pid);
    const before: Record<string, Buffer> = {};
    for (let i = 0; i < 8; i++) {
      before[`before-${i}.bin`] = Buffer.alloc(100_000 + i * 4096, i + 1);
      fs.writeFileSync(path.join(loop.mount, `before-${i}.bin`), before[`before-${i}.bin`]);
    }
    const tag = await runFerryAsync(['agent', 'tag', '--config', lab.configFile, '--app', '--name', 'app1']);
    expect(tag.status, tag.stderr).toBe(0);
    expect(tag.stdout).toMatch(/app, exact, filesystems frozen \d+ ms/);
    const pointId = Number(/point\(s\) (\d+)/.exec(tag.stdout)?.[1]);
    fs.writeFileSync(path.join(loop.mount, 'after.bin'), Buffer.alloc(50_000, 0xee));
    const out = path.join(lab.dir, 'app-point.img');
    await waitFor('the app point to export', async () => {
      const r = await runFerryAsync(['export', '--data', lab.receiverDir, '--volume', 'fs1', '--point', String(pointId), '--out', out]);
      return r.status === 0 ? true : r.status === 4 ? undefined : Promise.reject(new Error(r.stderr));
    });
    run('e2fsck', ['-f', '-n', out]);
    const listing = run('debugfs', ['-R', 'ls /', out]);
    for (const [name, data] of Object.entries(before)) {
      expect(listing).toContain(name);
      const dumped = path.join(lab.dir, `dump-${name}`);
      run('debugfs', ['-R', `dump /${name} ${dumped}`, out]);
      expect(fs.readFileSync(dumped).equals(data), name).toBe(true);
    }
    expect(listing).not.toContain('after.bin');
    const points = JSON.parse(runFerry(['points', '--data', lab.receiverDir, '--json']).stdout) as Array<{ id: number; kind: string; accuracy: string; name: string }>;
    expect(points.find((p) => p.id === pointId)).toMatchObject({ kind: 'app', accuracy: 'exact' });
    await agent.stop();
  });

  it('an app tag that cannot settle in time is recorded as a crash point: exit 7 with the true reason', async () => {
    const slow = new AgentLab('freeze-settle');
    const fs2 = new LoopFs(slow.dir, 'fs2', 64);
    try {
      await slow.startReceiver(['--spool-cap', '1MiB']);
      slow.writeConfig({
        volumes: [{ id: 'fs2', path: fs2.device, mount: fs2.mount }],
        scan: { maxPendingBytes: '1MiB' },
        pipeline: { windowBytes: '1MiB', maxBatchBytes: '256KiB' },
        tags: { freezeTimeoutMs: '2s' },
      });
      slow.register();
      const agent = slow.startAgent();
      const pid = agent.child.pid as number;
      await slow.waitProtected('fs2', pid);
      // The receiver stops applying: its spool passes the cap and it throttles the agent, whose
      // reads then stop at maxPendingBytes until the receiver acknowledges more. No pass can
      // read the whole volume before the settle deadline.
      const pause = path.join(slow.receiverDir, 'volumes', 'fs2', 'apply.paused');
      fs.writeFileSync(pause, '');
      for (let i = 0; i < 12; i++) fs.writeFileSync(path.join(fs2.mount, `data-${i}.bin`), randomBytes(1024 * 1024));
      run('sync', ['-f', fs2.mount]);
      await waitFor('the agent to be throttled', () => slow.status(pid)?.throttled);
      const tagging = runFerryAsync(['agent', 'tag', '--config', slow.configFile, '--app', '--json']);
      // The verdict comes before the point is sent; the receiver may resume once it is made.
      await waitFor('the agent to give up on settling', () => agent.output().includes('the app tag is not application-consistent'), 30_000);
      fs.rmSync(pause);
      const r = await tagging;
      expect(r.status, r.stderr).toBe(ExitCode.pointDowngraded);
      expect(r.stderr).toMatch(
        /^ferry: point \d+ recorded as crash-consistent, not application-consistent: the settle deadline passed: after [\d.]+m?s fs2 had not been read in full since the freeze \([^)]* of 64\.0 MiB, and reading was paused until the receiver acknowledges the changes already read\); the wait is bounded by tags\.freezeTimeoutMs \(2s, less 200ms kept for the cut\)$/m,
      );
      expect(r.stderr).not.toMatch(/resync/);
      const result = JSON.parse(r.stdout) as { pointIds: number[]; kind: string; appConsistent: boolean; reasonCode: string; reason: string };
      expect(result).toMatchObject({ kind: 'crash', appConsistent: false, reasonCode: 'settle-deadline' });
      expect(r.stderr).toContain(result.reason);
      const points = JSON.parse(runFerry(['points', '--data', slow.receiverDir, '--json']).stdout) as Array<{ id: number; kind: string }>;
      expect(points.find((p) => p.id === result.pointIds[0])?.kind).toBe('crash');
      expect(await writeCompletes(fs2.mount, 'after-downgraded-tag')).toBe(0);
      await agent.stop();
    } finally {
      fs2.release();
      await slow.cleanup();
    }
  });

  it('thaws at the bound when the cut is stuck, even before the stuck step returns', async () => {
    const { source, release } = stuckSource();
    const cut = cutAppConsistent(source, ['fs1'], [loop.mount], { freezeTimeoutMs: 500, holdMs: 100, hookTimeoutMs: 5000 });
    let cutDone = false;
    void cut.then(() => (cutDone = true));
    // The write blocks on the frozen filesystem and completes only when something thaws it.
    expect(await writeCompletes(loop.mount, 'during-freeze')).toBe(0);
    expect(cutDone).toBe(false); // the watchdog thawed, not the normal path
    release();
    const result = await cut;
    expect(result.appConsistent).toBe(false);
    expect(result.reasonCode).toBe('freeze-bound');
    expect(result.note).toMatch(/^the freeze bound \(tags.freezeTimeoutMs, 500ms\) passed before the cut/);
  });

  it('thaws when the post-hook fails, and never freezes when the pre-hook fails or hangs: a crash point that says why', async () => {
    const hook = (name: string, body: string): string => {
      const file = path.join(lab.dir, name);
      fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
      return file;
    };
    const settled = { kind: 'scan', settle: async () => ({ settled: true }), tag: async (ids: string[]) => ids.map((volumeId) => ({ volumeId, seq: 1, accuracy: 'exact' as const })) } as unknown as CaptureSource;
    const base = { freezeTimeoutMs: 10_000, holdMs: 100, hookTimeoutMs: 2000 };
    const frozen: string[] = [];
    const ops: FreezeOps = { freeze: (m) => (frozen.push(m), freezeFs(m)), thaw: thawFs };
    const postFails = await cutAppConsistent(settled, ['fs1'], [loop.mount], { ...base, postHook: hook('post-fail.sh', 'echo cannot unlock tables >&2; exit 3') }, ops);
    expect(postFails).toMatchObject({ appConsistent: true, postHookError: expect.stringMatching(/post-hook .* exited with code 3: cannot unlock tables/) });
    expect(frozen).toEqual([loop.mount]);
    expect(await writeCompletes(loop.mount, 'after-post-hook')).toBe(0);
    const preFails = await cutAppConsistent(settled, ['fs1'], [loop.mount], { ...base, preHook: hook('pre-fail.sh', 'echo db busy >&2; exit 4') }, ops);
    expect(preFails).toMatchObject({ appConsistent: false, reasonCode: 'pre-hook-failed', note: expect.stringMatching(/pre-hook .* exited with code 4: db busy/) });
    expect(preFails.cuts).toHaveLength(1);
    const preHangs = await cutAppConsistent(settled, ['fs1'], [loop.mount], { ...base, hookTimeoutMs: 300, preHook: hook('pre-hang.sh', 'sleep 30') }, ops);
    expect(preHangs).toMatchObject({ appConsistent: false, reasonCode: 'pre-hook-failed', note: expect.stringMatching(/timed out after 300 ms/) });
    expect(frozen).toEqual([loop.mount]); // the failed pre-hooks froze nothing
    expect(await writeCompletes(loop.mount, 'after-pre-hook')).toBe(0);
  });
});
