/**
 * One check of a block whose source and replica hashes differed, in this order: the source
 * block was read (`sourceBefore`); the stream then caught up with everything captured before
 * that read and the receiver applied it (`receiver`); the source block was read again
 * (`sourceAfter`). The next check's `sourceBefore` is this one's `sourceAfter`.
 */
export interface BlockCheck {
  sourceBefore: Buffer;
  receiver: Buffer;
  sourceAfter: Buffer;
}

export type BlockVerdictKind = 'match' | 'diverged' | 'busy' | 'check-again';

export interface BlockVerdict {
  kind: BlockVerdictKind;
  reason: string;
}

/** The source did not change across the check, and the receiver, caught up, holds other data. */
function stableDisagreement(c: BlockCheck): boolean {
  return c.sourceBefore.equals(c.sourceAfter) && !c.receiver.equals(c.sourceAfter);
}

/**
 * What the checks of a suspect block say (newest last), after at most `maxChecks` of them:
 * - match: the receiver caught up with the source (the difference was a write in flight);
 * - diverged: twice in a row the block did not change between the two reads while the
 *   receiver, caught up with every write before the first, held the same other data. One such
 *   check alone could still be a write and its undoing both landing between the reads while the
 *   receiver had applied only the first; twice in a row, with a fresh catch-up, it cannot;
 * - busy: the block kept changing between reads (it is being written), so no check settled it;
 * - check-again: not settled yet, and checks are left.
 */
export function classifyBlock(checks: readonly BlockCheck[], maxChecks: number): BlockVerdict {
  const last = checks[checks.length - 1];
  const more = checks.length < maxChecks;
  if (!last) return { kind: 'check-again', reason: 'not checked yet: the first difference may be a write still on its way' };
  if (!last.sourceAfter.equals(last.sourceBefore)) {
    return more
      ? { kind: 'check-again', reason: 'the source block changed between the two reads: it is being written' }
      : { kind: 'busy', reason: `the source block changed between the two reads in ${checks.length} checks: it is being written` };
  }
  if (last.receiver.equals(last.sourceAfter)) return { kind: 'match', reason: 'the receiver caught up: the difference was a write on its way' };
  const prev = checks[checks.length - 2];
  if (prev && stableDisagreement(prev) && prev.sourceAfter.equals(last.sourceBefore) && prev.receiver.equals(last.receiver)) {
    return { kind: 'diverged', reason: 'the source block stayed the same and the receiver, caught up with every write before each read, held other data in two checks in a row' };
  }
  return more
    ? { kind: 'check-again', reason: 'the source block did not change and the caught-up receiver holds other data: confirming with one more check' }
    : { kind: 'busy', reason: `the receiver disagreed once, but the block was written too often to confirm it in ${checks.length} checks` };
}
