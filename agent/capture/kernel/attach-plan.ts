import type { StartState } from '../../../native/addon/ferry-abi';
import type { ResyncKind, ResyncNeed } from '../types';
import type { PersistedResync } from './stream-log';

/** The device as LIST reports it at attach. */
export interface DeviceAtAttach {
  generation: number;
  startState: StartState;
  /** The START record's seq of the current load. */
  firstSeq: number;
  /** Newest committed kernel seq of this load (0: none). */
  committedSeq: number;
  dirtyBits: number;
}

/** The agent's own record of the stream (stream-log.ts). */
export interface StreamHistory {
  loaded: boolean;
  generation: number | undefined;
  /** The next stream seq after everything ever handed out. */
  streamEnd: number;
  committedStream: number;
  resync: PersistedResync;
  lookup(generation: number, kseq: number): number | undefined;
}

export interface AttachPlan {
  need: ResyncNeed;
  /** Stream seq of the first kernel record handed out from now on. */
  nextStream: number;
  /** Kernel seq of that record (the oldest uncommitted one of the load). */
  firstKseq: number;
  /** A whole-device resync resumes here. */
  resumeCursor: number;
  /** The device still has dirty bits the plan does not cover: drain them. */
  drain: boolean;
}

/**
 * Decides how a volume's stream continues and which resync it needs. The stream continues
 * exactly (redelivered records get their old seqs) only when the history matches both the
 * device's load and the receiver; anything else restarts the stream right after what the
 * receiver holds and compares the whole device.
 */
export function planAttach(device: DeviceAtAttach, history: StreamHistory, receiverDurable: number): AttachPlan {
  const firstKseq = device.committedSeq > 0 ? device.committedSeq + 1 : device.firstSeq;
  const restart = (kind: ResyncKind, reason: string): AttachPlan => ({ need: { kind, reason }, nextStream: receiverDurable + 1, firstKseq, resumeCursor: 0, drain: false });
  if (receiverDurable === 0) return restart('full', 'the replica is new');
  if (device.startState === 'dirty' && history.generation !== device.generation) {
    return restart('hash-compare', 'the device was not shut down cleanly (crash): its dirty flag is set');
  }
  if (!history.loaded) return restart('hash-compare', 'no stream state describes the receiver\'s copy (first run on this machine, or the state was lost)');
  const lastHandedOut = history.streamEnd - 1;
  if (receiverDurable > lastHandedOut) {
    return restart('hash-compare', `the receiver holds seq ${receiverDurable}, beyond the last one this agent handed out (${lastHandedOut})`);
  }
  if (receiverDurable < history.committedStream) {
    return restart('hash-compare', `the receiver holds seq ${receiverDurable}, below seq ${history.committedStream} it had acknowledged (restored or rolled back)`);
  }
  const resume = history.resync.kind !== 'none';
  const resumed = (): ResyncNeed => ({ kind: history.resync.kind as ResyncKind, reason: `resuming the interrupted ${history.resync.kind} resync` });
  if (history.generation === device.generation) {
    // The agent restarted while the device stayed up: the kernel hands out again what was not committed.
    const anchored = history.lookup(device.generation, firstKseq);
    if (anchored === undefined) return restart('hash-compare', `no stream record maps kernel seq ${firstKseq}: the stream state does not match the device`);
    // Everything committed lies before the first uncommitted record. If not, this load only
    // shares its generation with the one in the state: its metadata was reset (made anew), and
    // its kernel seqs start over.
    if (history.committedStream >= anchored) {
      return restart('hash-compare', `seq ${history.committedStream} was committed, past seq ${anchored} of kernel seq ${firstKseq}: the device's metadata was made anew`);
    }
    if (anchored - 1 > receiverDurable) {
      return restart('hash-compare', `the receiver holds seq ${receiverDurable}, but seq ${anchored - 1} was committed before`);
    }
    const need: ResyncNeed = resume ? resumed() : { kind: 'none', reason: 'the stream continues where it stopped' };
    return { need, nextStream: anchored, firstKseq, resumeCursor: history.resync.cursor, drain: !resume && device.dirtyBits > 0 };
  }
  if (history.generation !== undefined && history.generation > device.generation) {
    return restart('hash-compare', `the device's load ${device.generation} is older than the one in the stream state (${history.generation})`);
  }
  if (device.startState !== 'clean') return restart('hash-compare', `the device's metadata is ${device.startState}: nothing says what changed`);
  // A clean teardown saved every change not committed as dirty bits: they are the delta.
  const nextStream = receiverDurable + 1;
  if (resume) return { need: resumed(), nextStream, firstKseq, resumeCursor: history.resync.cursor, drain: history.resync.kind !== 'delta' && device.dirtyBits > 0 };
  if (device.dirtyBits > 0) return { need: { kind: 'delta', reason: `the device was reloaded cleanly with ${device.dirtyBits} dirty regions` }, nextStream, firstKseq, resumeCursor: 0, drain: false };
  return { need: { kind: 'none', reason: 'the device was reloaded cleanly with nothing left to send' }, nextStream, firstKseq, resumeCursor: 0, drain: false };
}
