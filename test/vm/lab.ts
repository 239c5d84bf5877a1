/**
 * The VM lab: boots Debian's 6.1 cloud kernel under qemu (TCG) with the host's root shared
 * read-only through virtiofs, runs a script as root in the guest (chrooted into the host root,
 * so `node` and this repo are at the same paths) and returns its output, exit code and the
 * kernel console. See test/vm/README.md.
 *
 *   const lab = await prepareLab();
 *   const ko = await lab.buildModule('/path/to/module/src');
 *   const r = await lab.run({ script: 'dmsetup ls', disks: [{ path: img, sizeBytes: 64 << 20 }], modules: [ko] });
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { findKernelProblems } from './kernel-problems';
import { spawnTracked, Tracked } from './processes';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
/** exitCode when the guest never reported the script's end (it powered off or crashed first). */
export const NO_CLEAN_EXIT = -1;
export const DEFAULT_TIMEOUT_MS = 90_000;
export const DEFAULT_MEMORY_MIB = 2048;

export interface GuestDisk {
  /** Host file attached as virtio-blk (/dev/vda, /dev/vdb, ... in order). */
  path: string;
  /** Size of the sparse file created when it does not exist (a multiple of 512). */
  sizeBytes?: number;
}

export interface RunOptions {
  /** bash script run as root in the guest, in the chrooted host root, cwd = repo root. */
  script: string;
  disks?: GuestDisk[];
  /** Extra .ko files (host paths) insmod'ed in this order after dm-mod, before the script. */
  modules?: string[];
  env?: Record<string, string>;
  timeoutMs?: number;
  memoryMiB?: number;
  cpus?: number;
  /** Extra kernel command-line arguments. */
  kernelArgs?: string[];
  /** Working directory of the script (default: the repo root). */
  cwd?: string;
  /** Kills the guest when aborted (pass vitest's test context `signal`). */
  signal?: AbortSignal;
}

export interface GuestResult {
  /** The script's exit status, or NO_CLEAN_EXIT if the guest went down before it ended. */
  exitCode: number;
  /** True when the script ended and the guest reported its status before powering off. */
  cleanExit: boolean;
  /** The script's stdout and stderr. */
  output: string;
  /** The full kernel console log (kernel messages and the guest init's own lines). */
  console: string;
  /** Console lines reporting kernel problems (WARNING, BUG, Oops, Call Trace, stalls, ...). */
  kernelProblems: string[];
  /** Where this run's files are kept: console.log, output.log, script.sh, qemu and virtiofsd logs. */
  runDir: string;
  timings: {
    /** qemu start to the script's start (boot + module loads + mounts). */
    bootMs: number | null;
    /** The script's own run time, as seen from the host. */
    scriptMs: number | null;
    totalMs: number;
  };
}

export interface Lab {
  /** Release of the guest kernel, e.g. 6.1.0-56-cloud-amd64 (= `uname -r` in the guest). */
  kernelVersion: string;
  /** Debian package version the kernel came from, e.g. 6.1.192-2. */
  packageVersion: string;
  /** Kernel headers: `make -C <headersDir> M=<dir> modules` builds against the guest kernel. */
  headersDir: string;
  kernelImage: string;
  /** The guest kernel's modules (lib/modules/<kver>); mounted there in the guest too. */
  modulesDir: string;
  initramfs: string;
  cacheDir: string;
  /** Builds the out-of-tree module in srcDir; returns the .ko path (the named one, or the first). */
  buildModule(srcDir: string, moduleName?: string): Promise<string>;
  /** Boots a guest, runs the script, powers off. Rejects on setup failures and timeouts. */
  run(opts: RunOptions): Promise<GuestResult>;
}

/** The lab cannot work on this host (a missing tool, not root, a failed fetch) or a run failed to set up. */
export class LabError extends Error {
  override name = 'LabError';
}

/** The guest did not finish within timeoutMs; qemu was killed. `partial` holds what was captured. */
export class GuestTimeoutError extends LabError {
  override name = 'GuestTimeoutError';
  constructor(
    message: string,
    readonly partial: GuestResult,
  ) {
    super(message);
  }
}

const VIRTIOFSD = process.env.FERRY_VM_VIRTIOFSD ?? '/usr/lib/qemu/virtiofsd';
const QEMU = process.env.FERRY_VM_QEMU ?? 'qemu-system-x86_64';
const RUNS_KEPT = 30;
const MARK_SCRIPT_START = 'ferrylab-init: running ';
const MARK_SCRIPT_END = 'ferrylab-init: script exited with ';
/**
 * A guest whose script has not started this long after qemu did is stuck in its boot (a TCG
 * guest has been seen to stop printing 0.9 s into the kernel's boot); it is killed and booted
 * once more. Healthy boots reach the script in 5-20 s, also on a loaded host.
 */
const BOOT_LIMIT_MS = Number(process.env.FERRY_VM_BOOT_LIMIT_MS ?? 120_000);
if (!(BOOT_LIMIT_MS > 0)) throw new Error(`FERRY_VM_BOOT_LIMIT_MS must be a positive number of ms, got ${JSON.stringify(process.env.FERRY_VM_BOOT_LIMIT_MS)}`);

/** The guest's kernel stopped before the script started: the run is tried once more. */
class BootStalledError extends LabError {
  override name = 'BootStalledError';
}

export function cacheDir(): string {
  return path.resolve(process.env.FERRY_VM_CACHE ?? path.join(REPO_ROOT, '.cache', 'vm'));
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

function findExecutable(name: string): string | null {
  if (name.includes('/')) return isExecutable(name) ? name : null;
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin'])) {
    const candidate = path.join(dir || '.', name);
    if (isExecutable(candidate)) return candidate;
  }
  return null;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Everything the lab needs on the host; throws one LabError naming all that is missing. */
function checkHost(): void {
  const problems: string[] = [];
  if (process.platform !== 'linux' || process.arch !== 'x64') problems.push(`needs Linux x86-64 (this is ${process.platform}/${process.arch})`);
  if (!isRoot()) problems.push('needs root: virtiofsd (the read-only share of the host root) runs as root');
  const need: Array<[string, string]> = [
    [QEMU, 'qemu-system-x86'],
    [VIRTIOFSD, 'qemu-system-common (provides /usr/lib/qemu/virtiofsd)'],
    ['busybox', 'busybox-static'],
    ['dmsetup', 'dmsetup'],
    ['depmod', 'kmod'],
    ['modprobe', 'kmod'],
    ['apt-get', 'apt'],
    ['dpkg', 'dpkg'],
    ['flock', 'util-linux'],
    ['make', 'make'],
    ['gcc-12', 'gcc-12'],
    ['bash', 'bash'],
  ];
  for (const [tool, pkg] of need) {
    if (!findExecutable(tool)) problems.push(`${tool} not found (apt-get install -y ${pkg})`);
  }
  if (problems.length > 0) throw new LabError(`VM lab unavailable:\n  ${problems.join('\n  ')}`);
}

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end, collecting its output; rejects only when it cannot start. */
export function runCommand(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', (err) => reject(new LabError(`cannot run ${command}: ${err.message}`)));
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function parseKeyValues(text: string): Map<string, string> {
  const vars = new Map<string, string>();
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) vars.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return vars;
}

let preparing: Promise<Lab> | undefined;

/**
 * Fetches the kernel (test/vm/kernel.sh) and builds the initramfs (test/vm/initramfs.sh) into the
 * cache dir, once per process; later processes reuse the cache. Rejects with a LabError saying
 * what is missing.
 */
export function prepareLab(): Promise<Lab> {
  preparing ??= prepare();
  return preparing;
}

async function prepare(): Promise<Lab> {
  checkHost();
  const cache = cacheDir();
  fs.mkdirSync(cache, { recursive: true });
  const env = { ...process.env, FERRY_VM_CACHE: cache };
  const k = await runCommand('bash', [path.join(__dirname, 'kernel.sh')], env);
  if (k.code !== 0) throw new LabError(`test/vm/kernel.sh failed (exit ${k.code}):\n${k.stderr}${k.stdout}`);
  const vars = parseKeyValues(k.stdout);
  const get = (key: string): string => {
    const v = vars.get(key);
    if (!v) throw new LabError(`test/vm/kernel.sh printed no ${key}:\n${k.stdout}`);
    return v;
  };
  const kver = get('FERRY_VM_KVER');
  const root = get('FERRY_VM_ROOT');
  const i = await runCommand('bash', [path.join(__dirname, 'initramfs.sh'), root, kver, cache], env);
  if (i.code !== 0) throw new LabError(`test/vm/initramfs.sh failed (exit ${i.code}):\n${i.stderr}${i.stdout}`);
  const lab = new VmLab({
    kernelVersion: kver,
    packageVersion: get('FERRY_VM_PKG_VERSION'),
    headersDir: get('FERRY_VM_HEADERS'),
    kernelImage: get('FERRY_VM_KERNEL'),
    modulesDir: get('FERRY_VM_MODULES'),
    initramfs: i.stdout.trim(),
    cacheDir: cache,
  });
  for (const file of [lab.kernelImage, lab.initramfs, path.join(lab.headersDir, 'Makefile'), path.join(lab.modulesDir, 'modules.dep')]) {
    if (!fs.existsSync(file)) throw new LabError(`VM lab cache is incomplete: ${file} is missing (remove ${cache} and retry)`);
  }
  return lab;
}

interface LabPaths {
  kernelVersion: string;
  packageVersion: string;
  headersDir: string;
  kernelImage: string;
  modulesDir: string;
  initramfs: string;
  cacheDir: string;
}

/** Quotes a string for sh. */
function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Escapes a value inside a qemu -option string (commas are doubled). */
function qemuValue(s: string): string {
  return s.replace(/,/g, ',,');
}

function tail(text: string, lines: number): string {
  return text.split('\n').slice(-lines).join('\n');
}

let runCounter = 0;

class VmLab implements Lab {
  readonly kernelVersion: string;
  readonly packageVersion: string;
  readonly headersDir: string;
  readonly kernelImage: string;
  readonly modulesDir: string;
  readonly initramfs: string;
  readonly cacheDir: string;

  constructor(p: LabPaths) {
    this.kernelVersion = p.kernelVersion;
    this.packageVersion = p.packageVersion;
    this.headersDir = p.headersDir;
    this.kernelImage = p.kernelImage;
    this.modulesDir = p.modulesDir;
    this.initramfs = p.initramfs;
    this.cacheDir = p.cacheDir;
  }

  async buildModule(srcDir: string, moduleName?: string): Promise<string> {
    const dir = path.resolve(srcDir);
    if (!fs.existsSync(dir)) throw new LabError(`module source dir ${dir} does not exist`);
    const jobs = String(Math.max(1, os.cpus().length));
    const r = await runCommand('make', ['-C', this.headersDir, `M=${dir}`, `-j${jobs}`, 'modules']);
    if (r.code !== 0) throw new LabError(`module build in ${dir} failed (make exit ${r.code}):\n${r.stdout}${r.stderr}`);
    const orderFile = path.join(dir, 'modules.order');
    const kos = fs.existsSync(orderFile)
      ? fs
          .readFileSync(orderFile, 'utf8')
          .split('\n')
          .map((l) => l.trim())
          .filter((l) => l.length > 0)
          .map((l) => path.resolve(dir, l.replace(/\.o$/, '.ko')))
      : [];
    const ko = moduleName === undefined ? kos[0] : kos.find((k) => path.basename(k) === `${moduleName}.ko`);
    if (ko === undefined || !fs.existsSync(ko)) {
      throw new LabError(`module build in ${dir} produced no ${moduleName ?? ''}.ko (modules.order: ${kos.join(', ') || 'none'}):\n${r.stdout}${r.stderr}`);
    }
    return ko;
  }

  async run(opts: RunOptions): Promise<GuestResult> {
    try {
      return await this.runOnce(opts);
    } catch (err) {
      if (!(err instanceof BootStalledError)) throw err;
      console.warn(`VM lab: ${err.message.split('\n')[0]}; booting it once more`);
      return this.runOnce(opts);
    }
  }

  private async runOnce(opts: RunOptions): Promise<GuestResult> {
    if (opts.signal?.aborted) throw new LabError('run aborted before it started');
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const memoryMiB = opts.memoryMiB ?? DEFAULT_MEMORY_MIB;
    const cpus = opts.cpus ?? 2;
    if (!Number.isInteger(memoryMiB) || memoryMiB < 256) throw new LabError(`memoryMiB must be an integer >= 256: ${memoryMiB}`);
    if (!Number.isInteger(cpus) || cpus < 1) throw new LabError(`cpus must be a positive integer: ${cpus}`);
    if (!(timeoutMs > 0)) throw new LabError(`timeoutMs must be positive: ${timeoutMs}`);
    const disks = (opts.disks ?? []).map((d) => prepareDisk(d));
    const modules = (opts.modules ?? []).map((m) => {
      const abs = path.resolve(m);
      if (!fs.existsSync(abs)) throw new LabError(`module ${abs} does not exist`);
      if (/\n/.test(abs)) throw new LabError(`module path has a newline: ${JSON.stringify(abs)}`);
      return abs;
    });
    const runDir = this.makeRunDir();
    for (const p of [runDir, this.modulesDir]) {
      if (/\s/.test(p)) throw new LabError(`the VM lab cache path must not contain whitespace (kernel command line): ${p}`);
    }
    const files = {
      script: path.join(runDir, 'script.sh'),
      runSh: path.join(runDir, 'run.sh'),
      modules: path.join(runDir, 'modules'),
      output: path.join(runDir, 'output.log'),
      status: path.join(runDir, 'status'),
      console: path.join(runDir, 'console.log'),
      qemuLog: path.join(runDir, 'qemu.log'),
      virtiofsdLog: path.join(runDir, 'virtiofsd.log'),
    };
    fs.writeFileSync(files.script, opts.script);
    fs.writeFileSync(files.runSh, renderRunSh(files.script, opts.cwd ?? REPO_ROOT, opts.env ?? {}));
    fs.writeFileSync(files.modules, modules.map((m) => `${m}\n`).join(''));

    // A unix socket path must fit in 108 bytes: keep it short.
    const sockDir = fs.mkdtempSync(path.join(os.tmpdir().length > 60 ? '/tmp' : os.tmpdir(), 'ferry-vm-'));
    const socket = path.join(sockDir, 'virtiofsd.sock');
    const started = Date.now();
    let virtiofsd: Tracked | undefined;
    let qemu: Tracked | undefined;
    const consoleChunks: Buffer[] = [];
    const consoleLog = fs.createWriteStream(files.console);
    let scriptStartAt: number | null = null;
    let scriptEndAt: number | null = null;
    let consoleTail = '';
    try {
      virtiofsd = await startVirtiofsd(socket, files.virtiofsdLog);
      qemu = await spawnTracked('qemu', QEMU, this.qemuArgs({ runDir, files, socket, disks, memoryMiB, cpus, kernelArgs: opts.kernelArgs ?? [] }));
      const qemuStderr: string[] = [];
      const q = qemu;
      q.child.stderr?.on('data', (c: Buffer) => qemuStderr.push(c.toString()));
      const stdoutClosed = new Promise<void>((resolve) => q.child.stdout?.once('close', () => resolve()));
      q.child.stdout?.on('data', (c: Buffer) => {
        consoleChunks.push(c);
        consoleLog.write(c);
        // Markers may straddle chunks: look at the recent tail only.
        consoleTail = (consoleTail + c.toString('latin1')).slice(-4096);
        if (scriptStartAt === null && consoleTail.includes(MARK_SCRIPT_START)) scriptStartAt = Date.now();
        if (scriptEndAt === null && consoleTail.includes(MARK_SCRIPT_END)) scriptEndAt = Date.now();
      });

      const outcome = await waitForExit(q, timeoutMs, opts.signal, () => scriptStartAt === null && Date.now() - started > BOOT_LIMIT_MS);
      if (outcome !== 'exited') await q.kill();
      await stdoutClosed;
      await virtiofsd.kill();
      await new Promise<void>((resolve) => consoleLog.end(() => resolve()));
      fs.writeFileSync(files.qemuLog, qemuStderr.join(''));

      const consoleText = Buffer.concat(consoleChunks).toString('utf8');
      const output = readIfExists(files.output);
      const status = readIfExists(files.status).split('\n')[0] ?? '';
      const exitMatch = /^exit (\d+)$/.exec(status);
      const result: GuestResult = {
        exitCode: exitMatch ? Number(exitMatch[1]) : NO_CLEAN_EXIT,
        cleanExit: exitMatch !== null,
        output,
        console: consoleText,
        kernelProblems: findKernelProblems(consoleText),
        runDir,
        timings: {
          bootMs: scriptStartAt === null ? null : scriptStartAt - started,
          scriptMs: scriptStartAt === null || scriptEndAt === null ? null : scriptEndAt - scriptStartAt,
          totalMs: Date.now() - started,
        },
      };
      const where = `(run dir ${runDir})\n--- console (tail) ---\n${tail(consoleText, 40)}\n--- script output (tail) ---\n${tail(output, 20)}`;
      if (outcome === 'stalled') throw new BootStalledError(`the guest's boot stalled: no script ${Math.round(BOOT_LIMIT_MS / 1000)} s after qemu started ${where}`);
      if (outcome === 'timeout') throw new GuestTimeoutError(`guest did not finish within ${timeoutMs} ms; killed ${where}`, result);
      if (outcome === 'aborted') throw new LabError(`guest run aborted (test ended or timed out); killed ${where}`);
      if (status.startsWith('init-error ')) throw new LabError(`guest setup failed: ${status.slice('init-error '.length)} ${where}`);
      if (!result.cleanExit && scriptStartAt === null) {
        const qemuExit = await q.exited;
        throw new LabError(`guest never started the script (qemu exit ${qemuExit}): ${tail(qemuStderr.join(''), 10)} ${where}`);
      }
      return result;
    } finally {
      if (!consoleLog.closed) consoleLog.end();
      await qemu?.kill();
      await virtiofsd?.kill();
      fs.rmSync(sockDir, { recursive: true, force: true });
    }
  }

  private qemuArgs(a: {
    runDir: string;
    files: { output: string; status: string };
    socket: string;
    disks: string[];
    memoryMiB: number;
    cpus: number;
    kernelArgs: string[];
  }): string[] {
    const cmdline = ['console=ttyS0', 'panic=-1', 'loglevel=7', `ferrylab.job=${a.runDir}`, `ferrylab.moddir=${this.modulesDir}`, ...a.kernelArgs];
    const args = [
      '-accel', 'tcg',
      '-cpu', 'max',
      '-smp', String(a.cpus),
      '-m', `${a.memoryMiB}M`,
      '-object', `memory-backend-memfd,id=mem,size=${a.memoryMiB}M,share=on`,
      '-machine', 'pc,memory-backend=mem',
      '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
      '-kernel', this.kernelImage,
      '-initrd', this.initramfs,
      '-append', cmdline.join(' '),
      '-chardev', 'stdio,id=console,signal=off',
      '-serial', 'chardev:console',
      '-chardev', `file,id=output,path=${qemuValue(a.files.output)}`,
      '-serial', 'chardev:output',
      '-chardev', `file,id=status,path=${qemuValue(a.files.status)}`,
      '-serial', 'chardev:status',
    ];
    // Disks first, at fixed PCI slots, so they probe (and are named vda, vdb, ...) in order.
    a.disks.forEach((disk, i) => {
      args.push(
        '-drive', `file=${qemuValue(disk)},format=raw,if=none,id=disk${i},cache=writeback,discard=unmap`,
        '-device', `virtio-blk-pci,drive=disk${i},serial=ferry-disk-${i},addr=0x${(0x10 + i).toString(16)}`,
      );
    });
    args.push(
      '-chardev', `socket,id=hostroot,path=${qemuValue(a.socket)}`,
      '-device', 'vhost-user-fs-pci,chardev=hostroot,tag=hostroot,addr=0x4',
      '-netdev', 'user,id=net0',
      '-device', 'virtio-net-pci,netdev=net0,addr=0x5,romfile=',
      '-device', 'virtio-rng-pci,addr=0x6',
    );
    return args;
  }

  private makeRunDir(): string {
    const runs = path.join(this.cacheDir, 'runs');
    fs.mkdirSync(runs, { recursive: true });
    const old = fs.readdirSync(runs).sort();
    for (const name of old.slice(0, Math.max(0, old.length - RUNS_KEPT + 1))) {
      fs.rmSync(path.join(runs, name), { recursive: true, force: true });
    }
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const dir = path.join(runs, `${stamp}-${process.pid}-${++runCounter}`);
    fs.mkdirSync(dir);
    return dir;
  }
}

function prepareDisk(d: GuestDisk): string {
  const file = path.resolve(d.path);
  if (fs.existsSync(file)) {
    const size = fs.statSync(file).size;
    if (d.sizeBytes !== undefined && size !== d.sizeBytes) {
      throw new LabError(`disk ${file} is ${size} bytes, but sizeBytes says ${d.sizeBytes}`);
    }
    return file;
  }
  if (d.sizeBytes === undefined) throw new LabError(`disk ${file} does not exist and no sizeBytes was given to create it`);
  if (d.sizeBytes <= 0 || d.sizeBytes % 512 !== 0) throw new LabError(`disk size must be a positive multiple of 512: ${d.sizeBytes}`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const fd = fs.openSync(file, 'wx');
  try {
    fs.ftruncateSync(fd, d.sizeBytes);
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The wrapper the guest runs inside the chroot: environment, cwd, then the script under bash. */
function renderRunSh(script: string, cwd: string, env: Record<string, string>): string {
  const lines = ['# generated by test/vm/lab.ts'];
  for (const [k, v] of Object.entries(env)) {
    if (!ENV_NAME.test(k)) throw new LabError(`invalid environment variable name: ${JSON.stringify(k)}`);
    lines.push(`export ${k}=${shQuote(v)}`);
  }
  lines.push('export FERRY_VM_GUEST=1');
  lines.push(`cd ${shQuote(cwd)} || exit 125`);
  lines.push(`if [ -x /bin/bash ]; then exec /bin/bash ${shQuote(script)}; else exec /bin/sh ${shQuote(script)}; fi`);
  return `${lines.join('\n')}\n`;
}

function readIfExists(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Starts virtiofsd sharing / and resolves once it listens on the socket. */
async function startVirtiofsd(socket: string, logFile: string): Promise<Tracked> {
  const t = await spawnTracked('virtiofsd', VIRTIOFSD, [`--socket-path=${socket}`, '-o', 'source=/', '-o', 'sandbox=chroot', '-o', 'cache=always']);
  const log = fs.createWriteStream(logFile);
  let seen = '';
  let listening = false;
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new LabError(`virtiofsd did not listen within 15 s:\n${seen}`)), 15_000);
    const onData = (c: Buffer): void => {
      log.write(c);
      if (listening) return;
      seen += c.toString();
      if (seen.includes('Waiting for vhost-user socket connection')) {
        listening = true;
        clearTimeout(timer);
        resolve();
      }
    };
    t.child.stderr?.on('data', onData);
    t.child.stdout?.on('data', onData);
    void t.exited.then((code) => {
      clearTimeout(timer);
      log.end();
      reject(new LabError(`virtiofsd exited (${code}) before listening (it needs root):\n${seen}`));
    });
  });
  try {
    await ready;
  } catch (err) {
    await t.kill();
    throw err;
  }
  return t;
}

type Outcome = 'exited' | 'timeout' | 'aborted' | 'stalled';

function waitForExit(t: Tracked, timeoutMs: number, signal: AbortSignal | undefined, stalled: () => boolean): Promise<Outcome> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    const watchdog = setInterval(() => {
      if (stalled()) finish('stalled');
    }, 1000);
    const onAbort = (): void => finish('aborted');
    signal?.addEventListener('abort', onAbort, { once: true });
    void t.exited.then(() => finish('exited'));
    function finish(o: Outcome): void {
      clearTimeout(timer);
      clearInterval(watchdog);
      signal?.removeEventListener('abort', onAbort);
      resolve(o);
    }
  });
}
