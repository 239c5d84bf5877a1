// `ferry group add G --ssh user@host` / `--smb //host/ADMIN$`: push-install the agent (push/),
// wait until it registers (it shows up in the machine list by name), put it in the group and
// follow it to Protected.
import { Command, Option } from 'commander';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { ExitCode, FerryError } from '../common/errors';
import type { Group, Machine } from '../control/model';
import { checkInstallOptions, InstallOptions } from '../push/install-options';
import { buildPackage, checkPackageFile, installerFiles } from '../push/package';
import { HostResult } from '../push/result';
import { pushOverSmb } from '../push/smb-push';
import { pushOverSsh } from '../push/ssh-push';
import { parseSmbTarget, parseSshTarget } from '../push/targets';
import { ApiClient } from './api-client';
import { printJson } from './api-command';
import { machineProgress } from './machine-view';
import { durationFlag, listFlag, readSecretFile, textFlag } from './options';

export interface PushAddOptions {
  json?: boolean;
  ssh?: string;
  smb?: string;
  identity?: string;
  knownHosts: string;
  acceptNewHostKey?: boolean;
  sudoPasswordFile?: string;
  package?: string;
  passphraseFile?: string;
  receiver?: string;
  volume: string[];
  name?: string;
  capture?: 'auto' | 'kernel' | 'scan';
  smbUser?: string;
  smbPasswordFile?: string;
  windowsPackage?: string;
  prefix?: string;
  configDir?: string;
  stateDir?: string;
  systemdDir?: string;
  binDir?: string;
  systemctl: boolean;
  connectTimeout: number;
  registerTimeout: number;
  protectTimeout: number;
}

const POLL_MS = 2000;

export function withPushOptions(cmd: Command): Command {
  return cmd
    .option('--ssh <user@host[:port]>', 'install the agent on this Linux host over SSH, then add it')
    .option('--smb <//host/share>', 'install the agent on this Windows host over SMB, then add it')
    .option('--identity <file>', 'SSH private key (default: ssh-agent)')
    .addOption(textFlag('--known-hosts <file>', 'OpenSSH known_hosts used to verify the host key', path.join(os.homedir(), '.ssh', 'known_hosts'), '~/.ssh/known_hosts'))
    .option('--accept-new-host-key', 'record the key of a host not yet in known_hosts')
    .option('--sudo-password-file <file>', 'sudo password for a non-root SSH user')
    .option('--package <file>', 'agent package from installer/make-package.sh (default: build one now)')
    .option('--passphrase-file <file>', "the receiver's registration passphrase (first line)")
    .option('--receiver <url>', 'where the agent connects, wss://HOST:PORT (default: what the API reports)')
    .addOption(listFlag('--volume <ID=PATH[:MOUNT]>', 'volume to protect (repeat); Windows: ID=C:', String))
    .option('--name <name>', 'machine (agent) name (default: the host name)')
    .addOption(new Option('--capture <mode>', 'auto | kernel | scan').choices(['auto', 'kernel', 'scan']))
    .option('--prefix <dir>', 'install prefix on the target (default /opt/ferry)')
    .option('--config-dir <dir>', 'config folder on the target (default /etc/ferry)')
    .option('--state-dir <dir>', 'state folder on the target (default /var/lib/ferry)')
    .option('--systemd-dir <dir>', 'where the unit goes on the target (default /etc/systemd/system)')
    .option('--bin-dir <dir>', 'symlink folder for the ferry command on the target, or none')
    .option('--no-systemctl', 'write the unit but do not call systemctl (the agent is started some other way)')
    .option('--smb-user <user>', 'Windows account with administrator rights, [DOMAIN\\]USER')
    .option('--smb-password-file <file>', 'its password')
    .option('--windows-package <dir>', 'Windows agent package folder')
    .addOption(durationFlag('--connect-timeout <duration>', 'SSH/SMB connection timeout', 15_000))
    .addOption(durationFlag('--register-timeout <duration>', 'how long to wait for the new machine to register', 300_000))
    .addOption(durationFlag('--protect-timeout <duration>', 'how long to follow it to Protected', 3_600_000));
}

async function pushOne(opts: PushAddOptions, receiver: string, fingerprint: string, name: string, passphrase: string): Promise<HostResult> {
  const log = (label: string, line: string): void => {
    if (!opts.json) process.stdout.write(`[${label}] ${line}\n`);
  };
  if (opts.ssh !== undefined) {
    const target = parseSshTarget(opts.ssh);
    const install: InstallOptions = {
      receiver,
      fingerprint,
      volumes: opts.volume,
      name,
      capture: opts.capture,
      prefix: opts.prefix,
      configDir: opts.configDir,
      stateDir: opts.stateDir,
      systemdDir: opts.systemdDir,
      binDir: opts.binDir,
      noStart: false,
      noRegister: false,
      noSystemctl: !opts.systemctl,
      reregister: false,
    };
    checkInstallOptions(install);
    let privateKey: Buffer | undefined;
    if (opts.identity !== undefined) {
      try {
        privateKey = fs.readFileSync(opts.identity);
      } catch (err) {
        throw new FerryError(`cannot read --identity ${opts.identity}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, ExitCode.usage);
      }
    } else if (!process.env.SSH_AUTH_SOCK) throw new FerryError('no SSH key: pass --identity FILE or run an ssh-agent (SSH_AUTH_SOCK)', ExitCode.usage);
    const files = installerFiles();
    let built: { file: string; dir: string } | undefined;
    const packageFile = opts.package !== undefined ? checkPackageFile(opts.package) : (built = await buildPackage(files, (l) => log('package', l))).file;
    try {
      return await pushOverSsh(target, {
        packageFile,
        installScript: files.installScript,
        privateKey,
        keyFile: opts.identity,
        knownHostsFile: opts.knownHosts,
        acceptNewHostKey: opts.acceptNewHostKey === true,
        connectTimeoutMs: opts.connectTimeout,
        sudoPassword: opts.sudoPasswordFile ? readSecretFile(opts.sudoPasswordFile, '--sudo-password-file') : undefined,
        passphrase,
        install,
        log,
      });
    } finally {
      if (built) fs.rmSync(built.dir, { recursive: true, force: true });
    }
  }
  const target = parseSmbTarget(opts.smb ?? '');
  if (opts.smbUser === undefined || opts.smbPasswordFile === undefined) throw new FerryError('--smb needs --smb-user [DOMAIN\\]USER and --smb-password-file FILE', ExitCode.usage);
  if (opts.windowsPackage === undefined) throw new FerryError('--smb needs --windows-package DIR', ExitCode.usage);
  if (opts.volume.length === 0) throw new FerryError('give at least one --volume ID=DRIVE: for Windows', ExitCode.usage);
  return pushOverSmb(target, {
    credentials: { user: opts.smbUser, password: readSecretFile(opts.smbPasswordFile, '--smb-password-file') },
    windowsPackageDir: path.resolve(opts.windowsPackage),
    serviceName: 'FerryPushInstall',
    passphrase,
    install: { receiver, fingerprint, volumes: opts.volume, name, capture: opts.capture, noRegister: false, noStart: false },
    toolTimeoutMs: opts.connectTimeout,
    resultTimeoutMs: 600_000,
    pollMs: POLL_MS,
    keepRemoteFiles: false,
    log,
  });
}

/** Polls `probe` until it returns a value or the deadline passes (undefined then). */
async function waitFor<T>(deadlineMs: number, probe: () => Promise<T | undefined>): Promise<T | undefined> {
  for (;;) {
    const value = await probe();
    if (value !== undefined || Date.now() >= deadlineMs) return value;
    await delay(POLL_MS);
  }
}

export async function groupAddByPush(client: ApiClient, groupId: string, opts: PushAddOptions): Promise<void> {
  if (opts.ssh !== undefined && opts.smb !== undefined) throw new FerryError('give --ssh or --smb, not both', ExitCode.usage);
  if (opts.passphraseFile === undefined) throw new FerryError("the new agent registers with the receiver: pass --passphrase-file FILE (the receiver's registration passphrase)", ExitCode.usage);
  const passphrase = readSecretFile(opts.passphraseFile, '--passphrase-file');
  const say = (line: string): void => {
    if (!opts.json) process.stdout.write(`${line}\n`);
  };
  await client.call<Group>('GET', `/api/v1/groups/${encodeURIComponent(groupId)}`);
  const info = await client.call<{ agentUrl: string | null; fingerprint: string }>('GET', '/api/v1/receiver');
  const receiver = opts.receiver ?? info.agentUrl;
  if (!receiver) throw new FerryError('the API does not know where agents connect: pass --receiver wss://HOST:PORT', ExitCode.usage);
  const host = opts.ssh !== undefined ? parseSshTarget(opts.ssh).host : parseSmbTarget(opts.smb ?? '').host;
  const name = opts.name ?? host;

  const result = await pushOne(opts, receiver, info.fingerprint, name, passphrase);
  if (!result.ok) throw new FerryError(`push install to ${result.label} failed: ${result.detail}`, ExitCode.failure);
  say(`installed the agent on ${result.label} (${result.seconds.toFixed(1)}s); waiting for machine ${name} to register`);

  const registered = await waitFor(Date.now() + opts.registerTimeout, async () => {
    const { machines } = await client.get<{ machines: Machine[] }>('/api/v1/machines');
    return machines.find((m) => m.name === name);
  });
  if (!registered) throw new FerryError(`machine ${name} did not register within ${opts.registerTimeout / 1000}s: see ferry agent status on ${host}`, ExitCode.notReady);
  await client.call<Group>('POST', `/api/v1/groups/${encodeURIComponent(groupId)}/members`, { machineId: registered.id });
  say(`machine ${name} (${registered.id}) registered and added to group ${groupId}; following it to Protected`);

  let last = '';
  const protectedMachine = await waitFor(Date.now() + opts.protectTimeout, async () => {
    const m = await client.call<Machine>('GET', `/api/v1/machines/${encodeURIComponent(registered.id)}`);
    const line = machineProgress(m);
    if (line !== last) say(line);
    last = line;
    return m.state === 'protected' ? m : undefined;
  });
  if (!protectedMachine) throw new FerryError(`machine ${name} is not Protected after ${opts.protectTimeout / 1000}s (last: ${last})`, ExitCode.notReady);
  if (opts.json) printJson(protectedMachine);
  else say(`machine ${name} is Protected in group ${groupId}`);
}
