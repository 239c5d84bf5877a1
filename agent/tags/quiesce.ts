import { log } from '../../common/log';
import { FreezeGuard, FreezeOps } from './freeze';
import { runHook } from './hooks';

/** What quiescing did: the facts a verdict (verdict.ts) needs. */
export interface QuiesceFacts {
  mounts: readonly string[];
  preHookError?: string;
  freezeError?: string;
}

/** A quiesced machine: the pre-hook ran and the mounts are frozen (or the facts say why not). */
export interface Quiesced {
  readonly facts: QuiesceFacts;
  /** True once the freeze watchdog thawed by itself (the bound passed). */
  readonly expired: boolean;
  /** The mounts are still frozen. */
  readonly frozen: boolean;
  /** Thaws (idempotent, at once). */
  thaw(): void;
  /** Thaws, then runs the post-hook when the pre-hook succeeded (once); its failure as a message. */
  finish(): Promise<string | undefined>;
}

/** Quiesces the machine for a bounded time: the app tag's pre-hook and filesystem freeze. */
export interface Quiescer {
  quiesce(boundMs: number): Promise<Quiesced>;
}

export interface HookSettings {
  preHook?: string;
  postHook?: string;
  hookTimeoutMs: number;
}

/** The real quiescer: hooks as configured (tags.preHook/postHook), FIFREEZE of the mounts. */
export class HookFreezeQuiescer implements Quiescer {
  constructor(
    private readonly hooks: HookSettings,
    private readonly mounts: readonly string[],
    private readonly freezeOps?: FreezeOps,
  ) {}

  async quiesce(boundMs: number): Promise<Quiesced> {
    const { preHook, postHook, hookTimeoutMs } = this.hooks;
    const started = Date.now();
    const preHookError = preHook ? await hookFailure(preHook, 'pre', Math.min(hookTimeoutMs, boundMs)) : undefined;
    const facts: QuiesceFacts = { mounts: this.mounts, preHookError };
    const guard = new FreezeGuard(Math.max(1, boundMs - (Date.now() - started)), this.freezeOps);
    if (!preHookError) {
      try {
        guard.freeze(this.mounts);
      } catch (err) {
        facts.freezeError = (err as Error).message;
      }
    }
    let finished: Promise<string | undefined> | undefined;
    return {
      facts,
      get expired() {
        return guard.expired;
      },
      get frozen() {
        return guard.isFrozen;
      },
      thaw: () => void guard.thaw(),
      finish: () => {
        guard.thaw();
        finished ??= postHook && !preHookError ? hookFailure(postHook, 'post', hookTimeoutMs) : Promise.resolve(undefined);
        return finished;
      },
    };
  }
}

/** Runs a hook; its failure (logged) as a message, undefined when it succeeded. */
export async function hookFailure(script: string, phase: 'pre' | 'post', timeoutMs: number): Promise<string | undefined> {
  try {
    await runHook(script, phase, timeoutMs);
    return undefined;
  } catch (err) {
    log.error(`${phase}-hook failed`, { error: (err as Error).message });
    return (err as Error).message;
  }
}
