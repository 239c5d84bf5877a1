import { Command } from 'commander';
import * as fs from 'fs';
import { loadAgentConfig } from '../agent/config';
import { controlRequest } from '../agent/control-client';
import { AgentState } from '../agent/state';
import { AgentStatus, readAgentStatus } from '../agent/status';
import { ExitCode, FerryError } from '../common/errors';
import { formatBytes, formatDuration } from '../common/units';
import { addConfigureCommands } from './configure-command';
import { addFailbackCommand } from './failback-command';
import { durationFlag } from './options';
import { addProtectCommands } from './protect-commands';
import { addVerifyCommand } from './verify-command';
import { COMMAND_DESCRIPTIONS } from './command-index';

async function readPassphrase(file: string | undefined): Promise<string> {
  let text: string;
  if (file) {
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw new FerryError(`cannot read passphrase file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, ExitCode.usage);
    }
  } else {
    if (process.stdin.isTTY) process.stderr.write('receiver passphrase: ');
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    text = Buffer.concat(chunks).toString('utf8');
  }
  const passphrase = text.split('\n')[0].trim();
  if (passphrase === '') throw new FerryError('the passphrase is empty', ExitCode.usage);
  return passphrase;
}

async function runAgent(opts: { config: string }): Promise<void> {
  // Loaded here, not at the top: `ferry agent tag` and `status` need none of the agent's code.
  const { Agent } = await import('../agent/agent');
  const agent = new Agent(loadAgentConfig(opts.config));
  // The bars (and their library) only for an operator watching; the service has no terminal.
  const bars = process.stderr.isTTY ? new (await import('./progress')).ResyncProgressBars(() => agent.status()) : undefined;
  const stop = (): void => agent.stop();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await agent.run();
  } finally {
    bars?.stop();
  }
}

function printStatus(s: AgentStatus, running: boolean): void {
  const out = [
    `agent ${s.name} (${s.agentId}) ${running ? `running, pid ${s.pid}` : 'NOT RUNNING'}; capture ${s.capture}; receiver ${s.receiver} ${s.connected ? 'connected' : 'disconnected'}${s.throttled ? ', throttled' : ''}`,
    ...(s.captureReason ? [`capture ${s.capture}: ${s.captureReason}`] : []),
    `sent ${formatBytes(s.sentBytes)}, ${formatBytes(s.throughputBytesPerSecond)}/s; memory ${formatBytes(s.rssBytes)}${s.lastError ? `; last error: ${s.lastError}` : ''}`,
    ...policyLines(s),
    '',
    ['VOLUME', 'STATE', 'MODE', 'RPO', 'BACKLOG', 'DURABLE SEQ', 'RESYNC', 'REPAIR'].join('\t'),
  ];
  for (const v of s.volumes) {
    const r = v.resync;
    const resync = !r ? '-' : r.finished ? `${r.kind} done (${formatBytes(r.sentBytes)} sent)` : `${r.kind} ${r.percent.toFixed(1)}% ${formatBytes(r.rateBytesPerSecond)}/s ETA ${r.etaSeconds === null ? '?' : `${Math.round(r.etaSeconds)}s`}`;
    const p = v.repair;
    const repair = !p ? '-' : p.finished ? `done (${formatBytes(p.sentBytes)} sent)` : `${p.percent.toFixed(1)}% (${formatBytes(p.sentBytes)} sent)`;
    const over = s.policy && v.rpoSeconds * 1000 > s.policy.rpoThresholdMs.value ? ' (over threshold)' : '';
    out.push([v.volumeId, v.state, v.mode, `${v.rpoSeconds.toFixed(3)}s${over}`, formatBytes(v.backlogBytes), String(v.durableSeq), resync, repair].join('\t'));
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

/** The effective policy with the source of each value, group rounds, queued events. */
function policyLines(s: AgentStatus): string[] {
  // A status file written by an older agent has none of these.
  if (!s.policy || !s.rounds) return [];
  const p = s.policy;
  const value = (ms: number): string => (ms === 0 ? 'off' : formatDuration(ms));
  const lines = [
    `policy: ${p.groupId ? `group ${p.groupId} rev ${p.revision}${p.multiMachine ? ', multi-machine consistency' : ''}` : 'no group'}`,
    `  crash points every ${value(p.crashIntervalMs.value)} (${p.crashIntervalMs.sourceLabel})`,
    `  app points ${p.appIntervalMs.value === 0 ? 'off' : `every ${value(p.appIntervalMs.value)}`} (${p.appIntervalMs.sourceLabel})`,
    `  RPO threshold ${value(p.rpoThresholdMs.value)} (${p.rpoThresholdMs.sourceLabel})`,
  ];
  const r = s.rounds;
  const o = r.outcomes;
  const total = Object.values(o).reduce((a, b) => a + b, 0);
  if (total > 0 || r.active) {
    const ms = (v: number | null): string => (v === null ? '-' : `${v} ms`);
    const ended = Object.entries(o)
      .filter(([, n]) => n > 0)
      .map(([k, n]) => `${n} ${k}`)
      .join(', ');
    lines.push(`rounds: ${ended || 'none ended'}; hold last ${ms(r.lastHoldMs)}, p50 ${ms(r.p50HoldMs)}, p99 ${ms(r.p99HoldMs)}${r.active ? `; round ${r.active.roundId} ${r.active.phase}` : ''}`);
  }
  if (s.events && (s.events.queued > 0 || s.events.dropped > 0)) lines.push(`events: ${s.events.queued} waiting for the receiver${s.events.dropped > 0 ? `, ${s.events.dropped} dropped` : ''}`);
  return lines;
}

export function agentCommand(): Command {
  const cmd = new Command('agent').description(COMMAND_DESCRIPTIONS.agent);

  cmd
    .command('run')
    .description('protect the configured volumes: capture, resync and stream changes to the receiver (foreground; the service runs this)')
    .requiredOption('--config <file>', 'agent config (JSON or YAML)')
    .action(runAgent);

  cmd
    .command('register')
    .description('register this machine with the receiver once (passphrase from --passphrase-file or stdin, never the command line)')
    .requiredOption('--config <file>', 'agent config (JSON or YAML)')
    .option('--passphrase-file <file>', 'file holding the receiver passphrase (default: read stdin)')
    .action(async (opts: { config: string; passphraseFile?: string }) => {
      const config = loadAgentConfig(opts.config);
      const passphrase = await readPassphrase(opts.passphraseFile);
      const { registerAgent } = await import('../agent/register');
      const { agentId } = await registerAgent(config, new AgentState(config.stateDir), passphrase);
      process.stdout.write(`registered as ${agentId}; credential stored in ${new AgentState(config.stateDir).credentialFile}\n`);
    });

  cmd
    .command('status')
    .description('state, RPO, backlog, throughput and resync progress of every volume; the effective policy (each value with its source: group, local config, default) and group rounds')
    .requiredOption('--config <file>', 'agent config (JSON or YAML)')
    .option('--json', 'machine-readable output')
    .action(async (opts: { config: string; json?: boolean }) => {
      const state = new AgentState(loadAgentConfig(opts.config).stateDir);
      let status: AgentStatus | undefined;
      let running = true;
      try {
        const reply = await controlRequest(state.socketPath, { cmd: 'status' }, 5000);
        if (reply.ok) status = reply.status;
      } catch {
        running = false;
      }
      status ??= readAgentStatus(state.statusFile);
      if (!status) throw new FerryError(`no agent has run with state directory ${state.dir}`, ExitCode.notFound);
      if (opts.json) process.stdout.write(`${JSON.stringify({ running, ...status }, null, 2)}\n`);
      else printStatus(status, running);
      if (!running) process.exitCode = ExitCode.notReady;
    });

  cmd
    .command('tag')
    .description(
      'cut a recovery point now: crash-consistent, or with --app application-consistent (hooks + filesystem freeze); ' +
        `an app tag that could only be recorded as a crash point exits ${ExitCode.pointDowngraded} and says why`,
    )
    .requiredOption('--config <file>', 'agent config (JSON or YAML)')
    .option('--app', 'freeze the configured mount points and run the hooks around the tag')
    .option('--name <name>', 'a name for the point (default: none)')
    .addOption(durationFlag('--timeout <duration>', 'how long to wait for the agent', 120_000))
    .option('--json', 'machine-readable output')
    .action(async (opts: { config: string; app?: boolean; name?: string; timeout: number; json?: boolean }) => {
      const state = new AgentState(loadAgentConfig(opts.config).stateDir);
      let reply;
      try {
        reply = await controlRequest(state.socketPath, { cmd: 'tag', app: opts.app === true, name: opts.name ?? '' }, opts.timeout);
      } catch (err) {
        throw new FerryError((err as Error).message, ExitCode.notReady);
      }
      if (!reply.ok) throw new FerryError(`tag failed: ${reply.error}`, ExitCode.failure);
      const tag = reply.tag;
      if (!tag) throw new FerryError('the agent answered without a tag', ExitCode.failure);
      const points = `point${tag.pointIds.length === 1 ? '' : 's'} ${tag.pointIds.join(', ')}`;
      if (opts.json) {
        const { pointIds, kind, accuracy, appConsistent, reasonCode, reason, frozenMs, postHookError, cuts } = tag;
        process.stdout.write(`${JSON.stringify({ pointIds, kind, accuracy, appConsistent, reasonCode, reason, frozenMs, postHookError, cuts }, null, 2)}\n`);
      } else {
        const frozen = tag.frozenMs !== undefined ? `, filesystems frozen ${tag.frozenMs} ms` : '';
        process.stdout.write(`point(s) ${tag.pointIds.join(', ')}: ${tag.kind}, ${tag.accuracy}${frozen}\n`);
      }
      if (tag.postHookError) process.stderr.write(`ferry: warning: ${points} stands, but the post-hook failed: ${tag.postHookError}\n`);
      if (opts.app === true && !tag.appConsistent) {
        process.stderr.write(`ferry: ${points} recorded as crash-consistent, not application-consistent: ${tag.reason ?? 'no reason given'}\n`);
        process.exitCode = ExitCode.pointDowngraded;
      }
    });
  addConfigureCommands(cmd);
  addProtectCommands(cmd);
  addVerifyCommand(cmd);
  addFailbackCommand(cmd);
  return cmd;
}
