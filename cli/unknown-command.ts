// Commander shows the parent's help for `ferry group create --help` (an unknown command with a
// help flag) and exits 0; this walk finds such a command first, so it is refused at any level.
import type { Command } from 'commander';

export interface UnknownCommand {
  /** The command names that were found, from the program down, e.g. ['ferry', 'agent']. */
  known: string[];
  /** The word that names no command there. */
  name: string;
}

function subcommand(cmd: Command, name: string): Command | undefined {
  return cmd.commands.find((c) => c.name() === name || c.aliases().includes(name));
}

function takesValue(cmd: Command, arg: string): boolean {
  if (arg.includes('=')) return false;
  const option = cmd.options.find((o) => o.long === arg || o.short === arg);
  return option !== undefined && (option.required || option.optional);
}

/** The first word of `args` (argv without node and script) that should name a command but does not. */
export function findUnknownCommand(program: Command, args: readonly string[]): UnknownCommand | undefined {
  let cmd = program;
  const known = [program.name()];
  for (let i = 0; i < args.length && cmd.commands.length > 0; i++) {
    const arg = args[i];
    if (arg === '--') return undefined;
    if (arg.startsWith('-')) {
      if (takesValue(cmd, arg)) i++;
      continue;
    }
    if (arg === 'help' && subcommand(cmd, arg) === undefined) {
      // `ferry [group] help NAME`: NAME must be a command of that level.
      const named = args[i + 1];
      return named === undefined || named.startsWith('-') || subcommand(cmd, named) ? undefined : { known, name: named };
    }
    const next = subcommand(cmd, arg);
    if (!next) return { known, name: arg };
    cmd = next;
    known.push(next.name());
  }
  return undefined;
}

export function describeUnknownCommand(u: UnknownCommand): string {
  const full = [...u.known.slice(1), u.name].join(' ');
  return `unknown command '${full}' (see '${u.known.join(' ')} --help')`;
}
