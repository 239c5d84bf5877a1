import * as fs from 'fs';
import { describeError } from '../../../common/errors';
import { readGeometry, type VolumeGeometry } from './geometry';
import type { OpenTracker, WriteTracker } from './tracker';

export const BTF_PATH = '/sys/kernel/btf/vmlinux';

export interface EbpfProbeOptions {
  openTracker: OpenTracker;
  btfPath?: string;
  isRoot?: () => boolean;
  geometryOf?: (devicePath: string) => VolumeGeometry;
}

export type EbpfProbe = { ok: true; tracker: WriteTracker } | { ok: false; reason: string };

/**
 * Whether the eBPF write tracker can protect every path: Linux, each path a disk or partition,
 * root, a kernel with BTF (CO-RE), and the tracker loads (or is found pinned). On success the
 * open tracker is handed over (the caller closes it).
 */
export async function probeEbpfCapture(paths: ReadonlyArray<{ id: string; path: string }>, opts: EbpfProbeOptions): Promise<EbpfProbe> {
  if (process.platform !== 'linux') return { ok: false, reason: 'eBPF capture runs on Linux only' };
  for (const v of paths) {
    try {
      (opts.geometryOf ?? readGeometry)(v.path);
    } catch (err) {
      return { ok: false, reason: `volume ${v.id}: ${describeError(err)}` };
    }
  }
  const isRoot = opts.isRoot ?? (() => process.getuid?.() === 0);
  if (!isRoot()) return { ok: false, reason: 'the agent is not root (loading a BPF program needs root)' };
  const btf = opts.btfPath ?? BTF_PATH;
  if (!fs.existsSync(btf)) return { ok: false, reason: `the kernel has no BTF (${btf} is missing): eBPF capture needs Debian 11+, RHEL 8.2+ or Ubuntu 20.10+` };
  try {
    return { ok: true, tracker: await opts.openTracker() };
  } catch (err) {
    return { ok: false, reason: `the eBPF write tracker did not load: ${describeError(err)}` };
  }
}
