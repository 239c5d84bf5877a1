import { AlertEvent, diskAlerts, disconnectAlerts, RetentionReading, retentionAlerts, rpoAlerts, SpaceReading, VolumeRpo } from './alerts';

export interface MachineSeen {
  id: string;
  name: string;
  connected: boolean;
  lastSeenMs: number;
}

/**
 * Owns what is alerted now (the latches of control/alerts.ts) and since when each machine has
 * had no session; turns each evaluation into the events to store.
 */
export class AlertMonitor {
  private rpo = new Set<string>();
  private away = new Set<string>();
  private disk = new Set<string>();
  private retention = new Set<string>();
  private readonly disconnectedSince = new Map<string, number>();

  constructor(
    private readonly disconnectAlertMs: number,
    /** Machines not seen since the receiver started count as away from then. */
    private readonly startedMs: number,
  ) {}

  connected(machineId: string): void {
    this.disconnectedSince.delete(machineId);
  }

  disconnected(machineId: string, atMs: number): void {
    this.disconnectedSince.set(machineId, atMs);
  }

  /** RPO, disconnected machines and free space: every evaluation. */
  evaluate(nowMs: number, volumes: readonly VolumeRpo[], machines: readonly MachineSeen[], spaces: readonly SpaceReading[]): AlertEvent[] {
    const rpo = rpoAlerts(this.rpo, volumes);
    const away = disconnectAlerts(
      this.away,
      machines.map((m) => ({ ...m, disconnectedSinceMs: this.disconnectedSince.get(m.id) ?? Math.max(m.lastSeenMs, this.startedMs) })),
      nowMs,
      this.disconnectAlertMs,
    );
    const disk = diskAlerts(this.disk, spaces);
    this.rpo = rpo.active;
    this.away = away.active;
    this.disk = disk.active;
    return [...away.events, ...rpo.events, ...disk.events];
  }

  /** Retention shortfall: now and then (it reads the catalog). */
  evaluateRetention(nowMs: number, volumes: readonly RetentionReading[]): AlertEvent[] {
    const step = retentionAlerts(this.retention, volumes, nowMs);
    this.retention = step.active;
    return step.events;
  }
}
