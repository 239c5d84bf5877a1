import type { ValidVolumeReport } from '../proto/validate-control';
import type { VolumeRow } from '../receiver/catalog';
import type { VolumeRuntimeStatus } from '../receiver/status';
import { machineState } from './machine-state';
import type { Machine, MachineVolume } from './model';
import type { MachineRow } from './store';

/** One volume with what each side knows of it. */
export interface VolumeView {
  row: VolumeRow;
  machine: MachineRow | undefined;
  status: VolumeRuntimeStatus | undefined;
  report: ValidVolumeReport | undefined;
  /** Ingest throughput over the last few seconds. */
  bytesPerSecond: number;
  /** The receiver holds a usable point of it. */
  usable: boolean;
}

/** Joins the catalog's volumes with their machines, the core's status and the agents' last reports. */
export function volumeViews(
  volumes: readonly VolumeRow[],
  machines: readonly MachineRow[],
  statuses: readonly VolumeRuntimeStatus[],
  reportOf: (agentId: string, volumeId: string) => ValidVolumeReport | undefined,
  rateOf: (volumeId: string) => number = () => 0,
  usableOf: (volumeId: string) => boolean = () => true,
): VolumeView[] {
  const byId = new Map(machines.map((m) => [m.id, m]));
  const statusOf = new Map(statuses.map((s) => [s.volumeId, s]));
  return volumes.map((row) => ({ row, machine: byId.get(row.agentId), status: statusOf.get(row.id), report: reportOf(row.agentId, row.id), bytesPerSecond: rateOf(row.id), usable: usableOf(row.id) }));
}

/** A machine as the API shows it: its volumes, state (with reasons) and worst RPO. */
export function machineView(m: MachineRow, views: readonly VolumeView[], connected: boolean, nowMs: number): Machine {
  const own = views.filter((v) => v.row.agentId === m.id);
  const verdict = machineState(
    connected,
    own.map((v) => ({ volumeId: v.row.id, report: v.report, receiver: v.status && { state: v.status.state, problem: v.status.problem }, usable: v.usable })),
  );
  const volumes: MachineVolume[] = own.map((v) => ({
    volumeId: v.row.id,
    sizeBytes: v.row.sizeBytes,
    state: v.status?.state === 'failed' ? 'failed' : !connected ? 'disconnected' : (v.report?.state ?? 'protected'),
    mode: v.report?.mode ?? '',
    rpoSeconds: v.status?.rpoSeconds ?? 0,
    resyncPercent: v.report?.resyncPercent ?? 0,
    backlogBytes: v.status?.unappliedBytes ?? 0,
    bytesPerSecond: v.bytesPerSecond,
    applyLagSeconds: v.status?.applyLagSeconds ?? 0,
  }));
  return {
    id: m.id,
    name: m.name,
    os: m.os,
    agentVersion: m.agentVersion,
    volumes,
    lastSeenMs: connected ? nowMs : m.lastSeenMs,
    state: verdict.state,
    stateReasons: verdict.reasons,
    connected,
    groupId: m.groupId,
    recovery: m.recovery,
    rpoSeconds: volumes.reduce((worst, v) => Math.max(worst, v.rpoSeconds), 0),
  };
}
