// `ferry agent configure` writes the agent config from installer-style options (install.sh and
// install.ps1 call it); `ferry agent show-config` prints what a config file loads as.
import { Command, InvalidArgumentError, Option } from 'commander';
import * as fs from 'fs';
import * as path from 'path';
import { CaptureKind, fingerprintProblem, loadAgentConfig, receiverUrlProblem } from '../agent/config';
// Types only at the top: every `ferry agent` command defines this one, few run it (see loadWriter).
import type { AgentConfigDocument } from '../agent/config-writer';
import type { VolumeSpec } from '../agent/volume-spec';
import { ExitCode, FerryError } from '../common/errors';
import { ID_RULE, isSafeId } from '../proto/ids';
import { listFlag } from './options';

interface ConfigureOptions {
  config: string;
  receiver: string;
  fingerprint?: string;
  caFile?: string;
  volume: string[];
  name?: string;
  stateDir?: string;
  capture?: CaptureKind;
  bootVolume?: string;
  check?: boolean;
}

/** The config writer, loaded when `configure` runs: `ferry agent tag` starts faster without it. */
const loadWriter = (): typeof import('../agent/config-writer') => require('../agent/config-writer') as typeof import('../agent/config-writer');

function usage(message: string): never {
  throw new FerryError(message, ExitCode.usage);
}

function captureOption(value: string): CaptureKind {
  if (value !== 'auto' && value !== 'kernel' && value !== 'ebpf' && value !== 'scan') throw new InvalidArgumentError('expected auto, kernel, ebpf or scan');
  return value;
}

function statOf(file: string): fs.Stats | undefined {
  try {
    return fs.statSync(file);
  } catch {
    return undefined;
  }
}

/** A POSIX volume must be there when it is configured; Windows volumes are checked by the agent. */
function checkVolumeExists(v: VolumeSpec): void {
  if (v.platform !== 'posix') return;
  const st = statOf(v.path);
  if (!st || !(st.isBlockDevice() || st.isFile())) usage(`volume ${v.id}: ${v.path} is neither a block device nor a file`);
  if (v.mount !== undefined && !statOf(v.mount)?.isDirectory()) usage(`volume ${v.id}: mount point ${v.mount} is not a folder`);
}

function checkCaFile(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    return usage(`--ca-file ${file} is not readable (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (!text.includes('BEGIN CERTIFICATE')) usage(`--ca-file ${file} holds no PEM certificate`);
  return path.resolve(file);
}

/** The options as a config document, each refused with the flag that carried it. */
function documentFrom(opts: ConfigureOptions): AgentConfigDocument {
  const urlProblem = receiverUrlProblem(opts.receiver);
  if (urlProblem) usage(`--receiver ${urlProblem}`);
  if (opts.fingerprint === undefined && opts.caFile === undefined) usage('--receiver needs --fingerprint FP or --ca-file FILE to verify the receiver');
  const fpProblem = opts.fingerprint === undefined ? undefined : fingerprintProblem(opts.fingerprint);
  if (fpProblem) usage(`--fingerprint ${fpProblem}`);
  const caFile = opts.caFile === undefined ? undefined : checkCaFile(opts.caFile);
  if (opts.volume.length === 0) usage('give at least one --volume ID=PATH[:MOUNT] (Windows: ID=C:)');
  const volumes = (require('../agent/volume-spec') as typeof import('../agent/volume-spec')).parseVolumeSpecs(opts.volume);
  volumes.forEach(checkVolumeExists);
  if (opts.name !== undefined && !isSafeId(opts.name)) usage(`--name ${JSON.stringify(opts.name)} must be ${ID_RULE}`);
  if (opts.bootVolume !== undefined && !volumes.some((v) => v.id === opts.bootVolume)) usage(`--boot-volume ${JSON.stringify(opts.bootVolume)} is not one of the --volume ids`);
  return {
    receiver: { url: opts.receiver, fingerprint: opts.fingerprint, caFile },
    name: opts.name,
    stateDir: opts.stateDir === undefined ? undefined : path.resolve(opts.stateDir),
    capture: opts.capture,
    volumes: volumes.map(({ id, path: volumePath, mount }) => (id === opts.bootVolume ? { id, path: volumePath, mount, bootProtected: true } : { id, path: volumePath, mount })),
  };
}

function configure(opts: ConfigureOptions): void {
  const file = path.resolve(opts.config);
  const doc = documentFrom(opts);
  if (opts.check) {
    process.stdout.write(loadWriter().checkAgentConfig(doc, file).text);
    return;
  }
  try {
    loadWriter().writeAgentConfig(doc, file);
  } catch (err) {
    if (err instanceof FerryError) throw err;
    throw new FerryError(`cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, ExitCode.failure);
  }
  process.stdout.write(`wrote ${file}\n`);
}

/** A value of the loaded config by its dotted name, e.g. receiver.url. */
function fieldOf(value: unknown, field: string): unknown {
  let at = value;
  for (const key of field.split('.')) {
    if (typeof at !== 'object' || at === null || !Object.prototype.hasOwnProperty.call(at, key)) usage(`--field ${field}: no such setting`);
    at = (at as Record<string, unknown>)[key];
  }
  return at;
}

export function addConfigureCommands(agent: Command): void {
  agent
    .command('configure')
    .description('write the agent config (the installers call this): every value is checked, the file is replaced atomically; bad input exits 2 with one line')
    .requiredOption('--config <file>', 'the config file to write (YAML; JSON when it ends in .json)')
    .requiredOption('--receiver <url>', 'receiver wss://HOST:PORT')
    .option('--fingerprint <sha256>', 'SHA-256 fingerprint of the receiver certificate')
    .option('--ca-file <file>', 'CA bundle that verifies the receiver (instead of --fingerprint)')
    .addOption(listFlag('--volume <ID=PATH[:MOUNT]>', 'a volume to protect (repeat for more); MOUNT is frozen for application-consistent points; Windows: ID=C: or ID=\\\\?\\Volume{GUID}\\', String))
    .option('--name <name>', 'agent name (default: the host name)')
    .option('--state-dir <dir>', 'credential, resync progress, status (default: /var/lib/ferry)')
    .addOption(new Option('--capture <mode>', 'auto | kernel | ebpf | scan (default: auto)').argParser(captureOption))
    .option('--boot-volume <id>', 'the volume the machine boots on dm-ferry (install.sh --protect-boot): bootProtected in the config')
    .option('--check', 'check the options and print the config to stdout; write nothing')
    .action(configure);

  agent
    .command('show-config')
    .description('load a config file as the agent does and print it (JSON), or one value with --field')
    .requiredOption('--config <file>', 'agent config (JSON or YAML)')
    .option('--field <name>', 'one setting by its dotted name, e.g. receiver.url')
    .action((opts: { config: string; field?: string }) => {
      const config = loadAgentConfig(opts.config);
      const value = opts.field === undefined ? config : fieldOf(config, opts.field);
      process.stdout.write(`${value === undefined ? '' : typeof value === 'string' ? value : JSON.stringify(value, null, 2)}\n`);
    });
}
