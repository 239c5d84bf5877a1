import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CaptureSource, VolumeCut } from '../../agent/capture/types';
import { cutAppConsistent } from '../../agent/tags/app-tag';
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
      return true;
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
    expect(result.note).toMatch(/freeze bound/);
  });

  it('thaws when the post-hook fails, and never freezes when the pre-hook fails or hangs', async () => {
    const hook = (name: string, body: string): string => {
      const file = path.join(lab.dir, name);
      fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
      return file;
    };
    const settled = { kind: 'scan', settle: async () => true, tag: async (ids: string[]) => ids.map((volumeId) => ({ volumeId, seq: 1, accuracy: 'exact' as const })) } as unknown as CaptureSource;
    const base = { freezeTimeoutMs: 10_000, holdMs: 100, hookTimeoutMs: 2000 };
    const postFails = await cutAppConsistent(settled, ['fs1'], [loop.mount], { ...base, postHook: hook('post-fail.sh', 'echo cannot unlock tables >&2; exit 3') });
    expect(postFails.cuts).toHaveLength(1);
    expect(await writeCompletes(loop.mount, 'after-post-hook')).toBe(0);
    await expect(cutAppConsistent(settled, ['fs1'], [loop.mount], { ...base, preHook: hook('pre-fail.sh', 'echo db busy >&2; exit 4') })).rejects.toThrow(/pre-hook .* exited with code 4: db busy/);
    await expect(cutAppConsistent(settled, ['fs1'], [loop.mount], { ...base, hookTimeoutMs: 300, preHook: hook('pre-hang.sh', 'sleep 30') })).rejects.toThrow(/timed out after 300 ms/);
    expect(await writeCompletes(loop.mount, 'after-pre-hook')).toBe(0);
  });
});
