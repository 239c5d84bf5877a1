/**
 * The receiver's retention journal as a test parameter. Receiver processes (and `ferry export`,
 * `ferry receiver verify`) inherit FERRY_JOURNAL from this process's environment, so a suite
 * that runs under a given journal sets it for the duration of its describe block.
 */
import { afterAll, beforeAll } from 'vitest';

export type Journal = 'undo' | 'redo';

/** Both journals: for tests whose user outcome does not depend on the journal. */
export const JOURNALS: readonly Journal[] = ['undo', 'redo'];

/** The journal new volumes get with the environment as it stands. */
export function currentJournal(): Journal {
  return process.env.FERRY_JOURNAL === 'undo' ? 'undo' : 'redo';
}

/** Sets FERRY_JOURNAL to `journal` for the enclosing describe block (restored after it). */
export function useJournal(journal: Journal): void {
  let before: string | undefined;
  beforeAll(() => {
    before = process.env.FERRY_JOURNAL;
    process.env.FERRY_JOURNAL = journal;
  });
  afterAll(() => {
    if (before === undefined) delete process.env.FERRY_JOURNAL;
    else process.env.FERRY_JOURNAL = before;
  });
}
