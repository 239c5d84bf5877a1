// Validation of the failback frames (see FailbackVolume in ferry.proto). The change sets of a
// failback are checked with validateChangeSet (proto/validate.ts), the function the receiver
// uses at ingest.
import { ferry } from './generated/ferry';
import { ErrorCode, ProtocolError } from './errors';
import { checkVolumeId } from './check-ids';
import { Limits } from './limits';

const SECTOR = 512;

function bad(code: ErrorCode, message: string): never {
  throw new ProtocolError(code, message);
}

export interface ValidFailbackVolume {
  volumeId: string;
  sizeBytes: number;
  /** The compare block size; the volume's last block may be short. */
  blockSize: number;
}

function checkBlockSize(blockSize: number, what: string): number {
  if (!Number.isInteger(blockSize) || blockSize < Limits.minBlockSize || blockSize > Limits.maxBlockSize || (blockSize & (blockSize - 1)) !== 0) {
    bad(ErrorCode.BAD_FRAME, `${what} block size ${blockSize} must be a power of two from ${Limits.minBlockSize} to ${Limits.maxBlockSize}`);
  }
  return blockSize;
}

/** A volume the agent offers to fail back onto: whole sectors, a power-of-two compare block. */
export function validateFailbackVolume(frame: ferry.IFailbackVolume): ValidFailbackVolume {
  const volumeId = checkVolumeId(frame.volumeId ?? '');
  const sizeBytes = frame.sizeBytes ?? 0;
  const blockSize = checkBlockSize(frame.blockSize ?? 0, 'failback');
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > Limits.maxVolumeBytes || sizeBytes % SECTOR !== 0) {
    bad(ErrorCode.BAD_FRAME, `failback volume ${volumeId}: size ${sizeBytes} must be a positive multiple of ${SECTOR}, at most ${Limits.maxVolumeBytes}`);
  }
  return { volumeId, sizeBytes, blockSize };
}

export type FailbackStateName = 'copying' | 'in-sync' | 'done';

export interface ValidFailbackState {
  volumeId: string;
  pass: number;
  state: FailbackStateName;
  final: boolean;
  sentBytes: number;
  differingBlocks: number;
  comparedBytes: number;
}

const stateNames: Record<number, FailbackStateName> = {
  [ferry.FailbackState.State.COPYING]: 'copying',
  [ferry.FailbackState.State.IN_SYNC]: 'in-sync',
  [ferry.FailbackState.State.DONE]: 'done',
};

export const failbackStateValue: Record<FailbackStateName, ferry.FailbackState.State> = {
  copying: ferry.FailbackState.State.COPYING,
  'in-sync': ferry.FailbackState.State.IN_SYNC,
  done: ferry.FailbackState.State.DONE,
};

function count(value: number | null | undefined, what: string): number {
  const n = value ?? 0;
  if (!Number.isSafeInteger(n) || n < 0) bad(ErrorCode.BAD_FRAME, `${what} ${n} is not a count`);
  return n;
}

/** The receiver's word on where a volume stands. */
export function validateFailbackState(frame: ferry.IFailbackState): ValidFailbackState {
  const volumeId = checkVolumeId(frame.volumeId ?? '');
  const stateValue = frame.state ?? 0;
  const state = stateNames[stateValue] ?? bad(ErrorCode.BAD_FRAME, `failback state ${stateValue} of ${volumeId} is not copying, in-sync or done`);
  const pass = count(frame.pass, 'failback pass');
  if (pass < 1) bad(ErrorCode.BAD_FRAME, `failback state of ${volumeId} names pass 0 (passes count from 1)`);
  return {
    volumeId,
    pass,
    state,
    final: frame.final === true,
    sentBytes: count(frame.sentBytes, 'failback sent bytes'),
    differingBlocks: count(frame.differingBlocks, 'failback differing blocks'),
    comparedBytes: count(frame.comparedBytes, 'failback compared bytes'),
  };
}

/** One volume's durable seq from the agent's Ack in a failback session. */
export interface ValidFailbackAck {
  volumeId: string;
  durableSeq: number;
}

/** The agent's Ack: each named volume with the seq written and fsync'd on its disk. */
export function validateFailbackAck(ack: ferry.IAck): ValidFailbackAck[] {
  const volumes = ack.volumes ?? [];
  if (volumes.length === 0 || volumes.length > Limits.maxTagCuts) bad(ErrorCode.BAD_FRAME, `a failback ack names ${volumes.length} volumes (1 to ${Limits.maxTagCuts})`);
  return volumes.map((v) => ({ volumeId: checkVolumeId(v.volumeId ?? ''), durableSeq: count(v.durableSeq, `ack seq of ${v.volumeId ?? ''}`) }));
}
