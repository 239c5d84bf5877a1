/**
 * One group round as a pure state machine (no clock, no I/O): the driver (control/rounds.ts)
 * feeds it what happens with the time it happened and carries out the actions it returns.
 *
 *   preparing --all held ok--> committing --every member tagged--> done
 *       |  any not connected, ok=false, lost, past the hold bound        |
 *       +-------------------------> aborted <---- lost, no tag in time --+
 */

export type RoundPhase = 'preparing' | 'committing' | 'done' | 'aborted';

export interface RoundPlan {
  id: number;
  groupId: string;
  app: boolean;
  /** A planned failover's last point: the members leave their applications stopped. */
  final?: boolean;
  members: readonly string[];
  /** How long each member may hold its writes; all must have said held within it. */
  holdMs: number;
  /** After the commit, how long the members have to send their tags. */
  tagTimeoutMs: number;
}

export type RoundAction =
  | { kind: 'prepare'; to: string[] }
  | { kind: 'commit'; to: string[] }
  | { kind: 'abort'; to: string[]; reason: string }
  | { kind: 'finished' };

export interface RoundOutcome {
  state: 'done' | 'aborted';
  reason: string;
  /** From the first prepare sent to the last held received (null: not every member held). */
  holdMs: number | null;
  totalMs: number;
  pointIds: number[];
}

export class RoundMachine {
  private phaseNow: RoundPhase = 'preparing';
  private readonly held = new Set<string>();
  private readonly tags = new Map<string, number[]>();
  private startedMs = 0;
  private lastHeldMs: number | null = null;
  private finishedMs = 0;
  private reasonText = '';
  private deadline = 0;

  constructor(readonly plan: RoundPlan) {}

  get phase(): RoundPhase {
    return this.phaseNow;
  }

  /** When the current phase runs out (the driver calls expire() then). */
  get deadlineMs(): number {
    return this.deadline;
  }

  get finished(): boolean {
    return this.phaseNow === 'done' || this.phaseNow === 'aborted';
  }

  /** Sends the prepares, or aborts at once when a member cannot be reached. */
  start(nowMs: number, connected: ReadonlySet<string>): RoundAction[] {
    this.startedMs = nowMs;
    const members = this.plan.members;
    if (members.length === 0) return this.abort(nowMs, 'the group has no members');
    const missing = members.filter((m) => !connected.has(m));
    if (missing.length > 0) return this.abort(nowMs, `${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} not connected`);
    this.deadline = nowMs + this.plan.holdMs;
    return [{ kind: 'prepare', to: [...members] }];
  }

  /** A member answered the prepare. */
  onHeld(agentId: string, ok: boolean, error: string, nowMs: number): RoundAction[] {
    if (this.phaseNow !== 'preparing' || !this.plan.members.includes(agentId) || this.held.has(agentId)) return [];
    if (!ok) return this.abort(nowMs, `${agentId} could not hold its writes: ${error || 'no reason given'}`);
    this.held.add(agentId);
    if (this.held.size < this.plan.members.length) return [];
    this.lastHeldMs = nowMs;
    this.phaseNow = 'committing';
    this.deadline = nowMs + this.plan.tagTimeoutMs;
    return [{ kind: 'commit', to: [...this.plan.members] }];
  }

  /** Whether a tag of `agentId` answering this round is expected now. */
  acceptsTag(agentId: string): boolean {
    return this.phaseNow === 'committing' && this.plan.members.includes(agentId) && !this.tags.has(agentId);
  }

  /** A member's tag was recorded as these points. */
  onTagged(agentId: string, pointIds: readonly number[], nowMs: number): RoundAction[] {
    if (!this.acceptsTag(agentId)) return [];
    this.tags.set(agentId, [...pointIds]);
    if (this.tags.size < this.plan.members.length) return [];
    this.phaseNow = 'done';
    this.finishedMs = nowMs;
    return [{ kind: 'finished' }];
  }

  /** A member's session ended. */
  onLost(agentId: string, nowMs: number): RoundAction[] {
    if (this.finished || !this.plan.members.includes(agentId) || this.tags.has(agentId)) return [];
    return this.abort(nowMs, `${agentId} disconnected during the round`);
  }

  /** Called at (or after) the deadline. */
  expire(nowMs: number): RoundAction[] {
    if (this.finished || nowMs < this.deadline) return [];
    if (this.phaseNow === 'preparing') {
      const silent = this.plan.members.filter((m) => !this.held.has(m));
      return this.abort(nowMs, `${silent.join(', ')} did not answer within the ${this.plan.holdMs} ms hold bound`);
    }
    const silent = this.plan.members.filter((m) => !this.tags.has(m));
    return this.abort(nowMs, `${silent.join(', ')} sent no tag within ${this.plan.tagTimeoutMs} ms of the commit`);
  }

  /** The receiver is stopping or the group went away. */
  cancel(nowMs: number, reason: string): RoundAction[] {
    return this.finished ? [] : this.abort(nowMs, reason);
  }

  /** Members told to commit that have not tagged (empty when the round never committed). */
  untaggedAfterCommit(): string[] {
    if (this.lastHeldMs === null) return [];
    return this.plan.members.filter((m) => !this.tags.has(m));
  }

  outcome(): RoundOutcome {
    return {
      state: this.phaseNow === 'done' ? 'done' : 'aborted',
      reason: this.reasonText,
      holdMs: this.lastHeldMs === null ? null : this.lastHeldMs - this.startedMs,
      totalMs: this.finishedMs - this.startedMs,
      pointIds: [...this.tags.values()].flat().sort((a, b) => a - b),
    };
  }

  private abort(nowMs: number, reason: string): RoundAction[] {
    const wasPreparing = this.phaseNow === 'preparing';
    this.phaseNow = 'aborted';
    this.reasonText = reason;
    this.finishedMs = nowMs;
    // Whoever may still hold (or may still cut a tag) is told to let go.
    const to = wasPreparing ? [...this.plan.members] : this.plan.members.filter((m) => !this.tags.has(m));
    return [{ kind: 'abort', to, reason }, { kind: 'finished' }];
  }
}
