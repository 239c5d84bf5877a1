/**
 * Where recovered machines run: a recovery target boots a VM from disk images on a network
 * and gives the evidence a job records. Implementations: qemu (recovery/targets/qemu.ts, the
 * embedded default; KVM when /dev/kvm is usable, else TCG) and libvirt (recovery/targets/libvirt.ts,
 * domains defined through virsh). Tests of the job logic may use a fake that keeps this contract.
 */

export class TargetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TargetError';
  }
}

export interface VmDisk {
  /** A disk image file; the first disk is the boot disk. */
  path: string;
  format: 'raw' | 'qcow2';
}

/**
 * A network the target's VMs join. 'sandbox': the VMs of one job see each other and nothing
 * else (no route to the host, the site or the internet); 'site': the recovery site's network
 * (qemu: user networking; libvirt: the named libvirt network).
 */
export interface VmNetwork {
  kind: 'sandbox' | 'site';
  /** Unique per job (sandbox) or the site network's name. */
  name: string;
  /** This VM's address on the network, e.g. 10.77.0.11 (sandbox; static, given to the guest by the plan's scripts or DHCP-less config). */
  address: string;
  /** MAC address (52:54:00:xx:xx:xx); stable per machine. */
  mac: string;
}

export interface VmSpec {
  /** Unique on the target (a safe identifier). */
  name: string;
  vcpus: number;
  memoryMiB: number;
  disks: VmDisk[];
  network: VmNetwork;
  /** Where the serial console (ttyS0) is written as it runs. */
  serialLog: string;
  /** Files of this VM (QMP socket, pid file, ...). Created by the caller, removed by cleanup. */
  workDir: string;
  /** Guest TCP ports the host must be able to probe (health checks), without opening the sandbox. */
  probePorts: number[];
}

export interface TargetCheck {
  ok: boolean;
  /** What runs VMs here, or why nothing can: "qemu 7.2 (TCG: /dev/kvm is not usable: ...)". */
  detail: string;
  accel?: 'kvm' | 'tcg';
}

export interface RunningVm {
  readonly name: string;
  /** "qemu:<name>" or "libvirt:<domain>". */
  readonly runsOn: string;
  /** Resolves when the serial log matches `pattern` (a RegExp over the whole log); rejects with TargetError at the timeout, when aborted, or when the VM exits first. */
  waitSerial(pattern: RegExp, timeoutMs: number, signal?: AbortSignal): Promise<void>;
  /** True when a TCP connection to the guest's `port` (one of spec.probePorts) is accepted and the guest answers or keeps it open. */
  probeTcp(port: number, timeoutMs: number): Promise<boolean>;
  /** Writes the console's current picture as a PNG file. */
  screenshot(pngPath: string): Promise<void>;
  /** Graceful: ACPI power button and wait up to timeoutMs, then hard stop; hard: stop now. Idempotent. */
  stop(options: { graceful: boolean; timeoutMs?: number }): Promise<void>;
  /** Resolves when the VM is gone (exit status text). */
  readonly exited: Promise<string>;
}

export interface RecoveryTarget {
  readonly kind: 'qemu' | 'libvirt';
  check(): Promise<TargetCheck>;
  boot(spec: VmSpec): Promise<RunningVm>;
  /** Stops and forgets VMs this target started under names with `prefix` that are still around (cleanup after a crash). */
  sweep(prefix: string): Promise<string[]>;
}
