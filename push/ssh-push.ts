// Push install to one Linux host over SSH: upload the package and install.sh with SFTP into a
// private temp folder, run install.sh as root (sudo when needed), stream its output, clean up.
import * as path from 'node:path';
import { ClientChannel } from 'ssh2';
import { InstallOptions, installArgs } from './install-options';
import { shellQuote } from './lines';
import { failureReason, HostResult, PushFailure } from './result';
import { SshSession } from './ssh-session';
import { SshTarget } from './targets';

/** install.sh prints this line right before it reads the passphrase from stdin. */
export const PASSPHRASE_CUE = '    reading the registration passphrase from stdin';
const SUDO_PROMPT = '[ferry-push] sudo password:';

export interface SshPushOptions {
  packageFile: string;
  installScript: string;
  privateKey?: Buffer;
  keyFile?: string;
  knownHostsFile: string;
  acceptNewHostKey: boolean;
  connectTimeoutMs: number;
  /** For a non-root user whose sudo asks for a password. */
  sudoPassword?: string;
  /** Registration passphrase, written to install.sh's stdin when it asks. */
  passphrase?: string;
  install: InstallOptions;
  /** Prints one line of progress or remote output for a host. */
  log: (label: string, line: string) => void;
}

function sudoPrefix(user: string, sudoPassword: string | undefined): string {
  if (user === 'root') return '';
  if (sudoPassword !== undefined) return `sudo -S -p ${shellQuote(SUDO_PROMPT)} -- `;
  return 'sudo -n -- ';
}

interface RunState {
  marker?: string;
  lastStderr?: string;
  sudoPrompts: number;
  sudoNeedsPassword: boolean;
  passphraseSent: boolean;
}

async function runInstaller(session: SshSession, target: SshTarget, opts: SshPushOptions, tmp: string): Promise<string> {
  const remotePackage = `${tmp}/${path.basename(opts.packageFile)}`;
  const remoteScript = `${tmp}/install.sh`;
  const remoteCa = opts.install.caFile !== undefined ? `${tmp}/receiver-ca.pem` : undefined;
  const uploads = [
    { local: opts.packageFile, remote: remotePackage, mode: 0o600 },
    { local: opts.installScript, remote: remoteScript, mode: 0o700 },
  ];
  if (opts.install.caFile !== undefined && remoteCa !== undefined) uploads.push({ local: opts.install.caFile, remote: remoteCa, mode: 0o600 });
  opts.log(target.label, `uploading ${path.basename(opts.packageFile)} and install.sh to ${tmp} (SFTP)`);
  await session.upload(uploads);

  const args = [...installArgs(opts.install, remoteCa), ...target.extraArgs];
  const command = `${sudoPrefix(target.user, opts.sudoPassword)}bash ${shellQuote(remoteScript)} --package ${shellQuote(remotePackage)} ${args.map(shellQuote).join(' ')}`;
  opts.log(target.label, `running install.sh as root${target.user === 'root' ? '' : ' (sudo)'}`);

  const state: RunState = { sudoPrompts: 0, sudoNeedsPassword: false, passphraseSent: false };
  const result = await session.exec(command, {
    onStdoutLine: (line) => {
      if (line.startsWith('ferry-install: ')) state.marker = line.slice('ferry-install: '.length);
      opts.log(target.label, line);
    },
    onStdoutLineChannel: (line: string, channel: ClientChannel) => {
      if (line === PASSPHRASE_CUE && !state.passphraseSent) {
        state.passphraseSent = true;
        // An empty line makes install.sh stop with "no registration passphrase".
        channel.end(opts.passphrase !== undefined ? `${opts.passphrase}\n` : '\n');
      }
    },
    onStderrLine: (line) => {
      if (/sudo: (a password is required|a terminal is required)/.test(line)) state.sudoNeedsPassword = true;
      if (line.trim() !== '') state.lastStderr = line;
      opts.log(target.label, line);
    },
    onStderrPartial: (text, channel) => {
      if (!text.includes(SUDO_PROMPT)) return false;
      state.sudoPrompts++;
      if (state.sudoPrompts > 1 || opts.sudoPassword === undefined) {
        channel.close();
      } else {
        channel.write(`${opts.sudoPassword}\n`);
      }
      return true;
    },
  }, () => {
    // stdin stays open: the sudo password and the passphrase are written when asked for.
  });

  if (state.sudoPrompts > 1) throw new PushFailure(`sudo refused the password for ${target.user}`);
  if (state.sudoNeedsPassword) throw new PushFailure(`sudo needs a password for ${target.user}: pass --sudo-password-file FILE or allow NOPASSWD`);
  if (result.code === 127 && state.marker === undefined) throw new PushFailure(`bash or sudo is missing on the host: ${state.lastStderr ?? 'exit 127'}`);
  if (result.code === 0 && state.marker?.startsWith('OK')) return state.marker.slice(2).trim() || 'installed';
  if (state.marker?.startsWith('FAILED: ')) throw new PushFailure(`install.sh: ${state.marker.slice('FAILED: '.length)} (exit ${result.code ?? result.signal})`);
  throw new PushFailure(`install.sh ended without a result (exit ${result.code ?? result.signal})${state.lastStderr ? `: ${state.lastStderr}` : ''}`);
}

/** The whole push for one host; never throws: every failure becomes a HostResult. */
export async function pushOverSsh(target: SshTarget, opts: SshPushOptions): Promise<HostResult> {
  const started = Date.now();
  const done = (ok: boolean, detail: string): HostResult => ({ label: target.label, ok, detail, seconds: (Date.now() - started) / 1000 });
  let session: SshSession | undefined;
  try {
    session = await SshSession.connect({
      host: target.host,
      port: target.port,
      user: target.user,
      privateKey: opts.privateKey,
      keyFile: opts.keyFile,
      knownHostsFile: opts.knownHostsFile,
      acceptNewHostKey: opts.acceptNewHostKey,
      connectTimeoutMs: opts.connectTimeoutMs,
      onNewHostKey: (fp) => opts.log(target.label, `recorded new host key ${fp} in ${opts.knownHostsFile}`),
    });
    opts.log(target.label, `connected as ${target.user} (host key verified)`);
    const tmp = (await session.capture('umask 077 && mktemp -d "${TMPDIR:-/tmp}/ferry-push.XXXXXX"')).trim();
    if (!/^\/[A-Za-z0-9._/-]+$/.test(tmp)) throw new PushFailure(`unexpected temp folder name from the host: ${JSON.stringify(tmp)}`);
    try {
      const summary = await runInstaller(session, target, opts, tmp);
      return done(true, summary);
    } finally {
      // The package and install.sh go; the passphrase never touched the disk.
      await session.capture(`rm -rf -- ${shellQuote(tmp)}`).catch((err: unknown) => opts.log(target.label, `warning: could not remove ${tmp}: ${failureReason(err)}`));
    }
  } catch (err) {
    return done(false, failureReason(err));
  } finally {
    session?.close();
  }
}
