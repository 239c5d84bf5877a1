import type { ValidVolumeReport, VolumeReportState } from '../proto/validate-control';
import type { NewEvent } from './store';

/**
 * Alert evaluators: pure functions from what is seen now and what was alerted before to the
 * events to store and what stays alerted. Each latches (hysteresis): one event when a
 * condition begins, one when it ends, none while it lasts.
 */

export type AlertEvent = Omit<NewEvent, 'timeMs'>;

export interface AlertStep {
  /** The subjects alerted after this step. */
  active: Set<string>;
  events: AlertEvent[];
}

/** Back under this share of the threshold counts as recovered. */
export const RPO_RECOVERY_RATIO = 0.8;

export interface VolumeRpo {
  volumeId: string;
  machineName: string;
  groupId: string | null;
  rpoSeconds: number;
  thresholdMs: number;
}

function groupText(groupId: string | null): string {
  return groupId ? `group ${groupId}` : 'no group';
}

/** rpo-exceeded when a volume's RPO goes over its threshold; rpo-recovered once it is back under 80% of it. */
export function rpoAlerts(previous: ReadonlySet<string>, volumes: readonly VolumeRpo[]): AlertStep {
  const active = new Set<string>();
  const events: AlertEvent[] = [];
  for (const v of volumes) {
    const rpoMs = v.rpoSeconds * 1000;
    const was = previous.has(v.volumeId);
    const over = was ? rpoMs >= v.thresholdMs * RPO_RECOVERY_RATIO : rpoMs > v.thresholdMs;
    if (over) active.add(v.volumeId);
    const where = `volume ${v.volumeId} of ${v.machineName} (${groupText(v.groupId)})`;
    if (over && !was) {
      events.push({ severity: 'warning', kind: 'rpo-exceeded', subjectKind: 'volume', subjectId: v.volumeId, text: `RPO of ${where} is ${v.rpoSeconds.toFixed(1)} s, over the ${v.thresholdMs / 1000} s threshold` });
    } else if (!over && was) {
      events.push({ severity: 'info', kind: 'rpo-recovered', subjectKind: 'volume', subjectId: v.volumeId, text: `RPO of ${where} is back to ${v.rpoSeconds.toFixed(1)} s (threshold ${v.thresholdMs / 1000} s)` });
    }
  }
  // A volume that is gone (its machine left the receiver) drops out silently.
  return { active, events };
}

export interface MachinePresence {
  id: string;
  name: string;
  connected: boolean;
  /** Since when it has had no session (undefined while connected). */
  disconnectedSinceMs?: number;
}

/** machine-disconnected once a machine has had no session for `boundMs`; machine-reconnected when it is back. */
export function disconnectAlerts(previous: ReadonlySet<string>, machines: readonly MachinePresence[], nowMs: number, boundMs: number): AlertStep {
  const active = new Set<string>();
  const events: AlertEvent[] = [];
  for (const m of machines) {
    const was = previous.has(m.id);
    const away = !m.connected && m.disconnectedSinceMs !== undefined && nowMs - m.disconnectedSinceMs >= boundMs;
    if (away || (was && !m.connected)) active.add(m.id);
    if (away && !was) {
      const s = Math.round((nowMs - (m.disconnectedSinceMs ?? nowMs)) / 1000);
      events.push({ severity: 'error', kind: 'machine-disconnected', subjectKind: 'machine', subjectId: m.id, text: `${m.name} (${m.id}) has been disconnected for ${s} s` });
    } else if (was && m.connected) {
      events.push({ severity: 'info', kind: 'machine-reconnected', subjectKind: 'machine', subjectId: m.id, text: `${m.name} (${m.id}) is connected again` });
    }
  }
  return { active, events };
}

export interface SpaceReading {
  path: string;
  freeBytes: number;
  low: boolean;
}

/** disk-low when a file system holding receiver data goes below its floor (the monitor's own hysteresis); disk-ok when it is back. */
export function diskAlerts(previous: ReadonlySet<string>, spaces: readonly SpaceReading[]): AlertStep {
  const active = new Set<string>();
  const events: AlertEvent[] = [];
  for (const s of spaces) {
    const was = previous.has(s.path);
    if (s.low) active.add(s.path);
    const mib = Math.round(s.freeBytes / 1048576);
    if (s.low && !was) {
      events.push({ severity: 'error', kind: 'disk-low', subjectKind: 'receiver', subjectId: s.path, text: `free space low on the receiver at ${s.path}: ${mib} MiB free; agents are held` });
    } else if (!s.low && was) {
      events.push({ severity: 'info', kind: 'disk-ok', subjectKind: 'receiver', subjectId: s.path, text: `free space back on the receiver at ${s.path}: ${mib} MiB free` });
    }
  }
  return { active, events };
}

export interface RetentionReading {
  volumeId: string;
  windowMs: number;
  /** When the volume was first protected here. */
  protectedSinceMs: number;
  /** Capture time of its oldest point, undefined when it has none. */
  oldestPointMs?: number;
}

/** The history kept may fall this far short of the window before it counts (pruning runs now and then). */
export const RETENTION_SLACK_RATIO = 0.9;

/**
 * retention-shortfall when a volume protected for longer than its window keeps less history
 * than the window (points lost to space or damage); retention-restored once it keeps nearly
 * all of it again.
 */
export function retentionAlerts(previous: ReadonlySet<string>, volumes: readonly RetentionReading[], nowMs: number): AlertStep {
  const active = new Set<string>();
  const events: AlertEvent[] = [];
  for (const v of volumes) {
    const was = previous.has(v.volumeId);
    const kept = v.oldestPointMs === undefined ? 0 : nowMs - v.oldestPointMs;
    const oldEnough = nowMs - v.protectedSinceMs > v.windowMs;
    const short = oldEnough && (was ? kept < v.windowMs * ((1 + RETENTION_SLACK_RATIO) / 2) : kept < v.windowMs * RETENTION_SLACK_RATIO);
    if (short) active.add(v.volumeId);
    if (short && !was) {
      events.push({
        severity: 'warning',
        kind: 'retention-shortfall',
        subjectKind: 'volume',
        subjectId: v.volumeId,
        text: `volume ${v.volumeId} keeps ${Math.round(kept / 60_000)} min of recovery points, less than its ${Math.round(v.windowMs / 60_000)} min retention window`,
      });
    } else if (!short && was) {
      events.push({ severity: 'info', kind: 'retention-restored', subjectKind: 'volume', subjectId: v.volumeId, text: `volume ${v.volumeId} keeps its full retention window again` });
    }
  }
  return { active, events };
}

/** resync-started / resync-finished from what a heartbeat says of each volume, against the last one. */
export function resyncTransitions(machineName: string, previous: ReadonlyMap<string, VolumeReportState>, reports: readonly ValidVolumeReport[]): AlertEvent[] {
  const events: AlertEvent[] = [];
  for (const r of reports) {
    const before = previous.get(r.volumeId);
    if (r.state === 'resyncing' && before !== 'resyncing') {
      events.push({ severity: 'info', kind: 'resync-started', subjectKind: 'volume', subjectId: r.volumeId, text: `resync of ${r.volumeId} on ${machineName} started` });
    } else if (before === 'resyncing' && r.state !== 'resyncing' && r.state !== 'disconnected') {
      events.push({ severity: 'info', kind: 'resync-finished', subjectKind: 'volume', subjectId: r.volumeId, text: `resync of ${r.volumeId} on ${machineName} finished (${r.state})` });
    }
  }
  return events;
}
