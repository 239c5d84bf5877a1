/**
 * Boot protection (install.sh --protect-boot) in one lab boot: the installer's ferry-boot-setup
 * makes the metadata file on ext4 on partition 1 of a partitioned /dev/vda; then the real
 * initramfs-tools local-top script runs outside an initramfs (boot-protect-guest.sh): refused
 * module and damaged marker -> nothing created, plain partition mounts; then ferry-boot and
 * ferry-boot-pN appear, ROOT goes to ferry-boot-p1, writes are captured, the shutdown hook
 * leaves the metadata CLEAN, and the next run starts CLEAN with the saved bits; a run with the
 * module refused after that marks the saved bitmap stale, so the next one starts DIRTY.
 * Needs root (virtiofsd). Skipped locally when not root; never in CI.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isRoot, Lab, prepareLab, REPO_ROOT } from './lab';
import { killAllLabProcesses } from './processes';

const inCi = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false' && process.env.CI !== '0';
const skip = !isRoot() && !inCi;
if (skip) console.warn('test/vm/boot-protect.test.ts: SKIPPED: the VM lab needs root. With CI=true it fails instead.');

const MiB = 1024 * 1024;
const START_NEW = '1';
const START_CLEAN = '2';
const START_DIRTY = '3';
const CLEAN_FLAG = '1';

function step(output: string, name: string): string {
  const line = output.split('\n').find((l) => l.startsWith(`step: ${name} `));
  if (line === undefined) throw new Error(`no "step: ${name}" line in the guest output:\n${output}`);
  return line.slice(`step: ${name} `.length);
}

describe.skipIf(skip)('boot protection: the initramfs script on a partitioned disk (VM lab)', () => {
  let lab: Lab;
  let ko: string;
  let dir: string;

  beforeAll(async () => {
    lab = await prepareLab();
    ko = await lab.buildModule(path.join(REPO_ROOT, 'native', 'linux'));
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-boot-protect-'));
  }, 600_000);

  afterAll(async () => {
    await killAllLabProcesses();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('creates ferry-boot over the disk, switches ROOT, saves CLEAN at shutdown; refuses safely', async ({ signal }) => {
    const r = await lab.run({
      signal,
      disks: [{ path: path.join(dir, 'vda.img'), sizeBytes: 64 * MiB }],
      env: { KO: ko, REPO: REPO_ROOT, TRACE: process.env.FERRY_TEST_TRACE ?? '' },
      script: `bash ${path.join(REPO_ROOT, 'test', 'vm', 'boot-protect-guest.sh')}`,
      timeoutMs: 300_000,
    });
    const out = r.output;
    expect(r.exitCode, out).toBe(0);
    expect(out).toContain('step: done');
    expect(out).not.toContain('FAILED');
    // The installer's metadata file: made immutable, its header found where the config says.
    expect(step(out, 'immutable')).toBe('i');
    expect(out).toMatch(/setup\| DISK=\/dev\/vda\nsetup\| DISK_BYTES=67108864\nsetup\| ROOT=\/dev\/vda1\nsetup\| ROOT_PART=1\nsetup\| META_KIND=file/);

    // Refused module / damaged marker: one "ferry:" line, nothing created, ROOT untouched.
    expect(step(out, 'refused')).toBe('param=[] devices=[]');
    expect(out).toMatch(/local-top\| ferry: the dm-ferry module is not loaded/);
    expect(step(out, 'bad-marker')).toBe('param=[] devices=[]');
    expect(out).toMatch(/local-top\| ferry: no disk of 131072 sectors carries the Ferry metadata header/);
    expect(step(out, 'bad-marker plain-mount')).toMatch(/^ok/);

    // Protected: the devices, ROOT on the partition's mapping, writes captured (seqs advance).
    expect(step(out, 'first')).toBe('param=[ROOT=/dev/mapper/ferry-boot-p1] devices=[ferry-boot ferry-boot-meta ferry-boot-p1 ferry-boot-p2 ]');
    const [, state, seq] = /^(\d+) next-seq (\d+)$/.exec(step(out, 'first start-state')) ?? [];
    expect(state).toBe(START_NEW);
    const after = /^next-seq (\d+) mode (\w+)$/.exec(step(out, 'first after-writes')) ?? [];
    expect(Number(after[1])).toBeGreaterThan(Number(seq) + 16);
    // The shutdown hook: suspended, superblock CLEAN.
    expect(step(out, 'first suspended')).toBe('Suspended sb-flags ' + CLEAN_FLAG);
    expect(step(out, 'first removed')).toBe('devices=[]');

    // The next boot starts CLEAN, with the bits of the unconsumed writes (a delta resync).
    const second = /^(\d+) dirty (\d+)\/(\d+)$/.exec(step(out, 'second start-state')) ?? [];
    expect(second[1]).toBe(START_CLEAN);
    expect(Number(second[2])).toBeGreaterThan(0);
    expect(step(out, 'second')).toContain('param=[ROOT=/dev/mapper/ferry-boot-p1]');
    expect(step(out, 'second content')).toBe('from-the-mapping');

    // A boot without dm-ferry after the clean shutdown marks the saved bitmap stale: DIRTY next.
    expect(step(out, 'refused-after-clean')).toBe('param=[] devices=[]');
    expect(out).toMatch(/local-top\| ferry: the saved dm-ferry bitmap is marked stale/);
    expect(step(out, 'third start-state')).toBe(START_DIRTY);
    expect(step(out, 'final plain-mount')).toBe('ok from-the-mapping');
    expect(step(out, 'removed')).toBe('meta=gone conf=gone');
    expect(r.kernelProblems).toEqual([]);
    console.log(`boot-protect: ${step(out, 'first local-top-ms')} (local-top with dm-ferry), setup ${step(out, 'setup-ms')} ms; boot ${r.timings.bootMs} ms, script ${r.timings.scriptMs} ms`);
  }, 360_000);
});
