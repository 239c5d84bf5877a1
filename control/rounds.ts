import { log } from '../common/log';
import type { OutgoingFrame } from '../proto/frames';
import { PolicyBounds } from '../proto/validate-control';
import type { GroupRound } from './model';
import { RoundAction, RoundMachine, RoundOutcome } from './round-machine';
import type { ControlStore } from './store';

/** How the coordinator reaches the agents (the plane's registry of live sessions). */
export interface RoundLinks {
  /** Sends to a connected agent; false when it has no session. */
  send(agentId: string, frame: OutgoingFrame): boolean;
  isConnected(agentId: string): boolean;
}

export interface RoundOptions {
  /** Hold bound of a crash-consistent round (ms). */
  holdMs: number;
  /** Hold bound of an app-consistent round: freezes and hooks take longer (ms). */
  appHoldMs: number;
  /** After the commit, how long members have to send their tags (ms). */
  tagTimeoutMs: number;
}

export const DEFAULT_ROUND_OPTIONS: RoundOptions = { holdMs: 1000, appHoldMs: PolicyBounds.maxRoundHoldMs, tagTimeoutMs: 10_000 };

export interface FinishedRound {
  round: GroupRound;
  outcome: RoundOutcome;
  /** Started by the schedule (not asked for). */
  scheduled: boolean;
}

interface Active {
  machine: RoundMachine;
  timer: NodeJS.Timeout | undefined;
  scheduled: boolean;
  resolve: (round: GroupRound) => void;
}

/**
 * Drives group rounds: one at a time per group (a round asked for while another runs waits
 * for it), each a RoundMachine whose actions become GroupPrepare / GroupCommit / GroupAbort
 * frames and rows of the rounds table. A round never outlives its bounds: the deadline timer
 * aborts it.
 */
export class RoundCoordinator {
  private readonly active = new Map<number, Active>();
  /** The last round asked for per group: the next one starts after it. */
  private readonly tails = new Map<string, Promise<unknown>>();
  /**
   * Rounds that were committed and then aborted (a member lost, a tag late): the members told
   * to commit that had not tagged yet, for a while. Their tags were cut at a real commit and
   * may already be on the wire when the abort goes out, so they are recorded (with the round,
   * which stays aborted) rather than refused.
   */
  private readonly lateTags = new Map<number, { members: Set<string>; timer: NodeJS.Timeout }>();
  private stopped = false;

  constructor(
    private readonly store: ControlStore,
    private readonly links: RoundLinks,
    private readonly options: RoundOptions,
    private readonly membersOf: (groupId: string) => string[],
    private readonly onFinished: (finished: FinishedRound) => void,
    private readonly now: () => number = Date.now,
  ) {}

  /** True while a round of the group runs or waits. */
  busy(groupId: string): boolean {
    return this.tails.has(groupId);
  }

  /** Runs a round of the group after any that runs now; resolves once it is done or aborted. */
  run(groupId: string, app: boolean, scheduled = false, final = false): Promise<GroupRound> {
    const previous = this.tails.get(groupId) ?? Promise.resolve();
    const next = previous.then(() => this.start(groupId, app, scheduled, final));
    const tail = next.catch(() => undefined);
    this.tails.set(groupId, tail);
    void tail.then(() => {
      if (this.tails.get(groupId) === tail) this.tails.delete(groupId);
    });
    return next;
  }

  private start(groupId: string, app: boolean, scheduled: boolean, final: boolean): Promise<GroupRound> {
    if (this.stopped) return Promise.reject(new Error('the receiver is stopping'));
    const members = this.membersOf(groupId);
    const holdMs = Math.min(PolicyBounds.maxRoundHoldMs, app ? this.options.appHoldMs : this.options.holdMs);
    const startedMs = this.now();
    const id = this.store.addRound(groupId, app, members, startedMs);
    const machine = new RoundMachine({ id, groupId, app, final, members, holdMs, tagTimeoutMs: this.options.tagTimeoutMs });
    return new Promise<GroupRound>((resolve) => {
      const entry: Active = { machine, timer: undefined, scheduled, resolve };
      this.active.set(id, entry);
      const connected = new Set(members.filter((m) => this.links.isConnected(m)));
      this.apply(entry, machine.start(startedMs, connected));
    });
  }

  /** Whether `agentId` may send a tag answering round `roundId` now (committing, a member, not yet tagged). */
  acceptsTag(agentId: string, roundId: number): boolean {
    return this.active.get(roundId)?.machine.acceptsTag(agentId) ?? this.lateTags.get(roundId)?.members.has(agentId) ?? false;
  }

  held(agentId: string, roundId: number, ok: boolean, error: string): void {
    const entry = this.active.get(roundId);
    if (!entry) return;
    this.apply(entry, entry.machine.onHeld(agentId, ok, error, this.now()));
  }

  tagged(agentId: string, roundId: number, pointIds: readonly number[]): void {
    const entry = this.active.get(roundId);
    this.lateTags.get(roundId)?.members.delete(agentId);
    if (!entry) return;
    this.apply(entry, entry.machine.onTagged(agentId, pointIds, this.now()));
  }

  /** An agent's session ended: any round waiting on it aborts. */
  lost(agentId: string): void {
    for (const entry of [...this.active.values()]) this.apply(entry, entry.machine.onLost(agentId, this.now()));
  }

  /** Aborts every running round (the receiver stops). */
  stop(): void {
    this.stopped = true;
    for (const late of this.lateTags.values()) clearTimeout(late.timer);
    this.lateTags.clear();
    for (const entry of [...this.active.values()]) this.apply(entry, entry.machine.cancel(this.now(), 'the receiver is stopping'));
  }

  private apply(entry: Active, actions: RoundAction[]): void {
    const { machine } = entry;
    const plan = machine.plan;
    for (const action of actions) {
      switch (action.kind) {
        case 'prepare':
          for (const to of action.to) this.links.send(to, { groupPrepare: { roundId: plan.id, groupId: plan.groupId, holdMs: plan.holdMs, app: plan.app, final: plan.final ?? false } });
          break;
        case 'commit':
          this.store.setRoundState(plan.id, 'committing');
          for (const to of action.to) this.links.send(to, { groupCommit: { roundId: plan.id } });
          break;
        case 'abort':
          for (const to of action.to) this.links.send(to, { groupAbort: { roundId: plan.id, reason: action.reason } });
          break;
        case 'finished':
          this.finish(entry);
          return;
      }
    }
    this.arm(entry);
  }

  private arm(entry: Active): void {
    clearTimeout(entry.timer);
    const wait = Math.max(0, entry.machine.deadlineMs - this.now());
    entry.timer = setTimeout(() => {
      try {
        this.apply(entry, entry.machine.expire(Math.max(this.now(), entry.machine.deadlineMs)));
      } catch (err) {
        log.error('group round bound not applied', { round: entry.machine.plan.id, error: (err as Error).message });
      }
    }, wait);
  }

  private finish(entry: Active): void {
    clearTimeout(entry.timer);
    const { plan } = entry.machine;
    const outcome = entry.machine.outcome();
    this.active.delete(plan.id);
    const untagged = entry.machine.untaggedAfterCommit();
    if (outcome.state === 'aborted' && untagged.length > 0 && !this.stopped) {
      const timer = setTimeout(() => this.lateTags.delete(plan.id), plan.tagTimeoutMs);
      timer.unref();
      this.lateTags.set(plan.id, { members: new Set(untagged), timer });
    }
    try {
      this.store.finishRound(plan.id, { state: outcome.state, finishedMs: this.now(), holdMs: outcome.holdMs, reason: outcome.reason, pointIds: outcome.pointIds });
    } catch (err) {
      log.error('group round not recorded', { round: plan.id, group: plan.groupId, error: (err as Error).message });
    }
    let recorded: GroupRound | undefined;
    try {
      recorded = this.store.round(plan.id);
    } catch (err) {
      log.warn('group round not read back', { round: plan.id, error: (err as Error).message });
    }
    const round: GroupRound = recorded ?? {
      id: plan.id,
      groupId: plan.groupId,
      app: plan.app,
      state: outcome.state,
      startedMs: this.now() - outcome.totalMs,
      finishedMs: this.now(),
      holdMs: outcome.holdMs,
      members: [...plan.members],
      reason: outcome.reason,
      pointIds: outcome.pointIds,
    };
    if (outcome.state === 'aborted') log.warn('group round aborted', { round: plan.id, group: plan.groupId, reason: outcome.reason });
    else log.debug('group round done', { round: plan.id, group: plan.groupId, holdMs: outcome.holdMs, totalMs: outcome.totalMs });
    try {
      this.onFinished({ round, outcome, scheduled: entry.scheduled });
    } finally {
      entry.resolve(round);
    }
  }
}
