// `ferry push-install`: installs the agent on remote machines, Linux over SSH, Windows over SMB.
import { Command, InvalidArgumentError, Option } from 'commander';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ExitCode, FerryError } from '../common/errors';
import { parseVolumeSpecs } from '../agent/volume-spec';
import { CaptureMethod, checkInstallOptions, InstallOptions } from '../push/install-options';
import { buildPackage, checkPackageFile, installerFiles } from '../push/package';
import { formatResults, HostResult, runLimited } from '../push/result';
import { pushOverSmb } from '../push/smb-push';
import { pushOverSsh } from '../push/ssh-push';
import { parseSmbTarget, parseSshTarget, readHostsFile, SmbTarget, SshTarget } from '../push/targets';
import { durationFlag, listFlag, readSecretFile, textFlag } from './options';
import { COMMAND_DESCRIPTIONS } from './command-index';

interface PushCliOptions {
  ssh: string[];
  hosts?: string;
  smb: string[];
  parallel: number;
  key?: string;
  knownHosts: string;
  acceptNewHostKey?: boolean;
  connectTimeout: number;
  sudoPasswordFile?: string;
  package?: string;
  receiver?: string;
  fingerprint?: string;
  caFile?: string;
  passphraseFile?: string;
  volume: string[];
  name?: string;
  capture?: CaptureMethod;
  prefix?: string;
  configDir?: string;
  stateDir?: string;
  systemdDir?: string;
  binDir?: string;
  start: boolean;
  register: boolean;
  systemctl: boolean;
  reregister?: boolean;
  smbUser?: string;
  smbPasswordFile?: string;
  windowsPackage?: string;
  smbDir?: string;
  smbSharePath?: string;
  smbServiceName: string;
  resultTimeout: number;
  keepRemoteFiles?: boolean;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 256) throw new InvalidArgumentError('expected a number from 1 to 256');
  return n;
}

function captureOption(value: string): CaptureMethod {
  if (value !== 'auto' && value !== 'kernel' && value !== 'ebpf' && value !== 'scan') throw new InvalidArgumentError('expected auto, kernel, ebpf or scan');
  return value;
}

/** The registration passphrase: --passphrase-file, else the first line of a piped stdin. */
function readPassphrase(opts: PushCliOptions): string | undefined {
  if (!opts.register || opts.receiver === undefined) return opts.passphraseFile ? readSecretFile(opts.passphraseFile, 'passphrase file') : undefined;
  if (opts.passphraseFile) return readSecretFile(opts.passphraseFile, 'passphrase file');
  if (process.stdin.isTTY) throw new FerryError('registration needs the passphrase: pass --passphrase-file FILE or pipe it on stdin (or use --no-register)', ExitCode.usage);
  let text: string;
  try {
    text = fs.readFileSync(0, 'utf8');
  } catch {
    text = '';
  }
  const line = text.split(/\r?\n/)[0];
  if (line === '') throw new FerryError('no passphrase on stdin: pass --passphrase-file FILE or pipe it on stdin', ExitCode.usage);
  return line;
}

function printer(): (label: string, line: string) => void {
  return (label, line) => process.stdout.write(`[${label}] ${line}\n`);
}

function installOptions(opts: PushCliOptions): InstallOptions {
  return {
    receiver: opts.receiver,
    fingerprint: opts.fingerprint,
    caFile: opts.caFile,
    volumes: opts.volume,
    name: opts.name,
    capture: opts.capture,
    prefix: opts.prefix,
    configDir: opts.configDir,
    stateDir: opts.stateDir,
    systemdDir: opts.systemdDir,
    binDir: opts.binDir,
    noStart: !opts.start,
    noRegister: !opts.register,
    noSystemctl: !opts.systemctl,
    reregister: opts.reregister === true,
  };
}

async function pushLinux(targets: SshTarget[], opts: PushCliOptions): Promise<HostResult[]> {
  const install = installOptions(opts);
  checkInstallOptions(install, opts.hosts !== undefined);
  if (opts.caFile !== undefined && !fs.existsSync(opts.caFile)) throw new FerryError(`--ca-file ${opts.caFile} does not exist`, ExitCode.usage);
  let privateKey: Buffer | undefined;
  if (opts.key !== undefined) {
    try {
      privateKey = fs.readFileSync(opts.key);
    } catch (err) {
      throw new FerryError(`cannot read --key ${opts.key}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, ExitCode.usage);
    }
  } else if (!process.env.SSH_AUTH_SOCK) {
    throw new FerryError('no SSH key: pass --key FILE or run an ssh-agent (SSH_AUTH_SOCK)', ExitCode.usage);
  }
  const sudoPassword = opts.sudoPasswordFile ? readSecretFile(opts.sudoPasswordFile, 'sudo password file') : undefined;
  const passphrase = readPassphrase(opts);
  const files = installerFiles();
  const log = printer();
  let built: { file: string; dir: string } | undefined;
  const packageFile = opts.package !== undefined ? checkPackageFile(opts.package) : (built = await buildPackage(files, (l) => process.stdout.write(`${l}\n`))).file;
  try {
    return await runLimited(targets, opts.parallel, (target) =>
      pushOverSsh(target, {
        packageFile,
        installScript: files.installScript,
        privateKey,
        keyFile: opts.key,
        knownHostsFile: opts.knownHosts,
        acceptNewHostKey: opts.acceptNewHostKey === true,
        connectTimeoutMs: opts.connectTimeout,
        sudoPassword,
        passphrase,
        install,
        log,
      }),
    );
  } finally {
    if (built) fs.rmSync(built.dir, { recursive: true, force: true });
  }
}

async function pushWindows(targets: SmbTarget[], opts: PushCliOptions): Promise<HostResult[]> {
  if (opts.smbUser === undefined || opts.smbPasswordFile === undefined) {
    throw new FerryError('--smb needs --smb-user [DOMAIN\\]USER and --smb-password-file FILE (the password never goes on a command line)', ExitCode.usage);
  }
  if (opts.windowsPackage === undefined) throw new FerryError('--smb needs --windows-package DIR (see installer/README.md, "Windows package")', ExitCode.usage);
  if (!fs.existsSync(opts.windowsPackage) || !fs.statSync(opts.windowsPackage).isDirectory()) {
    throw new FerryError(`--windows-package ${opts.windowsPackage} is not a folder`, ExitCode.usage);
  }
  for (const [i, v] of parseVolumeSpecs(opts.volume).entries()) {
    if (v.platform !== 'windows') throw new FerryError(`--volume ${JSON.stringify(opts.volume[i])}: for Windows use ID=C: or ID=\\\\?\\Volume{GUID}\\`, ExitCode.usage);
  }
  if (opts.receiver !== undefined) {
    const install = { ...installOptions(opts), volumes: [] };
    checkInstallOptions(install, true);
    if (opts.volume.length === 0) throw new FerryError('give at least one --volume ID=DRIVE: for Windows', ExitCode.usage);
  }
  const capture = opts.capture;
  if (capture === 'ebpf') throw new FerryError('--capture ebpf is for Linux targets (--ssh): Windows captures with the ferryflt filter or scan', ExitCode.usage);
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(opts.smbServiceName)) throw new FerryError('--smb-service-name must be 1-64 letters, digits, _ or -', ExitCode.usage);
  const password = readSecretFile(opts.smbPasswordFile, 'SMB password file');
  const passphrase = readPassphrase(opts);
  const log = printer();
  return runLimited(targets, opts.parallel, (target) =>
    pushOverSmb(target, {
      credentials: { user: opts.smbUser ?? '', password },
      windowsPackageDir: path.resolve(opts.windowsPackage ?? ''),
      parentDir: opts.smbDir,
      shareLocalPath: opts.smbSharePath,
      serviceName: opts.smbServiceName,
      passphrase,
      install: {
        receiver: opts.receiver,
        fingerprint: opts.fingerprint,
        volumes: opts.volume,
        name: opts.name,
        capture,
        noRegister: !opts.register,
        noStart: !opts.start,
      },
      toolTimeoutMs: opts.connectTimeout,
      resultTimeoutMs: opts.resultTimeout,
      pollMs: 2000,
      keepRemoteFiles: opts.keepRemoteFiles === true,
      log,
    }),
  );
}

async function runPushInstall(opts: PushCliOptions): Promise<void> {
  const sshTargets: SshTarget[] = opts.ssh.map((t) => parseSshTarget(t));
  if (opts.hosts !== undefined) sshTargets.push(...readHostsFile(opts.hosts));
  const smbTargets = opts.smb.map(parseSmbTarget);
  if (sshTargets.length === 0 && smbTargets.length === 0) throw new FerryError('name at least one target: --ssh user@host[:port], --hosts FILE or --smb //host/share', ExitCode.usage);
  if (sshTargets.length > 0 && smbTargets.length > 0) throw new FerryError('push to Linux (--ssh/--hosts) and Windows (--smb) in separate runs: their volumes differ', ExitCode.usage);
  const results = sshTargets.length > 0 ? await pushLinux(sshTargets, opts) : await pushWindows(smbTargets, opts);
  process.stdout.write(formatResults(results));
  if (results.some((r) => !r.ok)) process.exitCode = ExitCode.failure;
}

export function pushInstallCommand(): Command {
  return new Command('push-install')
    .description(COMMAND_DESCRIPTIONS['push-install'])
    .addOption(listFlag('--ssh <user@host[:port]>', 'a Linux target (repeat for more)', String))
    .option('--hosts <file>', 'Linux targets, one per line, each optionally followed by per-host install options')
    .addOption(listFlag('--smb <//host[:port]/share>', 'a Windows target share, e.g. //winsrv01/ADMIN$ (repeat for more)', String))
    .option('--parallel <n>', 'hosts installed at the same time', positiveInt, 4)
    .option('--key <file>', 'SSH private key (default: ssh-agent)')
    .addOption(textFlag('--known-hosts <file>', 'OpenSSH known_hosts used to verify host keys', path.join(os.homedir(), '.ssh', 'known_hosts'), '~/.ssh/known_hosts'))
    .option('--accept-new-host-key', 'record the key of a host not yet in known_hosts (a changed key is always refused)')
    .addOption(durationFlag('--connect-timeout <duration>', 'connection and handshake timeout', 15_000))
    .option('--sudo-password-file <file>', 'sudo password for a non-root SSH user (sent over the SSH channel)')
    .option('--package <file>', 'agent package from installer/make-package.sh (default: build one now)')
    .option('--receiver <url>', 'receiver wss://HOST:PORT')
    .option('--fingerprint <sha256>', 'receiver certificate fingerprint')
    .option('--ca-file <file>', 'CA bundle that verifies the receiver (instead of --fingerprint)')
    .option('--passphrase-file <file>', 'registration passphrase (default: first line of stdin); sent over the encrypted channel, never on a command line')
    .addOption(listFlag('--volume <ID=PATH[:MOUNT]>', 'volume to protect (repeat); Windows: ID=C:', String))
    .option('--name <name>', 'agent name (default: the host name)')
    .addOption(new Option('--capture <mode>', 'auto | kernel | ebpf (Linux) | scan').argParser(captureOption))
    .option('--prefix <dir>', 'install prefix on the target (default /opt/ferry)')
    .option('--config-dir <dir>', 'config folder on the target (default /etc/ferry)')
    .option('--state-dir <dir>', 'state folder on the target (default /var/lib/ferry)')
    .option('--systemd-dir <dir>', 'where the unit goes on the target (default /etc/systemd/system)')
    .option('--bin-dir <dir>', 'symlink folder for the ferry command on the target, or none')
    .option('--no-start', 'install and enable the service without starting it')
    .option('--no-register', 'do not register with the receiver')
    .option('--no-systemctl', 'write the unit but do not call systemctl')
    .option('--reregister', 'register again even if the host registered before')
    .option('--smb-user <user>', 'Windows account with administrator rights, [DOMAIN\\]USER')
    .option('--smb-password-file <file>', 'its password (goes into a 0600 smbclient -A file, removed after)')
    .option('--windows-package <dir>', 'Windows agent package folder (install.ps1, PACKAGE, runtime, app)')
    .option('--smb-dir <dir>', 'folder inside the share for the upload (default Temp on ADMIN$)')
    .option('--smb-share-path <path>', 'Windows path of the share root (default C:\\Windows for ADMIN$, X:\\ for X$)')
    .addOption(textFlag('--smb-service-name <name>', 'name of the one-shot bootstrap service', 'FerryPushInstall'))
    .addOption(durationFlag('--result-timeout <duration>', 'how long to wait for install.ps1 to report', 600_000))
    .option('--keep-remote-files', 'leave the copied Windows package on the share (the passphrase is always removed)')
    .action(async (opts: PushCliOptions) => runPushInstall(opts));
}
