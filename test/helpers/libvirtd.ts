import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';

/**
 * libvirt for tests: the system daemon (qemu:///system) as root, started by hand when it is
 * not running (no systemd here): `virtlogd -d` (libvirtd hands serial files and qemu logs to
 * it) and `libvirtd -d`, then virsh is polled until it answers. Packages: libvirt-daemon-system
 * libvirt-clients libvirt-daemon-driver-qemu (+ qemu-system-x86). Daemons this helper started
 * are stopped by stopLibvirtd(); one that was already running is left alone.
 *
 * /dev/kvm: on these machines it exists (root only) but KVM does not work (nested). libvirt then
 * probes qemu's capabilities as root (KVM on) and validates them as its qemu user (no access),
 * finds them stale, and re-probes on every call (~4 s each: a define takes a minute). So the
 * daemon starts in a mount namespace of its own where /dev/kvm is an inaccessible empty file:
 * libvirt sees no KVM, caches TCG capabilities, and nothing outside changes (its qemu.conf
 * there adds `namespaces = [ ]`: a private /dev per qemu cannot take the bind mount). FERRY_TEST_KVM=1
 * keeps the real /dev/kvm (hosts where KVM works).
 */

export const LIBVIRT_URI = 'qemu:///system';

export interface Libvirtd {
  uri: string;
  /** Daemons this helper started (pids), empty when libvirtd was already up. */
  started: number[];
  /** How long it took until virsh answered. */
  readyMs: number;
}

function answers(uri: string): Promise<boolean> {
  return new Promise((resolve) => {
    execFile('virsh', ['-c', uri, 'version'], { timeout: 10_000 }, (err) => resolve(!err));
  });
}

function which(tool: string): string | null {
  for (const dir of ['/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    if (fs.existsSync(`${dir}/${tool}`)) return `${dir}/${tool}`;
  }
  return null;
}

function pidFrom(file: string): number | null {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** Why libvirt cannot run here, or null when it can be started. */
export function libvirtdMissing(): string | null {
  if (process.getuid?.() !== 0) return 'libvirt tests need root (the system libvirtd, bridges)';
  for (const tool of ['virsh', 'libvirtd', 'virtlogd', 'qemu-system-x86_64', 'unshare']) {
    if (!which(tool)) return `${tool} not found (apt-get install -y --no-install-recommends libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu qemu-system-x86)`;
  }
  return null;
}

export async function startLibvirtd(deadlineMs = 90_000): Promise<Libvirtd> {
  const missing = libvirtdMissing();
  if (missing) throw new Error(missing);
  const t0 = Date.now();
  if (await answers(LIBVIRT_URI)) return { uri: LIBVIRT_URI, started: [], readyMs: Date.now() - t0 };
  const started: number[] = [];
  if (!fs.existsSync('/run/libvirt/virtlogd-sock')) {
    execFileSync(which('virtlogd') as string, ['-d'], { stdio: 'pipe' });
    while (!fs.existsSync('/run/libvirt/virtlogd-sock')) {
      if (Date.now() - t0 > 10_000) throw new Error('virtlogd did not create /run/libvirt/virtlogd-sock within 10 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    const pid = pidFrom('/run/virtlogd.pid');
    if (pid) started.push(pid);
  }
  const libvirtd = which('libvirtd') as string;
  if (fs.existsSync('/dev/kvm') && process.env.FERRY_TEST_KVM !== '1') {
    const mask = '/run/ferry-test-nokvm';
    fs.writeFileSync(mask, '', { mode: 0o600 });
    // qemu's own /dev namespace would try to move the bind mount into it and fail: off, in a
    // qemu.conf seen only inside this namespace.
    const conf = '/run/ferry-test-qemu.conf';
    fs.writeFileSync(conf, `${fs.readFileSync('/etc/libvirt/qemu.conf', 'utf8')}\nnamespaces = [ ]\n`, { mode: 0o600 });
    const script = `mount --bind ${mask} /dev/kvm && mount --bind ${conf} /etc/libvirt/qemu.conf && exec ${libvirtd} -d`;
    execFileSync('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', script], { stdio: 'pipe' });
  } else {
    execFileSync(libvirtd, ['-d'], { stdio: 'pipe' });
  }
  while (!(await answers(LIBVIRT_URI))) {
    if (Date.now() - t0 > deadlineMs) throw new Error(`libvirtd did not answer on ${LIBVIRT_URI} within ${deadlineMs} ms (see /var/log/libvirt/)`);
    await new Promise((r) => setTimeout(r, 200));
  }
  // Written by the daemon itself once it runs: read it now that it answers.
  const pid = pidFrom('/run/libvirtd.pid');
  if (pid) started.push(pid);
  return { uri: LIBVIRT_URI, started, readyMs: Date.now() - t0 };
}

/** A daemon's parent may be an init that does not reap: a zombie counts as gone. */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Stops the daemons startLibvirtd started (by pid), waiting until they are gone. */
export async function stopLibvirtd(d: Libvirtd): Promise<void> {
  for (const pid of d.started.reverse()) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      continue;
    }
    const until = Date.now() + 15_000;
    while (Date.now() < until && alive(pid)) await new Promise((r) => setTimeout(r, 100));
  }
}
