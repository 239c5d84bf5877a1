// Push install to one Windows host: copy the Windows package over SMB3 (smbclient), then create
// and start a one-shot bootstrap service through svcctl (`net rpc service`) that runs install.ps1,
// and wait for the result file install.ps1 writes back to the share.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { failureReason, HostResult, PushFailure } from './result';
import { explainSambaOutput, runTool, SambaContext, SmbCredentials } from './samba-tools';
import { SmbTarget } from './targets';

export interface WindowsInstallOptions {
  receiver?: string;
  fingerprint?: string;
  /** ID=DRIVE: or ID=\\?\Volume{GUID}\ */
  volumes: string[];
  name?: string;
  capture?: 'auto' | 'kernel' | 'scan';
  noRegister: boolean;
  noStart: boolean;
}

export interface SmbPushOptions {
  credentials: SmbCredentials;
  /** Local folder holding install.ps1, PACKAGE and the Windows agent files. */
  windowsPackageDir: string;
  /** Folder inside the share for the per-push folder; default Temp on ADMIN$, else the share root. */
  parentDir?: string;
  /** Windows path of the share root; default C:\Windows for ADMIN$ and X:\ for X$. */
  shareLocalPath?: string;
  serviceName: string;
  passphrase?: string;
  install: WindowsInstallOptions;
  toolTimeoutMs: number;
  resultTimeoutMs: number;
  /** Poll interval for the result file (a marker written by install.ps1). */
  pollMs: number;
  keepRemoteFiles: boolean;
  log: (label: string, line: string) => void;
}

const SAFE_REMOTE = /^[A-Za-z0-9 _.$\\-]*$/;

function shareRoot(share: string, given: string | undefined): string {
  if (given !== undefined) return given.replace(/[\\/]+$/, '');
  if (share.toUpperCase() === 'ADMIN$') return 'C:\\Windows';
  const drive = /^([A-Za-z])\$$/.exec(share);
  if (drive) return `${drive[1].toUpperCase()}:`;
  throw new PushFailure(`cannot tell where share ${share} is on the Windows host: pass --smb-share-path (e.g. D:\\Deploy)`);
}

/** The service's command line: cmd starts PowerShell detached, so the SCM start timeout cannot stop it. */
export function bootstrapCommand(localDir: string, opts: SmbPushOptions): string {
  const q = (s: string): string => `"${s}"`;
  const ps = [
    '%SystemRoot%\\System32\\WindowsPowerShell\\v1.0\\powershell.exe',
    '-NoProfile -NonInteractive -ExecutionPolicy Bypass',
    `-File ${q(`${localDir}\\install.ps1`)}`,
    `-PackageDir ${q(localDir)}`,
    `-ResultFile ${q(`${localDir}\\install-result.txt`)}`,
    `-BootstrapService ${q(opts.serviceName)}`,
  ];
  const o = opts.install;
  if (o.receiver !== undefined) ps.push(`-Receiver ${q(o.receiver)}`);
  if (o.fingerprint !== undefined) ps.push(`-Fingerprint ${q(o.fingerprint)}`);
  if (o.volumes.length > 0) ps.push(`-Volume ${o.volumes.map(q).join(',')}`);
  if (o.name !== undefined) ps.push(`-Name ${q(o.name)}`);
  if (o.capture !== undefined) ps.push(`-Capture ${o.capture}`);
  if (opts.passphrase !== undefined && !o.noRegister) ps.push(`-PassphraseFile ${q(`${localDir}\\passphrase.txt`)}`);
  if (o.noRegister) ps.push('-NoRegister');
  if (o.noStart) ps.push('-NoStart');
  return `%SystemRoot%\\System32\\cmd.exe /c start "ferry-install" /b ${ps.join(' ')}`;
}

export function checkWindowsPackage(dir: string): void {
  for (const f of ['install.ps1', 'PACKAGE']) {
    if (!fs.existsSync(path.join(dir, f))) throw new PushFailure(`${dir} is not a Windows agent package (${f} is missing)`);
  }
}

class SmbHost {
  constructor(
    private readonly target: SmbTarget,
    private readonly ctx: SambaContext,
    private readonly opts: SmbPushOptions,
  ) {}

  unc(): string {
    return `//${this.target.host}/${this.target.share}`;
  }

  smbclient(commands: string, cwd?: string): Promise<{ code: number | null; output: string }> {
    const args = [this.unc(), ...this.ctx.commonArgs(this.target, Math.ceil(this.opts.toolTimeoutMs / 1000)), '-c', commands];
    return runTool('smbclient', args, { cwd, timeoutMs: this.opts.toolTimeoutMs + 5000 });
  }

  net(...rpcArgs: string[]): Promise<{ code: number | null; output: string }> {
    const args = ['rpc', ...rpcArgs, '-S', this.target.host, '-I', this.target.host, ...this.ctx.commonArgs(this.target, Math.ceil(this.opts.toolTimeoutMs / 1000))];
    return runTool('net', args, { timeoutMs: this.opts.toolTimeoutMs + 5000 });
  }

  async readResult(remoteDir: string): Promise<string | undefined> {
    const local = path.join(this.ctx.dir, 'install-result.txt');
    fs.rmSync(local, { force: true });
    const r = await this.smbclient(`get "${remoteDir}\\install-result.txt" "${local}"`);
    if (r.code !== 0) {
      if (/NT_STATUS_OBJECT_NAME_NOT_FOUND/.test(r.output)) return undefined;
      throw new PushFailure(`cannot read the install result: ${explainSambaOutput(r.output)}`);
    }
    return fs.readFileSync(local, 'utf8').trim();
  }
}

async function pushOne(target: SmbTarget, ctx: SambaContext, opts: SmbPushOptions): Promise<string> {
  const log = (line: string): void => opts.log(target.label, line);
  const host = new SmbHost(target, ctx, opts);
  const root = shareRoot(target.share, opts.shareLocalPath);
  const parent = opts.parentDir ?? (target.share.toUpperCase() === 'ADMIN$' ? 'Temp' : '');
  if (!SAFE_REMOTE.test(parent)) throw new PushFailure(`--smb-dir ${JSON.stringify(parent)} has characters smbclient commands cannot carry`);
  const name = `ferry-push-${crypto.randomBytes(4).toString('hex')}`;
  const remoteDir = parent === '' ? name : `${parent}\\${name}`;
  const localDir = `${root}\\${remoteDir}`;
  if (/["";]/.test(ctx.dir)) throw new PushFailure(`the temp folder ${ctx.dir} has characters smbclient commands cannot carry`);

  let copied = false;
  let passphraseCopied = false;
  try {
    log(`copying ${opts.windowsPackageDir} to ${host.unc()}/${remoteDir.replace(/\\/g, '/')} (smbclient, SMB3, signing required)`);
    const cd = parent === '' ? '' : `cd "${parent}"; `;
    const copy = await host.smbclient(`${cd}mkdir "${name}"; cd "${name}"; prompt OFF; recurse ON; mput *`, opts.windowsPackageDir);
    // Unless the session itself failed, a folder may exist on the share now: clean it up later.
    copied = !/NT_STATUS_(LOGON_FAILURE|CONNECTION_REFUSED|BAD_NETWORK_NAME|IO_TIMEOUT|HOST_UNREACHABLE|NETWORK_UNREACHABLE|OBJECT_PATH_NOT_FOUND)/.test(copy.output);
    if (copy.code !== 0) throw new PushFailure(`SMB copy failed: ${explainSambaOutput(copy.output)}`);
    if (opts.passphrase !== undefined && !opts.install.noRegister) {
      const secret = ctx.secretFile('passphrase.txt', `${opts.passphrase}\n`);
      passphraseCopied = true;
      const put = await host.smbclient(`put "${secret}" "${remoteDir}\\passphrase.txt"`);
      fs.rmSync(secret, { force: true });
      if (put.code !== 0) throw new PushFailure(`SMB copy of the passphrase failed: ${explainSambaOutput(put.output)}`);
    }
    log('copy done; creating the bootstrap service through svcctl (net rpc service create)');

    const create = await host.net('service', 'create', opts.serviceName, 'Ferry push install', bootstrapCommand(localDir, opts));
    if (create.code !== 0) {
      throw new PushFailure(`svcctl create of ${opts.serviceName} failed: ${explainSambaOutput(create.output)}; WinRM over HTTPS is the alternative (see installer/README.md)`);
    }
    try {
      const start = await host.net('service', 'start', opts.serviceName);
      // cmd.exe is not a service: the SCM reports a start timeout while install.ps1 runs detached.
      if (start.code !== 0 && !/WERR_SERVICE_REQUEST_TIMEOUT|1053/.test(start.output)) {
        throw new PushFailure(`svcctl start of ${opts.serviceName} failed: ${explainSambaOutput(start.output)}`);
      }
      log(`install.ps1 started; waiting for ${remoteDir}\\install-result.txt`);
      const deadline = Date.now() + opts.resultTimeoutMs;
      for (;;) {
        const result = await host.readResult(remoteDir);
        if (result !== undefined) {
          if (result.startsWith('OK')) return result.slice(2).trim() || 'installed';
          throw new PushFailure(`install.ps1: ${result.replace(/^FAILED:\s*/, '')}`);
        }
        if (Date.now() > deadline) throw new PushFailure(`install.ps1 wrote no result within ${Math.round(opts.resultTimeoutMs / 1000)}s`);
        await new Promise((resolve) => setTimeout(resolve, opts.pollMs));
      }
    } finally {
      const del = await host.net('service', 'delete', opts.serviceName);
      if (del.code !== 0 && !/WERR_SERVICE_DOES_NOT_EXIST|WERR_SERVICE_MARKED_FOR_DELETE/.test(del.output)) {
        log(`warning: could not delete the bootstrap service ${opts.serviceName}: ${explainSambaOutput(del.output)}`);
      }
    }
  } finally {
    if (passphraseCopied) {
      const rm = await host.smbclient(`del "${remoteDir}\\passphrase.txt"`);
      if (rm.code !== 0 && !/NT_STATUS_OBJECT_NAME_NOT_FOUND|NT_STATUS_NO_SUCH_FILE/.test(rm.output)) {
        log(`warning: could not delete ${remoteDir}\\passphrase.txt: ${explainSambaOutput(rm.output)}`);
      }
    }
    if (copied && !opts.keepRemoteFiles) {
      const rm = await host.smbclient(`deltree "${remoteDir}"`);
      if (rm.code !== 0) log(`warning: could not remove ${remoteDir}: ${explainSambaOutput(rm.output)}`);
    } else if (copied) {
      log(`kept ${remoteDir} on the share (--keep-remote-files)`);
    }
  }
}

/** The whole push for one Windows host; never throws. */
export async function pushOverSmb(target: SmbTarget, opts: SmbPushOptions): Promise<HostResult> {
  const started = Date.now();
  let ctx: SambaContext | undefined;
  try {
    checkWindowsPackage(opts.windowsPackageDir);
    ctx = SambaContext.create(opts.credentials);
    const detail = await pushOne(target, ctx, opts);
    return { label: target.label, ok: true, detail, seconds: (Date.now() - started) / 1000 };
  } catch (err) {
    return { label: target.label, ok: false, detail: failureReason(err), seconds: (Date.now() - started) / 1000 };
  } finally {
    ctx?.remove();
  }
}
