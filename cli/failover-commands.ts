import { Command, InvalidArgumentError, Option } from 'commander';
import { ExitCode, FerryError } from '../common/errors';
import { formatDuration } from '../common/units';
import type { Machine } from '../control/model';
import { pointSpecText } from '../recovery/contract';
import type { Job, JobKind, JobState, JobStep, PointSpec } from '../recovery/model';
import { ApiClient } from './api-client';
import { clientFor, CommonApiOptions, formatTable, printJson, withApiOptions } from './api-command';
import { countOption } from './options';
import { machineList, machineName, pointOption } from './plan-commands';
import { COMMAND_DESCRIPTIONS } from './command-index';

/**
 * `ferry failover test|cleanup|run|commit`, `ferry jobs`, `ferry job show|wait|resume|cancel`:
 * recovery runs through the management API. The commands that start a job follow it (a poll a
 * second at most), print each step as it changes, and end with the machines and the RTO; the exit code
 * says how the job ended.
 */

/** Polls start quick (short jobs such as a cleanup end in a moment) and settle at a second. */
const POLL_MS = [100, 200, 400, 800, 1000];
const JOB_KINDS: readonly JobKind[] = ['test-failover', 'cleanup', 'failover', 'commit', 'failback-prepare', 'failback'];
const JOB_STATES: readonly JobState[] = ['running', 'waiting', 'succeeded', 'failed', 'cancelled'];
const FINAL: readonly JobState[] = ['succeeded', 'failed', 'cancelled'];

const planPath = (id: string): string => `/api/v1/plans/${encodeURIComponent(id)}`;
const jobPath = (id: number): string => `/api/v1/jobs/${id}`;

function jobIdArgument(value: string): number {
  const n = Number(value.trim());
  if (!/^\d{1,15}$/.test(value.trim()) || n < 1) throw new InvalidArgumentError('expected a job id (a whole number, see ferry jobs)');
  return n;
}

function choice<T extends string>(values: readonly T[]): (value: string) => T {
  return (value) => {
    if (!(values as readonly string[]).includes(value)) throw new InvalidArgumentError(`expected one of ${values.join(', ')}`);
    return value as T;
  };
}

const clock = (ms: number): string => new Date(ms).toISOString().slice(11, 19);
const took = (s: JobStep): string => (s.startedMs !== null && s.finishedMs !== null ? ` (${formatDuration(Math.max(0, s.finishedMs - s.startedMs))})` : '');

/** One step as a line (pure). */
export function stepLine(s: JobStep): string {
  const when = s.finishedMs ?? s.startedMs;
  return `${when === null ? '        ' : clock(when)}  step ${s.id} ${s.name}: ${s.state}${took(s)}${s.detail ? ` - ${s.detail}` : ''}`;
}

/** The steps that changed from one look at a job to the next (pure). */
export function changedSteps(before: Job | undefined, now: Job): JobStep[] {
  return now.steps.filter((s) => {
    const old = before?.steps.find((o) => o.id === s.id);
    return !old || old.state !== s.state || old.detail !== s.detail;
  });
}

/** A job's summary: its state, the machines (name, state, boot time, address, evidence) and the RTO (pure). */
export function jobSummary(job: Job, machines: Machine[]): string {
  const lines = [`job ${job.id} ${job.kind} of plan ${job.planId} at point ${pointSpecText(job.point)}: ${job.state}${job.reason ? ` (${job.reason})` : ''}`];
  lines.push(`started ${new Date(job.startedMs).toISOString()}${job.finishedMs !== null ? `, ended ${new Date(job.finishedMs).toISOString()} (${formatDuration(Math.max(1, job.finishedMs - job.startedMs))})` : ''}`);
  if (job.machines.length > 0) {
    lines.push('');
    lines.push(
      formatTable(
        ['MACHINE', 'STATE', 'BOOT', 'ADDRESS', 'RUNS ON', 'POINTS'],
        job.machines.map((m) => [
          machineName(machines, m.machineId),
          m.state,
          m.bootMs === null ? '-' : formatDuration(m.bootMs),
          m.address || '-',
          m.runsOn || '-',
          Object.entries(m.points)
            .map(([v, p]) => `${v}@${p}`)
            .join(',') || '-',
        ]),
      ).trimEnd(),
    );
    for (const m of job.machines) {
      const name = machineName(machines, m.machineId);
      if (m.detail) lines.push(`${name}: ${m.detail}`);
      if (m.serialLog) lines.push(`${name}: serial log ${m.serialLog}`);
      if (m.screenshot) lines.push(`${name}: screenshot ${m.screenshot}`);
    }
  }
  if (job.rtoMs !== null) lines.push(`RTO ${formatDuration(job.rtoMs)} (start to every machine healthy)`);
  return `${lines.join('\n')}\n`;
}

export function jobDetails(job: Job, machines: Machine[]): string {
  const steps = job.steps.length === 0 ? 'no steps yet\n' : `${job.steps.map(stepLine).join('\n')}\n`;
  return `${jobSummary(job, machines)}\n${steps}`;
}

export function jobsTable(jobs: Job[]): string {
  return formatTable(
    ['JOB', 'KIND', 'PLAN', 'STATE', 'POINT', 'STARTED', 'TOOK', 'RTO', 'REASON'],
    jobs.map((j) => [
      String(j.id),
      j.kind,
      j.planId,
      j.state,
      pointSpecText(j.point),
      new Date(j.startedMs).toISOString(),
      j.finishedMs === null ? '-' : formatDuration(Math.max(1, j.finishedMs - j.startedMs)),
      j.rtoMs === null ? '-' : formatDuration(j.rtoMs),
      j.reason,
    ]),
  );
}

/** How a finished job ends the command: 0 when it succeeded, else a FerryError saying why. */
function outcome(job: Job): void {
  if (job.state === 'succeeded') return;
  throw new FerryError(`job ${job.id} (${job.kind} of plan ${job.planId}) ${job.state}${job.reason ? `: ${job.reason}` : ''} (ferry job show ${job.id})`, ExitCode.failure);
}

/** Follows a job to its end, printing steps as they change and the manual steps' instructions. */
async function follow(client: ApiClient, first: Job, json: boolean | undefined): Promise<void> {
  const machines = await machineList(client).catch((): Machine[] => []);
  let seen: Job | undefined;
  let job = first;
  let waitingShown = new Set<number>();
  for (let poll = 0; ; poll++) {
    if (!json) {
      for (const s of changedSteps(seen, job)) {
        process.stdout.write(`${stepLine(s)}\n`);
        if (s.state === 'waiting' && !waitingShown.has(s.id)) process.stdout.write(`          waiting for an operator: ferry job resume ${job.id} (or ferry job cancel ${job.id})\n`);
      }
      waitingShown = new Set(job.steps.filter((s) => s.state === 'waiting').map((s) => s.id));
    }
    if (FINAL.includes(job.state)) break;
    seen = job;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS[Math.min(poll, POLL_MS.length - 1)]));
    job = await client.call<Job>('GET', jobPath(job.id));
  }
  if (json) printJson(job);
  else process.stdout.write(`\n${jobSummary(job, machines)}`);
  outcome(job);
}

interface StartOptions extends CommonApiOptions {
  plan: string;
  point?: PointSpec;
  wait: boolean;
  planned?: boolean;
}

async function startJob(opts: StartOptions, path: string, body: Record<string, unknown>): Promise<void> {
  const client = clientFor(opts);
  const job = await client.call<Job>('POST', path, body);
  if (!opts.wait) {
    if (opts.json) printJson(job);
    else process.stdout.write(`started job ${job.id} (${job.kind} of plan ${job.planId}); follow it with ferry job wait ${job.id}\n`);
    return;
  }
  if (!opts.json) process.stdout.write(`job ${job.id}: ${job.kind} of plan ${job.planId} at point ${pointSpecText(job.point)}\n`);
  await follow(client, job, opts.json);
}

function startCommand(name: string, description: string): Command {
  return withApiOptions(new Command(name))
    .description(description)
    .requiredOption('--plan <plan>', 'the recovery plan')
    .option('--no-wait', 'start the job and return its id (follow it with ferry job wait ID)');
}

export function failoverCommand(): Command {
  const failover = new Command('failover').description(COMMAND_DESCRIPTIONS.failover);

  failover.addCommand(
    startCommand('test', "boot the plan's machines at a point on an isolated network, check them healthy, keep the evidence")
      .addOption(new Option('--point <spec>', "latest, latest-app, a point id, round:N or an ISO time (default: the plan's)").argParser(pointOption))
      .action(async (opts: StartOptions) => startJob(opts, `${planPath(opts.plan)}/test-failover`, opts.point ? { point: pointSpecText(opts.point) } : {})),
  );
  failover.addCommand(
    startCommand('cleanup', "stop a test failover's VMs and delete their overlays").action(async (opts: StartOptions) => startJob(opts, `${planPath(opts.plan)}/cleanup`, {})),
  );
  failover.addCommand(
    startCommand('run', "fail over: boot the plan's machines from persistent disks on their network; their old streams are refused from then on")
      .addOption(new Option('--point <spec>', "latest, latest-app, a point id, round:N or an ISO time (default: the plan's)").argParser(pointOption))
      .option('--planned', 'no data loss: the agents quiesce, a final app-consistent point once every write is applied, fail over to it')
      .action(async (opts: StartOptions) => {
        if (opts.planned && opts.point) throw new FerryError('a planned failover takes its own final point: give --planned or --point, not both', ExitCode.usage);
        await startJob(opts, `${planPath(opts.plan)}/failover`, { ...(opts.point ? { point: pointSpecText(opts.point) } : {}), planned: opts.planned === true });
      }),
  );
  failover.addCommand(
    startCommand('commit', "after a failover: drop the machines' other recovery points").action(async (opts: StartOptions) => startJob(opts, `${planPath(opts.plan)}/commit`, {})),
  );
  return failover;
}

/** `ferry failback prepare|run`: bring failed-over machines home, sending only what differs. */
export function failbackCommand(): Command {
  const failback = new Command('failback').description(COMMAND_DESCRIPTIONS.failback);
  failback.addCommand(
    startCommand('prepare', 'let the original machines pull what differs from the recovered disks (run `ferry agent failback` on each); ends when every first pass is done').action(async (opts: StartOptions) =>
      startJob(opts, `${planPath(opts.plan)}/failback-prepare`, {}),
    ),
  );
  failback.addCommand(
    startCommand('run', 'planned failover back: stop the recovered machines, final pass (the original disks then equal them), protect in the original direction').action(async (opts: StartOptions) =>
      startJob(opts, `${planPath(opts.plan)}/failback`, {}),
    ),
  );
  return failback;
}

interface JobsOptions extends CommonApiOptions {
  plan?: string;
  kind?: JobKind;
  state?: JobState;
  limit: number;
}

export function jobsCommand(): Command {
  return withApiOptions(new Command('jobs'))
    .description(COMMAND_DESCRIPTIONS.jobs)
    .option('--plan <plan>', "only this plan's jobs")
    .addOption(new Option('--kind <kind>', `only jobs of this kind (${JOB_KINDS.join(', ')})`).argParser(choice(JOB_KINDS)))
    .addOption(new Option('--state <state>', `only jobs in this state (${JOB_STATES.join(', ')})`).argParser(choice(JOB_STATES)))
    .addOption(new Option('--limit <n>', 'jobs to list').argParser(countOption).default(50, '50'))
    .action(async (opts: JobsOptions) => {
      const { jobs } = await clientFor(opts).get<{ jobs: Job[] }>('/api/v1/jobs', { plan: opts.plan, kind: opts.kind, state: opts.state, limit: opts.limit });
      if (opts.json) printJson(jobs);
      else process.stdout.write(jobs.length === 0 ? 'no recovery jobs\n' : jobsTable(jobs));
    });
}

export function jobCommand(): Command {
  const job = new Command('job').description(COMMAND_DESCRIPTIONS.job);
  job.addCommand(
    withApiOptions(new Command('show'))
      .description("a job's steps, machines (state, boot time, evidence) and RTO")
      .argument('<id>', 'job id', jobIdArgument)
      .action(async (id: number, opts: CommonApiOptions) => {
        const client = clientFor(opts);
        const j = await client.call<Job>('GET', jobPath(id));
        if (opts.json) printJson(j);
        else process.stdout.write(jobDetails(j, await machineList(client).catch((): Machine[] => [])));
      }),
  );
  job.addCommand(
    withApiOptions(new Command('wait'))
      .description('follow a job to its end (exit 0 when it succeeded)')
      .argument('<id>', 'job id', jobIdArgument)
      .action(async (id: number, opts: CommonApiOptions) => {
        const client = clientFor(opts);
        await follow(client, await client.call<Job>('GET', jobPath(id)), opts.json);
      }),
  );
  job.addCommand(
    withApiOptions(new Command('resume'))
      .description('resume a job waiting at a manual step')
      .argument('<id>', 'job id', jobIdArgument)
      .action(async (id: number, opts: CommonApiOptions) => {
        const j = await clientFor(opts).call<Job>('POST', `${jobPath(id)}/resume`, {});
        if (opts.json) printJson(j);
        else process.stdout.write(`resumed job ${j.id} (${j.kind} of plan ${j.planId}): ${j.state}\n`);
      }),
  );
  job.addCommand(
    withApiOptions(new Command('cancel'))
      .description('cancel a running job: its VMs and overlays are cleaned up')
      .argument('<id>', 'job id', jobIdArgument)
      .action(async (id: number, opts: CommonApiOptions) => {
        const j = await clientFor(opts).call<Job>('POST', `${jobPath(id)}/cancel`, {});
        if (opts.json) printJson(j);
        else process.stdout.write(`cancelled job ${j.id} (${j.kind} of plan ${j.planId}): ${j.state}${j.reason ? ` (${j.reason})` : ''}\n`);
      }),
  );
  return job;
}
