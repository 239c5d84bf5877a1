import * as fs from 'fs';
import { writeFileAtomic } from '../../common/fsutil';
import { log } from '../../common/log';
import type { ferry } from '../../proto/frames';
import { AgentPolicy, POLICY_VERSION, validatePolicy } from '../../proto/validate-control';
import { effectivePolicy, EffectivePolicy, LocalPolicy, offerPolicy } from './effective';

export type PolicyOutcome =
  | { kind: 'applied'; effective: EffectivePolicy; previous: EffectivePolicy }
  | { kind: 'stale'; reason: string }
  | { kind: 'invalid'; error: string };

/**
 * Owns the group policy the agent applies: the highest valid revision the receiver sent, kept in
 * the state directory so that a restart applies it until the receiver says otherwise.
 */
export class PolicyKeeper {
  private current: AgentPolicy | undefined;
  private effectiveNow: EffectivePolicy;

  constructor(
    private readonly file: string,
    private readonly local: LocalPolicy,
  ) {
    this.current = loadPolicy(file);
    this.effectiveNow = effectivePolicy(local, this.current);
  }

  get effective(): EffectivePolicy {
    return this.effectiveNow;
  }

  /** A Policy frame: validated, applied when newer, persisted. An invalid one changes nothing. */
  offer(frame: ferry.IPolicy): PolicyOutcome {
    let offered: AgentPolicy;
    try {
      offered = validatePolicy(frame);
    } catch (err) {
      return { kind: 'invalid', error: (err as Error).message };
    }
    const decision = offerPolicy(this.current, offered);
    if (decision.kind === 'stale') return decision;
    const previous = this.effectiveNow;
    this.current = offered;
    this.effectiveNow = effectivePolicy(this.local, offered);
    try {
      writeFileAtomic(this.file, `${JSON.stringify({ policyVersion: POLICY_VERSION, ...offered }, null, 2)}\n`, 0o600);
    } catch (err) {
      log.warn('cannot keep the group policy in the state directory: a restart falls back to the local config until the receiver sends it again', { file: this.file, error: (err as Error).message });
    }
    return { kind: 'applied', effective: this.effectiveNow, previous };
  }
}

/** The policy saved by an earlier run; undefined (logged) when there is none or it does not validate. */
function loadPolicy(file: string): AgentPolicy | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn('cannot read the saved group policy: using the local config', { file, error: (err as NodeJS.ErrnoException).code ?? (err as Error).message });
    return undefined;
  }
  try {
    return validatePolicy(JSON.parse(text) as ferry.IPolicy);
  } catch (err) {
    log.warn('the saved group policy is damaged: ignoring it until the receiver sends one', { file, error: (err as Error).message });
    return undefined;
  }
}
