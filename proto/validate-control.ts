import { ferry } from './generated/ferry';
import { ErrorCode, ProtocolError } from './errors';
import { checkVolumeId } from './check-ids';
import { Limits, PolicyBounds } from './limits';

/**
 * Validation of the configuration-server frames: group policy, group rounds (two-phase
 * barrier), volume reports and agent events. Each returns plain values or throws one
 * ProtocolError naming the field.
 */

function bad(code: ErrorCode, message: string): never {
  throw new ProtocolError(code, message);
}

function text(value: string | null | undefined, max: number, what: string): string {
  const s = value ?? '';
  if (s.length > max) bad(ErrorCode.TOO_LARGE, `${what} is longer than ${max} characters`);
  return s;
}

function roundId(value: number | null | undefined, what: string): number {
  const id = value ?? 0;
  if (!Number.isSafeInteger(id) || id < 1) bad(ErrorCode.BAD_FRAME, `${what}: round id ${String(id)} is not a round (1..2^53)`);
  return id;
}

export const POLICY_VERSION = 1;
/** Bounds every policy value must keep (the management API checks the same ones). */
export { PolicyBounds };

/** The policy an agent applies: its group's, or none (local config alone). */
export interface AgentPolicy {
  revision: number;
  /** '' when the machine is in no group. */
  groupId: string;
  crashIntervalMs: number;
  /** 0: no scheduled app-consistent points. */
  appIntervalMs: number;
  rpoThresholdMs: number;
  multiMachine: boolean;
}

export function validatePolicy(p: ferry.IPolicy): AgentPolicy {
  const version = p.policyVersion ?? 0;
  if (version !== POLICY_VERSION) bad(ErrorCode.UNSUPPORTED_VERSION, `policy version ${version} is not supported (this agent knows ${POLICY_VERSION})`);
  const revision = p.revision ?? 0;
  if (!Number.isSafeInteger(revision) || revision < 1) bad(ErrorCode.BAD_FRAME, `policy revision ${revision} must be at least 1`);
  const groupId = text(p.groupId, Limits.maxNameLength, 'policy group id');
  const crashIntervalMs = p.crashIntervalMs ?? 0;
  if (crashIntervalMs < PolicyBounds.minCrashIntervalMs || crashIntervalMs > PolicyBounds.maxCrashIntervalMs) {
    bad(ErrorCode.BAD_FRAME, `policy crash interval ${crashIntervalMs} ms is outside ${PolicyBounds.minCrashIntervalMs}..${PolicyBounds.maxCrashIntervalMs} ms`);
  }
  const appIntervalMs = p.appIntervalMs ?? 0;
  if (appIntervalMs !== 0 && (appIntervalMs < PolicyBounds.minAppIntervalMs || appIntervalMs > PolicyBounds.maxAppIntervalMs)) {
    bad(ErrorCode.BAD_FRAME, `policy app interval ${appIntervalMs} ms is outside ${PolicyBounds.minAppIntervalMs}..${PolicyBounds.maxAppIntervalMs} ms (0: off)`);
  }
  const rpoThresholdMs = p.rpoThresholdMs ?? 0;
  if (rpoThresholdMs < PolicyBounds.minRpoThresholdMs || rpoThresholdMs > PolicyBounds.maxRpoThresholdMs) {
    bad(ErrorCode.BAD_FRAME, `policy RPO threshold ${rpoThresholdMs} ms is outside ${PolicyBounds.minRpoThresholdMs}..${PolicyBounds.maxRpoThresholdMs} ms`);
  }
  return { revision, groupId, crashIntervalMs, appIntervalMs, rpoThresholdMs, multiMachine: p.multiMachine ?? false };
}

export interface ValidGroupPrepare {
  roundId: number;
  groupId: string;
  holdMs: number;
  app: boolean;
  /** A planned failover's last point: after the commit the post-hook is not run. */
  final: boolean;
}

export function validateGroupPrepare(p: ferry.IGroupPrepare): ValidGroupPrepare {
  const holdMs = p.holdMs ?? 0;
  if (!Number.isInteger(holdMs) || holdMs < 1 || holdMs > PolicyBounds.maxRoundHoldMs) {
    bad(ErrorCode.BAD_FRAME, `group round hold ${holdMs} ms is outside 1..${PolicyBounds.maxRoundHoldMs} ms`);
  }
  return { roundId: roundId(p.roundId, 'GroupPrepare'), groupId: text(p.groupId, Limits.maxNameLength, 'group id'), holdMs, app: p.app ?? false, final: p.final ?? false };
}

export function validateGroupHeld(h: ferry.IGroupHeld): { roundId: number; ok: boolean; error: string } {
  return { roundId: roundId(h.roundId, 'GroupHeld'), ok: h.ok ?? false, error: text(h.error, Limits.maxMessageLength, 'GroupHeld error') };
}

export function validateGroupCommit(c: ferry.IGroupCommit): { roundId: number } {
  return { roundId: roundId(c.roundId, 'GroupCommit') };
}

export function validateGroupAbort(a: ferry.IGroupAbort): { roundId: number; reason: string } {
  return { roundId: roundId(a.roundId, 'GroupAbort'), reason: text(a.reason, Limits.maxMessageLength, 'GroupAbort reason') };
}

/** The group round a tag answers: 0 for the agent's own tags. */
export function tagGroupRound(tag: ferry.ITag): number {
  const round = tag.groupRound ?? 0;
  if (!Number.isSafeInteger(round) || round < 0) bad(ErrorCode.BAD_TAG, `tag group round ${String(round)} is not a round`);
  return round;
}

export const VOLUME_REPORT_STATES = ['protected', 'resyncing', 'repairing', 'throttled', 'degraded', 'disconnected'] as const;
export type VolumeReportState = (typeof VOLUME_REPORT_STATES)[number];

export interface ValidVolumeReport {
  volumeId: string;
  state: VolumeReportState;
  mode: string;
  resyncPercent: number;
}

export function validateVolumeReports(reports: ferry.IVolumeReport[] | null | undefined): ValidVolumeReport[] {
  const list = reports ?? [];
  if (list.length > Limits.maxTagCuts) bad(ErrorCode.TOO_LARGE, `heartbeat reports ${list.length} volumes, cap ${Limits.maxTagCuts}`);
  return list.map((r) => {
    const volumeId = checkVolumeId(r.volumeId ?? '');
    const state = r.state ?? '';
    if (!(VOLUME_REPORT_STATES as readonly string[]).includes(state)) {
      bad(ErrorCode.BAD_FRAME, `volume ${volumeId} reports state ${JSON.stringify(state)}, not one of ${VOLUME_REPORT_STATES.join(', ')}`);
    }
    const resyncPercent = Math.min(100, r.resyncPercent ?? 0);
    return { volumeId, state: state as VolumeReportState, mode: text(r.mode, 32, 'volume mode'), resyncPercent };
  });
}

export type EventSeverity = 'info' | 'warning' | 'error';

export interface ValidAgentEvent {
  severity: EventSeverity;
  kind: string;
  volumeId: string;
  text: string;
  timeUs: number;
}

const severities: Record<number, EventSeverity> = {
  [ferry.AgentEvent.Severity.INFO]: 'info',
  [ferry.AgentEvent.Severity.WARNING]: 'warning',
  [ferry.AgentEvent.Severity.ERROR]: 'error',
};

export function severityValue(s: EventSeverity): ferry.AgentEvent.Severity {
  return s === 'info' ? ferry.AgentEvent.Severity.INFO : s === 'warning' ? ferry.AgentEvent.Severity.WARNING : ferry.AgentEvent.Severity.ERROR;
}

export function validateAgentEvent(e: ferry.IAgentEvent): ValidAgentEvent {
  const severity = severities[e.severity ?? 0] ?? bad(ErrorCode.BAD_FRAME, `agent event severity ${String(e.severity)} is not info, warning or error`);
  const kind = text(e.kind, Limits.maxIdLength, 'agent event kind');
  if (!/^[a-z][a-z0-9-]*$/.test(kind)) bad(ErrorCode.BAD_FRAME, `agent event kind ${JSON.stringify(kind)} is not a lowercase key`);
  const volumeId = e.volumeId ? checkVolumeId(e.volumeId) : '';
  return { severity, kind, volumeId, text: text(e.text, Limits.maxMessageLength, 'agent event text'), timeUs: e.timeUs ?? 0 };
}
