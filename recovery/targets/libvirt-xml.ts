import { createHash } from 'node:crypto';
import type { VmSpec } from './target';

/**
 * The libvirt XML of recovered machines (pure): domain XML from a VmSpec, the isolated network
 * of a sandbox, and the names and checks both depend on. No I/O here.
 */

/** Marks domains and networks this code defined, so a sweep never touches anyone else's. */
export const FERRY_NS = 'https://ferry.dev/xmlns/libvirt-target/1';

export type Accel = 'kvm' | 'tcg';

/** A host port on 127.0.0.1 forwarded to a guest port through the probe NIC. */
export interface PortForward {
  hostPort: number;
  guestPort: number;
}

export interface DomainXmlOptions {
  accel: Accel;
  /**
   * 'root': qemu runs as root and libvirt relabels nothing (recovered overlays sit over the
   * replica's exports in private directories; relabeling would chown the backing chain).
   * 'libvirt': libvirt's configured qemu user with its dynamic ownership.
   */
  qemuUser: 'root' | 'libvirt';
  /**
   * Guest ports the host probes: a second NIC on qemu user networking with restrict=on (the
   * guest can reach nothing through it) and a hostfwd per port. Empty: no probe NIC.
   */
  probeForwards: PortForward[];
}

export function xmlEscape(value: string): string {
  return value.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c] as string);
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const MAC = /^52:54:00(:[0-9a-f]{2}){3}$/i;

/** Why a spec cannot become a domain, or null. Names become file and bridge names: keep them plain. */
export function specProblem(spec: VmSpec): string | null {
  if (!NAME.test(spec.name)) return `VM name "${spec.name}" is not a safe identifier (letters, digits, _ . -; at most 64)`;
  if (!NAME.test(spec.network.name)) return `network name "${spec.network.name}" is not a safe identifier (letters, digits, _ . -; at most 64)`;
  if (!Number.isInteger(spec.vcpus) || spec.vcpus < 1 || spec.vcpus > 256) return `vcpus must be an integer from 1 to 256 (got ${spec.vcpus})`;
  if (!Number.isInteger(spec.memoryMiB) || spec.memoryMiB < 16) return `memoryMiB must be an integer of at least 16 (got ${spec.memoryMiB})`;
  if (spec.disks.length === 0) return 'a VM needs at least one disk (the first boots)';
  if (spec.disks.length > 20) return `at most 20 disks (got ${spec.disks.length})`;
  for (const d of spec.disks) {
    if (!d.path.startsWith('/')) return `disk path must be absolute: ${d.path}`;
    if (d.format !== 'raw' && d.format !== 'qcow2') return `disk format must be raw or qcow2: ${String(d.format)}`;
  }
  if (!MAC.test(spec.network.mac)) return `MAC must look like 52:54:00:xx:xx:xx (got "${spec.network.mac}")`;
  if (!spec.serialLog.startsWith('/')) return `serial log path must be absolute: ${spec.serialLog}`;
  for (const p of spec.probePorts) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) return `probe port must be 1-65535 (got ${p})`;
  }
  return null;
}

/** Linux bridge names are at most 15 bytes: a hash of the network name keeps them unique and stable. */
export function bridgeName(networkName: string): string {
  return `fy${createHash('sha256').update(networkName).digest('hex').slice(0, 10)}`;
}

/** The probe NIC's MAC: stable per machine and distinct from its network MAC (one bit of the 4th byte flipped). */
export function probeMac(mac: string): string {
  const parts = mac.toLowerCase().split(':');
  parts[3] = (parseInt(parts[3], 16) ^ 0x80).toString(16).padStart(2, '0');
  return parts.join(':');
}

/** vda, vdb, ..., vdz, vdaa (virtio disk target names). */
export function diskTarget(index: number): string {
  let name = '';
  let n = index;
  do {
    name = String.fromCharCode(97 + (n % 26)) + name;
    n = Math.floor(n / 26) - 1;
  } while (n >= 0);
  return `vd${name}`;
}

/** A sandbox network: a bridge with no <forward> and no <ip>, so its VMs see each other and nothing else (not even the host). */
export function networkXml(name: string, bridge: string): string {
  return [
    '<network>',
    `  <name>${xmlEscape(name)}</name>`,
    `  <metadata><ferry:network xmlns:ferry="${FERRY_NS}" kind="sandbox"/></metadata>`,
    `  <bridge name="${xmlEscape(bridge)}" stp="off" delay="0"/>`,
    '</network>',
    '',
  ].join('\n');
}

export function domainXml(spec: VmSpec, opts: DomainXmlOptions): string {
  const problem = specProblem(spec);
  if (problem) throw new Error(problem);
  const e = xmlEscape;
  const networkName = spec.network.name;
  const lines: string[] = [];
  const qemuNs = opts.probeForwards.length > 0 ? ' xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0"' : '';
  lines.push(`<domain type="${opts.accel === 'kvm' ? 'kvm' : 'qemu'}"${qemuNs}>`);
  lines.push(`  <name>${e(spec.name)}</name>`);
  lines.push(`  <metadata><ferry:vm xmlns:ferry="${FERRY_NS}" network="${e(networkName)}" kind="${e(spec.network.kind)}"/></metadata>`);
  lines.push(`  <memory unit="MiB">${spec.memoryMiB}</memory>`);
  lines.push(`  <vcpu>${spec.vcpus}</vcpu>`);
  lines.push('  <os><type arch="x86_64" machine="pc">hvm</type></os>');
  lines.push('  <features><acpi/><apic/></features>');
  // TCG: the richest CPU qemu emulates; KVM: the host's.
  lines.push(opts.accel === 'kvm' ? '  <cpu mode="host-passthrough" check="none"/>' : '  <cpu mode="maximum" check="none"/>');
  lines.push('  <on_poweroff>destroy</on_poweroff>');
  lines.push('  <on_reboot>restart</on_reboot>');
  lines.push('  <on_crash>destroy</on_crash>');
  lines.push('  <devices>');
  spec.disks.forEach((d, i) => {
    lines.push('    <disk type="file" device="disk">');
    lines.push(`      <driver name="qemu" type="${d.format}" cache="none" discard="unmap"/>`);
    lines.push(`      <source file="${e(d.path)}"/>`);
    lines.push(`      <target dev="${diskTarget(i)}" bus="virtio"/>`);
    if (i === 0) lines.push('      <boot order="1"/>');
    lines.push('    </disk>');
  });
  // Sandbox: the job's isolated network (LibvirtTarget defines it); site: the named libvirt network.
  lines.push('    <interface type="network">');
  lines.push(`      <source network="${e(networkName)}"/>`);
  lines.push(`      <mac address="${e(spec.network.mac.toLowerCase())}"/>`);
  lines.push('      <model type="virtio"/>');
  lines.push('      <rom enabled="no"/>'); // no iPXE: machines boot from disk, and TCG runs option ROMs slowly
  lines.push('    </interface>');
  lines.push('    <serial type="file">');
  lines.push(`      <source path="${e(spec.serialLog)}" append="off"/>`);
  lines.push('      <target port="0"/>');
  lines.push('    </serial>');
  lines.push('    <video><model type="vga" vram="16384" heads="1" primary="yes"/></video>');
  lines.push('    <memballoon model="none"/>');
  lines.push('  </devices>');
  if (opts.qemuUser === 'root') {
    lines.push('  <seclabel type="static" model="dac" relabel="no"><label>+0:+0</label></seclabel>');
  }
  if (opts.probeForwards.length > 0) {
    // libvirt's own user interface forwards ports only with the passt backend, which gives the
    // guest the host's network; qemu's slirp with restrict=on forwards in and lets nothing out.
    const fwd = opts.probeForwards.map((f) => `,hostfwd=tcp:127.0.0.1:${f.hostPort}-:${f.guestPort}`).join('');
    lines.push('  <qemu:commandline>');
    lines.push('    <qemu:arg value="-netdev"/>');
    lines.push(`    <qemu:arg value="user,id=ferryprobe,restrict=on${fwd}"/>`);
    lines.push('    <qemu:arg value="-device"/>');
    lines.push(`    <qemu:arg value="virtio-net-pci,netdev=ferryprobe,mac=${probeMac(spec.network.mac)},addr=0x1e,romfile="/>`);
    lines.push('  </qemu:commandline>');
  }
  lines.push('</domain>');
  lines.push('');
  return lines.join('\n');
}

/** True when an XML document (from virsh dumpxml / net-dumpxml) carries Ferry's metadata mark. */
export function isFerryXml(xml: string): boolean {
  return xml.includes(FERRY_NS);
}
