import { Command } from 'commander';
import { log } from '../common/log';
import { formatBytes } from '../common/units';
import { QuickstartConsole, QuickstartReport, runQuickstart } from '../quickstart/run';
import { hostPortFlag, sizeFlag, textFlag } from './options';
import { COMMAND_DESCRIPTIONS } from './command-index';

export function quickstartCommand(): Command {
  return new Command('quickstart')
    .description(COMMAND_DESCRIPTIONS.quickstart)
    .addOption(textFlag('--dir <dir>', 'working directory (wiped and recreated if a previous quick start made it)', 'ferry-quickstart'))
    .addOption(sizeFlag('--size <size>', 'size of the sample volume', 64 * 1024 * 1024))
    .addOption(sizeFlag('--churn <size>', 'data written to the volume while it is protected', 8 * 1024 * 1024))
    .option('--serve', 'after the report, keep the receiver, the agent and the web console running until Ctrl-C')
    .addOption(hostPortFlag('--console-listen <host:port>', 'where the web console listens with --serve (port 0: any free port)', { host: '127.0.0.1', port: 8443 }))
    .action(async (opts: { dir: string; size: number; churn: number; serve?: boolean; consoleListen: { host: string; port: number } }) => {
      // The report is the output; the agent's and receiver's progress logs would only bury it.
      if (process.env.FERRY_LOG_LEVEL === undefined) log.level = 'warn';
      const started = Date.now();
      const serve = async (report: QuickstartReport, console: QuickstartConsole): Promise<void> => {
        printReport(report, started);
        process.stdout.write(
          [
            '',
            `Web console: ${console.url}  (the receiver's self-signed certificate: accept it in the browser)`,
            `  operator ${console.operator}, password ${console.password}  (also in ${console.passwordFile})`,
            'The receiver, the agent and the console keep running; Ctrl-C stops them.',
            '',
          ].join('\n'),
        );
        await new Promise<void>((resolve) => {
          process.once('SIGINT', resolve);
          process.once('SIGTERM', resolve);
        });
      };
      const r = await runQuickstart({
        dir: opts.dir,
        sizeBytes: opts.size,
        churnBytes: opts.churn,
        progress: (line) => process.stdout.write(`- ${line}\n`),
        console: opts.serve ? { listen: opts.consoleListen, serve } : undefined,
      });
      if (!opts.serve) printReport(r, started);
      if (!r.exportMatches || (r.fsck && !r.fsck.clean)) process.exitCode = 1;
    });
}

function printReport(r: QuickstartReport, started: number): void {
  const lines = [
    '',
    'Ferry quick start report',
    `  volume           ${formatBytes(r.sizeBytes)} (${r.volumeKind}), protected with scan capture`,
    `  initial resync   ${r.resyncSeconds.toFixed(2)} s, ${formatBytes(r.resyncBytesSent)} sent (${(r.resyncBytesSent / 1e6 / Math.max(r.resyncSeconds, 0.001)).toFixed(1)} MB/s; zero blocks are skipped)`,
    `  churn            ${formatBytes(r.churnBytes)}; highest RPO seen ${r.maxRpoSeconds.toFixed(2)} s`,
    `  recovery points  ${r.points}; exported point ${r.pointId} (${r.pointAccuracy})`,
    `  export           ${r.exportFile}: ${r.exportMatches ? 'identical to the source volume (SHA-256)' : 'DIFFERS from the source volume'}`,
  ];
  if (r.fsck) lines.push(`  file system      e2fsck ${r.fsck.clean ? 'clean' : 'FOUND ERRORS'}; files: ${r.fsck.files.join(', ')}`);
  lines.push(
    `  took             ${((Date.now() - started) / 1000).toFixed(1)} s`,
    '',
    `Explore: ./bin/ferry points --data ${r.dir}/receiver`,
    `         ./bin/ferry export --data ${r.dir}/receiver --volume sample --point latest --out /tmp/sample.img`,
  );
  process.stdout.write(`${lines.join('\n')}\n`);
}
