import { Command, Option } from 'commander';
import { ExitCode, FerryError } from '../common/errors';
import type { Group, GroupPolicy, GroupRound, Machine } from '../control/model';
import { ApiClient } from './api-client';
import { clientFor, CommonApiOptions, onOffOption, policyDurationOption, printJson, withApiOptions } from './api-command';
import { groupAddByPush, PushAddOptions, withPushOptions } from './group-push';
import { countOption } from './options';
import { groupDetails, groupsTable, resolveMachine } from './machine-view';
import { COMMAND_DESCRIPTIONS } from './command-index';

interface PolicyFlags {
  rpoThreshold?: number;
  retention?: number;
  crashInterval?: number;
  appInterval?: number;
  multiMachine?: boolean;
}

/** The policy fields given on the command line (pure). */
export function policyPatch(flags: PolicyFlags): Partial<GroupPolicy> {
  const patch: Partial<GroupPolicy> = {};
  if (flags.rpoThreshold !== undefined) patch.rpoThresholdMs = flags.rpoThreshold;
  if (flags.retention !== undefined) patch.retentionMs = flags.retention;
  if (flags.crashInterval !== undefined) patch.crashConsistentIntervalMs = flags.crashInterval;
  if (flags.appInterval !== undefined) patch.appConsistentIntervalMs = flags.appInterval;
  if (flags.multiMachine !== undefined) patch.multiMachineConsistency = flags.multiMachine;
  return patch;
}

function withPolicyOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--rpo-threshold <duration>', 'alert when a member volume RPO exceeds this (e.g. 30s)').argParser(policyDurationOption))
    .addOption(new Option('--retention <duration>', 'recovery-point retention window (e.g. 24h, 7d)').argParser(policyDurationOption))
    .addOption(new Option('--crash-interval <duration>', 'crash-consistent point interval (e.g. 1s)').argParser(policyDurationOption))
    .addOption(new Option('--app-interval <duration>', 'application-consistent point interval (e.g. 1h) or off').argParser(policyDurationOption))
    .addOption(new Option('--multi-machine <on|off>', 'group-wide consistent points across the members').argParser(onOffOption));
}

const groupPath = (id: string): string => `/api/v1/groups/${encodeURIComponent(id)}`;

async function showGroup(client: ApiClient, id: string, json: boolean | undefined): Promise<void> {
  const group = await client.call<Group>('GET', groupPath(id));
  const { machines } = await client.get<{ machines: Machine[] }>('/api/v1/machines', { group: group.id });
  if (json) printJson({ ...group, machines });
  else process.stdout.write(groupDetails(group, machines));
}

async function machineIdOf(client: ApiClient, ref: string): Promise<string> {
  const { machines } = await client.get<{ machines: Machine[] }>('/api/v1/machines');
  return resolveMachine(machines, ref).id;
}

interface AddOptions extends CommonApiOptions, PushAddOptions {}

export function groupCommand(): Command {
  const group = new Command('group').description(COMMAND_DESCRIPTIONS.group);

  group.addCommand(
    withPolicyOptions(withApiOptions(new Command('create')))
      .description('create a protection group (policy flags left out take the defaults)')
      .argument('<name>', 'group name (letters, digits, ., _ or -)')
      .action(async (name: string, opts: CommonApiOptions & PolicyFlags) => {
        const patch = policyPatch(opts);
        const created = await clientFor(opts).call<Group>('POST', '/api/v1/groups', { name, ...(Object.keys(patch).length > 0 ? { policy: patch } : {}) });
        if (opts.json) printJson(created);
        else process.stdout.write(groupDetails(created, []));
      }),
  );

  group.addCommand(
    withApiOptions(new Command('list'))
      .description('list protection groups')
      .action(async (opts: CommonApiOptions) => {
        const { groups } = await clientFor(opts).call<{ groups: Group[] }>('GET', '/api/v1/groups');
        if (opts.json) printJson(groups);
        else process.stdout.write(groups.length === 0 ? 'no groups (create one with ferry group create NAME)\n' : groupsTable(groups));
      }),
  );

  group.addCommand(
    withApiOptions(new Command('show'))
      .description("a group's policy and its members' state")
      .argument('<group>')
      .action(async (id: string, opts: CommonApiOptions) => showGroup(clientFor(opts), id, opts.json)),
  );

  group.addCommand(
    withPolicyOptions(withApiOptions(new Command('set')))
      .description("change a group's policy (member agents apply it at once)")
      .argument('<group>')
      .action(async (id: string, opts: CommonApiOptions & PolicyFlags) => {
        const patch = policyPatch(opts);
        if (Object.keys(patch).length === 0) throw new FerryError('nothing to change: give --rpo-threshold, --retention, --crash-interval, --app-interval or --multi-machine', ExitCode.usage);
        const updated = await clientFor(opts).call<Group>('PATCH', `${groupPath(id)}/policy`, patch);
        if (opts.json) printJson(updated);
        else process.stdout.write(groupDetails(updated, []).split('\n').slice(0, 2).join('\n') + '\n');
      }),
  );

  group.addCommand(
    withApiOptions(new Command('delete'))
      .description('delete an empty group')
      .argument('<group>')
      .action(async (id: string, opts: CommonApiOptions) => {
        await clientFor(opts).call('DELETE', groupPath(id));
        if (opts.json) printJson({ deleted: id });
        else process.stdout.write(`deleted group ${id}\n`);
      }),
  );

  group.addCommand(
    withPushOptions(withApiOptions(new Command('add')))
      .description('add a machine to the group; with --ssh or --smb, push-install the agent first and follow it to Protected')
      .argument('<group>')
      .argument('[machine]', 'machine id or name (not with --ssh/--smb)')
      .action(async (id: string, machine: string | undefined, opts: AddOptions) => {
        const client = clientFor(opts);
        if (opts.ssh !== undefined || opts.smb !== undefined) {
          if (machine !== undefined) throw new FerryError('give either a MACHINE or --ssh/--smb, not both', ExitCode.usage);
          await groupAddByPush(client, id, opts);
          return;
        }
        if (machine === undefined) throw new FerryError('name the machine to add (id or name), or install one with --ssh user@host / --smb //host/ADMIN$', ExitCode.usage);
        const machineId = await machineIdOf(client, machine);
        const updated = await client.call<Group>('POST', `${groupPath(id)}/members`, { machineId });
        if (opts.json) printJson(updated);
        else process.stdout.write(`added ${machine} to group ${updated.name} (${updated.members.length} member(s)); its agent gets the group policy now\n`);
      }),
  );

  group.addCommand(
    withApiOptions(new Command('remove'))
      .description("remove a machine from the group (its points stay; it falls back to its agent's own settings)")
      .argument('<group>')
      .argument('<machine>', 'machine id or name')
      .action(async (id: string, machine: string, opts: CommonApiOptions) => {
        const client = clientFor(opts);
        const machineId = await machineIdOf(client, machine);
        const updated = await client.call<Group>('DELETE', `${groupPath(id)}/members/${encodeURIComponent(machineId)}`);
        if (opts.json) printJson(updated);
        else process.stdout.write(`removed ${machine} from group ${updated.name}; its recovery points stay in the catalog\n`);
      }),
  );

  group.addCommand(
    withApiOptions(new Command('round'))
      .description('take a group-consistent point now (multi-machine consistency on): prepare, every member holds, commit')
      .argument('<group>')
      .option('--app', 'an application-consistent round (hooks and freezes on every member)')
      .action(async (id: string, opts: CommonApiOptions & { app?: boolean }) => {
        const round = await clientFor(opts).call<GroupRound>('POST', `${groupPath(id)}/rounds`, { app: opts.app === true });
        if (opts.json) printJson(round);
        else process.stdout.write(`${roundLine(round)}\n`);
        if (round.state !== 'done') throw new FerryError(`round ${round.id} of group ${id} aborted: ${round.reason}`, ExitCode.failure);
      }),
  );

  group.addCommand(
    withApiOptions(new Command('rounds'))
      .description("the group's latest rounds, newest first: state, hold time, reason of an abort")
      .argument('<group>')
      .addOption(new Option('--limit <n>', 'rounds to list, newest first').argParser(countOption).default(20, '20 rounds'))
      .action(async (id: string, opts: CommonApiOptions & { limit: number }) => {
        const { rounds } = await clientFor(opts).get<{ rounds: GroupRound[] }>(`${groupPath(id)}/rounds`, { limit: opts.limit });
        if (opts.json) printJson(rounds);
        else process.stdout.write(rounds.length === 0 ? `no rounds yet in group ${id}\n` : `${rounds.map(roundLine).join('\n')}\n`);
      }),
  );

  return group;
}

/** One round as a line: id, kind, state, when, hold time, points or the abort's reason. */
export function roundLine(r: GroupRound): string {
  const when = new Date(r.startedMs).toISOString();
  const hold = r.holdMs === null ? '-' : `${r.holdMs} ms`;
  const tail = r.state === 'aborted' ? `reason: ${r.reason}` : `${r.pointIds.length} point(s) ${r.pointIds.join(',')}`;
  return `round ${r.id}\t${r.app ? 'app' : 'crash'}\t${r.state}\t${when}\thold ${hold}\t${r.members.length} member(s)\t${tail}`;
}
