import { log } from '../common/log';
import { formatBytes } from '../common/units';
import type { ValidGroupPrepare } from '../proto/validate-control';
import type { CaptureSource, SettleFailure, SettleResult, VolumeCut, WriteHold } from './capture/types';
import type { AgentEventInput } from './events';
import type { Quiesced, Quiescer } from './tags/quiesce';
import { appTagVerdict } from './tags/verdict';

/** Time, injectable so that the participant's decisions can be tested without waiting. */
export interface RoundClock {
  now(): number;
  /** Calls `fn` after `ms`; returns a cancel function. */
  after(ms: number, fn: () => void): () => void;
}

export const realClock: RoundClock = {
  now: () => Date.now(),
  after: (ms, fn) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return () => clearTimeout(t);
  },
};

export interface RoundDeps {
  source: Pick<CaptureSource, 'hold' | 'settle' | 'tag'>;
  volumeIds(): string[];
  quiescer: Quiescer;
  clock: RoundClock;
  /** Answers the prepare (GroupHeld). */
  held(reply: { roundId: number; ok: boolean; error: string }): void;
  /** Sends the round's tag (Tag.group_round = roundId) once its records are on their way. */
  tag(kind: 'crash' | 'app', cuts: VolumeCut[], roundId: number): void;
  event(e: AgentEventInput): void;
  /** Why the machine cannot take part now (e.g. an app tag is being cut), if it cannot. */
  busy(): string | undefined;
}

export type RoundPhase = 'preparing' | 'held' | 'committing';
export type RoundOutcome = 'committed' | 'aborted' | 'expired' | 'refused' | 'failed' | 'session-lost';

export interface RoundStats {
  /** Rounds by how they ended. */
  outcomes: Record<RoundOutcome, number>;
  /** Hold time of each round: prepare received -> writes released (ms). */
  lastHoldMs: number | null;
  p50HoldMs: number | null;
  p99HoldMs: number | null;
  /** The round running now. */
  active?: { roundId: number; groupId: string; phase: RoundPhase; app: boolean };
}

const NO_OUTCOMES: Record<RoundOutcome, number> = { committed: 0, aborted: 0, expired: 0, refused: 0, failed: 0, 'session-lost': 0 };

/** The figures before any round (and before the agent has a capture source). */
export function emptyRoundStats(): RoundStats {
  return { outcomes: { ...NO_OUTCOMES }, lastHoldMs: null, p50HoldMs: null, p99HoldMs: null };
}

interface Round {
  id: number;
  groupId: string;
  app: boolean;
  /** A planned failover's last point: committed, the post-hook is not run (the application stays stopped). */
  final: boolean;
  holdMs: number;
  startedMs: number;
  phase: RoundPhase;
  cancelBound: () => void;
  acquiring: Promise<void>;
  quiesced?: Quiesced;
  hold?: WriteHold;
  settle?: SettleResult;
  ended?: RoundOutcome;
  endDone?: Promise<void>;
}

/** Samples of hold time kept for the percentiles. */
const HOLD_SAMPLES = 512;
/** A scan source may spend this share of the hold making its streams settle; the rest is the commit's. */
const SETTLE_SHARE = 0.5;
/** Bound given to the scan source's cut (it holds nothing: the freeze does). */
const SCAN_CUT_HOLD_MS = 300;

/**
 * The agent's side of a group round (bounded two-phase barrier): on prepare it holds new writes
 * on all its volumes (the kernel hold; else the quiesce hooks, a freeze and a settled scan) and
 * answers held; on commit it cuts, releases and sends the tag; on abort, session loss or when
 * the bound passes since the prepare arrived, it releases. One round at a time.
 */
export class RoundParticipant {
  private round: Round | undefined;
  private readonly holdTimes: number[] = [];
  private readonly outcomes: Record<RoundOutcome, number> = { ...NO_OUTCOMES };

  constructor(private readonly deps: RoundDeps) {}

  get isActive(): boolean {
    return this.round !== undefined;
  }

  /** GroupPrepare: resolves once the prepare was answered (held or not). */
  prepare(p: ValidGroupPrepare): Promise<void> {
    const arrivedMs = this.deps.clock.now();
    const last = this.round;
    // The last round has released the writes and is finishing (its post-hook): this one starts
    // right after it, its bound counted from now. Back-to-back rounds are the normal case.
    if (last?.endDone) return last.endDone.then(() => this.start(p, arrivedMs));
    return this.start(p, arrivedMs);
  }

  private start(p: ValidGroupPrepare, startedMs: number): Promise<void> {
    const running = this.round;
    const busy = running ? `group round ${running.id} is still running here (${running.ended ? 'releasing' : running.phase})` : this.deps.busy();
    if (busy) {
      this.outcomes.refused++;
      log.warn('group round refused', { round: p.roundId, group: p.groupId, reason: busy });
      this.deps.held({ roundId: p.roundId, ok: false, error: busy });
      return Promise.resolve();
    }
    const r: Round = { id: p.roundId, groupId: p.groupId, app: p.app, final: p.final, holdMs: p.holdMs, startedMs, phase: 'preparing', cancelBound: () => undefined, acquiring: Promise.resolve() };
    this.round = r;
    r.cancelBound = this.deps.clock.after(this.remainingMs(r), () => this.onBound(r));
    r.acquiring = this.acquire(r);
    return r.acquiring;
  }

  private remainingMs(r: Round): number {
    return Math.max(1, r.startedMs + r.holdMs - this.deps.clock.now());
  }

  private async acquire(r: Round): Promise<void> {
    const { source } = this.deps;
    const ids = this.deps.volumeIds();
    let error: string | undefined;
    try {
      if (!source.hold || r.app) {
        r.quiesced = await this.deps.quiescer.quiesce(this.remainingMs(r));
        if (r.ended) return;
        const f = r.quiesced.facts;
        if (f.preHookError) throw new Error(`the pre-hook failed: ${f.preHookError}`);
        if (f.freezeError) throw new Error(f.freezeError);
      }
      if (source.hold) {
        r.hold = await source.hold(ids, this.remainingMs(r));
      } else {
        r.settle = await source.settle(ids, r.startedMs + Math.floor(r.holdMs * SETTLE_SHARE));
        if (!r.settle.settled) throw new Error(settleFailureText(r.settle.failure));
      }
      if (r.ended) return;
      r.phase = 'held';
      log.info('group round: writes held', { round: r.id, group: r.groupId, app: r.app, afterMs: this.deps.clock.now() - r.startedMs });
      this.deps.held({ roundId: r.id, ok: true, error: '' });
      return;
    } catch (err) {
      error = (err as Error).message;
    }
    if (r.ended) return;
    log.warn('group round: cannot hold the writes', { round: r.id, group: r.groupId, error });
    this.deps.held({ roundId: r.id, ok: false, error });
    void this.end(r, 'refused');
  }

  /** GroupCommit: cut every volume at the held moment, release, send the tag. */
  async commit(roundId: number): Promise<void> {
    const r = this.round;
    if (!r || r.id !== roundId || r.ended) {
      log.warn('group round commit ignored: that round is not held here', { round: roundId, current: r?.id, ended: r?.ended });
      return;
    }
    if (r.phase !== 'held') {
      log.warn('group round commit before the writes were held: releasing', { round: roundId, phase: r.phase });
      await this.end(r, 'failed');
      return;
    }
    r.phase = 'committing';
    const q = r.quiesced;
    const verdict = appTagVerdict({
      mounts: q?.facts.mounts ?? [],
      preHookError: q?.facts.preHookError,
      freezeError: q?.facts.freezeError,
      settle: r.settle,
      settleBudgetMs: Math.floor(r.holdMs * SETTLE_SHARE),
      freezeExpired: q?.expired ?? false,
      freezeTimeoutMs: r.holdMs,
    });
    let cuts: VolumeCut[];
    try {
      cuts = r.hold ? await r.hold.commit() : await this.deps.source.tag(this.deps.volumeIds(), { holdMs: SCAN_CUT_HOLD_MS, quiesced: q !== undefined && verdict.appConsistent });
    } catch (err) {
      log.warn('group round: the cut failed', { round: r.id, error: (err as Error).message });
      await this.end(r, 'failed');
      return;
    }
    if (r.ended) {
      log.warn('group round: the bound passed before the cut: no tag', { round: r.id });
      return;
    }
    const appConsistent = r.app && verdict.appConsistent && !(q?.expired ?? false);
    const released = this.end(r, 'committed');
    this.deps.tag(appConsistent ? 'app' : 'crash', cuts, r.id);
    if (r.app && !appConsistent) {
      this.deps.event({ severity: 'warning', kind: 'app-point-failed', text: `group round ${r.id} of group ${r.groupId}: recorded as crash-consistent [${verdict.code ?? 'freeze-bound'}] ${verdict.reason ?? 'the freeze bound passed'}` });
    }
    await released;
  }

  /** GroupAbort: release at once, no tag. */
  async abort(roundId: number, reason: string): Promise<void> {
    const r = this.round;
    if (!r || r.id !== roundId || r.ended) return;
    log.info('group round aborted by the receiver: releasing', { round: roundId, reason });
    await this.end(r, 'aborted');
  }

  /** The session is gone: no commit can come, release. */
  async sessionLost(): Promise<void> {
    const r = this.round;
    if (r && !r.ended) await this.end(r, 'session-lost');
  }

  private onBound(r: Round): void {
    if (r.ended) return;
    const phase = r.phase;
    void this.end(r, 'expired');
    this.deps.event({
      severity: 'warning',
      kind: 'round-hold-expired',
      text: `group round ${r.id} of group ${r.groupId || '-'}: no commit within the ${r.holdMs} ms hold (phase ${phase}); the writes were released`,
    });
  }

  /** Releases what the round holds (idempotent): thaw and hold release at once, then the post-hook. */
  private end(r: Round, outcome: RoundOutcome): Promise<void> {
    if (r.endDone) return r.endDone;
    r.ended = outcome;
    r.cancelBound();
    r.endDone = (async () => {
      await this.releaseHeld(r);
      const heldMs = this.deps.clock.now() - r.startedMs;
      this.noteHold(heldMs);
      this.outcomes[outcome]++;
      log.info('group round ended', { round: r.id, group: r.groupId, outcome, holdMs: heldMs });
      // What the prepare was still acquiring when the round ended is released as soon as it arrives.
      await r.acquiring;
      await this.releaseHeld(r);
      if (r.final && outcome === 'committed') {
        if (r.quiesced) log.warn('group round: the last point of a planned failover: the post-hook is not run, the application stays stopped', { round: r.id, group: r.groupId });
        if (this.round === r) this.round = undefined;
        return;
      }
      const postHookError = await r.quiesced?.finish();
      if (postHookError) log.warn('group round: the post-hook failed after the release', { round: r.id, error: postHookError });
      if (this.round === r) this.round = undefined;
    })();
    return r.endDone;
  }

  private async releaseHeld(r: Round): Promise<void> {
    r.quiesced?.thaw();
    try {
      await r.hold?.release();
    } catch (err) {
      log.error('group round: releasing the write hold failed', { round: r.id, error: (err as Error).message });
    }
  }

  private noteHold(ms: number): void {
    this.holdTimes.push(ms);
    if (this.holdTimes.length > HOLD_SAMPLES) this.holdTimes.shift();
  }

  stats(): RoundStats {
    const sorted = [...this.holdTimes].sort((a, b) => a - b);
    const pct = (p: number): number | null => (sorted.length === 0 ? null : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]);
    const r = this.round;
    return {
      outcomes: { ...this.outcomes },
      lastHoldMs: this.holdTimes.length > 0 ? this.holdTimes[this.holdTimes.length - 1] : null,
      p50HoldMs: pct(50),
      p99HoldMs: pct(99),
      active: r && !r.ended ? { roundId: r.id, groupId: r.groupId, phase: r.phase, app: r.app } : undefined,
    };
  }
}

function settleFailureText(f: SettleFailure): string {
  switch (f.kind) {
    case 'resync-running':
      return `a ${f.resync} resync of ${f.volumeId} is running: its stream matches the volume only once it is done`;
    case 'deadline':
      return `${f.volumeId} could not be read in full within the hold (${formatBytes(f.doneBytes)} of ${formatBytes(f.totalBytes)} after ${f.waitedMs} ms${f.waitingForAcks ? ', waiting for the receiver to acknowledge' : ''})`;
    case 'stopping':
      return 'the agent is stopping';
  }
}
