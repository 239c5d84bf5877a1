import { performance } from 'node:perf_hooks';
import { describeError } from '../../../common/errors';
import { HoldEndedError, type TagResult } from '../../../native/addon';
import type { VolumeCut, WriteHold } from '../types';
import type { ControlDevice } from './control-device';

/** What a hold needs from the kernel source: the control device and the tag path's cut conversion. */
export interface WriteHoldContext {
  control: ControlDevice;
  /** The TAG records' seqs (by device index) turned into the volumes' cuts, as tag() does. */
  cuts(result: TagResult): Promise<VolumeCut[]>;
  nextTagId(): number;
  /** The hold ended (committed, released, expired): the source forgets it. */
  ended(hold: KernelWriteHold): void;
}

type HoldState =
  | { kind: 'held' }
  | { kind: 'ending'; done: Promise<unknown> }
  | { kind: 'ended'; why: 'committed' | 'released' | 'expired' | 'closed' };

/**
 * A write hold in dm-ferry / ferryflt (FERRY_IOC_HOLD): new writes of the volumes wait in the
 * driver until commit() (TAG at the held cut, then release), release(), or the bound. The driver
 * enforces the bound by itself; this side also refuses a commit once the bound has passed by its
 * own clock, started before the driver's, so a cut is never taken after the bound.
 */
export class KernelWriteHold implements WriteHold {
  private state: HoldState = { kind: 'held' };

  constructor(
    private readonly ctx: WriteHoldContext,
    readonly holdId: number,
    readonly volumeIds: readonly string[],
    readonly boundMs: number,
    /** performance.now() before the HOLD call: the driver's bound started after it. */
    private readonly startedMs: number,
    /** ns from the start of the hold until nothing was in flight. */
    readonly drainNs: number,
  ) {}

  /** ms left before the bound passes (<= 0: passed). */
  remainingMs(now: number = performance.now()): number {
    return this.startedMs + this.boundMs - now;
  }

  async commit(): Promise<VolumeCut[]> {
    if (this.state.kind !== 'held') throw new Error(this.endedMessage(this.state.kind === 'ended' ? this.state.why : 'committed'));
    if (this.remainingMs() <= 0) {
      await this.finish(this.release0(), 'expired');
      throw new Error(this.endedMessage('expired'));
    }
    const tagging = this.ctx.control.tagHold(this.holdId, { tagId: this.ctx.nextTagId() });
    let result: TagResult;
    try {
      result = await this.finish(tagging, 'committed');
    } catch (err) {
      if (err instanceof HoldEndedError) {
        this.state = { kind: 'ended', why: 'expired' };
        throw new Error(this.endedMessage('expired'));
      }
      throw new Error(`the write hold on ${this.volumeIds.join(', ')} could not be cut (it is released): ${describeError(err)}`);
    }
    return this.ctx.cuts(result);
  }

  async release(): Promise<void> {
    if (this.state.kind === 'ended') return;
    if (this.state.kind === 'ending') {
      await this.state.done.catch(() => undefined);
      return;
    }
    await this.finish(this.release0(), 'released');
  }

  /** The source closed its control device: the driver ended the hold. */
  closed(): void {
    if (this.state.kind === 'held') this.state = { kind: 'ended', why: 'closed' };
  }

  private async release0(): Promise<void> {
    try {
      await this.ctx.control.releaseHold(this.holdId);
    } catch (err) {
      if (!(err instanceof HoldEndedError)) throw err; // the bound was first: released all the same
    }
  }

  /** Runs the call that ends the hold; the hold is over afterwards whatever the call did. */
  private async finish<T>(call: Promise<T>, why: 'committed' | 'released' | 'expired'): Promise<T> {
    this.state = { kind: 'ending', done: call };
    try {
      return await call;
    } finally {
      this.state = { kind: 'ended', why };
      this.ctx.ended(this);
    }
  }

  private endedMessage(why: 'committed' | 'released' | 'expired' | 'closed'): string {
    const what = `the write hold on ${this.volumeIds.join(', ')}`;
    switch (why) {
      case 'expired':
        return `${what} expired: its ${this.boundMs} ms bound passed before the commit, so the writes went on and no cut was taken`;
      case 'released':
        return `${what} was released: there is no held moment to cut`;
      case 'closed':
        return `${what} ended when the capture source closed`;
      default:
        return `${what} was already committed`;
    }
  }
}
