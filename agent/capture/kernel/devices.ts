import * as fs from 'fs';
import { describeError, errnoCode } from '../../../common/errors';
import { CONTROL_DEVICE_PATH, FERRY_ABI_VERSION, FerryControl, type DeviceInfo } from '../../../native/addon';

export interface DeviceNumber {
  major: number;
  minor: number;
}

/** major:minor of a block device node; undefined for anything else (or a missing path). */
export function blockDeviceNumber(devicePath: string): DeviceNumber | undefined {
  let st: fs.BigIntStats;
  try {
    st = fs.statSync(devicePath, { bigint: true });
  } catch {
    return undefined;
  }
  if (!st.isBlockDevice()) return undefined;
  const rdev = st.rdev;
  // glibc's gnu_dev_major/minor
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
  return { major, minor };
}

export function sameDevice(info: DeviceInfo, dev: DeviceNumber): boolean {
  return info.devMajor === dev.major && info.devMinor === dev.minor;
}

/** Name prefix of the dm-ferry devices that wrap a plain disk or partition (the initramfs makes them). */
export const BOOT_WRAP_PREFIX = 'ferry-';

/**
 * The ferry device for device number `dev`: the ferry device itself, or one named ferry-* whose
 * data device it is (a plain disk or partition the initramfs wrapped at boot: configured by its
 * own path, captured through the wrapping device).
 */
export function ferryDeviceFor(devices: readonly DeviceInfo[], dev: DeviceNumber): DeviceInfo | undefined {
  return (
    devices.find((d) => sameDevice(d, dev)) ??
    devices.find((d) => d.name.startsWith(BOOT_WRAP_PREFIX) && d.dataMajor === dev.major && d.dataMinor === dev.minor)
  );
}

/**
 * The ferry device that `devicePath` is or that wraps it, if the driver tracks it: on Linux by
 * device number; on Windows, where device numbers are 0 and a device's name is its volume GUID,
 * by that GUID (configure the volume as `\\?\Volume{GUID}\`).
 */
export function findFerryDevice(devices: readonly DeviceInfo[], devicePath: string): DeviceInfo | undefined {
  if (process.platform === 'win32') {
    const lower = devicePath.toLowerCase();
    return devices.find((d) => d.name !== '' && lower.includes(d.name.toLowerCase()));
  }
  const dev = blockDeviceNumber(devicePath);
  return dev && ferryDeviceFor(devices, dev);
}

export type KernelProbe = { ok: true; control: FerryControl } | { ok: false; reason: string };

/**
 * Whether kernel capture can protect every path: dm-ferry loaded, its ABI spoken, and each path a
 * ferry device. On success the open control device is handed over (the caller closes it).
 */
export async function probeKernelCapture(paths: ReadonlyArray<{ id: string; path: string }>, controlPath = CONTROL_DEVICE_PATH): Promise<KernelProbe> {
  // A Windows device path (\\.\FerryCtl) is not a file: opening it is the test there.
  if (process.platform !== 'win32' && !fs.existsSync(controlPath)) {
    return { ok: false, reason: `${controlPath} is missing: the dm-ferry module is not loaded (modprobe dm-ferry)` };
  }
  let control: FerryControl;
  try {
    control = await FerryControl.open(controlPath);
  } catch (err) {
    const code = errnoCode(err);
    const why = code === 'EPERM' || code === 'EACCES' ? 'the agent needs root (CAP_SYS_ADMIN)' : describeError(err);
    return { ok: false, reason: `cannot open ${controlPath}: ${why}` };
  }
  const fail = async (reason: string): Promise<KernelProbe> => {
    await control.close();
    return { ok: false, reason };
  };
  try {
    const version = await control.version();
    if (version.abiVersion !== FERRY_ABI_VERSION) {
      return fail(`the loaded dm-ferry module speaks ABI ${version.abiVersion}, this agent ${FERRY_ABI_VERSION} (update one of them)`);
    }
    const devices = await control.list();
    for (const v of paths) {
      if (process.platform !== 'win32' && !blockDeviceNumber(v.path)) return fail(`volume ${v.id}: ${v.path} is not a block device, so it cannot be a ferry device`);
      if (!findFerryDevice(devices, v.path)) {
        return fail(`volume ${v.id}: ${v.path} is not a ferry device and no ferry-* device wraps it (protect it first: ferry agent protect --device ${v.path} --meta DEV, or install.sh --protect-boot for a plain partition)`);
      }
    }
  } catch (err) {
    return fail(`cannot query ${controlPath}: ${describeError(err)}`);
  }
  return { ok: true, control };
}
