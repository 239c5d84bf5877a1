/**
 * Host side of the "plain Debian server" (test/vm/bootable/server-image.sh): one qemu run per
 * boot of its disk, by its own bootloader (-accel tcg -cpu max, -no-reboot: a guest reboot or
 * power-off ends the run), with a step disk (ext4 labelled FERRYSTEP, made with `mkfs.ext4 -d`)
 * whose step.sh the guest's step runner executes, output on the second serial port.
 *
 *   const run = await bootStep(disk, { 'step.sh': '...', 'after.sh': 'systemctl reboot' }, dir, 'a');
 *   run.report.rc === 0; run.report.output; run.msToStep; run.exit  // 'exited' when qemu is gone
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runCommand } from './lab';
import { parseStepLog, STEP_LABEL, type StepReport } from './bootable/server-image';

const MiB = 1024 * 1024;

export class ServerVmError extends Error {
  override name = 'ServerVmError';
}

/** Files of a step disk: name -> content, or name -> { copyFrom: a host folder copied in whole }. */
export type StepFiles = Record<string, string | { copyFrom: string }>;

export interface StepRun {
  report: StepReport;
  /** Milliseconds from qemu's start to the runner's first line (firmware + bootloader + boot). */
  msToStep: number | null;
  /** The main console (ttyS0: kernel, systemd, getty). */
  console: string;
  /** The step runner's port (ttyS1). */
  stepLog: string;
  /** Milliseconds from qemu's start until it exited. */
  msTotal: number;
}

function folderBytes(dir: string): number {
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += folderBytes(p);
    else if (e.isFile()) total += fs.statSync(p).size + 4096;
  }
  return total;
}

/** Makes an ext4 image labelled FERRYSTEP holding `files` (no mount needed: mkfs.ext4 -d). */
export async function makeStepDisk(image: string, files: StepFiles, workDir: string): Promise<void> {
  const tree = fs.mkdtempSync(path.join(workDir, 'step-tree-'));
  try {
    for (const [name, content] of Object.entries(files)) {
      const dest = path.join(tree, name);
      fs.mkdirSync(path.dirname(dest), { recursive: true });
      if (typeof content === 'string') fs.writeFileSync(dest, content, { mode: 0o755 });
      else {
        const r = await runCommand('cp', ['-a', '--reflink=auto', content.copyFrom, dest]);
        if (r.code !== 0) throw new ServerVmError(`cp ${content.copyFrom}: ${r.stderr}`);
      }
    }
    const bytes = Math.max(32 * MiB, Math.ceil((folderBytes(tree) * 1.25 + 16 * MiB) / MiB) * MiB);
    fs.rmSync(image, { force: true });
    const r = await runCommand('mkfs.ext4', ['-q', '-F', '-L', STEP_LABEL, '-d', tree, '-E', 'root_owner=0:0', image, `${bytes / 1024}k`], {
      ...process.env,
      PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin`,
    });
    if (r.code !== 0) throw new ServerVmError(`mkfs.ext4 -d for the step disk failed: ${r.stderr.trim()}`);
  } finally {
    fs.rmSync(tree, { recursive: true, force: true });
  }
}

export interface BootOptions {
  /** Everything this boot may take: boot, the step, the shutdown (default 15 min). */
  deadlineMs?: number;
  memoryMiB?: number;
  cpus?: number;
  signal?: AbortSignal;
}

function readOr(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/**
 * Boots `disk` once with a step disk holding `files`; resolves when qemu exited (the step's
 * after.sh rebooted, powered off or crashed the machine). Throws when the deadline passes first
 * (qemu is killed) or qemu cannot start. The logs stay in `workDir` as `<label>-console.log` and
 * `<label>-step.log`.
 */
export async function bootStep(disk: string, files: StepFiles, workDir: string, label: string, opts: BootOptions = {}): Promise<StepRun> {
  const stepDisk = path.join(workDir, `${label}-step.img`);
  await makeStepDisk(stepDisk, files, workDir);
  const consoleLog = path.join(workDir, `${label}-console.log`);
  const stepLog = path.join(workDir, `${label}-step.log`);
  for (const f of [consoleLog, stepLog]) fs.rmSync(f, { force: true });
  const started = Date.now();
  const child = spawn(
    'qemu-system-x86_64',
    [
      '-accel', 'tcg', '-cpu', 'max', '-smp', String(opts.cpus ?? 2), '-m', String(opts.memoryMiB ?? 1536),
      '-display', 'none', '-no-reboot', '-no-user-config', '-nodefaults', '-rtc', 'base=utc',
      '-serial', `file:${consoleLog}`,
      '-serial', `file:${stepLog}`,
      '-drive', `file=${disk},format=raw,if=none,id=d0,cache=writeback,discard=unmap`,
      '-device', 'virtio-blk-pci,drive=d0,bootindex=1',
      '-drive', `file=${stepDisk},format=raw,if=none,id=d1,readonly=on`,
      '-device', 'virtio-blk-pci,drive=d1',
      '-netdev', 'user,id=n0',
      '-device', 'virtio-net-pci,netdev=n0,romfile=',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  let exitedAt: number | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('error', (err) => {
      stderr += `cannot run qemu-system-x86_64: ${err.message}\n`;
      exitedAt = Date.now();
      resolve();
    });
    child.once('exit', () => {
      exitedAt = Date.now();
      resolve();
    });
  });
  const kill = (): void => {
    if (exitedAt === undefined) child.kill('SIGKILL');
  };
  opts.signal?.addEventListener('abort', kill, { once: true });
  const deadline = started + (opts.deadlineMs ?? 900_000);
  let msToStep: number | null = null;
  try {
    while (exitedAt === undefined) {
      if (msToStep === null && /FERRY-STEP start/.test(readOr(stepLog))) msToStep = Date.now() - started;
      if (Date.now() > deadline) {
        kill();
        await exited;
        const report = parseStepLog(readOr(stepLog));
        throw new ServerVmError(
          `boot ${label}: no end within ${((opts.deadlineMs ?? 900_000) / 1000).toFixed(0)} s (step rc ${report.rc ?? 'none'})\n--- step (ttyS1) ---\n${readOr(stepLog).slice(-6000)}\n--- console (ttyS0) ---\n${readOr(consoleLog).slice(-3000)}`,
        );
      }
      await Promise.race([exited, new Promise((r) => setTimeout(r, 250))]);
    }
  } finally {
    opts.signal?.removeEventListener('abort', kill);
    fs.rmSync(stepDisk, { force: true });
  }
  const log = readOr(stepLog);
  if (msToStep === null && /FERRY-STEP start/.test(log)) msToStep = (exitedAt ?? Date.now()) - started;
  if (stderr.trim() !== '' && !/FERRY-STEP start/.test(log)) throw new ServerVmError(`boot ${label}: qemu failed: ${stderr.trim()}`);
  return { report: parseStepLog(log), msToStep, console: readOr(consoleLog), stepLog: log, msTotal: (exitedAt ?? Date.now()) - started };
}
