import { Command, InvalidArgumentError, Option } from 'commander';
import * as fs from 'fs';
import { ExitCode, FerryError } from '../common/errors';
import { formatBytes } from '../common/units';
import { DEFAULT_CLIENT_LIMITS } from '../receiver/client-limits';
import { DataLayout } from '../receiver/layout';
import type { RecoveryTargetChoice } from '../recovery/open';
import { readStatusFile, ReceiverStatus } from '../receiver/status';
import { describeDamage } from '../receiver/storage/damage';
import type { VerifyReport } from '../receiver/verify';
import { isSafeId } from '../proto/ids';
import { countOption, durationFlag, hostPortFlag, hostPortOption, sizeFlag, sizeOption } from './options';
import { COMMAND_DESCRIPTIONS } from './command-index';

function apiListenOption(value: string): { host: string; port: number } | 'off' {
  return value.trim() === 'off' ? 'off' : hostPortOption(value);
}

function recoveryTargetOption(value: string): RecoveryTargetChoice {
  const v = value.trim();
  if (v === 'qemu' || v === 'off') return v;
  const m = /^libvirt:(.+)$/.exec(v);
  if (m) return { libvirt: m[1] };
  throw new InvalidArgumentError('expected qemu, libvirt:URI (e.g. libvirt:qemu:///system) or off');
}

function reserveOption(value: string): number {
  return value.trim() === '0' ? 0 : sizeOption(value);
}

interface RunOptions {
  data: string;
  listen: { host: string; port: number };
  apiListen: { host: string; port: number } | 'off';
  recoveryTarget: RecoveryTargetChoice;
  roundHold: number;
  appRoundHold: number;
  disconnectAlert: number;
  tlsCert?: string;
  tlsKey?: string;
  passphraseFile?: string;
  retention: number;
  spoolCap: number;
  segmentSize: number;
  retentionInterval: number;
  minFree: number;
  reserve: number;
  handshakeTimeout: number;
  idleTimeout: number;
  preLoginBytes: number;
  maxConnections: number;
  maxConnectionsPerPeer: number;
  authLockoutAfter: number;
  authLockout: number;
  authLockoutMax: number;
  failedRegistrationsPerSecond: number;
  maxTimeAhead: number;
}

/** Agents send a heartbeat every second: a shorter idle bound would close healthy sessions. */
const MIN_IDLE_TIMEOUT_MS = 2000;
/** An agent's upgrade request, Hello and proof take well under 1 KiB. */
const MIN_PRE_LOGIN_BYTES = 4096;

async function runReceiver(opts: RunOptions): Promise<void> {
  if (opts.idleTimeout < MIN_IDLE_TIMEOUT_MS) {
    throw new FerryError(`--idle-timeout must be at least ${MIN_IDLE_TIMEOUT_MS / 1000}s: agents send a heartbeat every second`, ExitCode.usage);
  }
  if (opts.preLoginBytes < MIN_PRE_LOGIN_BYTES) {
    throw new FerryError(`--pre-login-bytes must be at least ${MIN_PRE_LOGIN_BYTES / 1024}KiB: an agent's handshake needs about 1 KiB`, ExitCode.usage);
  }
  // Loaded here, not at the top: `ferry receiver status` needs none of the server's code.
  const { startReceiver } = await import('../receiver/server');
  const { managementApiBanner } = await import('../control/api/server');
  const { log } = await import('../common/log');
  const receiver = await startReceiver({
    dataDir: opts.data,
    host: opts.listen.host,
    port: opts.listen.port,
    tlsCertFile: opts.tlsCert,
    tlsKeyFile: opts.tlsKey,
    passphraseFile: opts.passphraseFile,
    retentionUs: opts.retention * 1000,
    spoolCapBytes: opts.spoolCap,
    segmentBytes: opts.segmentSize,
    checkpointIntervalMs: 200,
    retentionIntervalMs: opts.retentionInterval,
    minFreeBytes: opts.minFree,
    reserveBytes: opts.reserve,
    handshakeTimeoutMs: opts.handshakeTimeout,
    idleTimeoutMs: opts.idleTimeout,
    preLoginBytes: opts.preLoginBytes,
    maxConnections: opts.maxConnections,
    maxConnectionsPerPeer: opts.maxConnectionsPerPeer,
    authLockoutAfter: opts.authLockoutAfter,
    authLockoutMs: opts.authLockout,
    authLockoutMaxMs: opts.authLockoutMax,
    failedRegistrationsPerSecond: opts.failedRegistrationsPerSecond,
    maxTimeAheadMs: opts.maxTimeAhead,
    api: opts.apiListen === 'off' ? undefined : opts.apiListen,
    recoveryTarget: opts.recoveryTarget,
    roundHoldMs: opts.roundHold,
    appRoundHoldMs: opts.appRoundHold,
    disconnectAlertMs: opts.disconnectAlert,
  });
  const { identity } = receiver;
  // A stop is handled from before the banner on: whoever waits for the banner may stop the
  // receiver at once, and that must be a clean stop (a running redo advance is finished), not
  // the signal's default kill.
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log.info('receiver stopping', { signal });
      receiver.close().then(resolve, resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  const lines = [
    `ferry receiver listening on wss://${opts.listen.host}:${receiver.port}`,
    `certificate SHA-256 fingerprint: ${identity.fingerprint}`,
  ];
  if (identity.newPassphrase) {
    lines.push(`registration passphrase (shown once, store it safely): ${identity.newPassphrase}`);
  }
  if (receiver.api) lines.push(...managementApiBanner(receiver.api));
  process.stdout.write(`${lines.join('\n')}\n`);
  log.info('receiver started', { listen: `${opts.listen.host}:${receiver.port}`, data: opts.data, fingerprint: identity.fingerprint });

  await stopped;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function printStatus(status: ReceiverStatus, running: boolean): void {
  const out: string[] = [];
  out.push(`receiver ${running ? `running (pid ${status.pid})` : 'not running'} on ${status.listen}, ${status.sessions} agent session(s)`);
  out.push(`updated ${new Date(status.updatedUs / 1000).toISOString()}; fingerprint ${status.fingerprint}`);
  for (const s of status.storage ?? []) out.push(`storage ${s.path}: ${formatBytes(s.freeBytes)} free of ${formatBytes(s.totalBytes)}${s.low ? ' (LOW: agents held)' : ''}`);
  for (const a of status.alerts ?? []) out.push(`${a.severity.toUpperCase()} ${a.subject}: ${a.message}`);
  out.push('');
  out.push(['VOLUME', 'STATE', 'AGENT', 'RPO', 'APPLY LAG', 'DURABLE SEQ', 'APPLIED SEQ', 'SPOOL'].join('\t'));
  for (const v of status.volumes) {
    out.push(
      [
        v.volumeId,
        v.state ?? 'healthy',
        v.connected ? 'connected' : 'offline',
        `${v.rpoSeconds.toFixed(3)}s`,
        `${v.applyLagSeconds.toFixed(3)}s (${v.applyLagSeqs} seqs)`,
        String(v.durableSeq),
        String(v.appliedSeq),
        formatBytes(v.unappliedBytes),
      ].join('\t') + (v.problem ? `\t${v.problem}` : ''),
    );
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

/** An option whose help shows its default in the unit an operator types, e.g. "(default: 10s)". */
function shown<T>(flags: string, description: string, parse: (value: string) => T, value: T, label: string): Option {
  return new Option(flags, description).argParser(parse).default(value, label);
}

export function receiverCommand(): Command {
  const d = DEFAULT_CLIENT_LIMITS;
  const cmd = new Command('receiver').description(COMMAND_DESCRIPTIONS.receiver);

  cmd
    .command('run')
    .description('run the receiver (creates the data directory, certificate and passphrase on first run)')
    .requiredOption('--data <dir>', 'data directory')
    .addOption(hostPortFlag('--listen <host:port>', 'address to serve wss on', { host: '0.0.0.0', port: 7443 }))
    .addOption(
      shown('--api-listen <host:port|off>', 'address to serve the management API on (HTTPS, same certificate); off: none', apiListenOption, { host: '0.0.0.0', port: 7444 }, '0.0.0.0:7444'),
    )
    .addOption(
      new Option('--recovery-target <target>', 'where test failover and failover run recovered machines: qemu (KVM when usable, else TCG), libvirt:URI (e.g. libvirt:qemu:///system), or off')
        .argParser(recoveryTargetOption)
        .default('qemu', 'qemu'),
    )
    .addOption(durationFlag('--round-hold <duration>', 'hold bound of a crash-consistent group round (at most 5s)', 1000))
    .addOption(durationFlag('--app-round-hold <duration>', 'hold bound of an app-consistent group round (at most 5s)', 5000))
    .addOption(durationFlag('--disconnect-alert <duration>', 'a machine without a session this long raises machine-disconnected', 60_000))
    .option('--tls-cert <file>', 'PEM certificate to serve instead of the generated self-signed one')
    .option('--tls-key <file>', 'PEM private key for --tls-cert')
    .option('--passphrase-file <file>', 'registration passphrase (instead of a generated one)')
    .addOption(durationFlag('--retention <duration>', 'how long recovery points stay exportable', 24 * 3600 * 1000))
    .addOption(durationFlag('--retention-interval <duration>', 'how often retention pruning runs', 60 * 1000))
    .addOption(sizeFlag('--spool-cap <size>', 'unapplied spool per volume above which agents are throttled', 1024 ** 3))
    .addOption(sizeFlag('--segment-size <size>', 'size at which spool and journal segments roll over', 64 * 1024 ** 2))
    .addOption(sizeFlag('--min-free <size>', 'free space below which agents are held until there is room (at most a quarter of a small file system)', 1024 ** 3))
    .addOption(shown('--reserve <size>', 'space kept back for checkpoints and the catalog when the disk fills up (0: none)', reserveOption, 64 * 1024 ** 2, '64MiB'))
    .addOption(durationFlag('--handshake-timeout <duration>', 'time from connect to login (TLS, upgrade, Hello and proof)', d.handshakeTimeoutMs))
    .addOption(durationFlag('--idle-timeout <duration>', 'close a logged-in session that sends nothing for this long', d.idleTimeoutMs))
    .addOption(sizeFlag('--pre-login-bytes <size>', 'bytes a connection may send before it has logged in', d.preLoginBytes))
    .addOption(shown('--max-connections <n>', 'open connections in total', countOption, d.maxConnections, '1024 connections'))
    .addOption(shown('--max-connections-per-peer <n>', 'open connections from one address', countOption, d.maxConnectionsPerPeer, '16 connections'))
    .addOption(shown('--auth-lockout-after <n>', 'failed logins or registrations from one address before it is locked out', countOption, d.authLockoutAfter, '5 failures'))
    .addOption(durationFlag('--auth-lockout <duration>', 'first lockout of an address; doubles with every further failure', d.authLockoutMs))
    .addOption(durationFlag('--auth-lockout-max <duration>', 'longest lockout of an address', d.authLockoutMaxMs))
    .addOption(
      shown('--failed-registrations-per-second <n>', 'failed registrations from all addresses beyond which registrations pause', countOption, d.failedRegistrationsPerSecond, '10 per second'),
    )
    .addOption(durationFlag('--max-time-ahead <duration>', "how far past the receiver's clock capture and tag times may be", d.maxTimeAheadMs))
    .action(runReceiver);

  cmd
    .command('status')
    .description('RPO, apply lag and spool of every volume (from the running receiver)')
    .requiredOption('--data <dir>', 'data directory')
    .option('--json', 'machine-readable output')
    .action((opts: { data: string; json?: boolean }) => {
      const layout = new DataLayout(opts.data);
      if (!fs.existsSync(layout.root)) throw new FerryError(`no receiver data directory at ${opts.data}`, ExitCode.notFound);
      const status = readStatusFile(layout.statusFile);
      if (!status) throw new FerryError(`no status in ${opts.data}: the receiver has never run here`, ExitCode.notFound);
      const running = isAlive(status.pid) && Date.now() * 1000 - status.updatedUs < 5_000_000;
      if (opts.json) process.stdout.write(`${JSON.stringify({ running, ...status }, null, 2)}\n`);
      else printStatus(status, running);
      if (!running) process.exitCode = ExitCode.notReady;
    });
  cmd
    .command('verify')
    .description('check every checksum in a data directory (catalog, checkpoints, spool, journal, replica blocks); safe while the receiver runs')
    .requiredOption('--data <dir>', 'data directory')
    .option('--volume <id>', 'only this volume')
    .option('--json', 'machine-readable output')
    .action(async (opts: { data: string; volume?: string; json?: boolean }) => {
      if (opts.volume !== undefined && !isSafeId(opts.volume)) throw new FerryError(`--volume ${JSON.stringify(opts.volume)} is not a valid volume id`, ExitCode.usage);
      const layout = new DataLayout(opts.data);
      if (!fs.existsSync(layout.catalogFile)) throw new FerryError(`${opts.data} is not a receiver data directory (no catalog.db)`, ExitCode.notFound);
      const { verifyDataDir } = await import('../receiver/verify');
      const report = verifyDataDir(opts.data, opts.volume);
      if (opts.volume !== undefined && report.volumes.length === 0 && report.catalog.damage.length === 0) {
        throw new FerryError(`no volume ${opts.volume} in ${opts.data}`, ExitCode.notFound);
      }
      if (opts.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      else printVerify(report);
      if (report.damageCount > 0) process.exitCode = ExitCode.damageFound;
    });
  return cmd;
}

function printVerify(report: VerifyReport): void {
  const out: string[] = [];
  const catalogOk = report.catalog.damage.length === 0;
  out.push(`catalog ${report.catalog.file}: ${catalogOk ? 'ok' : 'DAMAGED'}`);
  for (const d of report.catalog.damage) out.push(`  DAMAGED ${describeDamage(d)}`);
  for (const v of report.volumes) {
    const ok = v.damage.length === 0;
    out.push(
      `volume ${v.volumeId}: ${ok ? 'ok' : 'DAMAGED'} (checkpoint seq ${v.checkpointSeq}, ${v.spoolRecords} spool records, ${v.journalRecords} undo records, ` +
        `${v.replicaBlocksChecked} replica blocks checked${v.replicaBlocksBusy > 0 ? `, ${v.replicaBlocksBusy} being written` : ''}${v.tornBytes > 0 ? `, torn tail of ${v.tornBytes} bytes` : ''})`,
    );
    for (const d of v.damage) out.push(`  DAMAGED ${describeDamage(d)}`);
  }
  out.push(report.damageCount === 0 ? 'no damage found' : `${report.damageCount} damaged place(s): replica damage is repaired from the agent by the running receiver; see docs/faults.md`);
  process.stdout.write(`${out.join('\n')}\n`);
}
