import { log } from '../../common/log';
import { ExitCode, FerryError } from '../../common/errors';
import type { AgentConfig } from '../config';
import type { AgentState } from '../state';
import { ScanSource } from './scan-source';
import type { CaptureSource } from './types';

/** The capture source the config asks for; `auto` takes the kernel source when it is available. */
export async function createCaptureSource(config: AgentConfig, state: AgentState): Promise<CaptureSource> {
  const scan = (): CaptureSource =>
    new ScanSource({
      stateDirOf: (id) => state.volumeDir(id),
      intervalMs: config.scan.intervalMs,
      blockSize: config.scan.blockSize,
      maxPendingBytes: config.scan.maxPendingBytes,
    });
  if (config.capture === 'scan') return scan();
  const why = 'the dm-ferry kernel capture is not available on this machine';
  if (config.capture === 'kernel') throw new FerryError(`capture: kernel was requested, but ${why}`, ExitCode.failure);
  log.warn(`${why}: using scan capture (approximate points)`);
  return scan();
}
