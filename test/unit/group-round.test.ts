import { describe, expect, it } from 'vitest';
import type { SettleResult, TagOptions, VolumeCut, WriteHold } from '../../agent/capture/types';
import type { AgentEventInput } from '../../agent/events';
import { RoundClock, RoundDeps, RoundParticipant } from '../../agent/group-round';
import type { Quiesced, QuiesceFacts, Quiescer } from '../../agent/tags/quiesce';

/** A clock the test moves by hand. */
class FakeClock implements RoundClock {
  t = 1_000_000;
  private timers: Array<{ at: number; fn: () => void; live: boolean }> = [];
  now(): number {
    return this.t;
  }
  after(ms: number, fn: () => void): () => void {
    const timer = { at: this.t + ms, fn, live: true };
    this.timers.push(timer);
    return () => (timer.live = false);
  }
  advance(ms: number): void {
    this.t += ms;
    for (const timer of this.timers.filter((x) => x.live && x.at <= this.t)) {
      timer.live = false;
      timer.fn();
    }
  }
}

/** Resolves when `p` is settled by the microtasks already queued (all the fakes resolve at once). */
const flush = async (): Promise<void> => {
  for (let i = 0; i < 20; i++) await Promise.resolve();
};

interface Harness {
  participant: RoundParticipant;
  clock: FakeClock;
  steps: string[];
  held: Array<{ roundId: number; ok: boolean; error: string }>;
  tags: Array<{ kind: 'crash' | 'app'; cuts: VolumeCut[]; roundId: number }>;
  events: AgentEventInput[];
  tagOptions: TagOptions[];
}

interface Options {
  kernel?: boolean;
  mounts?: string[];
  facts?: Partial<QuiesceFacts>;
  settle?: () => Promise<SettleResult>;
  busy?: string;
  /** Called as each tag goes out (the receiver may answer with the next prepare at once). */
  onTag?: () => void;
}

const CUTS: VolumeCut[] = [
  { volumeId: 'vol1', seq: 41, accuracy: 'approximate' },
  { volumeId: 'vol2', seq: 7, accuracy: 'approximate' },
];

function harness(o: Options = {}): Harness {
  const clock = new FakeClock();
  const steps: string[] = [];
  const h: Omit<Harness, 'participant'> = { clock, steps, held: [], tags: [], events: [], tagOptions: [] };
  const quiescer: Quiescer = {
    quiesce: async (boundMs) => {
      steps.push(`quiesce ${boundMs}`);
      const facts: QuiesceFacts = { mounts: o.mounts ?? ['/srv'], ...o.facts };
      let frozen = !facts.preHookError && !facts.freezeError && facts.mounts.length > 0;
      let finished = false;
      const q: Quiesced = {
        facts,
        expired: false,
        get frozen() {
          return frozen;
        },
        thaw: () => {
          if (frozen) steps.push('thaw');
          frozen = false;
        },
        finish: async () => {
          q.thaw();
          if (!finished && !facts.preHookError) steps.push('post-hook');
          finished = true;
          return undefined;
        },
      };
      return q;
    },
  };
  const hold = async (ids: string[], boundMs: number): Promise<WriteHold> => {
    steps.push(`hold ${ids.join(',')} ${boundMs}`);
    let open = true;
    return {
      commit: async () => {
        steps.push('hold-commit');
        open = false;
        return CUTS.map((c) => ({ ...c, accuracy: 'exact' as const }));
      },
      release: async () => {
        if (open) steps.push('hold-release');
        open = false;
      },
    };
  };
  const deps: RoundDeps = {
    source: {
      hold: o.kernel ? hold : undefined,
      settle: async (ids) => {
        steps.push(`settle ${ids.join(',')}`);
        return o.settle ? o.settle() : { settled: true };
      },
      tag: async (ids, options) => {
        h.tagOptions.push(options);
        steps.push('cut');
        return CUTS.filter((c) => ids.includes(c.volumeId)).map((c) => ({ ...c, accuracy: options.quiesced ? 'exact' : 'approximate' }));
      },
    },
    volumeIds: () => ['vol1', 'vol2'],
    quiescer,
    clock,
    held: (r) => h.held.push(r),
    tag: (kind, cuts, roundId) => {
      h.tags.push({ kind, cuts, roundId });
      o.onTag?.();
    },
    event: (e) => h.events.push(e),
    busy: () => o.busy,
  };
  return { ...h, participant: new RoundParticipant(deps) };
}

const prepare = { roundId: 5, groupId: 'web', holdMs: 2000, app: false };

describe('group round participant (scan source: quiesce hooks, freeze, settle)', () => {
  it('prepare -> held; commit -> cut while frozen, release, tag with the round; hold time measured', async () => {
    const h = harness();
    await h.participant.prepare(prepare);
    expect(h.held).toEqual([{ roundId: 5, ok: true, error: '' }]);
    expect(h.steps).toEqual(['quiesce 2000', 'settle vol1,vol2']);
    h.clock.advance(120);
    await h.participant.commit(5);
    expect(h.steps.slice(2)).toEqual(['cut', 'thaw', 'post-hook']);
    expect(h.tagOptions[0].quiesced).toBe(true);
    expect(h.tags).toEqual([{ kind: 'crash', roundId: 5, cuts: CUTS.map((c) => ({ ...c, accuracy: 'exact' })) }]);
    const stats = h.participant.stats();
    expect(stats.outcomes.committed).toBe(1);
    expect(stats).toMatchObject({ lastHoldMs: 120, p50HoldMs: 120, p99HoldMs: 120, active: undefined });
    expect(h.participant.isActive).toBe(false);
    expect(h.events).toEqual([]);
  });

  it('an app round with no mount to freeze is recorded as a crash point and reported', async () => {
    const h = harness({ mounts: [] });
    await h.participant.prepare({ ...prepare, app: true });
    expect(h.held[0].ok).toBe(true);
    await h.participant.commit(5);
    expect(h.tags[0].kind).toBe('crash');
    expect(h.tagOptions[0].quiesced).toBe(false);
    expect(h.events).toEqual([expect.objectContaining({ kind: 'app-point-failed', severity: 'warning', text: expect.stringMatching(/group round 5.*\[no-mount\]/) })]);
  });

  it('an app round that froze and settled is an app point', async () => {
    const h = harness();
    await h.participant.prepare({ ...prepare, app: true });
    await h.participant.commit(5);
    expect(h.tags[0].kind).toBe('app');
  });

  it('no commit within the bound: releases by itself (thaw, post-hook), reports round-hold-expired, a late commit cuts nothing', async () => {
    const h = harness();
    await h.participant.prepare(prepare);
    h.clock.advance(1999);
    expect(h.steps).not.toContain('thaw');
    h.clock.advance(1);
    await flush();
    expect(h.steps.slice(-2)).toEqual(['thaw', 'post-hook']);
    expect(h.events).toEqual([expect.objectContaining({ kind: 'round-hold-expired', severity: 'warning', text: expect.stringMatching(/round 5 of group web: no commit within the 2000 ms hold \(phase held\)/) })]);
    expect(h.participant.stats()).toMatchObject({ lastHoldMs: 2000, outcomes: expect.objectContaining({ expired: 1 }) });
    await h.participant.commit(5);
    expect(h.tags).toEqual([]);
    expect(h.steps).not.toContain('cut');
  });

  it('a settle that does not finish: the bound releases, the late settle changes nothing, held is never ok', async () => {
    let finishSettle: (r: SettleResult) => void = () => undefined;
    const h = harness({ settle: () => new Promise((resolve) => (finishSettle = resolve)) });
    const prepared = h.participant.prepare(prepare);
    await flush();
    h.clock.advance(2000);
    await flush();
    expect(h.steps).toContain('thaw');
    finishSettle({ settled: true });
    await prepared;
    await flush();
    expect(h.held).toEqual([]);
    expect(h.participant.isActive).toBe(false);
    expect(h.events.map((e) => e.kind)).toEqual(['round-hold-expired']);
  });

  it('a settle that fails answers held false with the reason and releases', async () => {
    const h = harness({ settle: async () => ({ settled: false, failure: { kind: 'resync-running', volumeId: 'vol2', resync: 'full', doneBytes: 1, totalBytes: 4 } }) });
    await h.participant.prepare(prepare);
    await flush();
    expect(h.held).toEqual([{ roundId: 5, ok: false, error: expect.stringMatching(/full resync of vol2 is running/) }]);
    expect(h.steps).toContain('thaw');
    expect(h.participant.stats().outcomes.refused).toBe(1);
    expect(h.participant.isActive).toBe(false);
  });

  it('a failed pre-hook answers held false naming the hook', async () => {
    const h = harness({ facts: { preHookError: 'pre-hook /opt/db-quiesce exited with code 3' } });
    await h.participant.prepare(prepare);
    expect(h.held).toEqual([{ roundId: 5, ok: false, error: 'the pre-hook failed: pre-hook /opt/db-quiesce exited with code 3' }]);
  });

  it('a second prepare while a round runs is refused; abort releases at once without a tag', async () => {
    const h = harness();
    await h.participant.prepare(prepare);
    await h.participant.prepare({ ...prepare, roundId: 6 });
    expect(h.held[1]).toEqual({ roundId: 6, ok: false, error: expect.stringMatching(/round 5 is still running/) });
    await h.participant.abort(5, 'vm-b did not answer');
    expect(h.steps.slice(-2)).toEqual(['thaw', 'post-hook']);
    expect(h.tags).toEqual([]);
    expect(h.participant.stats().outcomes).toMatchObject({ aborted: 1, refused: 1 });
    await h.participant.prepare({ ...prepare, roundId: 7 });
    expect(h.held[2]).toEqual({ roundId: 7, ok: true, error: '' });
  });

  it('a prepare that arrives while the last round is still releasing (post-hook) waits for it, then holds', async () => {
    let next: Promise<void> | undefined;
    const h = harness({ onTag: () => (next ??= h.participant.prepare({ ...prepare, roundId: 6 })) });
    await h.participant.prepare(prepare);
    await h.participant.commit(5);
    await next;
    expect(h.held).toEqual([
      { roundId: 5, ok: true, error: '' },
      { roundId: 6, ok: true, error: '' },
    ]);
    // Round 6 quiesced only after round 5's post-hook ran.
    expect(h.steps).toEqual(['quiesce 2000', 'settle vol1,vol2', 'cut', 'thaw', 'post-hook', 'quiesce 2000', 'settle vol1,vol2']);
    expect(h.participant.stats().outcomes).toMatchObject({ committed: 1, refused: 0 });
  });

  it('the session going away releases the hold', async () => {
    const h = harness();
    await h.participant.prepare(prepare);
    await h.participant.sessionLost();
    expect(h.steps).toContain('thaw');
    expect(h.participant.stats().outcomes['session-lost']).toBe(1);
  });

  it('refuses when the machine is busy with an app tag', async () => {
    const h = harness({ busy: 'an application-consistent tag is being cut' });
    await h.participant.prepare(prepare);
    expect(h.held).toEqual([{ roundId: 5, ok: false, error: 'an application-consistent tag is being cut' }]);
    expect(h.steps).toEqual([]);
  });
});

describe('group round participant (kernel source: the write hold)', () => {
  it('a crash round holds without hooks or freeze and cuts at the hold', async () => {
    const h = harness({ kernel: true });
    await h.participant.prepare(prepare);
    expect(h.steps).toEqual(['hold vol1,vol2 2000']);
    expect(h.held[0].ok).toBe(true);
    h.clock.advance(30);
    await h.participant.commit(5);
    expect(h.steps).toEqual(['hold vol1,vol2 2000', 'hold-commit']);
    expect(h.tags[0]).toMatchObject({ kind: 'crash', roundId: 5 });
    expect(h.participant.stats().lastHoldMs).toBe(30);
  });

  it('an app round freezes and runs the hooks around the hold', async () => {
    const h = harness({ kernel: true });
    await h.participant.prepare({ ...prepare, app: true });
    await h.participant.commit(5);
    expect(h.steps).toEqual(['quiesce 2000', 'hold vol1,vol2 2000', 'hold-commit', 'thaw', 'post-hook']);
    expect(h.tags[0].kind).toBe('app');
  });

  it('the bound releases the kernel hold', async () => {
    const h = harness({ kernel: true });
    await h.participant.prepare(prepare);
    h.clock.advance(2000);
    await flush();
    expect(h.steps).toEqual(['hold vol1,vol2 2000', 'hold-release']);
    expect(h.events[0].kind).toBe('round-hold-expired');
  });
});
