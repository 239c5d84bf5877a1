import type { Command } from 'commander';
import type * as LiveWrap from '../agent/capture/kernel/live-wrap';

// Loaded by the action that needs it, so that other agent commands start fast.
const liveWrap = (): typeof LiveWrap => require('../agent/capture/kernel/live-wrap') as typeof LiveWrap;

/** `ferry agent protect` / `ferry agent unprotect`: live wrapping of a dm device in dm-ferry. */
export function addProtectCommands(agent: Command): void {
  agent
    .command('protect')
    .description('put a live device-mapper device (LVM logical volume, dm-linear...) under dm-ferry capture: suspend, reload its table wrapped in the ferry target, resume; the device keeps its name')
    .requiredOption('--device <path>', 'the device to protect, e.g. /dev/mapper/vg-lv')
    .option('--meta <device>', 'a small separate device for the persistent dirty bitmap (required; the error says how large)')
    .option('--name <name>', 'name of the device that keeps the original mapping (default: <name>-ferry-inner)')
    .action((opts: { device: string; meta?: string; name?: string }) => {
      const r = liveWrap().protectDevice({ device: opts.device, meta: opts.meta, inner: opts.name });
      process.stdout.write(`protected /dev/mapper/${r.name}: ferry capture over /dev/mapper/${r.inner}, dirty bitmap on ${r.meta}\n`);
    });

  agent
    .command('unprotect')
    .description('take a device out of dm-ferry capture: suspend (the bitmap is saved clean), reload its original table, resume, remove the inner device')
    .requiredOption('--device <path>', 'the protected device, e.g. /dev/mapper/vg-lv')
    .action((opts: { device: string }) => {
      const r = liveWrap().unprotectDevice({ device: opts.device });
      process.stdout.write(`unprotected /dev/mapper/${r.name}${r.inner ? ` (removed ${r.inner})` : ''}\n`);
    });
}
