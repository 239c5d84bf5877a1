import { Command } from 'commander';
import * as fs from 'fs';
import { ExitCode, FerryError } from '../common/errors';
import { log } from '../common/log';
import { formatBytes } from '../common/units';
import { DataLayout } from '../receiver/layout';
import { startReceiver } from '../receiver/server';
import { readStatusFile, ReceiverStatus } from '../receiver/status';
import { durationFlag, hostPortFlag, sizeFlag } from './options';

interface RunOptions {
  data: string;
  listen: { host: string; port: number };
  tlsCert?: string;
  tlsKey?: string;
  passphraseFile?: string;
  retention: number;
  spoolCap: number;
  segmentSize: number;
  retentionInterval: number;
}

async function runReceiver(opts: RunOptions): Promise<void> {
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
  });
  const { identity } = receiver;
  const lines = [
    `ferry receiver listening on wss://${opts.listen.host}:${receiver.port}`,
    `certificate SHA-256 fingerprint: ${identity.fingerprint}`,
  ];
  if (identity.newPassphrase) {
    lines.push(`registration passphrase (shown once, store it safely): ${identity.newPassphrase}`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
  log.info('receiver started', { listen: `${opts.listen.host}:${receiver.port}`, data: opts.data, fingerprint: identity.fingerprint });

  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log.info('receiver stopping', { signal });
      receiver.close().then(resolve, resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
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
  out.push('');
  out.push(['VOLUME', 'AGENT', 'RPO', 'APPLY LAG', 'DURABLE SEQ', 'APPLIED SEQ', 'SPOOL'].join('\t'));
  for (const v of status.volumes) {
    out.push(
      [
        v.volumeId,
        v.connected ? 'connected' : 'offline',
        `${v.rpoSeconds.toFixed(3)}s`,
        `${v.applyLagSeconds.toFixed(3)}s (${v.applyLagSeqs} seqs)`,
        String(v.durableSeq),
        String(v.appliedSeq),
        formatBytes(v.unappliedBytes),
      ].join('\t') + (v.applyError ? `\tAPPLY STOPPED: ${v.applyError}` : ''),
    );
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

export function receiverCommand(): Command {
  const cmd = new Command('receiver').description('the receiving side: durable spool, replicas, undo journal, recovery points');

  cmd
    .command('run')
    .description('run the receiver (creates the data directory, certificate and passphrase on first run)')
    .requiredOption('--data <dir>', 'data directory')
    .addOption(hostPortFlag('--listen <host:port>', 'address to serve wss on', { host: '0.0.0.0', port: 7443 }))
    .option('--tls-cert <file>', 'PEM certificate to serve instead of the generated self-signed one')
    .option('--tls-key <file>', 'PEM private key for --tls-cert')
    .option('--passphrase-file <file>', 'registration passphrase (instead of a generated one)')
    .addOption(durationFlag('--retention <duration>', 'how long recovery points stay exportable', 24 * 3600 * 1000))
    .addOption(durationFlag('--retention-interval <duration>', 'how often retention pruning runs', 60 * 1000))
    .addOption(sizeFlag('--spool-cap <size>', 'unapplied spool per volume above which agents are throttled', 1024 ** 3))
    .addOption(sizeFlag('--segment-size <size>', 'size at which spool and journal segments roll over', 64 * 1024 ** 2))
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
  return cmd;
}
