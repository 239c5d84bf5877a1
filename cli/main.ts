import { Command, CommanderError } from 'commander';
import { describeError, ExitCode, FerryError } from '../common/errors';
import { agentCommand } from './agent-commands';
import { eventsCommand } from './events-command';
import { failbackCommand, failoverCommand, jobCommand, jobsCommand } from './failover-commands';
import { groupCommand } from './group-commands';
import { loginCommand, logoutCommand } from './login-command';
import { machineCommand } from './machine-commands';
import { planCommand } from './plan-commands';
import { pushInstallCommand } from './push-install';
import { quickstartCommand } from './quickstart';
import { receiverCommand } from './receiver-commands';
import { exportCommand, pointsCommand } from './recovery-commands';
import { describeUnknownCommand, findUnknownCommand } from './unknown-command';

function buildProgram(): Command {
  const program = new Command('ferry')
    .description('Ferry: block-level continuous replication for disaster recovery')
    .version('0.1.0');
  program.addCommand(agentCommand());
  program.addCommand(receiverCommand());
  program.addCommand(pointsCommand());
  program.addCommand(exportCommand());
  program.addCommand(quickstartCommand());
  program.addCommand(pushInstallCommand());
  program.addCommand(loginCommand());
  program.addCommand(logoutCommand());
  program.addCommand(groupCommand());
  program.addCommand(machineCommand());
  program.addCommand(eventsCommand());
  program.addCommand(planCommand());
  program.addCommand(failoverCommand());
  program.addCommand(failbackCommand());
  program.addCommand(jobsCommand());
  program.addCommand(jobCommand());
  const exitOnError = (cmd: Command): void => {
    cmd.exitOverride();
    // Usage errors as one line, like every other error: "ferry: <what> (see '<command> --help')".
    cmd.configureOutput({ outputError: (text, write) => write(`ferry: ${text.trim().replace(/^error: /, '').replace(/\s*\n\s*/g, ' ')} (see '${commandPath(cmd)} --help')\n`) });
    cmd.commands.forEach(exitOnError);
  };
  exitOnError(program);
  return program;
}

function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

function fail(err: unknown): never {
  if (err instanceof CommanderError) {
    const ok = err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help';
    process.exit(ok ? ExitCode.ok : ExitCode.usage);
  }
  if (err instanceof FerryError) {
    process.stderr.write(`ferry: ${err.message}\n`);
    process.exit(err.exitCode);
  }
  process.stderr.write(`ferry: unexpected error: ${describeError(err)}\n`);
  if (process.env.FERRY_DEBUG) process.stderr.write(`${(err as Error).stack ?? ''}\n`);
  process.exit(ExitCode.failure);
}

export async function main(argv: string[]): Promise<void> {
  try {
    const program = buildProgram();
    const unknown = findUnknownCommand(program, argv.slice(2));
    if (unknown) throw new FerryError(describeUnknownCommand(unknown), ExitCode.usage);
    await program.parseAsync(argv);
  } catch (err) {
    fail(err);
  }
}

if (require.main === module) void main(process.argv);
