// The install.sh options a push passes through, checked locally before any host is contacted.
import { ExitCode, FerryError } from '../common/errors';

export type CaptureMethod = 'auto' | 'kernel' | 'scan';

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

const VOLUME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}=\/[^:]*(?::\/.*)?$/;

function usage(message: string): never {
  throw new FerryError(message, ExitCode.usage);
}

/** Mirrors install.sh's own checks, so bad arguments fail before any connection. */
export function checkInstallOptions(o: InstallOptions, volumesPerHost = false): void {
  if (o.receiver !== undefined) {
    let url: URL;
    try {
      url = new URL(o.receiver);
    } catch {
      return usage(`--receiver ${JSON.stringify(o.receiver)} is not a URL (expected wss://HOST:PORT)`);
    }
    if (url.protocol !== 'wss:') usage('--receiver must be a wss:// URL');
    if (!o.fingerprint && !o.caFile) usage('--receiver needs --fingerprint FP or --ca-file FILE');
    if (o.fingerprint !== undefined && !/^[0-9A-Fa-f]{64}$/.test(o.fingerprint.replace(/:/g, ''))) {
      usage('--fingerprint must be a SHA-256 fingerprint (64 hex digits, colons optional)');
    }
    if (o.volumes.length === 0 && !volumesPerHost) usage('give at least one --volume ID=PATH[:MOUNT] (or per host in --hosts)');
  } else if (o.fingerprint || o.caFile || o.volumes.length > 0) {
    usage('--fingerprint, --ca-file and --volume need --receiver (without it the host keeps its config: an upgrade)');
  }
  for (const v of o.volumes) {
    if (!VOLUME_RE.test(v)) usage(`--volume ${JSON.stringify(v)}: expected ID=PATH[:MOUNT] with an id of 1-64 letters, digits, '.', '_' or '-' and absolute paths`);
  }
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
