import type { ValidVolumeReport } from '../proto/validate-control';
import type { VolumeHealthState } from '../receiver/status';
import type { MachineState } from './model';

/** What is known of a machine's volume on each side. */
export interface VolumeSides {
  volumeId: string;
  /** How the agent last reported it (heartbeat), undefined when it has not. */
  report?: ValidVolumeReport;
  /** Where the receiver stands with it, undefined when the receiver has not opened it. */
  receiver?: { state: VolumeHealthState; problem?: string };
  /** Whether the receiver holds a usable point of it (its initial copy finished once). */
  usable?: boolean;
}

export interface MachineStateVerdict {
  state: MachineState;
  /** Why, one line per volume or fact that decided it (empty when protected). */
  reasons: string[];
}

/**
 * A machine's state, the worst that applies: failed (a volume failed on the receiver) >
 * disconnected (no session) > resyncing (a volume is being copied) > degraded (a volume is
 * repairing, throttled, degraded or disconnected at the agent, or held, damaged or full at
 * the receiver; or no volume declared yet) > protected. A volume the agent has not reported
 * (yet, or ever: an older agent) is judged by the receiver's side alone: resyncing until the
 * receiver holds a usable point of it, so a machine is never shown protected before its copy is.
 */
export function machineState(connected: boolean, volumes: readonly VolumeSides[]): MachineStateVerdict {
  const failed = volumes.filter((v) => v.receiver?.state === 'failed').map((v) => `${v.volumeId} failed on the receiver${v.receiver?.problem ? `: ${v.receiver.problem}` : ''}`);
  if (failed.length > 0) return { state: 'failed', reasons: failed };
  if (!connected) return { state: 'disconnected', reasons: ['the agent has no session with the receiver'] };
  const resyncing = volumes
    .filter((v) => v.report?.state === 'resyncing' || (v.report === undefined && v.usable === false))
    .map((v) => (v.report ? `${v.volumeId} resyncing (${v.report.resyncPercent}%)` : `${v.volumeId} has no usable point yet (initial copy not finished)`));
  if (resyncing.length > 0) return { state: 'resyncing', reasons: resyncing };
  const degraded: string[] = [];
  for (const v of volumes) {
    const report = v.report;
    if (report && report.state !== 'protected') degraded.push(`${v.volumeId} ${report.state} at the agent`);
    const rx = v.receiver;
    if (rx && rx.state !== 'healthy') degraded.push(`${v.volumeId} ${rx.state} at the receiver${rx.problem ? `: ${rx.problem}` : ''}`);
  }
  if (volumes.length === 0) degraded.push('no volume declared yet');
  if (degraded.length > 0) return { state: 'degraded', reasons: degraded };
  return { state: 'protected', reasons: [] };
}
