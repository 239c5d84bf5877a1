import { describe, expect, it } from 'vitest';
import type { SettleResult } from '../../agent/capture/types';
import { appTagVerdict, type AppTagFacts } from '../../agent/tags/verdict';

const MiB = 1024 * 1024;

/** An app tag where everything went right: hooks, freeze of /srv, a settle within the budget. */
function facts(over: Partial<AppTagFacts> = {}): AppTagFacts {
  return { mounts: ['/srv'], settle: { settled: true }, settleBudgetMs: 9500, freezeExpired: false, freezeTimeoutMs: 10_000, ...over };
}

const deadline = (over: { waitedMs?: number; doneBytes?: number; waitingForAcks?: boolean } = {}): SettleResult => ({
  settled: false,
  failure: { kind: 'deadline', volumeId: 'vol1', waitedMs: 9500, doneBytes: 12 * MiB, totalBytes: 64 * MiB, waitingForAcks: false, ...over },
});

describe('the app tag verdict: which note for which situation', () => {
  it('is application-consistent when the freeze held and the streams settled', () => {
    expect(appTagVerdict(facts())).toEqual({ appConsistent: true });
  });

  it('blames the settle deadline, with how long it waited and which volume, never a resync that is not running', () => {
    // The situation the old note got wrong: settle's deadline comes before the freeze bound,
    // so settle times out while the watchdog has not fired yet.
    const v = appTagVerdict(facts({ settle: deadline() }));
    expect(v.appConsistent).toBe(false);
    expect(v.code).toBe('settle-deadline');
    expect(v.reason).toBe(
      'the settle deadline passed: after 9.5s vol1 had not been read in full since the freeze (12.0 MiB of 64.0 MiB); ' +
        'the wait is bounded by tags.freezeTimeoutMs (10s, less 500ms kept for the cut)',
    );
    expect(v.reason).not.toMatch(/resync/);
  });

  it('says when reading had stopped for the receiver to acknowledge what was read', () => {
    const v = appTagVerdict(facts({ settle: deadline({ doneBytes: 0, waitingForAcks: true }) }));
    expect(v.code).toBe('settle-deadline');
    expect(v.reason).toMatch(/\(0 B of 64\.0 MiB, and reading was paused until the receiver acknowledges the changes already read\)/);
  });

  it('names a resync only when the source says one is running, with its progress', () => {
    const v = appTagVerdict(facts({ settle: { settled: false, failure: { kind: 'resync-running', volumeId: 'vol2', resync: 'hash-compare', doneBytes: 16 * MiB, totalBytes: 64 * MiB } } }));
    expect(v.code).toBe('resync-running');
    expect(v.reason).toBe('a hash-compare resync of vol2 is running (25% read): its stream matches the volume only once the resync is done');
  });

  it('blames the freeze bound when the watchdog thawed before the cut', () => {
    const v = appTagVerdict(facts({ freezeExpired: true }));
    expect(v.code).toBe('freeze-bound');
    expect(v.reason).toBe('the freeze bound (tags.freezeTimeoutMs, 10s) passed before the cut: the watchdog thawed the filesystems');
    // Both, when the settle also ran out: the settle is the cause, the bound the consequence.
    const both = appTagVerdict(facts({ settle: deadline(), freezeExpired: true }));
    expect(both.code).toBe('settle-deadline');
    expect(both.reason).toMatch(/^the settle deadline passed: .*; the freeze bound .* passed before the cut/);
  });

  it('says that nothing was frozen when no mount point is configured, and what else went wrong', () => {
    expect(appTagVerdict(facts({ mounts: [] }))).toEqual({ appConsistent: false, code: 'no-mount', reason: 'no mount point is configured for the volumes, so nothing was frozen' });
    const slow = appTagVerdict(facts({ mounts: [], settle: deadline() }));
    expect(slow.code).toBe('no-mount');
    expect(slow.reason).toMatch(/^no mount point is configured .*; the settle deadline passed: after 9\.5s vol1 had not been read in full since the tag was asked for/);
    // Nothing was frozen, so the watchdog firing thawed nothing: not a reason.
    expect(appTagVerdict(facts({ mounts: [], freezeExpired: true })).reason).not.toMatch(/freeze bound/);
  });

  it('reports a failed pre-hook or freeze with its message, and nothing about a settle that did not run', () => {
    const pre = appTagVerdict(facts({ preHookError: 'pre-hook /etc/ferry/pre.sh exited with code 4: db busy', settle: undefined }));
    expect(pre).toEqual({ appConsistent: false, code: 'pre-hook-failed', reason: 'the pre-hook failed, so nothing was frozen (pre-hook /etc/ferry/pre.sh exited with code 4: db busy)' });
    const freeze = appTagVerdict(facts({ freezeError: 'cannot freeze /srv: EOPNOTSUPP', settle: undefined, freezeExpired: true }));
    expect(freeze).toEqual({ appConsistent: false, code: 'freeze-failed', reason: 'cannot freeze /srv: EOPNOTSUPP, so nothing stayed frozen' });
  });

  it('says the agent is stopping when that cut the settle short', () => {
    expect(appTagVerdict(facts({ settle: { settled: false, failure: { kind: 'stopping' } } }))).toEqual({
      appConsistent: false,
      code: 'stopping',
      reason: 'the agent is stopping, so the streams were not settled',
    });
  });
});
