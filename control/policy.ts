import { isSafeId } from '../proto/ids';
import { AgentPolicy, POLICY_VERSION, PolicyBounds } from '../proto/validate-control';
import type { ferry } from '../proto/frames';
import { ControlError } from './contract';
import type { GroupPolicy, RecoveryProperties } from './model';

/**
 * Checks of what an operator may set (the API's schemas check first, these last) and the
 * Policy frame a machine gets. Pure: each returns the checked value or throws ControlError
 * naming the field.
 */

/** Retention windows an operator may set: a minute to a year. */
export const RetentionBounds = { minMs: 60_000, maxMs: 365 * 24 * 3600 * 1000 } as const;

function invalid(field: string, message: string): never {
  throw new ControlError('invalid', message, field);
}

function integerIn(field: string, value: unknown, min: number, max: number, zeroAllowed = false): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) invalid(field, `${field} must be an integer number of milliseconds`);
  if (zeroAllowed && value === 0) return 0;
  if (value < min || value > max) invalid(field, `${field} ${value} is outside ${min}..${max}${zeroAllowed ? ' (0: off)' : ''}`);
  return value;
}

const POLICY_FIELDS: ReadonlyArray<keyof GroupPolicy> = ['rpoThresholdMs', 'retentionMs', 'crashConsistentIntervalMs', 'appConsistentIntervalMs', 'multiMachineConsistency'];

/** The fields of a policy change, each within its bounds; unknown fields are refused. */
export function checkPolicyPatch(patch: Partial<GroupPolicy>): Partial<GroupPolicy> {
  const out: Partial<GroupPolicy> = {};
  for (const key of Object.keys(patch)) {
    if (!(POLICY_FIELDS as readonly string[]).includes(key)) invalid(key, `${key} is not a policy field (${POLICY_FIELDS.join(', ')})`);
  }
  if (patch.rpoThresholdMs !== undefined) out.rpoThresholdMs = integerIn('rpoThresholdMs', patch.rpoThresholdMs, PolicyBounds.minRpoThresholdMs, PolicyBounds.maxRpoThresholdMs);
  if (patch.retentionMs !== undefined) out.retentionMs = integerIn('retentionMs', patch.retentionMs, RetentionBounds.minMs, RetentionBounds.maxMs);
  if (patch.crashConsistentIntervalMs !== undefined) {
    out.crashConsistentIntervalMs = integerIn('crashConsistentIntervalMs', patch.crashConsistentIntervalMs, PolicyBounds.minCrashIntervalMs, PolicyBounds.maxCrashIntervalMs);
  }
  if (patch.appConsistentIntervalMs !== undefined) {
    out.appConsistentIntervalMs = integerIn('appConsistentIntervalMs', patch.appConsistentIntervalMs, PolicyBounds.minAppIntervalMs, PolicyBounds.maxAppIntervalMs, true);
  }
  if (patch.multiMachineConsistency !== undefined) {
    if (typeof patch.multiMachineConsistency !== 'boolean') invalid('multiMachineConsistency', 'multiMachineConsistency must be true or false');
    out.multiMachineConsistency = patch.multiMachineConsistency;
  }
  return out;
}

/** A group name is its id: a safe identifier (letters, digits, . _ -), at most 64 characters. */
export function checkGroupName(name: string): string {
  if (typeof name !== 'string' || name.length === 0 || name.length > 64 || !isSafeId(name)) {
    invalid('name', `group name ${JSON.stringify(name)} must be 1..64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
  return name;
}

const RECOVERY_FIELDS: ReadonlyArray<keyof RecoveryProperties> = ['recoveredName', 'vcpus', 'memoryMiB', 'network', 'bootOrder'];

export function checkRecoveryPatch(patch: Partial<RecoveryProperties>): Partial<RecoveryProperties> {
  const out: Partial<RecoveryProperties> = {};
  for (const key of Object.keys(patch)) {
    if (!(RECOVERY_FIELDS as readonly string[]).includes(key)) invalid(key, `${key} is not a recovery property (${RECOVERY_FIELDS.join(', ')})`);
  }
  const text = (field: string, value: unknown, allowEmpty: boolean): string => {
    if (typeof value !== 'string' || value.length > 128 || (!allowEmpty && value.length === 0) || /[\u0000-\u001f]/.test(value)) {
      invalid(field, `${field} must be ${allowEmpty ? 'at most' : '1 to'} 128 printable characters`);
    }
    return value;
  };
  const int = (field: string, value: unknown, min: number, max: number): number => {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) invalid(field, `${field} must be an integer from ${min} to ${max}`);
    return value;
  };
  if (patch.recoveredName !== undefined) out.recoveredName = text('recoveredName', patch.recoveredName, false);
  if (patch.network !== undefined) out.network = text('network', patch.network, true);
  if (patch.vcpus !== undefined) out.vcpus = int('vcpus', patch.vcpus, 1, 256);
  if (patch.memoryMiB !== undefined) out.memoryMiB = int('memoryMiB', patch.memoryMiB, 64, 4 * 1024 * 1024);
  if (patch.bootOrder !== undefined) out.bootOrder = int('bootOrder', patch.bootOrder, -1000, 1000);
  return out;
}

/** What a machine's agent applies: its group's policy, or the receiver's defaults with no group. */
export function agentPolicy(revision: number, groupId: string, policy: GroupPolicy): AgentPolicy {
  return {
    revision,
    groupId,
    crashIntervalMs: policy.crashConsistentIntervalMs,
    appIntervalMs: policy.appConsistentIntervalMs,
    rpoThresholdMs: policy.rpoThresholdMs,
    multiMachine: groupId !== '' && policy.multiMachineConsistency,
  };
}

export function policyFrame(p: AgentPolicy): ferry.IPolicy {
  return {
    policyVersion: POLICY_VERSION,
    revision: p.revision,
    groupId: p.groupId,
    crashIntervalMs: p.crashIntervalMs,
    appIntervalMs: p.appIntervalMs,
    rpoThresholdMs: p.rpoThresholdMs,
    multiMachine: p.multiMachine,
  };
}
