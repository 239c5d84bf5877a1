// installer/install.sh run locally into scratch roots: shellcheck, the systemd unit, dry run,
// install/upgrade/uninstall round trips, rollback after a failure at every step, bad input.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { makeTempDir, REPO_ROOT, startReceiverProcess, writePassphrase } from '../helpers/receiver-process';
import { INSTALL_SH, listTree, makePackage, run, scratchRoot, STACK_TRACE } from './cli-run';

const CI = process.env.CI === 'true';
const work = makeTempDir('install-sh');
let pkg: string;
let image: string;
const FP = Array.from({ length: 32 }, () => 'AB').join(':');

function has(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}

/**
 * In CI (CI=true) every tool must be there: a missing one fails the test. Elsewhere the check is
 * skipped through `skip`, which says so.
 */
function requireTool(tool: string, skip: (note: string) => void): boolean {
  if (has(tool)) return true;
  const note = `${tool} is not installed (CI installs it, see .ci/run)`;
  if (CI) throw new Error(note);
  skip(note);
  return false;
}

function installSh(args: string[], env: Record<string, string> = {}, input = ''): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return run('bash', [INSTALL_SH, ...args], { env, input });
}

function baseArgs(root: string, extra: string[] = []): string[] {
  return ['--package', pkg, ...scratchRoot(root).args, '--receiver', 'wss://127.0.0.1:9', '--fingerprint', FP, '--volume', `vol1=${image}`, '--no-register', ...extra];
}

beforeAll(() => {
  pkg = makePackage(work);
  image = path.join(work, 'vol.img');
  fs.writeFileSync(image, Buffer.alloc(1024 * 1024));
});

afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('installer/install.sh', () => {
  it('passes shellcheck (install.sh and the packaging scripts)', (ctx) => {
    requireTool('shellcheck', (note) => ctx.skip(note));
    const scripts = ['install.sh', 'make-package.sh', 'make-windows-package.sh'].map((f) => path.join(REPO_ROOT, 'installer', f));
    const r = spawnSync('shellcheck', ['-x', ...scripts], { encoding: 'utf8' });
    expect(r.status, r.stdout).toBe(0);
  });

  it('a dry run prints every step and changes nothing', async () => {
    const root = path.join(work, 'dry');
    const r = await installSh([...baseArgs(root), '--dry-run']);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    for (const step of ['unpack the agent', 'kernel capture module', 'install the agent into', 'configuration in', 'register with the receiver', '==> service', '==> finish']) {
      expect(r.stdout).toContain(step);
    }
    expect(r.stdout).toMatch(/\[dry-run\] mv -- .*ferry\.new\.\d+ .*opt\/ferry/);
    expect(r.stdout).toMatch(/\[dry-run\] write .*agent\.yaml \(mode 0640\)/);
    expect(r.stdout).toMatch(/\|\s+ExecStart=.*\/bin\/ferry agent run --config .*agent\.yaml/);
    expect(r.stdout).toMatch(/ferry-install: OK \(dry run, nothing changed\)/);
    expect(fs.existsSync(root)).toBe(false);
  });

  it('installs, upgrades in place, and uninstalls without leaving anything behind', async () => {
    const root = path.join(work, 'roundtrip');
    const s = scratchRoot(root);
    const first = await installSh(baseArgs(root));
    expect(first.status, first.stdout + first.stderr).toBe(0);
    expect(first.stdout).toMatch(/ferry-install: OK agent 0\.1\.0 in .*capture scan/);
    // Without dm-ferry sources or dkms, auto capture falls back to scan with a clear warning.
    expect(first.stderr).toMatch(/warning: .*falling back to scan capture/);
    const config = fs.readFileSync(path.join(s.config, 'agent.yaml'), 'utf8');
    expect(YAML.parse(config)).toEqual({
      receiver: { url: 'wss://127.0.0.1:9', fingerprint: FP },
      stateDir: s.state,
      capture: 'scan',
      volumes: [{ id: 'vol1', path: image }],
    });
    expect(fs.statSync(path.join(s.config, 'agent.yaml')).mode & 0o777).toBe(0o640);
    expect(fs.statSync(s.state).mode & 0o777).toBe(0o700);
    // The installed launcher runs the bundled Node.
    const version = spawnSync(path.join(s.prefix, 'bin', 'ferry'), ['--version'], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin' } });
    expect(version.stdout.trim()).toBe('0.1.0');
    expect(fs.existsSync(path.join(s.prefix, 'runtime', 'node'))).toBe(true);
    expect(fs.existsSync(path.join(s.prefix, 'build', 'Release', 'ferry_native.node'))).toBe(true);
    expect(fs.existsSync(path.join(s.prefix, 'node_modules', 'vitest'))).toBe(false);
    expect(fs.existsSync(path.join(s.prefix, 'node_modules', 'ws'))).toBe(true);

    const unit = path.join(s.unitDir, 'ferry-agent.service');
    if (requireTool('systemd-analyze', (note) => console.warn(`unit not verified: ${note}`))) {
      const verify = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
      expect(verify.status, verify.stderr).toBe(0);
      expect(verify.stderr).not.toMatch(/ferry-agent\.service:\d+:/);
    }
    const unitText = fs.readFileSync(unit, 'utf8');
    expect(unitText).toMatch(/^Restart=on-failure$/m);
    expect(unitText).toMatch(/^StandardError=journal$/m);
    expect(unitText).toMatch(/^ProtectSystem=strict$/m);
    expect(unitText).toContain(`ReadWritePaths=${s.state}`);
    // ebpf capture: the tracker is loaded (CAP_BPF, CAP_PERFMON) and pinned in the BPF file system.
    // /sys stays writable for the pin (ProtectKernelTunables would make it read-only).
    expect(unitText).not.toMatch(/^ProtectKernelTunables=yes$/m);
    expect(unitText).toMatch(/^CapabilityBoundingSet=.*\bCAP_BPF\b.*\bCAP_PERFMON\b/m);

    // Again, without receiver options: an upgrade that keeps the config.
    const before = listTree(root);
    const again = await installSh(['--package', pkg, ...s.args, '--no-register']);
    expect(again.status, again.stdout + again.stderr).toBe(0);
    expect(again.stdout).toContain('keeping the existing');
    expect(fs.readFileSync(path.join(s.config, 'agent.yaml'), 'utf8')).toBe(config);
    expect(listTree(root)).toEqual(before);

    const un = await installSh(['--uninstall', ...s.args]);
    expect(un.status, un.stdout + un.stderr).toBe(0);
    expect(un.stdout).toMatch(/ferry-install: OK uninstalled/);
    expect(fs.existsSync(root)).toBe(false);
    // A second uninstall has nothing to do.
    const twice = await installSh(['--uninstall', ...s.args]);
    expect(twice.status).toBe(0);
    expect(twice.stdout).toMatch(/nothing installed/);
  });

  it('rolls back completely when any step fails', async () => {
    for (const step of ['unpack', 'kernel-module', 'files', 'config', 'register', 'service']) {
      const root = path.join(work, `fail-${step}`);
      const r = await installSh(baseArgs(root), { FERRY_INSTALL_FAIL_AFTER: step });
      expect(r.status, `${step}: ${r.stdout}${r.stderr}`).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`install\\.sh: error: injected failure after step '${step}'`));
      expect(r.stdout).toMatch(/ferry-install: FAILED: injected failure/);
      expect(listTree(root), step).toEqual([]);
      expect(fs.existsSync(root), step).toBe(false);
    }
  });

  it('a failed upgrade restores the previous install exactly', async () => {
    const root = path.join(work, 'upgrade-fail');
    const s = scratchRoot(root);
    expect((await installSh(baseArgs(root))).status).toBe(0);
    const snapshot = listTree(root);
    const config = fs.readFileSync(path.join(s.config, 'agent.yaml'), 'utf8');
    const r = await installSh(baseArgs(root, ['--name', 'renamed']), { FERRY_INSTALL_FAIL_AFTER: 'service' });
    expect(r.status).toBe(1);
    expect(listTree(root)).toEqual(snapshot);
    expect(fs.readFileSync(path.join(s.config, 'agent.yaml'), 'utf8')).toBe(config);
    expect((await installSh(['--uninstall', ...s.args])).status).toBe(0);
    expect(fs.existsSync(root)).toBe(false);
  });

  it('registers with a real receiver (passphrase on stdin), and a wrong passphrase rolls back', async () => {
    const pass = writePassphrase(work);
    const rx = await startReceiverProcess(path.join(work, 'rx'), pass.file);
    try {
      const args = (root: string): string[] => ['--package', pkg, ...scratchRoot(root).args, '--receiver', rx.url, '--fingerprint', rx.fingerprint, '--volume', `regvol=${image}`, '--name', 'reg-agent'];
      const bad = await installSh(args(path.join(work, 'reg-bad')), {}, 'wrong passphrase\n');
      expect(bad.status, bad.stdout + bad.stderr).toBe(5);
      expect(bad.stderr).toMatch(/registration refused: the receiver did not accept the passphrase/);
      expect(fs.existsSync(path.join(work, 'reg-bad'))).toBe(false);

      const root = path.join(work, 'reg-ok');
      const ok = await installSh(args(root), {}, `${pass.passphrase}\n`);
      expect(ok.status, ok.stdout + ok.stderr).toBe(0);
      expect(ok.stdout).toMatch(/registered as/);
      expect(ok.stdout + ok.stderr).not.toContain(pass.passphrase);
      // Re-running does not register a second identity.
      const again = await installSh(args(root));
      expect(again.status, again.stdout + again.stderr).toBe(0);
      expect(again.stdout).toMatch(/already registered with wss:/);
      expect((await installSh(['--uninstall', ...scratchRoot(root).args])).status).toBe(0);
      expect(fs.existsSync(root)).toBe(false);

      const unreachable = await installSh([...args(path.join(work, 'reg-unreach')).map((a) => (a === rx.url ? 'wss://127.0.0.1:9' : a))], {}, `${pass.passphrase}\n`);
      expect(unreachable.status, unreachable.stdout + unreachable.stderr).toBe(6);
      expect(unreachable.stderr).toMatch(/receiver at wss:\/\/127\.0\.0\.1:9 is unreachable/);
      expect(fs.existsSync(path.join(work, 'reg-unreach'))).toBe(false);
    } finally {
      await rx.stop();
    }
  });

  it('refuses bad input with a clear line and exit 2, before changing anything', async () => {
    const root = path.join(work, 'bad');
    const cases: [string[], RegExp][] = [
      [['--frobnicate'], /unknown option '--frobnicate'/],
      [['--passphrase', 'secret'], /not accepted on the command line/],
      [baseArgs(root, ['--capture', 'magic']), /--capture must be auto, kernel, ebpf or scan/],
      [['--package', pkg, ...scratchRoot(root).args, '--receiver', 'http://x', '--fingerprint', FP, '--volume', `v=${image}`], /--receiver must use wss:\/\//],
      [['--package', pkg, ...scratchRoot(root).args, '--receiver', 'wss://x:1', '--fingerprint', 'AB:CD', '--volume', `v=${image}`], /SHA-256 fingerprint/],
      [['--package', pkg, ...scratchRoot(root).args, '--receiver', 'wss://x:1', '--fingerprint', FP], /at least one --volume/],
      [['--package', pkg, ...scratchRoot(root).args, '--receiver', 'wss://x:1', '--fingerprint', FP, '--volume', 'bad id=/x'], /volume id "bad id" must be/],
      [['--package', pkg, ...scratchRoot(root).args, '--receiver', 'wss://x:1', '--fingerprint', FP, '--volume', `a..b=${image}`], /volume id "a\.\.b" must be/],
      [['--package', pkg, ...scratchRoot(root).args, '--receiver', 'wss://x:1', '--fingerprint', FP, '--volume', `v=${image}`, '--name', '../x'], /--name "\.\.\/x" must be/],
      [['--package', pkg, ...scratchRoot(root).args, '--receiver', 'wss://x:1', '--volume', `v=${image}`], /needs --fingerprint FP or --ca-file FILE/],
      [['--package', pkg, ...scratchRoot(root).args, '--receiver', 'wss://x:1', '--ca-file', image, '--volume', `v=${image}`], /holds no PEM certificate/],
      [['--package', pkg, ...scratchRoot(root).args, '--receiver', 'wss://x:1', '--fingerprint', FP, '--volume', 'v=/nonexistent/disk'], /neither a block device nor a file/],
      [['--package', pkg, ...scratchRoot(root).args, '--no-register'], /required for a first install/],
      [['--prefix', 'relative/path'], /--prefix must be an absolute path/],
    ];
    for (const [args, message] of cases) {
      const r = await installSh(args);
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).not.toMatch(STACK_TRACE);
      expect(fs.existsSync(root)).toBe(false);
    }
    const notPackage = path.join(work, 'not-a-package.tar.gz');
    fs.writeFileSync(notPackage, 'garbage');
    const r = await installSh(['--package', notPackage, ...scratchRoot(root).args, '--receiver', 'wss://x:1', '--fingerprint', FP, '--volume', `v=${image}`, '--no-register']);
    expect(r.status).toBe(3);
    expect(r.stderr).toMatch(/cannot unpack .*not a ferry agent package/);
  });
});
