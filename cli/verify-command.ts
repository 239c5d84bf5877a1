import { Command } from 'commander';
import { loadAgentConfig } from '../agent/config';
import { controlRequest } from '../agent/control-client';
import { AgentState } from '../agent/state';
import type { VerifyReport, VolumeVerifyReport } from '../agent/verify/verifier';
import { ExitCode, ExitCodeValue, FerryError } from '../common/errors';
import { formatBytes } from '../common/units';
import { durationOption } from './options';

interface VerifyOptions {
  config: string;
  volume?: string;
  repair: boolean;
  json?: boolean;
  timeout?: number;
}

const DEFAULT_TIMEOUT_MS = 24 * 3600_000;

function offsetsLine(what: string, offsets: number[], total: number): string {
  const more = total > offsets.length ? ` (first ${offsets.length} of ${total})` : '';
  return `  ${what} at byte offsets${more}: ${offsets.join(', ')}`;
}

function volumeLines(v: VolumeVerifyReport, repairAsked: boolean): string[] {
  let repair = 'nothing to repair';
  if (v.divergedBlocks > 0) {
    repair = v.repaired
      ? `repaired: yes (${formatBytes(v.repairSentBytes ?? 0)} sent, durable at the receiver through seq ${v.repairThroughSeq ?? 0})`
      : `repaired: no${repairAsked ? '' : ' (--no-repair)'}`;
  }
  const lines = [
    `${v.volumeId}: ${formatBytes(v.checkedBytes)} checked, ${v.blocksCompared} blocks of ${formatBytes(v.blockSize)} compared in ${(v.durationMs / 1000).toFixed(1)} s: ` +
      `${v.divergedBlocks} diverged, ${v.busyBlocks} busy (written during every check); ${repair}`,
  ];
  if (v.divergedBlocks > 0) lines.push(offsetsLine('diverged blocks', v.divergedOffsets, v.divergedBlocks));
  if (v.busyBlocks > 0) lines.push(offsetsLine('busy blocks', v.busyOffsets, v.busyBlocks));
  return lines;
}

function summary(report: VerifyReport, repairAsked: boolean): string {
  const diverged = report.volumes.filter((v) => v.divergedBlocks > 0);
  if (diverged.length === 0) return 'no divergence between the source and the replica';
  const blocks = diverged.reduce((n, v) => n + v.divergedBlocks, 0);
  const repaired = diverged.every((v) => v.repaired);
  return `DIVERGENCE FOUND: ${blocks} block(s) in ${diverged.length} volume(s) differed from the replica; ${repaired ? 'repaired' : repairAsked ? 'NOT all repaired' : 'not repaired (--no-repair)'}`;
}

async function runVerify(opts: VerifyOptions): Promise<void> {
  const config = loadAgentConfig(opts.config);
  if (opts.volume !== undefined && !config.volumes.some((v) => v.id === opts.volume)) {
    throw new FerryError(`unknown volume ${opts.volume}: ${config.file} protects ${config.volumes.map((v) => v.id).join(', ')}`, ExitCode.usage);
  }
  const state = new AgentState(config.stateDir);
  const bar = process.stderr.isTTY && !opts.json ? new (await import('./progress')).VerifyProgressBar() : undefined;
  let reply;
  try {
    reply = await controlRequest(state.socketPath, { cmd: 'verify', volumeId: opts.volume, repair: opts.repair }, opts.timeout ?? DEFAULT_TIMEOUT_MS, (p) => bar?.update(p));
  } catch (err) {
    const message = (err as Error).message;
    throw new FerryError(message, /^no agent is running/.test(message) ? ExitCode.notReady : ExitCode.failure);
  } finally {
    bar?.stop();
  }
  if (!reply.ok) throw new FerryError(`verify failed: ${reply.error}`, (reply.exitCode ?? ExitCode.failure) as ExitCodeValue);
  const report = reply.verify;
  if (!report) throw new FerryError('the agent answered without a verify report', ExitCode.failure);
  const divergence = report.volumes.some((v) => v.divergedBlocks > 0);
  if (opts.json) process.stdout.write(`${JSON.stringify({ divergence, volumes: report.volumes }, null, 2)}\n`);
  else process.stdout.write(`${[...report.volumes.flatMap((v) => volumeLines(v, opts.repair)), summary(report, opts.repair)].join('\n')}\n`);
  if (divergence) process.exitCode = ExitCode.damageFound;
}

/** `ferry agent verify`: online verify of the protected volumes against the replica. */
export function addVerifyCommand(agent: Command): void {
  agent
    .command('verify')
    .description(
      'compare every block of the volumes with the replica while they are in use, and repair real divergence ' +
        '(exit 0: none; 8: divergence found, repaired or not; 4: no agent running)',
    )
    .requiredOption('--config <file>', 'agent config (JSON or YAML)')
    .option('--volume <id>', 'verify only this volume (default: all)')
    .option('--no-repair', 'report divergence without repairing it')
    .option('--json', 'machine-readable output')
    .option('--timeout <duration>', 'how long to wait for the agent (default: 24h)', durationOption)
    .action(runVerify);
}
