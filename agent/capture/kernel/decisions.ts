import type { DeviceMode, StartState } from '../../../native/addon/ferry-abi';
import type { ResyncKind } from '../types';

// The kernel capture's decisions that need no device: each returns what to do and why.

/** Which walk a volume's walker runs next. */
export type WalkChoice = { run: 'resync' | 'repair' | 'drain' | 'none'; reason: string };

export interface WalkRequests {
  /** The pending resync; `ready` once the agent started it (with the receiver's hashes). */
  resync: { ready: boolean } | undefined;
  repairsQueued: number;
  drainRequested: boolean;
  /** Walks whose bits are not cleared yet. */
  clearingWalks: number;
}

export function chooseWalk(r: WalkRequests): WalkChoice {
  if (r.resync?.ready) return { run: 'resync', reason: 'a resync was started' };
  if (r.repairsQueued > 0 && !r.resync) return { run: 'repair', reason: 'a repair is queued' };
  if (r.drainRequested) {
    if (r.clearingWalks === 0) return { run: 'drain', reason: 'a drain of dirty bits was asked for' };
    return { run: 'none', reason: 'the drain waits for earlier walks to clear their bits, else it would read them again' };
  }
  if (r.repairsQueued > 0) return { run: 'none', reason: 'a pending resync covers every block: repairs wait for it' };
  if (r.resync) return { run: 'none', reason: 'the resync waits for the agent to start it' };
  return { run: 'none', reason: 'nothing was asked for' };
}

/** What a walk compares a block's data with before sending it. */
export type Baseline = 'zero' | 'remote' | 'none';

export function walkBaseline(w: { purpose: 'resync' | 'repair' | 'drain'; wholeDevice: boolean; hasRemote: boolean }, receiverDurable: number, nextStream: number): { baseline: Baseline; reason: string } {
  if (w.purpose === 'repair') return { baseline: 'remote', reason: 'a repair compares with the receiver\'s hashes' };
  if (!w.wholeDevice) return { baseline: 'none', reason: 'dirty regions changed: always sent' };
  if (receiverDurable === 0 && nextStream === 1) return { baseline: 'zero', reason: 'the replica never received anything: it is all zeroes' };
  if (w.hasRemote) return { baseline: 'remote', reason: 'the receiver\'s hashes describe the replica' };
  return { baseline: 'none', reason: 'no hashes of the replica: every block is sent' };
}

/** What a MODE record of the device means for the stream. */
export interface ModeChange {
  /** A bitmap episode starts: points are unusable until a drain covering it read its regions. */
  bitmapEpisode: boolean;
  /** Dirty bits wait to be read back. */
  drain: boolean;
  note?: { level: 'warn' | 'info'; message: string };
}

export function modeChange(from: DeviceMode, to: DeviceMode): ModeChange {
  switch (to) {
    case 'bitmap':
      return { bitmapEpisode: true, drain: false, note: { level: 'warn', message: 'capture fell back to the dirty bitmap (the agent is behind): points are not usable until it is drained' } };
    case 'draining':
      return { bitmapEpisode: false, drain: true };
    case 'metadata':
      return { bitmapEpisode: false, drain: false, note: { level: 'warn', message: 'capture pool full: writes are read back from the volume (approximate points)' } };
    case 'data':
      return from === 'data' ? { bitmapEpisode: false, drain: false } : { bitmapEpisode: false, drain: false, note: { level: 'info', message: 'capture is back to full data' } };
  }
}

/** What a new load of the device's table (a START record the agent did not attach to) needs. */
export type ReloadPlan =
  /** The old load's uncommitted changes are dirty bits: drain them, and run the interrupted resync again. */
  | { kind: 'drain'; resumeResync: ResyncKind | undefined; reason: string }
  | { kind: 'compare'; reason: string };

export function reloadPlan(startState: StartState, generation: number, interruptedResync: ResyncKind | undefined): ReloadPlan {
  if (startState === 'clean') {
    return { kind: 'drain', resumeResync: interruptedResync, reason: 'what the old load did not commit is now dirty bits' };
  }
  return { kind: 'compare', reason: `the device's metadata was ${startState} at load ${generation}` };
}

/** Whether an idle volume's dirty bits need a drain (an overflow, or leftovers of a walk). */
export function idleBitsNeedDrain(device: { dirtyBits: number; modeName: DeviceMode }, clearingWalks: number): { drain: boolean; reason: string } {
  if (device.dirtyBits === 0) return { drain: false, reason: 'no dirty bits' };
  if (device.modeName === 'bitmap') return { drain: false, reason: 'the device is in BITMAP mode: its MODE records start the drain' };
  if (clearingWalks > 0) return { drain: false, reason: 'walks still clear their bits' };
  return { drain: true, reason: 'dirty bits nobody is draining' };
}

/** Marks placed and not yet committed, at most: they hold ring slots that writes need, and their data is in memory. */
export function markLimit(ringCapacity: number, blockSize: number, maxMarks: number, maxBytes: number): number {
  return Math.max(4, Math.min(maxMarks, Math.floor(ringCapacity / 8), Math.floor(maxBytes / blockSize)));
}

/**
 * A mark's block goes into the stream as a NOOP when the replica is known to hold the same
 * data: a hash was expected, nothing wrote the block since the walk started, and the hashes match.
 */
export function markIsNoop(expect: Buffer | undefined, touchedSinceStart: boolean, hash: () => Buffer): boolean {
  return expect !== undefined && expect.length > 0 && !touchedSinceStart && hash().equals(expect);
}

/** Errors of RESYNC_MARK that go away by themselves: a ring full of control records (commits free it), a suspended table. */
export function markRetryable(code: string | undefined): boolean {
  return code === 'ENOSPC' || code === 'EAGAIN' || code === 'ENODEV';
}

/** Errors of reading the bitmap that go away: BITMAP mode, an overflow while reading, a suspended or vanished table. */
export function bitmapReadRetryable(code: string | undefined): boolean {
  return code === 'EBUSY' || code === 'ESTALE' || code === 'EAGAIN' || code === 'ENODEV';
}

/** Errors of CLEAR_BITMAP after which the bits stay for a later drain (a new epoch, a suspended table). */
export function clearKeepsBits(code: string | undefined): boolean {
  return code === 'ESTALE' || code === 'EBUSY' || code === 'EAGAIN' || code === 'ENODEV';
}
