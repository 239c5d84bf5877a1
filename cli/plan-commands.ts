import * as fs from 'fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { parse as parseYaml } from 'yaml';
import { ExitCode, FerryError } from '../common/errors';
import { formatDuration } from '../common/units';
import type { Machine } from '../control/model';
import { parsePointSpec, pointSpecText } from '../recovery/contract';
import type { Plan, PlanAction, PlanInput, PointSpec } from '../recovery/model';
import { ApiClient, ApiRefusal } from './api-client';
import { clientFor, CommonApiOptions, formatTable, printJson, withApiOptions } from './api-command';
import { resolveMachine } from './machine-view';
import { durationOption, listFlag } from './options';
import { COMMAND_DESCRIPTIONS } from './command-index';

/**
 * `ferry plan create|list|show|edit|delete`: recovery plans through the management API.
 * Machines are given by name or id; the API stores ids.
 */

interface GroupAction {
  /** 1-based boot group number. */
  group: number;
  side: 'before' | 'after';
  action: PlanAction;
}

export interface PlanFlags {
  bootGroup: string[][];
  scriptBefore: GroupAction[];
  scriptAfter: GroupAction[];
  manualBefore: GroupAction[];
  manualAfter: GroupAction[];
  scriptTimeout?: number;
  healthPattern?: string;
  healthPort?: number;
  healthTimeout?: number;
  point?: PointSpec;
}

/** --boot-group m1,m2: machine names or ids, none empty. */
export function bootGroupOption(value: string): string[] {
  const machines = value.split(',').map((m) => m.trim());
  if (machines.length === 0 || machines.some((m) => m === '')) throw new InvalidArgumentError('expected machine names or ids separated by commas, e.g. db01,web01');
  return machines;
}

/** G:NAME:COMMAND or G:NAME:TEXT (the last part may hold colons). */
function groupAction(kind: 'script' | 'manual', side: 'before' | 'after'): (value: string) => GroupAction {
  return (value) => {
    const m = /^(\d{1,3}):([^:]+):([\s\S]+)$/.exec(value);
    const what = kind === 'script' ? 'COMMAND' : 'TEXT';
    if (!m || Number(m[1]) < 1 || m[2].trim() === '' || m[3].trim() === '') {
      throw new InvalidArgumentError(`expected GROUP:NAME:${what} with GROUP the boot group number from 1, e.g. 1:${kind === 'script' ? 'warm-cache:/usr/local/bin/warm' : 'check-dns:point www at the sandbox'}`);
    }
    const name = m[2].trim();
    const action: PlanAction = kind === 'script' ? { kind, name, command: m[3], timeoutMs: 300_000 } : { kind, name, instructions: m[3] };
    return { group: Number(m[1]), side, action };
  };
}

export function pointOption(value: string): PointSpec {
  const spec = parsePointSpec(value);
  if (!spec) throw new InvalidArgumentError('expected latest, latest-app, a point id, round:N or an ISO time such as 2026-12-03T10:00:00Z');
  return spec;
}

function portOption(value: string): number {
  const n = Number(value.trim());
  if (!/^\d+$/.test(value.trim()) || n > 65535) throw new InvalidArgumentError('expected a TCP port 1..65535 (0: none)');
  return n;
}

/** The plan the flags describe, machines as given (pure). */
export function planFromFlags(name: string, flags: PlanFlags): PlanInput {
  if (flags.bootGroup.length === 0) throw new FerryError('give the machines to boot: --boot-group m1,m2 (repeat it for each group, in boot order), or --file plan.yaml', ExitCode.usage);
  const bootGroups = flags.bootGroup.map((machines) => ({ machines, before: [] as PlanAction[], after: [] as PlanAction[] }));
  for (const a of [...flags.scriptBefore, ...flags.scriptAfter, ...flags.manualBefore, ...flags.manualAfter]) {
    const group = bootGroups[a.group - 1];
    const flag = `--${a.action.kind}-${a.side}`;
    if (!group) throw new FerryError(`${flag} ${a.group}:${a.action.name}:...: there is no boot group ${a.group} (the plan has ${bootGroups.length})`, ExitCode.usage);
    const action = a.action.kind === 'script' && flags.scriptTimeout !== undefined ? { ...a.action, timeoutMs: flags.scriptTimeout } : a.action;
    group[a.side].push(action);
  }
  const input: PlanInput = { name, bootGroups };
  const health: PlanInput['health'] = {};
  if (flags.healthPattern !== undefined) health.serialPattern = flags.healthPattern;
  if (flags.healthPort !== undefined) health.tcpPort = flags.healthPort;
  if (flags.healthTimeout !== undefined) health.timeoutMs = flags.healthTimeout;
  if (Object.keys(health).length > 0) input.health = health;
  if (flags.point !== undefined) input.defaultPoint = flags.point;
  return input;
}

/** A plan file's content (YAML or JSON: the PlanInput shape; defaultPoint may be a point word; a `revision` is kept for edits). */
export function planFromFile(file: string): { input: PlanInput; revision?: number } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new FerryError(`cannot read plan file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, ExitCode.usage);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new FerryError(`plan file ${file} is neither YAML nor JSON: ${(err as Error).message.split('\n')[0]}`, ExitCode.usage);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new FerryError(`plan file ${file} must hold a plan: name, bootGroups (each with machines, before, after), health, defaultPoint`, ExitCode.usage);
  // What `ferry plan show --json` prints is a valid file: drop what the server owns.
  const { id: _id, createdMs: _c, updatedMs: _u, revision, ...rest } = doc as Record<string, unknown>;
  if (typeof rest.defaultPoint === 'string' || typeof rest.defaultPoint === 'number') {
    const spec = parsePointSpec(String(rest.defaultPoint));
    if (!spec) throw new FerryError(`plan file ${file}: defaultPoint ${JSON.stringify(rest.defaultPoint)} is not latest, latest-app, a point id, round:N or an ISO time`, ExitCode.usage);
    rest.defaultPoint = spec;
  }
  if (revision !== undefined && (typeof revision !== 'number' || !Number.isSafeInteger(revision) || revision < 1)) throw new FerryError(`plan file ${file}: revision must be a whole number`, ExitCode.usage);
  return { input: rest as unknown as PlanInput, revision: revision as number | undefined };
}

/** The plan with each machine reference (name or id) as its id (pure over the machine list). */
export function withMachineIds(input: PlanInput, machines: Machine[]): PlanInput {
  if (!Array.isArray(input.bootGroups)) return input;
  return {
    ...input,
    bootGroups: input.bootGroups.map((g) => (Array.isArray(g?.machines) ? { ...g, machines: g.machines.map((m) => (typeof m === 'string' ? resolveMachine(machines, m).id : m)) } : g)),
  };
}

const planPath = (id: string): string => `/api/v1/plans/${encodeURIComponent(id)}`;

export async function machineList(client: ApiClient): Promise<Machine[]> {
  return (await client.get<{ machines: Machine[] }>('/api/v1/machines')).machines;
}

export function machineName(machines: Machine[], id: string): string {
  return machines.find((m) => m.id === id)?.name ?? id;
}

function actionText(a: PlanAction): string {
  return a.kind === 'script' ? `script ${a.name}: ${a.command} (timeout ${formatDuration(a.timeoutMs)})` : `manual ${a.name}: ${a.instructions || '(no instructions)'}`;
}

export function healthText(p: Plan): string {
  const parts: string[] = [];
  if (p.health.serialPattern !== '') parts.push(`serial console matches /${p.health.serialPattern}/`);
  if (p.health.tcpPort !== 0) parts.push(`TCP port ${p.health.tcpPort} answers`);
  if (parts.length === 0) parts.push('none (a started VM counts as healthy)');
  return `${parts.join(' and ')}, within ${formatDuration(p.health.timeoutMs)}`;
}

export function plansTable(plans: Plan[]): string {
  return formatTable(
    ['PLAN', 'GROUPS', 'MACHINES', 'POINT', 'REVISION', 'UPDATED'],
    plans.map((p) => [p.name, String(p.bootGroups.length), String(p.bootGroups.reduce((n, g) => n + g.machines.length, 0)), pointSpecText(p.defaultPoint), String(p.revision), new Date(p.updatedMs).toISOString()]),
  );
}

export function planDetails(p: Plan, machines: Machine[]): string {
  const lines = [
    `plan ${p.name} (revision ${p.revision}, updated ${new Date(p.updatedMs).toISOString()})`,
    `default point: ${pointSpecText(p.defaultPoint)}`,
    `health check: ${healthText(p)}`,
  ];
  p.bootGroups.forEach((g, i) => {
    lines.push(`boot group ${i + 1}: ${g.machines.map((id) => (machineName(machines, id) === id ? id : `${machineName(machines, id)} (${id})`)).join(', ')}`);
    for (const a of g.before) lines.push(`  before: ${actionText(a)}`);
    for (const a of g.after) lines.push(`  after:  ${actionText(a)}`);
  });
  return `${lines.join('\n')}\n`;
}

interface CreateOptions extends CommonApiOptions, PlanFlags {
  file?: string;
}

function withPlanFlags(cmd: Command): Command {
  return cmd
    .addOption(listFlag('--boot-group <machines>', 'machines (names or ids, comma-separated) booted together; repeat for each group, in boot order', bootGroupOption))
    .addOption(listFlag('--script-before <G:NAME:COMMAND>', 'run COMMAND on the receiver side before boot group G (repeatable)', groupAction('script', 'before')))
    .addOption(listFlag('--script-after <G:NAME:COMMAND>', 'run COMMAND on the receiver side after boot group G is healthy (repeatable)', groupAction('script', 'after')))
    .addOption(listFlag('--manual-before <G:NAME:TEXT>', 'pause before boot group G until an operator resumes the job (repeatable)', groupAction('manual', 'before')))
    .addOption(listFlag('--manual-after <G:NAME:TEXT>', 'pause after boot group G until an operator resumes the job (repeatable)', groupAction('manual', 'after')))
    .addOption(new Option('--script-timeout <duration>', "the scripts' time limit, 1s..1h (default 5m)").argParser(durationOption))
    .addOption(new Option('--health-pattern <regexp>', "what a machine's serial console must show to be healthy (default: login:; '' for none)"))
    .addOption(new Option('--health-port <port>', 'a TCP port that must answer on the machine (default: none)').argParser(portOption))
    .addOption(new Option('--health-timeout <duration>', 'boot to healthy, at most (default 10m)').argParser(durationOption))
    .addOption(new Option('--point <spec>', 'the point a run takes when it names none: latest (default), latest-app, a point id, round:N or an ISO time').argParser(pointOption));
}

export function planCommand(): Command {
  const plan = new Command('plan').description(COMMAND_DESCRIPTIONS.plan);

  plan.addCommand(
    withPlanFlags(withApiOptions(new Command('create')))
      .description('create a recovery plan from flags or from a YAML/JSON file')
      .argument('[name]', 'plan name (letters, digits, ., _ or -); taken from the file with --file')
      .option('--file <plan.yaml>', 'the plan as YAML or JSON: name, bootGroups [{machines, before, after}], health, defaultPoint')
      .action(async (name: string | undefined, opts: CreateOptions) => {
        const client = clientFor(opts);
        let input: PlanInput;
        if (opts.file !== undefined) {
          const flagged = opts.bootGroup.length + opts.scriptBefore.length + opts.scriptAfter.length + opts.manualBefore.length + opts.manualAfter.length > 0;
          if (flagged || opts.healthPattern !== undefined || opts.healthPort !== undefined || opts.healthTimeout !== undefined || opts.point !== undefined) {
            throw new FerryError('give the plan either in --file or in flags, not both', ExitCode.usage);
          }
          input = planFromFile(opts.file).input;
          if (name !== undefined) input = { ...input, name };
        } else {
          if (name === undefined) throw new FerryError('name the plan: ferry plan create NAME --boot-group m1,m2 ... (or --file plan.yaml)', ExitCode.usage);
          input = planFromFlags(name, opts);
        }
        const machines = await machineList(client);
        const created = await client.call<Plan>('POST', '/api/v1/plans', withMachineIds(input, machines));
        if (opts.json) printJson(created);
        else process.stdout.write(`created plan ${created.name}\n${planDetails(created, machines)}`);
      }),
  );

  plan.addCommand(
    withApiOptions(new Command('list'))
      .description('list recovery plans')
      .action(async (opts: CommonApiOptions) => {
        const { plans } = await clientFor(opts).call<{ plans: Plan[] }>('GET', '/api/v1/plans');
        if (opts.json) printJson(plans);
        else process.stdout.write(plans.length === 0 ? 'no recovery plans (create one with ferry plan create NAME --boot-group m1,m2)\n' : plansTable(plans));
      }),
  );

  plan.addCommand(
    withApiOptions(new Command('show'))
      .description('a plan: boot groups, scripts and manual steps, health check, default point')
      .argument('<plan>')
      .action(async (id: string, opts: CommonApiOptions) => {
        const client = clientFor(opts);
        const p = await client.call<Plan>('GET', planPath(id));
        if (opts.json) printJson(p);
        else process.stdout.write(planDetails(p, await machineList(client)));
      }),
  );

  plan.addCommand(
    withApiOptions(new Command('edit'))
      .description('replace a plan with a file (YAML or JSON); refused when someone changed the plan since the revision read')
      .argument('<plan>')
      .requiredOption('--file <plan.yaml>', 'the new plan (e.g. edited output of ferry plan show PLAN --json: its revision is checked)')
      .action(async (id: string, opts: CommonApiOptions & { file: string }) => {
        const client = clientFor(opts);
        const { input, revision: fileRevision } = planFromFile(opts.file);
        const current = await client.call<Plan>('GET', planPath(id));
        const revision = fileRevision ?? current.revision;
        const machines = await machineList(client);
        let updated: Plan;
        try {
          updated = await client.call<Plan>('PUT', planPath(id), { plan: withMachineIds({ ...input, name: input.name ?? id }, machines), revision });
        } catch (err) {
          if (err instanceof ApiRefusal && err.status === 409) {
            throw new FerryError(`plan ${id} was changed by someone else since revision ${revision}: ${err.apiMessage}; nothing was changed (ferry plan show ${id} --json, redo the edit)`, ExitCode.failure);
          }
          throw err;
        }
        if (opts.json) printJson(updated);
        else process.stdout.write(`updated plan ${updated.name} to revision ${updated.revision}\n${planDetails(updated, machines)}`);
      }),
  );

  plan.addCommand(
    withApiOptions(new Command('delete'))
      .description('delete a plan (refused while a job of it runs or its test failover is not cleaned up)')
      .argument('<plan>')
      .action(async (id: string, opts: CommonApiOptions) => {
        await clientFor(opts).call('DELETE', planPath(id));
        if (opts.json) printJson({ deleted: id });
        else process.stdout.write(`deleted plan ${id}\n`);
      }),
  );

  return plan;
}
