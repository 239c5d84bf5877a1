// Windows side, checked on Linux: install.ps1 parses with a PowerShell grammar (tree-sitter), the
// service host compiles (mono's C# compiler), and push-install --smb against a real Samba server
// (SMB3, signing mandatory) copies the package byte-exact, sends the svcctl request and reports
// Samba's refusal as a per-host error.
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { powershellSyntaxErrors } from '../helpers/powershell';
import { makeTempDir, REPO_ROOT } from '../helpers/receiver-process';
import { ferry, listTree, RunResult, STACK_TRACE } from './cli-run';
import { freePort, Smbd, startSmbd } from './peers';

const CI = process.env.CI === 'true';
const work = makeTempDir('windows');
const INSTALL_PS1 = path.join(REPO_ROOT, 'installer', 'install.ps1');
const SERVICE_CS = path.join(REPO_ROOT, 'installer', 'windows', 'FerryService.cs');
const FP = Array.from({ length: 32 }, () => 'CD').join(':');
let smbd: Smbd;
let winPkg: string;
let passwordFile: string;
let passphraseFile: string;

function has(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function smbTarget(port = smbd.port): string {
  return `//127.0.0.1:${port}/ADMIN$`;
}

function resultLine(r: RunResult, label: string): string {
  const line = r.stdout.split('\n').find((l) => l.startsWith(`${label} `));
  if (!line) throw new Error(`no result line for ${label}:\n${r.stdout}\n${r.stderr}`);
  return line;
}

function tempSecrets(): string[] {
  return fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('ferry-smb-'));
}

beforeAll(async () => {
  // A Windows package with the real layout; node.exe and the win32 modules are stand-ins
  // (random bytes) because Windows builds cannot be made here: the copy is what is tested.
  const parts = path.join(work, 'parts');
  fs.mkdirSync(path.join(parts, 'modules', 'better-sqlite3', 'build', 'Release'), { recursive: true });
  fs.writeFileSync(path.join(parts, 'node.exe'), crypto.randomBytes(6 * 1024 * 1024 + 123));
  fs.writeFileSync(path.join(parts, 'modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node'), crypto.randomBytes(700_001));
  fs.writeFileSync(path.join(parts, 'modules', 'better-sqlite3', 'package.json'), '{"name":"better-sqlite3"}\n');
  winPkg = path.join(work, 'ferry-agent-windows');
  const made = spawnSync('bash', [path.join(REPO_ROOT, 'installer', 'make-windows-package.sh'), '--node-exe', path.join(parts, 'node.exe'), '--modules', path.join(parts, 'modules'), '--out', winPkg], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`make-windows-package.sh failed: ${made.stderr}`);
  passwordFile = path.join(work, 'smb-password');
  fs.writeFileSync(passwordFile, 'S3cret-smb-pass\n', { mode: 0o600 });
  passphraseFile = path.join(work, 'passphrase');
  fs.writeFileSync(passphraseFile, 'registration-passphrase-xyz\n', { mode: 0o600 });
  smbd = await startSmbd(path.join(work, 'samba'), 'S3cret-smb-pass');
});

afterAll(async () => {
  await smbd?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('Windows installer', () => {
  it('install.ps1 parses without syntax errors (tree-sitter PowerShell grammar)', async () => {
    const source = fs.readFileSync(INSTALL_PS1, 'utf8');
    expect(await powershellSyntaxErrors(source)).toEqual([]);
    // The check is real: a dropped brace or an unbalanced quote is caught.
    expect((await powershellSyntaxErrors(source.replace('function Write-Step {', 'function Write-Step {{'))).length).toBeGreaterThan(0);
    expect((await powershellSyntaxErrors(source.replace('Stop-Install 3 "kernel capture was requested but', 'Stop-Install 3 "kernel capture was requested" but'))).length).toBeGreaterThan(0);
  });

  it('the service host (FerryService.cs) compiles against System.ServiceProcess', () => {
    if (!has('mcs')) {
      if (CI) throw new Error('mcs is not installed (CI installs mono-mcs and libmono-system-serviceprocess4.0-cil)');
      return;
    }
    const out = path.join(work, 'ferry-service.exe');
    const r = spawnSync('mcs', ['-target:exe', '-warnaserror+', '-r:System.ServiceProcess.dll', `-out:${out}`, SERVICE_CS], { encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(fs.readFileSync(out).subarray(0, 2).toString('latin1')).toBe('MZ');
  });

  it('push-install --smb copies the package byte-exact over SMB3 and reports the svcctl answer per host', async () => {
    const secretsBefore = tempSecrets();
    const r = await ferry([
      'push-install',
      '--smb',
      smbTarget(),
      '--smb-user',
      smbd.user,
      '--smb-password-file',
      passwordFile,
      '--windows-package',
      winPkg,
      '--receiver',
      'wss://receiver.example:7443',
      '--fingerprint',
      FP,
      '--volume',
      'sys=C:',
      '--passphrase-file',
      passphraseFile,
      '--keep-remote-files',
    ]);
    expect(r.status, r.stdout + r.stderr).toBe(1);
    expect(r.stdout + r.stderr).not.toMatch(STACK_TRACE);
    expect(resultLine(r, smbTarget())).toMatch(
      /failed: svcctl create of FerryPushInstall failed: the server does not implement this svcctl call \(not a Windows SCM\) \[NT_STATUS_RPC_PROCNUM_OUT_OF_RANGE\]; WinRM over HTTPS is the alternative/,
    );
    // Secrets: not in the output, no credentials file left behind, passphrase removed from the share.
    expect(r.stdout + r.stderr).not.toContain('S3cret-smb-pass');
    expect(r.stdout + r.stderr).not.toContain('registration-passphrase-xyz');
    expect(tempSecrets()).toEqual(secretsBefore);

    const pushed = fs.readdirSync(path.join(smbd.shareDir, 'Temp')).filter((n) => n.startsWith('ferry-push-'));
    expect(pushed).toHaveLength(1);
    const remote = path.join(smbd.shareDir, 'Temp', pushed[0]);
    const localFiles = listTree(winPkg).filter((f) => fs.statSync(path.join(winPkg, f)).isFile());
    expect(localFiles.length).toBeGreaterThan(20);
    expect(listTree(remote).filter((f) => fs.statSync(path.join(remote, f)).isFile())).toEqual(localFiles);
    for (const f of localFiles) expect(sha256(path.join(remote, f)), f).toBe(sha256(path.join(winPkg, f)));
    expect(fs.existsSync(path.join(remote, 'passphrase.txt'))).toBe(false);
    fs.rmSync(remote, { recursive: true, force: true });
  });

  it('cleans the share after a failure unless asked to keep the files', async () => {
    const r = await ferry(['push-install', '--smb', smbTarget(), '--smb-user', smbd.user, '--smb-password-file', passwordFile, '--windows-package', winPkg, '--no-register']);
    expect(r.status).toBe(1);
    expect(resultLine(r, smbTarget())).toMatch(/failed: svcctl create of FerryPushInstall failed/);
    expect(fs.readdirSync(path.join(smbd.shareDir, 'Temp'))).toEqual([]);
  });

  it('reports a wrong password and an unreachable host per host, in one run', async () => {
    const wrong = path.join(work, 'wrong-password');
    fs.writeFileSync(wrong, 'not-the-password\n', { mode: 0o600 });
    const closed = await freePort();
    const r = await ferry(['push-install', '--smb', smbTarget(), '--smb', smbTarget(closed), '--smb-user', smbd.user, '--smb-password-file', wrong, '--windows-package', winPkg, '--no-register', '--connect-timeout', '5s']);
    expect(r.status).toBe(1);
    expect(r.stdout + r.stderr).not.toMatch(STACK_TRACE);
    expect(resultLine(r, smbTarget())).toMatch(/failed: SMB copy failed: authentication failed \(wrong user or password\) \[NT_STATUS_LOGON_FAILURE\]/);
    expect(resultLine(r, smbTarget(closed))).toMatch(/failed: SMB copy failed: unreachable: connection refused/);
    expect(r.stdout).toContain('0 of 2 host(s) installed, 2 failed');
    expect(fs.readdirSync(path.join(smbd.shareDir, 'Temp'))).toEqual([]);
  });

  it('refuses bad SMB arguments with exit 2', async () => {
    const cases: [string[], RegExp][] = [
      [['push-install', '--smb', 'not-a-unc'], /expected \/\/HOST\[:PORT\]\/SHARE/],
      [['push-install', '--smb', smbTarget()], /needs --smb-user/],
      [['push-install', '--smb', smbTarget(), '--smb-user', 'u', '--smb-password-file', passwordFile], /needs --windows-package/],
      [['push-install', '--smb', smbTarget(), '--smb-user', 'u', '--smb-password-file', passwordFile, '--windows-package', winPkg, '--volume', 'v=/dev/sda'], /for Windows use ID=C:/],
      [['push-install', '--smb', smbTarget(), '--smb-user', 'u', '--smb-password-file', passwordFile, '--windows-package', winPkg, '--volume', '..=C:'], /volume id "\.\." must be/],
      [['push-install', '--smb', smbTarget(), '--smb-user', 'u', '--smb-password-file', passwordFile, '--windows-package', winPkg, '--volume', 'c=C:', '--capture', 'ebpf'], /--capture ebpf is for Linux targets/],
    ];
    for (const [args, message] of cases) {
      const r = await ferry(args, { timeoutMs: 30_000 });
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).not.toMatch(STACK_TRACE);
    }
  });
});
