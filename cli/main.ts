import { Command, CommanderError } from 'commander';
import { describeError, ExitCode, FerryError } from '../common/errors';
import { COMMAND_DESCRIPTIONS, CommandName } from './command-index';
import { describeUnknownCommand, findUnknownCommand } from './unknown-command';

// Each command's module is required only when that command runs: the agent, the receiver and
// the API client pull in most of the tree, and `ferry agent tag` or `ferry --help` need none of it.
const LOADERS: Record<CommandName, () => Command> = {
  agent: () => (require('./agent-commands') as typeof import('./agent-commands')).agentCommand(),
  receiver: () => (require('./receiver-commands') as typeof import('./receiver-commands')).receiverCommand(),
  points: () => (require('./recovery-commands') as typeof import('./recovery-commands')).pointsCommand(),
  export: () => (require('./recovery-commands') as typeof import('./recovery-commands')).exportCommand(),
  quickstart: () => (require('./quickstart') as typeof import('./quickstart')).quickstartCommand(),
  'push-install': () => (require('./push-install') as typeof import('./push-install')).pushInstallCommand(),
  login: () => (require('./login-command') as typeof import('./login-command')).loginCommand(),
  logout: () => (require('./login-command') as typeof import('./login-command')).logoutCommand(),
  group: () => (require('./group-commands') as typeof import('./group-commands')).groupCommand(),
  machine: () => (require('./machine-commands') as typeof import('./machine-commands')).machineCommand(),
  events: () => (require('./events-command') as typeof import('./events-command')).eventsCommand(),
  plan: () => (require('./plan-commands') as typeof import('./plan-commands')).planCommand(),
  failover: () => (require('./failover-commands') as typeof import('./failover-commands')).failoverCommand(),
  failback: () => (require('./failover-commands') as typeof import('./failover-commands')).failbackCommand(),
  jobs: () => (require('./failover-commands') as typeof import('./failover-commands')).jobsCommand(),
  job: () => (require('./failover-commands') as typeof import('./failover-commands')).jobCommand(),
};

function isCommandName(name: string | undefined): name is CommandName {
  return name !== undefined && Object.prototype.hasOwnProperty.call(COMMAND_DESCRIPTIONS, name);
}

/** The top-level command the arguments name (`ferry help X` names X), if any. */
export function selectedCommand(args: readonly string[]): CommandName | undefined {
  const words = args.filter((a) => !a.startsWith('-'));
  const name = words[0] === 'help' ? words[1] : words[0];
  return isCommandName(name) ? name : undefined;
}

function buildProgram(args: readonly string[]): Command {
  const program = new Command('ferry')
    .description('Ferry: block-level continuous replication for disaster recovery')
    .version('0.1.0');
  const selected = selectedCommand(args);
  for (const name of Object.keys(COMMAND_DESCRIPTIONS) as CommandName[]) {
    // The others are stand-ins with their name and description, enough for `ferry --help`.
    program.addCommand(name === selected ? LOADERS[name]() : new Command(name).description(COMMAND_DESCRIPTIONS[name]));
  }
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
    const program = buildProgram(argv.slice(2));
    const unknown = findUnknownCommand(program, argv.slice(2));
    if (unknown) throw new FerryError(describeUnknownCommand(unknown), ExitCode.usage);
    await program.parseAsync(argv);
  } catch (err) {
    fail(err);
  }
}

if (require.main === module) void main(process.argv);
