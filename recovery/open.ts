import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { log } from '../common/log';
import type { ControlPlane } from '../control/plane';
import type { ReceiverCore } from '../receiver/core';
import { exportWithCli } from './exporter';
import { RecoveryService } from './service';
import { RecoveryStore } from './store';
import { LibvirtTarget } from './targets/libvirt';
import { QemuTarget } from './targets/qemu';
import type { RecoveryTarget } from './targets/target';

/** qemu (driven directly, the default), libvirt at a URI (qemu:///system), or off. */
export type RecoveryTargetChoice = 'qemu' | 'off' | { libvirt: string };

/** unix socket paths are limited to 107 bytes: a long data directory gets its runtime dir in /tmp. */
function runtimeDir(dataDir: string): string {
  const inData = path.join(path.resolve(dataDir), 'recovery', 'run');
  if (inData.length <= 60) return inData;
  return path.join(os.tmpdir(), `ferry-run-${createHash('sha256').update(path.resolve(dataDir)).digest('hex').slice(0, 12)}`);
}

/** The receiver's recovery service: its store in catalog.db, its target, started (leftovers of a crash cleaned). */
export async function openRecovery(o: {
  dataDir: string;
  catalogFile: string;
  core: ReceiverCore;
  plane: ControlPlane;
  target: RecoveryTargetChoice;
  endStreams(agentId: string, reason: string): void;
}): Promise<RecoveryService> {
  let target: RecoveryTarget | undefined;
  if (o.target === 'qemu') {
    const dir = runtimeDir(o.dataDir);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    target = new QemuTarget({ runtimeDir: dir });
  } else if (o.target !== 'off') {
    target = new LibvirtTarget({ uri: o.target.libvirt });
  }
  const service = new RecoveryService({
    dataDir: o.dataDir,
    store: RecoveryStore.open(o.catalogFile),
    plane: o.plane,
    points: (volumeId) => o.core.catalog.points(volumeId),
    exportPoint: exportWithCli,
    target,
    deletePointsExcept: (volumeId, keep) => o.core.catalog.deletePointsExcept(volumeId, keep),
    requestWholeVolumeCompare: (volumeId, reason) => o.core.requestWholeVolumeCompare(volumeId, reason),
    endStreams: o.endStreams,
    exportableSeq: (volumeId) => o.core.volumeStatus().find((v) => v.volumeId === volumeId)?.checkpointSeq ?? 0,
  });
  await service.start().catch((err: Error) => log.warn('recovery: cleaning up after the last run failed', { error: err.message }));
  return service;
}
