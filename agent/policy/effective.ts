import type { AgentPolicy } from '../../proto/validate-control';

/**
 * The rule between the local config and the group policy, for every value a policy carries:
 * while the machine is in a group (the last policy the receiver sent names one), the group
 * policy decides; otherwise the local config decides where it sets the value, else the default.
 */

/** The values a policy decides on an agent. */
export interface PolicyValues {
  crashIntervalMs: number;
  /** 0: no scheduled application-consistent points. */
  appIntervalMs: number;
  rpoThresholdMs: number;
}

/** What the agent's config file sets (undefined: not set there). */
export type LocalPolicy = { [K in keyof PolicyValues]?: number };

export const POLICY_DEFAULTS: PolicyValues = {
  crashIntervalMs: 1000,
  // A machine outside any group freezes its filesystems only when its config asks for it.
  appIntervalMs: 0,
  rpoThresholdMs: 30_000,
};

export type ValueSourceKind = 'group' | 'local' | 'default';

export interface EffectiveValue {
  value: number;
  source: ValueSourceKind;
  /** How `ferry agent status` names the source: "group web rev 3", "local config", "default". */
  sourceLabel: string;
  /** Why this source decides. */
  reason: string;
}

export type EffectivePolicy = { [K in keyof PolicyValues]: EffectiveValue } & {
  /** The group the machine is in ('' when none) and the revision of the policy applied (0: none yet). */
  groupId: string;
  revision: number;
  multiMachine: boolean;
};

const KEYS: ReadonlyArray<keyof PolicyValues> = ['crashIntervalMs', 'appIntervalMs', 'rpoThresholdMs'];

/** The effective value of every policy setting, with its source and the reason. */
export function effectivePolicy(local: LocalPolicy, group: AgentPolicy | undefined): EffectivePolicy {
  const inGroup = group !== undefined && group.groupId !== '';
  const pick = (key: keyof PolicyValues): EffectiveValue => {
    if (inGroup) {
      return {
        value: group[key],
        source: 'group',
        sourceLabel: `group ${group.groupId} rev ${group.revision}`,
        reason: `the machine is in group ${group.groupId}: its policy decides every value it carries${local[key] !== undefined ? ` (the local config's ${local[key]} ms is not used)` : ''}`,
      };
    }
    const outside = group === undefined ? 'no group policy has arrived' : 'the machine is in no group';
    const localValue = local[key];
    if (localValue !== undefined) return { value: localValue, source: 'local', sourceLabel: 'local config', reason: `${outside}: the config file sets it` };
    return { value: POLICY_DEFAULTS[key], source: 'default', sourceLabel: 'default', reason: `${outside} and the config file does not set it` };
  };
  const values = Object.fromEntries(KEYS.map((k) => [k, pick(k)])) as { [K in keyof PolicyValues]: EffectiveValue };
  return { ...values, groupId: inGroup ? group.groupId : '', revision: group?.revision ?? 0, multiMachine: inGroup && group.multiMachine };
}

/** What a policy frame does to the current one: the agent applies the highest revision it has seen. */
export type PolicyOffer = { kind: 'apply' } | { kind: 'stale'; reason: string };

export function offerPolicy(current: AgentPolicy | undefined, offered: AgentPolicy): PolicyOffer {
  if (current && offered.revision <= current.revision) {
    return { kind: 'stale', reason: `revision ${offered.revision} is not newer than the applied revision ${current.revision}` };
  }
  return { kind: 'apply' };
}
