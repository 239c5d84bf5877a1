import { Command, InvalidArgumentError, Option } from 'commander';
import { ExitCode, FerryError } from '../common/errors';
import { parseSizeBytes } from '../common/units';
import type { Machine, MachineState, RecoveryProperties } from '../control/model';
import type { MachineProtection } from '../recovery/contract';
import { clientFor, CommonApiOptions, printJson, withApiOptions } from './api-command';
import { historyTable, machineDetails, machinesTable, pointsTable, resolveMachine } from './machine-view';
import type { HistoryWindow, MachineHistory } from '../control/history';
import type { PointRow } from '../receiver/catalog';
import { COMMAND_DESCRIPTIONS } from './command-index';

interface RecoveryFlags {
  recoveredName?: string;
  vcpus?: number;
  memory?: number;
  network?: string;
  bootOrder?: number;
}

function wholeNumber(min: number, max: number): (value: string) => number {
  return (value) => {
    const n = Number(value.trim());
    if (!/^\d+$/.test(value.trim()) || n < min || n > max) throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}`);
    return n;
  };
}

/** Memory as 2GiB / 512MiB, or a bare number of MiB; the API takes MiB. */
export function memoryMiBOption(value: string): number {
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v);
  const bytes = parseSizeBytes(v);
  if (bytes === undefined || bytes % (1024 * 1024) !== 0) throw new InvalidArgumentError('expected a size in whole MiB, such as 2GiB or 512MiB (a bare number is MiB)');
  return bytes / (1024 * 1024);
}

/** The recovery properties given on the command line (pure). */
export function recoveryPatch(flags: RecoveryFlags): Partial<RecoveryProperties> {
  const patch: Partial<RecoveryProperties> = {};
  if (flags.recoveredName !== undefined) patch.recoveredName = flags.recoveredName;
  if (flags.vcpus !== undefined) patch.vcpus = flags.vcpus;
  if (flags.memory !== undefined) patch.memoryMiB = flags.memory;
  if (flags.network !== undefined) patch.network = flags.network;
  if (flags.bootOrder !== undefined) patch.bootOrder = flags.bootOrder;
  return patch;
}

const STATES: MachineState[] = ['resyncing', 'protected', 'degraded', 'disconnected', 'failed'];

export function machineCommand(): Command {
  const machine = new Command('machine').description(COMMAND_DESCRIPTIONS.machine);

  machine.addCommand(
    withApiOptions(new Command('list'))
      .description('list machines')
      .addOption(new Option('--state <state>', 'only machines in this state').choices(STATES))
      .option('--group <group>', 'only members of this group')
      .action(async (opts: CommonApiOptions & { state?: MachineState; group?: string }) => {
        const { machines } = await clientFor(opts).get<{ machines: Machine[] }>('/api/v1/machines', { state: opts.state, group: opts.group });
        if (opts.json) printJson(machines);
        else process.stdout.write(machines.length === 0 ? 'no machines\n' : machinesTable(machines));
      }),
  );

  machine.addCommand(
    withApiOptions(new Command('show'))
      .description("a machine's state, volumes and recovery properties")
      .argument('<machine>', 'id or name')
      .action(async (ref: string, opts: CommonApiOptions) => {
        const client = clientFor(opts);
        const { machines } = await client.get<{ machines: Machine[] }>('/api/v1/machines');
        const m = resolveMachine(machines, ref);
        if (opts.json) printJson(m);
        else process.stdout.write(machineDetails(m));
      }),
  );

  machine.addCommand(
    withApiOptions(new Command('set'))
      .description("change a machine's recovery properties (used by failover)")
      .argument('<machine>', 'id or name')
      .option('--recovered-name <name>', 'name of the recovered VM')
      .option('--vcpus <n>', 'vCPUs of the recovered VM', wholeNumber(1, 1024))
      .option('--memory <size>', 'memory of the recovered VM, e.g. 4GiB', memoryMiBOption)
      .option('--network <name>', "recovery-site network ('' : the plan's isolated default)")
      .option('--boot-order <n>', 'lower boots earlier within a plan', wholeNumber(0, 1000))
      .action(async (ref: string, opts: CommonApiOptions & RecoveryFlags) => {
        const patch = recoveryPatch(opts);
        if (Object.keys(patch).length === 0) throw new FerryError('nothing to change: give --recovered-name, --vcpus, --memory, --network or --boot-order', ExitCode.usage);
        const client = clientFor(opts);
        const { machines } = await client.get<{ machines: Machine[] }>('/api/v1/machines');
        const id = resolveMachine(machines, ref).id;
        const updated = await client.call<Machine>('PATCH', `/api/v1/machines/${encodeURIComponent(id)}/recovery`, patch);
        if (opts.json) printJson(updated);
        else process.stdout.write(machineDetails(updated));
      }),
  );
  machine.addCommand(
    withApiOptions(new Command('protection'))
      .description('whether a machine is protected here or failed over, and where it runs')
      .argument('<machine>', 'id or name')
      .action(async (ref: string, opts: CommonApiOptions) => {
        const client = clientFor(opts);
        const { machines } = await client.get<{ machines: Machine[] }>('/api/v1/machines');
        const m = resolveMachine(machines, ref);
        const p = await client.get<MachineProtection>(`/api/v1/machines/${encodeURIComponent(m.id)}/protection`);
        if (opts.json) printJson(p);
        else process.stdout.write(p.state === 'protected' ? `${m.name}: protected (replicating to this receiver)\n` : `${m.name}: ${p.state}, runs on ${p.runsOn || '?'} (job ${p.jobId ?? '?'}, since ${new Date(p.sinceMs).toISOString()})\n`);
      }),
  );
  machine.addCommand(
    withApiOptions(new Command('history'))
      .description("a machine's worst RPO and ingest throughput over the last hour or day (what the console charts)")
      .argument('<machine>', 'id or name')
      .addOption(new Option('--window <window>', 'hour (5 s samples) or day (5 min buckets)').choices(['hour', 'day']).default('hour'))
      .action(async (ref: string, opts: CommonApiOptions & { window: HistoryWindow }) => {
        const client = clientFor(opts);
        const { machines } = await client.get<{ machines: Machine[] }>('/api/v1/machines');
        const m = resolveMachine(machines, ref);
        const h = await client.get<MachineHistory>(`/api/v1/machines/${encodeURIComponent(m.id)}/history`, { window: opts.window });
        if (opts.json) printJson(h);
        else process.stdout.write(historyTable(h));
      }),
  );
  machine.addCommand(
    withApiOptions(new Command('points'))
      .description("a machine's recovery points over all its volumes, newest first")
      .argument('<machine>', 'id or name')
      .addOption(new Option('--limit <n>', 'at most this many').argParser(wholeNumber(1, 10_000)).default(100, '100 points'))
      .action(async (ref: string, opts: CommonApiOptions & { limit: number }) => {
        const client = clientFor(opts);
        const { machines } = await client.get<{ machines: Machine[] }>('/api/v1/machines');
        const m = resolveMachine(machines, ref);
        const { points } = await client.get<{ points: PointRow[] }>(`/api/v1/machines/${encodeURIComponent(m.id)}/points`, { limit: String(opts.limit) });
        if (opts.json) printJson(points);
        else process.stdout.write(points.length === 0 ? `no points of ${m.name} yet\n` : pointsTable(points));
      }),
  );
  machine.addCommand(
    withApiOptions(new Command('export'))
      .description("write the image of one of a machine's points on the receiver (<data>/exports); prints where")
      .argument('<machine>', 'id or name')
      .requiredOption('--point <id>', 'the point (see ferry machine points)', wholeNumber(1, Number.MAX_SAFE_INTEGER))
      .addOption(new Option('--format <format>', 'raw image or fixed VHD').choices(['raw', 'vhd']).default('raw'))
      .action(async (ref: string, opts: CommonApiOptions & { point: number; format: 'raw' | 'vhd' }) => {
        const client = clientFor(opts);
        const { machines } = await client.get<{ machines: Machine[] }>('/api/v1/machines');
        const m = resolveMachine(machines, ref);
        const { points } = await client.get<{ points: PointRow[] }>(`/api/v1/machines/${encodeURIComponent(m.id)}/points`, { limit: '10000' });
        if (!points.some((p) => p.id === opts.point)) throw new FerryError(`point ${opts.point} is not a point of ${m.name}: see ferry machine points ${m.name}`, ExitCode.notFound);
        const done = await client.call<{ file: string; sizeBytes: number; volumeId: string }>('POST', `/api/v1/points/${opts.point}/export`, { format: opts.format });
        if (opts.json) printJson(done);
        else process.stdout.write(`exported ${done.volumeId} at point ${opts.point} to ${done.file} on the receiver (${done.sizeBytes} bytes)\n`);
      }),
  );
  return machine;
}
