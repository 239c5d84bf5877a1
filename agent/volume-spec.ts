// The --volume argument of the installers, `ferry agent configure` and `ferry push-install`.
import * as path from 'path';
import { ExitCode, FerryError } from '../common/errors';
import { ID_RULE, isSafeId } from '../proto/ids';
import { VolumeConfig } from './config';

export interface VolumeSpec extends VolumeConfig {
  /** posix: ID=PATH[:MOUNT]; windows: ID=C: or ID=\\?\Volume{GUID}\ */
  platform: 'posix' | 'windows';
}

const DRIVE = /^[A-Za-z]:$/;
const VOLUME_GUID = /^\\\\\?\\Volume\{[0-9A-Fa-f-]{36}\}\\$/;

function refuse(spec: string, why: string): never {
  throw new FerryError(`--volume ${JSON.stringify(spec)}: ${why}`, ExitCode.usage);
}

/**
 * ID=PATH[:MOUNT] with absolute POSIX paths (MOUNT is frozen for application-consistent points),
 * or on Windows ID=C: (the volume of drive C:, frozen at C:\) or ID=\\?\Volume{GUID}\.
 */
export function parseVolumeSpec(spec: string): VolumeSpec {
  const eq = spec.indexOf('=');
  if (eq < 0) refuse(spec, 'expected ID=PATH[:MOUNT], ID=C: or ID=\\\\?\\Volume{GUID}\\');
  const id = spec.slice(0, eq);
  const target = spec.slice(eq + 1);
  if (!isSafeId(id)) refuse(spec, `volume id ${JSON.stringify(id)} must be ${ID_RULE}`);
  if (DRIVE.test(target)) return { id, path: `\\\\.\\${target}`, mount: `${target}\\`, platform: 'windows' };
  if (VOLUME_GUID.test(target)) return { id, path: target.slice(0, -1), platform: 'windows' };
  const colon = target.indexOf(':');
  const volumePath = colon < 0 ? target : target.slice(0, colon);
  const mount = colon < 0 || colon === target.length - 1 ? undefined : target.slice(colon + 1);
  if (!path.posix.isAbsolute(volumePath)) refuse(spec, `the path must be absolute (got ${JSON.stringify(volumePath)})`);
  if (mount !== undefined && !path.posix.isAbsolute(mount)) refuse(spec, `the mount point must be absolute (got ${JSON.stringify(mount)})`);
  return { id, path: volumePath, mount, platform: 'posix' };
}

/** Parses every spec; an id given twice is refused. */
export function parseVolumeSpecs(specs: readonly string[]): VolumeSpec[] {
  const seen = new Set<string>();
  return specs.map((spec) => {
    const volume = parseVolumeSpec(spec);
    if (seen.has(volume.id)) refuse(spec, `volume id ${JSON.stringify(volume.id)} is given twice`);
    seen.add(volume.id);
    return volume;
  });
}
