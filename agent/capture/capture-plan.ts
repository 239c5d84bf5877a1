import type { CaptureKind } from '../config';
import type { CaptureKindName } from './types';

/** Whether a capture source can run here, and if not, why (in words an operator can act on). */
export type Availability = { ok: true } | { ok: false; reason: string };

export interface CaptureFacts {
  requested: CaptureKind;
  /** dm-ferry wraps every volume (undefined: not probed yet). */
  kernel?: Availability;
  /** The eBPF write tracker opened for every volume (undefined: not probed yet). */
  ebpf?: Availability;
}

export type CaptureStep =
  | { step: 'probe-kernel' }
  | { step: 'probe-ebpf' }
  | { step: 'use'; kind: CaptureKindName; reason: string }
  | { step: 'refuse'; reason: string };

/**
 * Which capture source protects this machine, one probe at a time: the caller probes what the
 * step asks for, adds the fact, and asks again. `auto` takes dm-ferry where it wraps every
 * volume (exact points), else the eBPF tracker where it loads (approximate points, no module),
 * else scan capture; an explicit choice that cannot run is refused.
 */
export function planCapture(f: CaptureFacts): CaptureStep {
  if (f.requested === 'scan') return { step: 'use', kind: 'scan', reason: 'capture: scan is configured' };
  if (f.requested === 'kernel' || f.requested === 'auto') {
    if (!f.kernel) return { step: 'probe-kernel' };
    if (f.kernel.ok) {
      return { step: 'use', kind: 'kernel', reason: f.requested === 'kernel' ? 'capture: kernel is configured and dm-ferry wraps every volume' : 'dm-ferry wraps every volume (exact points)' };
    }
    if (f.requested === 'kernel') return { step: 'refuse', reason: `capture: kernel was requested, but ${f.kernel.reason}` };
  }
  if (!f.ebpf) return { step: 'probe-ebpf' };
  const noKernel = f.kernel && !f.kernel.ok ? `dm-ferry does not protect the volumes (${f.kernel.reason})` : undefined;
  if (f.ebpf.ok) {
    if (f.requested === 'ebpf') return { step: 'use', kind: 'ebpf', reason: 'capture: ebpf is configured and the eBPF write tracker loaded' };
    return { step: 'use', kind: 'ebpf', reason: `${noKernel}; the eBPF write tracker loaded (approximate points)` };
  }
  if (f.requested === 'ebpf') return { step: 'refuse', reason: `capture: ebpf was requested, but ${f.ebpf.reason}` };
  return { step: 'use', kind: 'scan', reason: `${noKernel}, and the eBPF write tracker cannot run (${f.ebpf.reason}): scan capture (approximate points, every volume read each interval)` };
}
