import { log } from '../../common/log';
import { ExitCode, FerryError } from '../../common/errors';
import type { AgentConfig } from '../config';
import type { AgentState } from '../state';
import { probeKernelCapture } from './kernel/devices';
import { KernelSource } from './kernel-source';
import { ScanSource } from './scan-source';
import type { CaptureSource } from './types';

/**
 * The capture source the config asks for. `kernel` needs dm-ferry and every volume to be a
 * ferry device; `auto` takes the kernel source when that holds and falls back to scan capture
 * (with a warning saying why) when it does not.
 */
export async function createCaptureSource(config: AgentConfig, state: AgentState): Promise<CaptureSource> {
  const scan = (): CaptureSource =>
    new ScanSource({
      stateDirOf: (id) => state.volumeDir(id),
      intervalMs: config.scan.intervalMs,
      blockSize: config.scan.blockSize,
      maxPendingBytes: config.scan.maxPendingBytes,
    });
  if (config.capture === 'scan') return scan();
  const probe = await probeKernelCapture(config.volumes);
  if (probe.ok) {
    return new KernelSource({
      control: probe.control,
      stateDirOf: (id) => state.volumeDir(id),
      resyncBlockSize: config.resync.blockSize,
      volumeIds: config.volumes.map((v) => v.id),
    });
  }
  if (config.capture === 'kernel') throw new FerryError(`capture: kernel was requested, but ${probe.reason}`, ExitCode.failure);
  log.warn(`kernel capture is not available (${probe.reason}): using scan capture (approximate points)`);
  return scan();
}
