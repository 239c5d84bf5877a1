import type { EventSeverity, MachineState } from './model';

/** Prometheus text exposition (format 0.0.4) of the control plane's figures. Pure. */

export const MACHINE_STATES: readonly MachineState[] = ['resyncing', 'protected', 'degraded', 'disconnected', 'failed'];

export interface MetricsSnapshot {
  volumes: Array<{ machine: string; volume: string; group: string; rpoSeconds: number }>;
  groups: Array<{ group: string; rpoThresholdSeconds: number }>;
  machines: Array<{ machine: string; state: MachineState }>;
  rounds: Array<{ group: string; done: number; aborted: number }>;
  /** Hold times of recent done rounds, seconds, per group. */
  holds: Array<{ group: string; count: number; sumSeconds: number; recentSeconds: number[] }>;
  events: Record<EventSeverity, number>;
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function labels(l: Record<string, string>): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length > 0 ? `{${parts.join(',')}}` : '';
}

function num(v: number): string {
  return Number.isFinite(v) ? String(v) : v > 0 ? '+Inf' : v < 0 ? '-Inf' : 'NaN';
}

/** The q-quantile of sorted values (nearest rank). */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

export function renderMetrics(s: MetricsSnapshot): string {
  const out: string[] = [];
  const family = (name: string, type: string, help: string): void => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  };
  family('ferry_rpo_seconds', 'gauge', 'Recovery point objective of a protected volume: age of the oldest change not yet durable on the receiver.');
  for (const v of s.volumes) out.push(`ferry_rpo_seconds${labels({ machine: v.machine, volume: v.volume, group: v.group })} ${num(v.rpoSeconds)}`);
  family('ferry_rpo_threshold_seconds', 'gauge', "A protection group's RPO alert threshold.");
  for (const g of s.groups) out.push(`ferry_rpo_threshold_seconds${labels({ group: g.group })} ${num(g.rpoThresholdSeconds)}`);
  family('ferry_machine_state', 'gauge', '1 for the state a machine is in, 0 for the others.');
  for (const m of s.machines) {
    for (const state of MACHINE_STATES) out.push(`ferry_machine_state${labels({ machine: m.machine, state })} ${m.state === state ? 1 : 0}`);
  }
  family('ferry_group_rounds_total', 'counter', 'Group rounds finished since the receiver started, by result.');
  for (const r of s.rounds) {
    out.push(`ferry_group_rounds_total${labels({ group: r.group, result: 'done' })} ${r.done}`);
    out.push(`ferry_group_rounds_total${labels({ group: r.group, result: 'aborted' })} ${r.aborted}`);
  }
  family('ferry_round_hold_seconds', 'summary', 'Hold time of done group rounds (first prepare sent to last held received); quantiles over recent rounds.');
  for (const h of s.holds) {
    const sorted = [...h.recentSeconds].sort((a, b) => a - b);
    for (const q of [0.5, 0.99]) out.push(`ferry_round_hold_seconds${labels({ group: h.group, quantile: String(q) })} ${num(quantile(sorted, q))}`);
    out.push(`ferry_round_hold_seconds_sum${labels({ group: h.group })} ${num(h.sumSeconds)}`);
    out.push(`ferry_round_hold_seconds_count${labels({ group: h.group })} ${h.count}`);
  }
  family('ferry_events_total', 'counter', 'Events stored, by severity.');
  for (const [severity, count] of Object.entries(s.events)) out.push(`ferry_events_total${labels({ severity })} ${count}`);
  return `${out.join('\n')}\n`;
}
