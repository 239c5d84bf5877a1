import { Command, InvalidArgumentError } from 'commander';
import * as path from 'path';
import type { VolumeFailbackSummary } from '../agent/failback';
import { loadAgentConfig } from '../agent/config';
import { ExitCode, FerryError } from '../common/errors';
import { formatBytes } from '../common/units';
import { ID_RULE, isSafeId } from '../proto/ids';
import { listFlag } from './options';

/** --volume ID=DEVICE: an absolute path for a volume id. */
function volumeDevice(value: string): [string, string] {
  const eq = value.indexOf('=');
  const id = eq < 0 ? '' : value.slice(0, eq);
  const device = eq < 0 ? '' : value.slice(eq + 1);
  if (!isSafeId(id)) throw new InvalidArgumentError(`expected ID=DEVICE with ID ${ID_RULE}`);
  if (!path.posix.isAbsolute(device)) throw new InvalidArgumentError(`the device must be an absolute path (got ${JSON.stringify(device)})`);
  return [id, device];
}

function percent(part: number, whole: number): string {
  return whole === 0 ? '0%' : `${((100 * part) / whole).toFixed(2)}%`;
}

function printSummary(volumes: VolumeFailbackSummary[]): void {
  const lines = [
    'failback complete: every volume equals its recovered disk',
    ['VOLUME', 'DEVICE', 'SIZE', 'SENT', 'SENT/SIZE', 'PASSES', 'DIFFERING BLOCKS'].join('\t'),
    ...volumes.map((v) => [v.volumeId, v.path, formatBytes(v.sizeBytes), formatBytes(v.sentBytes), percent(v.sentBytes, v.sizeBytes), String(v.passes), String(v.differingBlocks)].join('\t')),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

export function addFailbackCommand(agent: Command): void {
  agent
    .command('failback')
    .description(
      'after a failover: bring the recovered machine\'s disks back onto this (original) machine\'s disks, sending only the blocks that differ; ' +
        'run with the disks not in use (rescue media); dials the receiver like the agent; exits 0 once every disk equals its recovered disk',
    )
    .requiredOption('--config <file>', 'the agent config of this machine (its receiver, credential and volumes)')
    .addOption(
      listFlag(
        '--volume <ID=DEVICE>',
        'the plain device to write for a volume (repeat for more), e.g. vol1=/dev/vda when the config names the dm-ferry device: writing through dm-ferry would capture the failback writes as new changes',
        volumeDevice,
      ),
    )
    .option('--force', 'write even when the disk is mounted or held (dangerous: the file system on it will be corrupted)')
    .option('--json', 'print the summary as JSON')
    .action(async (opts: { config: string; volume: Array<[string, string]>; force?: boolean; json?: boolean }) => {
      const config = loadAgentConfig(opts.config);
      const devices = new Map<string, string>();
      for (const [id, device] of opts.volume) {
        if (devices.has(id)) throw new FerryError(`--volume ${id} is given twice`, ExitCode.usage);
        devices.set(id, device);
      }
      const { failbackTargets, runFailback } = await import('../agent/failback');
      failbackTargets(config.volumes, devices);
      const volumes = await runFailback({
        config,
        devices,
        force: opts.force === true,
        blockSize: config.resync.blockSize,
        progress: (line) => process.stderr.write(`${line}\n`),
      });
      if (opts.json) process.stdout.write(`${JSON.stringify({ volumes }, null, 2)}\n`);
      else printSummary(volumes);
    });
}
