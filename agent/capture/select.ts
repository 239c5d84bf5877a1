import { log } from '../../common/log';
import { ExitCode, FerryError } from '../../common/errors';
import type { AgentConfig } from '../config';
import type { AgentState } from '../state';
import { planCapture, type CaptureFacts } from './capture-plan';
import { EbpfSource } from './ebpf-source';
import { probeEbpfCapture } from './ebpf/probe';
import { openBpfTracker } from './ebpf/bpf-tracker';
import type { OpenTracker, WriteTracker } from './ebpf/tracker';
import { probeKernelCapture } from './kernel/devices';
import { KernelSource } from './kernel-source';
import { ScanSource } from './scan-source';
import type { CaptureKindName, CaptureSource } from './types';
import type { FerryControl } from '../../native/addon';

/** The source chosen for this machine, and why (`ferry agent status` shows both). */
export interface CaptureChoice {
  source: CaptureSource;
  kind: CaptureKindName;
  reason: string;
  /** Why dm-ferry does not protect the volumes, when it was probed and does not. */
  kernelUnavailable?: string;
}

export interface SelectOptions {
  openTracker?: OpenTracker;
}

/**
 * The capture source the config asks for (see planCapture): `kernel`, `ebpf` and `scan` take
 * that source or refuse to start; `auto` takes the best one that runs here and says why.
 */
export async function createCaptureSource(config: AgentConfig, state: AgentState, opts: SelectOptions = {}): Promise<CaptureChoice> {
  const facts: CaptureFacts = { requested: config.capture };
  let control: FerryControl | undefined;
  let tracker: WriteTracker | undefined;
  for (;;) {
    const step = planCapture(facts);
    if (step.step === 'probe-kernel') {
      const probe = await probeKernelCapture(config.volumes);
      if (probe.ok) control = probe.control;
      facts.kernel = probe.ok ? { ok: true } : { ok: false, reason: probe.reason };
      continue;
    }
    if (step.step === 'probe-ebpf') {
      const probe = await probeEbpfCapture(config.volumes, { openTracker: opts.openTracker ?? (() => openBpfTracker()) });
      if (probe.ok) tracker = probe.tracker;
      facts.ebpf = probe.ok ? { ok: true } : { ok: false, reason: probe.reason };
      continue;
    }
    if (step.step === 'refuse') throw new FerryError(step.reason, ExitCode.failure);
    const kernelUnavailable = facts.kernel && !facts.kernel.ok ? facts.kernel.reason : undefined;
    const choice = (source: CaptureSource): CaptureChoice => ({ source, kind: step.kind, reason: step.reason, kernelUnavailable });
    if (config.capture === 'auto' && step.kind !== 'kernel') log.warn(`using ${step.kind} capture: ${step.reason}`);
    if (step.kind === 'kernel' && control) {
      return choice(
        new KernelSource({
          control,
          stateDirOf: (id) => state.volumeDir(id),
          resyncBlockSize: config.resync.blockSize,
          volumeIds: config.volumes.map((v) => v.id),
        }),
      );
    }
    if (step.kind === 'ebpf' && tracker) {
      return choice(
        new EbpfSource({
          tracker,
          stateDirOf: (id) => state.volumeDir(id),
          blockSize: config.scan.blockSize,
          maxPendingBytes: config.scan.maxPendingBytes,
          volumeIds: config.volumes.map((v) => v.id),
        }),
      );
    }
    return choice(
      new ScanSource({
        stateDirOf: (id) => state.volumeDir(id),
        intervalMs: config.scan.intervalMs,
        blockSize: config.scan.blockSize,
        maxPendingBytes: config.scan.maxPendingBytes,
      }),
    );
  }
}

/** The capture-degraded events of boot-protected volumes not captured by dm-ferry (once per start). */
export function degradedBootVolumes(config: AgentConfig, choice: Pick<CaptureChoice, 'kind' | 'reason' | 'kernelUnavailable'>): Array<{ volumeId: string; text: string }> {
  if (choice.kind === 'kernel') return [];
  const why = choice.kernelUnavailable ?? choice.reason;
  return config.volumes
    .filter((v) => v.bootProtected)
    .map((v) => ({
      volumeId: v.id,
      text: `volume ${v.id} (${v.path}) is set up to boot under dm-ferry, but dm-ferry does not capture it (${why}): the machine booted without it; using ${choice.kind} capture (approximate points) until a boot with dm-ferry`,
    }));
}
