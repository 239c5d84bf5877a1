// The install.sh options a push passes through, checked locally before any host is contacted.
import { fingerprintProblem, receiverUrlProblem } from '../agent/config';
import { parseVolumeSpecs } from '../agent/volume-spec';
import { ExitCode, FerryError } from '../common/errors';

export type CaptureMethod = 'auto' | 'kernel' | 'ebpf' | 'scan';

export interface InstallOptions {
  receiver?: string;
  fingerprint?: string;
  /** Local CA bundle; uploaded next to the package and passed as --ca-file. */
  caFile?: string;
  volumes: string[];
  name?: string;
  capture?: CaptureMethod;
  prefix?: string;
  configDir?: string;
  stateDir?: string;
  systemdDir?: string;
  binDir?: string;
  noStart: boolean;
  noRegister: boolean;
  noSystemctl: boolean;
  reregister: boolean;
}

function usage(message: string): never {
  throw new FerryError(message, ExitCode.usage);
}

/**
 * The checks `ferry agent configure` makes on the target that need no target (the rules are
 * agent/config.ts's and proto/ids.ts's), so bad arguments fail before any connection.
 */
export function checkInstallOptions(o: InstallOptions, volumesPerHost = false): void {
  if (o.receiver !== undefined) {
    const urlProblem = receiverUrlProblem(o.receiver);
    if (urlProblem) usage(`--receiver ${urlProblem}`);
    if (!o.fingerprint && !o.caFile) usage('--receiver needs --fingerprint FP or --ca-file FILE');
    const fpProblem = o.fingerprint === undefined ? undefined : fingerprintProblem(o.fingerprint);
    if (fpProblem) usage(`--fingerprint ${fpProblem}`);
    if (o.volumes.length === 0 && !volumesPerHost) usage('give at least one --volume ID=PATH[:MOUNT] (or per host in --hosts)');
  } else if (o.fingerprint || o.caFile || o.volumes.length > 0) {
    usage('--fingerprint, --ca-file and --volume need --receiver (without it the host keeps its config: an upgrade)');
  }
  parseVolumeSpecs(o.volumes).forEach((v, i) => {
    if (v.platform !== 'posix') usage(`--volume ${JSON.stringify(o.volumes[i])}: for Linux use ID=PATH[:MOUNT] with absolute paths`);
  });
  for (const [flag, value] of [['--prefix', o.prefix], ['--config-dir', o.configDir], ['--state-dir', o.stateDir], ['--systemd-dir', o.systemdDir]] as const) {
    if (value !== undefined && !value.startsWith('/')) usage(`${flag} must be an absolute path on the target`);
  }
}

/** The install.sh arguments (the passphrase is never among them: it goes over stdin). */
export function installArgs(o: InstallOptions, remoteCaFile?: string): string[] {
  const args: string[] = [];
  const add = (flag: string, value: string | undefined): void => {
    if (value !== undefined) args.push(flag, value);
  };
  add('--receiver', o.receiver);
  add('--fingerprint', o.fingerprint);
  add('--ca-file', o.caFile !== undefined ? remoteCaFile : undefined);
  for (const v of o.volumes) args.push('--volume', v);
  add('--name', o.name);
  add('--capture', o.capture);
  add('--prefix', o.prefix);
  add('--config-dir', o.configDir);
  add('--state-dir', o.stateDir);
  add('--systemd-dir', o.systemdDir);
  add('--bin-dir', o.binDir);
  if (o.noStart) args.push('--no-start');
  if (o.noRegister) args.push('--no-register');
  if (o.noSystemctl) args.push('--no-systemctl');
  if (o.reregister) args.push('--reregister');
  return args;
}
