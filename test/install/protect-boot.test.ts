// install.sh --protect-boot and the boot files (installer/boot): shellcheck, the pure shell
// functions of the initramfs library, argument checks, the dry run, ferry-boot-setup on a real
// ext4 file system (a loop device), and --uninstall's boot entries. The initramfs script itself
// runs in the VM lab (test/vm/boot-protect.test.ts); the whole thing in a Debian guest (bootvm).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { makeTempDir, REPO_ROOT } from '../helpers/receiver-process';
import { INSTALL_SH, makePackage, run, scratchRoot, STACK_TRACE } from './cli-run';

const CI = process.env.CI === 'true';
const BOOT = path.join(REPO_ROOT, 'installer', 'boot');
const LIB = path.join(BOOT, 'ferry-boot-lib.sh');
const SETUP = path.join(BOOT, 'ferry-boot-setup');
const FP = Array.from({ length: 32 }, () => 'AB').join(':');
const work = makeTempDir('protect-boot');
let pkg: string;

const isRoot = process.getuid?.() === 0;

function has(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}

/** Outside CI a missing tool (or not being root) skips the check with a note; in CI it fails. */
function requireOrSkip(ok: boolean, note: string, skip: (note: string) => void): boolean {
  if (ok) return true;
  if (CI) throw new Error(note);
  skip(note);
  return false;
}

function sh(script: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('sh', ['-c', `. "${LIB}"; ${script}`], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', FERRY_BOOT_KMSG: '0' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function installSh(args: string[], env: Record<string, string> = {}): ReturnType<typeof run> {
  return run('bash', [INSTALL_SH, ...args], { env: { FERRY_INSTALL_NO_SYSTEMCTL: '1', ...env } });
}

function receiverArgs(root: string): string[] {
  return ['--package', pkg, ...scratchRoot(root).args, '--receiver', 'wss://127.0.0.1:9', '--fingerprint', FP, '--no-register'];
}

/** A 64 MiB ext4 image on a loop device, mounted: a "root file system on a whole disk". */
interface LoopRoot {
  dev: string;
  mount: string;
  close(): void;
}

function loopRoot(name: string): LoopRoot {
  const img = path.join(work, `${name}.img`);
  const mount = path.join(work, `${name}.mnt`);
  fs.writeFileSync(img, '');
  fs.truncateSync(img, 64 * 1024 * 1024);
  const mk = spawnSync('mkfs.ext4', ['-q', '-F', img], { encoding: 'utf8' });
  if (mk.status !== 0) throw new Error(`mkfs.ext4: ${mk.stderr}`);
  const lo = spawnSync('losetup', ['-f', '--show', img], { encoding: 'utf8' });
  if (lo.status !== 0) throw new Error(`losetup: ${lo.stderr}`);
  const dev = lo.stdout.trim();
  fs.mkdirSync(mount);
  const m = spawnSync('mount', [dev, mount], { encoding: 'utf8' });
  if (m.status !== 0) {
    spawnSync('losetup', ['-d', dev]);
    throw new Error(`mount: ${m.stderr}`);
  }
  return {
    dev,
    mount,
    close() {
      spawnSync('chattr', ['-R', '-i', mount]);
      spawnSync('umount', [mount]);
      spawnSync('losetup', ['-d', dev]);
    },
  };
}

beforeAll(() => {
  pkg = makePackage(work);
});

afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('boot protection files', () => {
  it('pass shellcheck (POSIX sh for what runs in the initramfs and at shutdown)', (ctx) => {
    if (!requireOrSkip(has('shellcheck'), 'shellcheck is not installed (CI installs it)', (n) => ctx.skip(n))) return;
    const posix = [LIB, 'initramfs-tools/hooks/ferry', 'initramfs-tools/scripts/local-top/ferry', 'systemd-shutdown/ferry-boot.shutdown', 'dracut/90ferry/ferry-boot.sh'].map((f) => path.resolve(BOOT, f));
    const a = spawnSync('shellcheck', ['-s', 'sh', '-x', ...posix], { encoding: 'utf8', cwd: BOOT });
    expect(a.status, a.stdout).toBe(0);
    const b = spawnSync('shellcheck', ['-x', SETUP, path.join(BOOT, 'dracut/90ferry/module-setup.sh'), path.join(REPO_ROOT, 'test/vm/boot-protect-guest.sh')], { encoding: 'utf8' });
    expect(b.status, b.stdout).toBe(0);
  });

  it('the initramfs library: config parsing, the metadata table, which ROOT is the protected root', () => {
    const conf = path.join(work, 'boot.conf');
    fs.writeFileSync(
      conf,
      [
        '# comment',
        'FERRY_BOOT_VERSION=1',
        'FERRY_BOOT_UUID=6aeb3b6b-f823-4116-add6-50638d3a42e0',
        'FERRY_BOOT_DISK_NAME=vda',
        'FERRY_BOOT_DISK_SECTORS=131072',
        'FERRY_BOOT_HEADER_SECTOR=17410',
        'FERRY_BOOT_META_SECTORS=24',
        'FERRY_BOOT_META_EXTENTS="17418:16 20000:8"',
        'FERRY_BOOT_ROOT_PART=1',
        'FERRY_BOOT_ROOT_DEV=/dev/vda1',
        'FERRY_BOOT_ROOT_UUID=c7aa9c92-3184-4670-85d8-03d2b9955565',
        'FERRY_BOOT_ROOT_PARTUUID=0d3c-01',
        'FERRY_BOOT_ROOT_LABEL=rootfs',
        'FERRY_BOOT_SOMETHING_NEW=ignored',
        '',
      ].join('\n'),
    );
    const table = sh(`ferry_conf_load ${conf} && ferry_meta_table /dev/vda && ferry_header_line`);
    expect(table.status, table.stderr).toBe(0);
    expect(table.stdout).toBe('0 16 linear /dev/vda 17418\n16 8 linear /dev/vda 20000\nFERRYBOOT1 uuid=6aeb3b6b-f823-4116-add6-50638d3a42e0 disk_sectors=131072 meta_sectors=24');

    const matches = (root: string): boolean => sh(`ferry_conf_load ${conf} && ferry_root_matches '${root}'`).status === 0;
    for (const yes of ['UUID=c7aa9c92-3184-4670-85d8-03d2b9955565', '/dev/disk/by-uuid/c7aa9c92-3184-4670-85d8-03d2b9955565', 'PARTUUID=0d3c-01', 'LABEL=rootfs', '/dev/disk/by-label/rootfs', '/dev/vda1']) {
      expect(matches(yes), yes).toBe(true);
    }
    for (const no of ['', 'UUID=other', 'LABEL=data', '/dev/vda2', '/dev/mapper/vg-root', 'PARTLABEL=root', 'nfs:server:/x']) {
      expect(matches(no), no).toBe(false);
    }

    // Extents that do not add up to the metadata size are refused; so are odd values and versions.
    const bad = (text: string): { status: number | null; stderr: string } => {
      fs.writeFileSync(conf, text);
      return sh(`ferry_conf_load ${conf} && ferry_meta_table /dev/vda`);
    };
    const base = 'FERRY_BOOT_VERSION=1\nFERRY_BOOT_UUID=u\nFERRY_BOOT_DISK_SECTORS=8\nFERRY_BOOT_HEADER_SECTOR=1\nFERRY_BOOT_META_SECTORS=24\n';
    expect(bad(`${base}FERRY_BOOT_META_EXTENTS="100:16"\n`).status).not.toBe(0);
    const shell = bad(`${base}FERRY_BOOT_META_EXTENTS="$(reboot)"\n`);
    expect(shell.status).not.toBe(0);
    expect(shell.stderr).toMatch(/^ferry: boot config .* bad value for FERRY_BOOT_META_EXTENTS/m);
    expect(bad(base.replace('VERSION=1', 'VERSION=2') + 'FERRY_BOOT_META_EXTENTS="1:24"\n').stderr).toMatch(/unsupported version '2'/);
    expect(bad('FERRY_BOOT_VERSION=1\n').stderr).toMatch(/is incomplete/);
    expect(sh(`ferry_conf_load ${path.join(work, 'missing.conf')}`).stderr).toMatch(/^ferry: no boot config/);
  });

  it('install.sh refuses bad --protect-boot input with one line, before changing anything', async () => {
    const root = path.join(work, 'bad');
    const notBlock = path.join(work, 'not-a-disk');
    fs.writeFileSync(notBlock, 'x');
    const cases: [string[], number, RegExp][] = [
      [[...receiverArgs(root), '--protect-boot', 'vda1'], 2, /--protect-boot must be an absolute path/],
      [[...receiverArgs(root), '--boot-meta', '/dev/vda3'], 2, /--boot-meta needs --protect-boot/],
      [[...receiverArgs(root), '--protect-boot', '/dev/vda', '--capture', 'scan'], 2, /does not go with --capture scan/],
      [[...receiverArgs(root), '--protect-boot', '/dev/vda', '--volume', `boot=${notBlock}`], 2, /adds the volume 'boot': choose another id/],
      [['--package', pkg, ...scratchRoot(root).args, '--protect-boot', '/dev/vda'], 2, /--protect-boot needs --receiver/],
      [['--uninstall', ...scratchRoot(root).args, '--protect-boot', '/dev/vda'], 2, /are install options/],
      [[...receiverArgs(root), '--protect-boot', '/dev/nonexistent-disk'], 2, /--protect-boot: \/dev\/nonexistent-disk does not exist/],
      [[...receiverArgs(root), '--protect-boot', notBlock], 2, /is not a block device/],
    ];
    for (const [args, code, message] of cases) {
      const r = await installSh(args);
      expect(r.status, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(code);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).not.toMatch(STACK_TRACE);
      expect(r.stdout).toMatch(/ferry-install: FAILED: /);
      expect(fs.existsSync(root)).toBe(false);
    }
  });
});

describe('boot protection on a real ext4 file system (loop device; needs root)', () => {
  let loop: LoopRoot | undefined;

  const ready = isRoot && has('losetup') && has('filefrag') && has('chattr');
  const note = 'needs root, losetup, filefrag and chattr (CI has them)';
  if (!ready && CI) throw new Error(note);
  if (!ready) console.warn(`test/install/protect-boot.test.ts: loop-device tests SKIPPED: ${note}`);

  beforeAll(() => {
    if (ready) loop = loopRoot('root');
  });

  afterAll(() => loop?.close());

  it('a disk that does not hold the root is refused (exit 3)', async (ctx) => {
    if (!loop) return ctx.skip();
    const r = await installSh([...receiverArgs(path.join(work, 'notroot')), '--protect-boot', loop.dev]);
    expect(r.status, r.stdout + r.stderr).toBe(3);
    expect(r.stderr).toMatch(new RegExp(`the root file system at / is on /dev/\\S+, not on ${loop.dev}`));
  });

  it('the dry run says what is protected, writes bootProtected into the config, changes nothing', async (ctx) => {
    if (!loop) return ctx.skip();
    const root = path.join(work, 'dry');
    const s = scratchRoot(root);
    const r = await installSh([...receiverArgs(root), '--protect-boot', loop.dev, '--dry-run'], { FERRY_INSTALL_BOOT_ROOT: loop.mount });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`boot disk: the whole disk ${loop.dev} (64.0 MiB) is protected as volume 'boot' (the root file system is on ${loop.dev})`);
    expect(r.stdout).toContain(`dm-ferry metadata: the file ${loop.mount}/var/lib/ferry/boot/boot.meta (12.0 KiB, preallocated, immutable)`);
    expect(r.stdout).toContain(`==> boot protection of ${loop.dev} (dm-ferry from the next boot)`);
    const yaml = /write .*agent\.yaml \(mode 0640\):\n((?:\s+\| .*\n)+)/.exec(r.stdout)?.[1] ?? '';
    expect(YAML.parse(yaml.replace(/^\s+\| ?/gm, '')).volumes).toEqual([{ id: 'boot', path: loop.dev, bootProtected: true }]);
    for (const file of ['/etc/initramfs-tools/hooks/ferry', '/etc/initramfs-tools/scripts/local-top/ferry', '/system-shutdown/ferry-boot.shutdown', '/etc/udev/rules.d/61-ferry-boot.rules']) {
      expect(r.stdout).toMatch(new RegExp(`\\[dry-run\\] write \\S*${file.replace(/\//g, '\\/')} \\(mode 07?[0-9]{3}\\)`));
    }
    expect(r.stdout).toContain(`FERRY_LIB=${s.prefix}/installer/boot/ferry-boot-lib.sh`);
    expect(r.stdout).toContain(`CONF=${s.config}/boot.conf`);
    expect(r.stdout).toMatch(new RegExp(`\\[dry-run\\] \\S+/installer/boot/ferry-boot-setup create ${loop.dev} --conf ${s.config}/boot.conf`));
    expect(r.stdout).toMatch(/\[dry-run\] (update-initramfs -u -k all|dracut -f --regenerate-all)/);
    expect(r.stdout).toMatch(/ferry-install: OK \(dry run, nothing changed\)/);
    expect(fs.existsSync(root)).toBe(false);
    expect(fs.existsSync(path.join(loop.mount, 'var'))).toBe(false);
  });

  it('ferry-boot-setup: the metadata file is zero-filled, immutable, its header is where the config says on the raw disk; remove takes it away', (ctx) => {
    if (!loop) return ctx.skip();
    const conf = path.join(work, 'setup', 'boot.conf');
    const r = spawnSync(SETUP, ['create', loop.dev, '--root', loop.mount, '--conf', conf], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`DISK=${loop.dev}\nDISK_BYTES=67108864\nROOT=${loop.dev}\nROOT_PART=0\nMETA_KIND=file`);
    const text = fs.readFileSync(conf, 'utf8');
    const value = (k: string): string => new RegExp(`^${k}="?([^"\\n]*)"?$`, 'm').exec(text)?.[1] ?? '';
    const meta = path.join(loop.mount, 'var/lib/ferry/boot/boot.meta');
    expect(value('FERRY_BOOT_META_PATH')).toBe(meta);
    expect(value('FERRY_BOOT_DISK_SECTORS')).toBe('131072');
    // 64 MiB at 64 KiB per bit: 1024 bits = 128 bytes of bitmap -> 4096 + 4096 bytes for dm-ferry.
    expect(value('FERRY_BOOT_META_SECTORS')).toBe('16');
    expect(fs.statSync(meta).size).toBe(4096 + 8192);
    expect(spawnSync('lsattr', [meta], { encoding: 'utf8' }).stdout.slice(4, 5)).toBe('i');
    const extents = value('FERRY_BOOT_META_EXTENTS').split(' ').map((e) => e.split(':').map(Number));
    expect(extents.reduce((n, [, len]) => n + len, 0)).toBe(16);
    // Through the raw device: the header line at HEADER_SECTOR, zeros in the metadata extents.
    const fd = fs.openSync(loop.dev, 'r');
    try {
      const header = Buffer.alloc(512);
      fs.readSync(fd, header, 0, 512, Number(value('FERRY_BOOT_HEADER_SECTOR')) * 512);
      expect(header.toString('latin1').split('\n')[0]).toBe(`FERRYBOOT1 uuid=${value('FERRY_BOOT_UUID')} disk_sectors=131072 meta_sectors=16`);
      for (const [start, len] of extents) {
        const buf = Buffer.alloc(len * 512, 1);
        fs.readSync(fd, buf, 0, buf.length, start * 512);
        expect(buf.every((b) => b === 0)).toBe(true);
      }
    } finally {
      fs.closeSync(fd);
    }
    // The initramfs library finds the disk by its size and header (its sysfs and /dev).
    const found = sh(`FERRY_BOOT_WAIT=0; ferry_conf_load ${conf} && ferry_find_disk`);
    expect(found.stdout).toBe(path.basename(loop.dev));

    // A second create refuses to overwrite; remove takes the file and the config away.
    const again = spawnSync(SETUP, ['create', loop.dev, '--root', loop.mount, '--conf', conf], { encoding: 'utf8' });
    expect(again.status).toBe(3);
    expect(again.stderr).toMatch(/boot\.meta exists/);
    const rm = spawnSync(SETUP, ['remove', '--conf', conf], { encoding: 'utf8' });
    expect(rm.status, rm.stderr).toBe(0);
    expect(fs.existsSync(meta)).toBe(false);
    expect(fs.existsSync(conf)).toBe(false);
  });

  it('--uninstall undoes the boot entries of the manifest: metadata and config, hook files, then the initramfs', async (ctx) => {
    if (!loop) return ctx.skip();
    const root = path.join(work, 'uninstall');
    const s = scratchRoot(root);
    // An installed prefix as far as --uninstall looks: its boot tools and its manifest.
    fs.mkdirSync(path.join(s.prefix, 'installer'), { recursive: true });
    fs.cpSync(BOOT, path.join(s.prefix, 'installer', 'boot'), { recursive: true });
    const manifest = path.join(s.prefix, 'installer', 'install-manifest');
    fs.writeFileSync(manifest, `dir\t${root}\n`);
    // What step_boot records, with its system files under the scratch root.
    const conf = path.join(s.config, 'boot.conf');
    const made = spawnSync(SETUP, ['create', loop.dev, '--root', loop.mount, '--conf', conf], { encoding: 'utf8' });
    expect(made.status, made.stderr).toBe(0);
    const hook = path.join(root, 'etc/initramfs-tools/hooks/ferry');
    fs.mkdirSync(path.dirname(hook), { recursive: true });
    fs.writeFileSync(hook, '#!/bin/sh\n');
    fs.appendFileSync(manifest, `initramfs\tinitramfs-tools\nfile\t${hook}\nbootconf\t${conf}\n`);

    const dry = await installSh(['--uninstall', ...s.args, '--dry-run']);
    expect(dry.status, dry.stdout + dry.stderr).toBe(0);
    const order = ['ferry-boot-setup remove --conf', `rm -f -- ${hook}`, 'update-initramfs -u -k all'].map((needle) => dry.stdout.indexOf(needle));
    expect(order.every((i) => i >= 0), dry.stdout).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    expect(fs.existsSync(conf)).toBe(true);

    // For real, without the initramfs entry (this host's initramfs is not the test's to touch).
    fs.writeFileSync(manifest, fs.readFileSync(manifest, 'utf8').replace('initramfs\tinitramfs-tools\n', ''));
    const un = await installSh(['--uninstall', ...s.args]);
    expect(un.status, un.stdout + un.stderr).toBe(0);
    expect(fs.existsSync(path.join(loop.mount, 'var/lib/ferry/boot/boot.meta'))).toBe(false);
    expect(fs.existsSync(conf)).toBe(false);
    expect(fs.existsSync(hook)).toBe(false);
    expect(fs.existsSync(root)).toBe(false);
  });
});
