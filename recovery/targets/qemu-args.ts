/**
 * Pure decisions of the qemu target: spec validation and the qemu command line.
 */
import type { VmSpec } from './target';

export type Accel = 'kvm' | 'tcg';

export interface QemuLayout {
  accel: Accel;
  pidFile: string;
  qmpSocket: string;
  /** The sandbox hub's socket (kind 'sandbox'). */
  switchSocket: string | null;
  /** A file holding SeaBIOS's serial console port (0x3f8, little-endian): BIOS and bootloader messages reach the serial log too. */
  biosSerialPortFile: string;
  /** Guest port -> host port on 127.0.0.1. */
  probeForwards: Map<number, number>;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const MAC = /^52:54:00(:[0-9a-f]{2}){3}$/;

/** Problems with a spec, as one sentence each; empty when the spec can boot. */
export function specProblems(spec: VmSpec): string[] {
  const problems: string[] = [];
  if (!NAME.test(spec.name)) problems.push(`name ${JSON.stringify(spec.name)} is not a safe identifier (letters, digits, _ . -, at most 63)`);
  if (!Number.isInteger(spec.vcpus) || spec.vcpus < 1 || spec.vcpus > 64) problems.push(`vcpus must be 1..64 (got ${spec.vcpus})`);
  if (!Number.isInteger(spec.memoryMiB) || spec.memoryMiB < 64 || spec.memoryMiB > 1_048_576) problems.push(`memoryMiB must be 64..1048576 (got ${spec.memoryMiB})`);
  if (spec.disks.length === 0) problems.push('no disks (the first disk is the boot disk)');
  if (spec.disks.length > 16) problems.push(`at most 16 disks (got ${spec.disks.length})`);
  for (const d of spec.disks) {
    if (d.format !== 'raw' && d.format !== 'qcow2') problems.push(`disk ${d.path}: format must be raw or qcow2`);
    if (d.path.includes(',')) problems.push(`disk ${d.path}: a path with a comma is not supported`);
  }
  if (spec.network.kind !== 'sandbox' && spec.network.kind !== 'site') problems.push(`network kind must be sandbox or site`);
  if (!MAC.test(spec.network.mac)) problems.push(`network mac ${JSON.stringify(spec.network.mac)} must look like 52:54:00:xx:xx:xx (lower case)`);
  if (spec.network.kind === 'sandbox' && !NAME.test(spec.network.name)) problems.push(`sandbox network name ${JSON.stringify(spec.network.name)} is not a safe identifier`);
  const seen = new Set<number>();
  for (const p of spec.probePorts) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) problems.push(`probe port ${p} is not a TCP port`);
    else if (seen.has(p)) problems.push(`probe port ${p} appears twice`);
    seen.add(p);
  }
  if (!spec.serialLog.startsWith('/')) problems.push('serialLog must be an absolute path');
  if (!spec.workDir.startsWith('/')) problems.push('workDir must be an absolute path');
  // qemu's option syntax splits on commas.
  if (spec.serialLog.includes(',') || spec.workDir.includes(',')) problems.push('serialLog and workDir must not contain a comma');
  return problems;
}

/** The probe NIC's MAC: the machine's MAC with the locally administered 52:56 prefix, so it never collides with a plan's 52:54:00 MACs. */
export function probeMac(mac: string): string {
  return `52:56${mac.slice(5)}`;
}

function hostForwards(forwards: Map<number, number>): string {
  return [...forwards].map(([guest, host]) => `,hostfwd=tcp:127.0.0.1:${host}-:${guest}`).join('');
}

/**
 * The command line. PCI slots are fixed (VGA 2, main NIC 3, probe NIC 4, disks from 5) so a
 * guest's interface names (ens3, ...) stay the same from boot to boot.
 */
export function qemuArgs(spec: VmSpec, layout: QemuLayout): string[] {
  const args = [
    '-name', `ferry-${spec.name},debug-threads=off`,
    '-no-user-config', '-nodefaults',
    '-machine', 'pc',
    ...(layout.accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg', '-cpu', 'max']),
    '-smp', String(spec.vcpus),
    '-m', String(spec.memoryMiB),
    '-display', 'none',
    '-vga', 'std',
    '-chardev', `file,id=serial0,path=${spec.serialLog}`,
    '-serial', 'chardev:serial0',
    // "No bootable device." then shows in the serial log of a machine whose disk does not boot.
    '-fw_cfg', `name=etc/sercon-port,file=${layout.biosSerialPortFile}`,
    '-qmp', `unix:${layout.qmpSocket},server=on,wait=off`,
    '-pidfile', layout.pidFile,
    '-rtc', 'base=utc',
  ];
  if (spec.network.kind === 'sandbox') {
    if (!layout.switchSocket) throw new Error('sandbox network without a switch socket');
    args.push(
      '-netdev', `stream,id=net0,server=off,addr.type=unix,addr.path=${layout.switchSocket}`,
      '-device', `virtio-net-pci,netdev=net0,mac=${spec.network.mac},addr=0x3,romfile=`,
    );
    if (layout.probeForwards.size > 0) {
      // restrict=on: the guest cannot reach the host or beyond through this NIC; only the host's forwards come in.
      args.push(
        '-netdev', `user,id=probe0,restrict=on${hostForwards(layout.probeForwards)}`,
        '-device', `virtio-net-pci,netdev=probe0,mac=${probeMac(spec.network.mac)},addr=0x4,romfile=`,
      );
    }
  } else {
    args.push(
      '-netdev', `user,id=net0${hostForwards(layout.probeForwards)}`,
      '-device', `virtio-net-pci,netdev=net0,mac=${spec.network.mac},addr=0x3,romfile=`,
    );
  }
  spec.disks.forEach((disk, i) => {
    args.push(
      '-drive', `file=${disk.path},format=${disk.format},if=none,id=disk${i},cache=writeback,discard=unmap`,
      '-device', `virtio-blk-pci,drive=disk${i},addr=0x${(5 + i).toString(16)}${i === 0 ? ',bootindex=1' : ''}`,
    );
  });
  return args;
}

/** The content of QemuLayout.biosSerialPortFile. */
export const BIOS_SERIAL_PORT = Buffer.from([0xf8, 0x03]);

/** The last `count` non-empty lines of a console log, for error messages. */
export function tailLines(text: string, count: number): string {
  const lines = text.replace(/\r/g, '').split('\n').filter((l) => l.trim() !== '');
  return lines.slice(-count).join('\n');
}
