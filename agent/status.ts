import * as fs from 'fs';
import { replaceFile } from '../common/fsutil';
import type { CaptureKindName, CaptureMode, ResyncKind } from './capture/types';
import type { RoundStats } from './group-round';
import type { EffectivePolicy } from './policy/effective';

export type VolumeState = 'resyncing' | 'repairing' | 'protected' | 'degraded' | 'throttled' | 'disconnected';

export interface VolumeStateFacts {
  connected: boolean;
  resyncing: boolean;
  repairing: boolean;
  throttled: boolean;
  kind: CaptureKindName | undefined;
  mode: CaptureMode | 'starting';
}

/**
 * A volume's state, the first that applies: disconnected, resyncing, repairing, throttled, or
 * degraded (capture lost precision: dm-ferry below exact, any source draining a dirty bitmap
 * after its event stream overflowed), else protected.
 */
export function volumeState(f: VolumeStateFacts): VolumeState {
  if (!f.connected) return 'disconnected';
  if (f.resyncing) return 'resyncing';
  if (f.repairing) return 'repairing';
  if (f.throttled) return 'throttled';
  if (f.mode === 'bitmap-draining' || (f.kind === 'kernel' && f.mode !== 'exact')) return 'degraded';
  return 'protected';
}

export interface ResyncStatus {
  kind: ResyncKind;
  percent: number;
  doneBytes: number;
  totalBytes: number;
  sentBytes: number;
  rateBytesPerSecond: number;
  etaSeconds: number | null;
  finished: boolean;
}

/** The running or last repair of a volume (a receiver's RepairRequest, or `ferry agent verify`). */
export interface RepairStatus {
  reason: string;
  percent: number;
  doneBytes: number;
  totalBytes: number;
  sentBytes: number;
  finished: boolean;
}

export interface VolumeStatus {
  volumeId: string;
  path: string;
  sizeBytes: number;
  state: VolumeState;
  mode: CaptureMode | 'starting';
  /** Seconds since the earliest moment a change not yet durable at the receiver may have happened. */
  rpoSeconds: number;
  backlogBytes: number;
  capturedSeq: number;
  durableSeq: number;
  resync?: ResyncStatus;
  repair?: RepairStatus;
}

export interface AgentStatus {
  pid: number;
  updatedMs: number;
  name: string;
  agentId: string;
  receiver: string;
  capture: CaptureKindName;
  /** Why this capture source protects the machine (what was probed and found). */
  captureReason: string;
  connected: boolean;
  throttled: boolean;
  lastError?: string;
  sentBytes: number;
  throughputBytesPerSecond: number;
  rssBytes: number;
  points: { lastCrashTagMs: number; lastAppTagMs: number; tagsSent: number };
  /** Every effective policy value with its source (group, local config, default). */
  policy: EffectivePolicy;
  /** Group rounds this agent took part in: outcomes and hold times (prepare -> release). */
  rounds: RoundStats;
  /** Events waiting for a session that takes them, and those dropped because the queue was full. */
  events: { queued: number; dropped: number };
  volumes: VolumeStatus[];
}

/** Rewritten every second: replaced without fsync (a crash may leave it empty; readers then see no status). */
export function writeAgentStatus(file: string, status: AgentStatus): void {
  replaceFile(file, `${JSON.stringify(status, null, 2)}\n`, 0o600);
}

export function readAgentStatus(file: string): AgentStatus | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as AgentStatus;
  } catch {
    return undefined;
  }
}

/** Prometheus text exposition of the same figures. */
export function prometheusText(s: AgentStatus): string {
  const lines: string[] = [];
  const metric = (name: string, help: string, type: 'gauge' | 'counter', samples: Array<[string, number]>): void => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`);
  };
  const vol = (v: VolumeStatus): string => `{volume="${v.volumeId}"}`;
  metric('ferry_agent_connected', '1 when the agent has a session with the receiver', 'gauge', [['', s.connected ? 1 : 0]]);
  metric('ferry_agent_throttled', '1 while the receiver asks the agent to slow down', 'gauge', [['', s.throttled ? 1 : 0]]);
  metric('ferry_agent_sent_bytes_total', 'change data sent to the receiver (uncompressed)', 'counter', [['', s.sentBytes]]);
  metric('ferry_agent_throughput_bytes_per_second', 'change data sent over the last 10 s', 'gauge', [['', s.throughputBytesPerSecond]]);
  metric('ferry_agent_resident_memory_bytes', 'resident set size of the agent', 'gauge', [['', s.rssBytes]]);
  metric('ferry_agent_rpo_threshold_seconds', 'the effective RPO threshold (group policy, local config or default)', 'gauge', [['', s.policy.rpoThresholdMs.value / 1000]]);
  const holds: Array<[string, number]> = [];
  if (s.rounds.p50HoldMs !== null) holds.push(['{quantile="0.5"}', s.rounds.p50HoldMs / 1000]);
  if (s.rounds.p99HoldMs !== null) holds.push(['{quantile="0.99"}', s.rounds.p99HoldMs / 1000]);
  metric('ferry_agent_group_round_hold_seconds', 'how long group rounds held the writes (prepare received -> released), recent rounds', 'gauge', holds);
  metric('ferry_agent_group_rounds_total', 'group rounds by how they ended', 'counter', Object.entries(s.rounds.outcomes).map(([outcome, n]) => [`{outcome="${outcome}"}`, n]));
  metric('ferry_volume_rpo_seconds', 'time since the earliest moment a change not yet durable at the receiver may have happened (scan: includes writes no pass has read yet)', 'gauge', s.volumes.map((v) => [vol(v), v.rpoSeconds]));
  metric('ferry_volume_backlog_bytes', 'captured change data not yet durable at the receiver', 'gauge', s.volumes.map((v) => [vol(v), v.backlogBytes]));
  metric('ferry_volume_durable_seq', 'highest seq the receiver holds durably', 'gauge', s.volumes.map((v) => [vol(v), v.durableSeq]));
  metric('ferry_volume_resync_percent', 'progress of the running or last resync', 'gauge', s.volumes.filter((v) => v.resync).map((v) => [vol(v), v.resync?.percent ?? 0]));
  metric('ferry_volume_repair_percent', 'progress of the running or last repair', 'gauge', s.volumes.filter((v) => v.repair).map((v) => [vol(v), v.repair?.percent ?? 0]));
  metric(
    'ferry_volume_protected',
    '1 when the volume is protected (resync done, connected, not throttled)',
    'gauge',
    s.volumes.map((v) => [vol(v), v.state === 'protected' ? 1 : 0]),
  );
  return `${lines.join('\n')}\n`;
}
