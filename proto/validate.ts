import { usToIso } from '../common/time';
import { ferry } from './generated/ferry';
import { ErrorCode, ProtocolError } from './errors';
import { checkVolumeId } from './check-ids';
import { isSafeId } from './ids';
import { Limits } from './limits';
import { PayloadAlloc, unpackPayload } from './payload';
import { accuracyName, AccuracyName, ChangeBatch, ChangeExtent, ExtentKind, TagCut, ValidHashRequest, ValidTag, VolumeSpec } from './types';

const SECTOR = 512;

function bad(code: ErrorCode, message: string): never {
  throw new ProtocolError(code, message);
}

function checkString(value: string, max: number, what: string): string {
  if (value.length > max) bad(ErrorCode.TOO_LARGE, `${what} is longer than ${max} characters`);
  return value;
}

function checkSeq(value: number, what: string): number {
  if (!Number.isSafeInteger(value) || value < 1) bad(ErrorCode.BAD_FRAME, `${what} ${value} is not a sequence number (1..2^53)`);
  return value;
}

function checkAccuracy(value: number): AccuracyName {
  return accuracyName(value) ?? bad(ErrorCode.BAD_FRAME, `accuracy ${value} is not exact, approximate or none`);
}

export function validateVolumeInfo(info: ferry.IVolumeInfo): VolumeSpec {
  const volumeId = checkVolumeId(checkString(info.volumeId ?? '', Limits.maxIdLength * 4, 'volume id'));
  const sizeBytes = info.sizeBytes ?? 0;
  const blockSize = info.blockSize ?? 0;
  if (!Number.isInteger(blockSize) || blockSize < Limits.minBlockSize || blockSize > Limits.maxBlockSize || (blockSize & (blockSize - 1)) !== 0) {
    bad(ErrorCode.BAD_FRAME, `block size ${blockSize} must be a power of two from ${Limits.minBlockSize} to ${Limits.maxBlockSize}`);
  }
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes > Limits.maxVolumeBytes || sizeBytes % blockSize !== 0) {
    bad(ErrorCode.BAD_FRAME, `volume size ${sizeBytes} must be a positive multiple of the block size, at most ${Limits.maxVolumeBytes}`);
  }
  return { volumeId, sizeBytes, blockSize };
}

const extentKinds: Record<number, ExtentKind> = {
  [ferry.Extent.Kind.WRITE]: 'write',
  [ferry.Extent.Kind.DISCARD]: 'discard',
  [ferry.Extent.Kind.FLUSH]: 'flush',
  [ferry.Extent.Kind.NOOP]: 'noop',
};

function checkExtent(ext: ferry.IExtent, seq: number, volumeBytes: number, dataOffset: number): ChangeExtent {
  const kindValue = ext.kind ?? ferry.Extent.Kind.WRITE;
  const kind = extentKinds[kindValue] ?? bad(ErrorCode.BAD_EXTENTS, `extent of seq ${seq} has unknown kind ${kindValue}`);
  const offset = ext.offset ?? 0;
  const length = ext.length ?? 0;
  if (kind === 'flush' || kind === 'noop') {
    if (offset !== 0 || length !== 0) bad(ErrorCode.BAD_EXTENTS, `${kind} marker of seq ${seq} must have offset 0 and length 0`);
  } else {
    if (length === 0) bad(ErrorCode.BAD_EXTENTS, `${kind} of seq ${seq} has length 0`);
    if (kind === 'write' && length > Limits.maxWriteLength) bad(ErrorCode.TOO_LARGE, `write of seq ${seq} is ${length} bytes, cap ${Limits.maxWriteLength}`);
    if (offset % SECTOR !== 0 || length % SECTOR !== 0) bad(ErrorCode.BAD_EXTENTS, `${kind} of seq ${seq} at ${offset}+${length} is not 512-byte aligned`);
    if (!Number.isSafeInteger(offset) || offset + length > volumeBytes) {
      bad(ErrorCode.OUT_OF_RANGE, `${kind} of seq ${seq} at ${offset}+${length} ends past the volume end (${volumeBytes})`);
    }
  }
  return { seq, kind, offset, length, captureTimeUs: ext.captureTimeUs ?? 0, dataOffset };
}

/**
 * Checks every field of a change set against the volume and returns it decompressed.
 * `verifyCrc` may be false only for a frame already validated once and stored under a CRC of
 * its own (the spool re-reading what it accepted). With `alloc`, the decompressed data lives
 * in the memory it gives (see unpackPayload): the batch's data is only valid as long as that is.
 */
export function validateChangeSet(cs: ferry.IChangeSet, volumeBytes: number, verifyCrc = true, alloc?: PayloadAlloc): ChangeBatch {
  const volumeId = checkVolumeId(cs.volumeId ?? '');
  const firstSeq = checkSeq(cs.firstSeq ?? 0, 'first seq');
  const lastSeq = checkSeq(cs.lastSeq ?? 0, 'last seq');
  const extentList = cs.extents ?? [];
  const uncompressedSize = cs.uncompressedSize ?? 0;
  const payloadBytes = cs.payload ?? new Uint8Array(0);
  if (lastSeq < firstSeq) bad(ErrorCode.BAD_EXTENTS, `last seq ${lastSeq} is before first seq ${firstSeq}`);
  if (extentList.length > Limits.maxExtents) bad(ErrorCode.TOO_LARGE, `${extentList.length} extents exceed the cap of ${Limits.maxExtents}`);
  if (extentList.length !== lastSeq - firstSeq + 1) {
    bad(ErrorCode.BAD_EXTENTS, `seqs ${firstSeq}..${lastSeq} need ${lastSeq - firstSeq + 1} extents, frame has ${extentList.length}`);
  }
  if (uncompressedSize > Limits.maxPayloadBytes) bad(ErrorCode.TOO_LARGE, `payload of ${uncompressedSize} bytes exceeds the cap of ${Limits.maxPayloadBytes}`);
  const accuracy = checkAccuracy(cs.accuracy ?? 0);
  const extents: ChangeExtent[] = [];
  let dataOffset = 0;
  for (let i = 0; i < extentList.length; i++) {
    const ext = checkExtent(extentList[i], firstSeq + i, volumeBytes, dataOffset);
    if (ext.kind === 'write') dataOffset += ext.length;
    extents.push(ext);
  }
  if (dataOffset !== uncompressedSize) {
    bad(ErrorCode.BAD_EXTENTS, `write extents cover ${dataOffset} bytes, payload header says ${uncompressedSize}`);
  }
  const data = unpackPayload({
    compression: cs.compression ?? ferry.Compression.COMPRESSION_NONE,
    payload: Buffer.from(payloadBytes.buffer, payloadBytes.byteOffset, payloadBytes.byteLength),
    uncompressedSize,
    payloadCrc32: cs.payloadCrc32 ?? 0,
  }, verifyCrc, alloc);
  return { volumeId, firstSeq, lastSeq, extents, accuracy, data, pendingSinceUs: cs.pendingSinceUs ?? 0 };
}

/** A hash request must name whole blocks of a declared volume (the last one may be short). */
export function validateHashRequest(req: ferry.IHashRequest, volumeBytes: number): ValidHashRequest {
  const volumeId = checkVolumeId(req.volumeId ?? '');
  const offset = req.offset ?? 0;
  const blockSize = req.blockSize ?? 0;
  const count = req.count ?? 0;
  if (!Number.isInteger(blockSize) || blockSize < Limits.minBlockSize || blockSize > Limits.maxBlockSize || (blockSize & (blockSize - 1)) !== 0) {
    bad(ErrorCode.BAD_FRAME, `hash block size ${blockSize} must be a power of two from ${Limits.minBlockSize} to ${Limits.maxBlockSize}`);
  }
  if (count < 1 || count > Limits.maxHashBlocks) bad(ErrorCode.TOO_LARGE, `hash request for ${count} blocks: 1 to ${Limits.maxHashBlocks} allowed`);
  if (!Number.isSafeInteger(offset) || offset % blockSize !== 0) bad(ErrorCode.BAD_FRAME, `hash request offset ${offset} is not a multiple of the block size ${blockSize}`);
  if (offset + (count - 1) * blockSize >= volumeBytes) {
    bad(ErrorCode.OUT_OF_RANGE, `hash request for ${count} blocks at ${offset} reaches past the volume end (${volumeBytes})`);
  }
  return { volumeId, offset, blockSize, count, requestId: req.requestId ?? 0 };
}

const tagKinds: Record<number, ValidTag['kind']> = { [ferry.Tag.Kind.CRASH]: 'crash', [ferry.Tag.Kind.APP]: 'app' };

export function validateTag(tag: ferry.ITag): ValidTag {
  const kindValue = tag.kind ?? 0;
  const kind = tagKinds[kindValue] ?? bad(ErrorCode.BAD_TAG, `tag kind ${kindValue} is not crash or app`);
  const groupId = checkString(tag.groupId ?? '', Limits.maxNameLength, 'tag group id');
  const name = checkString(tag.name ?? '', Limits.maxNameLength, 'tag name');
  const cutList = tag.cuts ?? [];
  if (cutList.length === 0) bad(ErrorCode.BAD_TAG, 'tag has no volume cuts');
  if (cutList.length > Limits.maxTagCuts) bad(ErrorCode.TOO_LARGE, `tag has ${cutList.length} cuts, cap ${Limits.maxTagCuts}`);
  const seen = new Set<string>();
  const cuts: TagCut[] = cutList.map((cut) => {
    const volumeId = checkVolumeId(cut.volumeId ?? '');
    if (seen.has(volumeId)) bad(ErrorCode.BAD_TAG, `tag lists volume ${volumeId} twice`);
    seen.add(volumeId);
    // Seq 0 is a cut before the first record: the volume as its resync left it when the resync
    // had nothing to send (an all-zero volume), e.g. a member of a group round that never changed.
    const seq = cut.seq ?? 0;
    return { volumeId, seq: seq === 0 ? 0 : checkSeq(seq, `tag cut of ${volumeId}`), accuracy: checkAccuracy(cut.accuracy ?? 0) };
  });
  return { kind, groupId, name, timeUs: tag.timeUs ?? 0, cuts };
}

/** The capture and point times a receiver accepts right now (µs since the epoch, inclusive). */
export interface TimeWindow {
  minUs: number;
  maxUs: number;
}

/** From 2000-01-01 to `aheadUs` past the receiver's clock `nowUs` (agents' clocks may run a little ahead). */
export function timeWindow(nowUs: number, aheadUs: number = Limits.maxTimeAheadUs): TimeWindow {
  return { minUs: Limits.minTimeUs, maxUs: nowUs + aheadUs };
}

/** Refuses a time outside the window with BAD_TIME; 0 passes (each caller gives it its meaning). */
function checkTime(value: number, what: string, window: TimeWindow): void {
  if (value === 0 || (Number.isSafeInteger(value) && value >= window.minUs && value <= window.maxUs)) return;
  bad(
    ErrorCode.BAD_TIME,
    `${what} ${usToIso(value)} (${String(value)} us) is outside the accepted range ${usToIso(window.minUs)} .. ${usToIso(window.maxUs)} ` +
      "(the receiver's clock plus the allowed skew): check the clock of the protected machine",
  );
}

/** Capture times of a change set (0: unknown) and its backlog time (0: none) must be in the window. */
export function checkChangeSetTimes(batch: ChangeBatch, window: TimeWindow): void {
  for (const ext of batch.extents) checkTime(ext.captureTimeUs, `capture time of seq ${ext.seq}`, window);
  checkTime(batch.pendingSinceUs, 'pending-since time of the change set', window);
}

/** A tag's time must be in the window; 0 stands for "when the receiver records it". */
export function checkTagTime(tag: ValidTag, window: TimeWindow): void {
  checkTime(tag.timeUs, `time of tag ${JSON.stringify(tag.groupId)}`, window);
}

/** A heartbeat's times (0: none); returns the agent's backlog time. */
export function validateHeartbeat(heartbeat: ferry.IHeartbeat, window: TimeWindow): { pendingSinceUs: number } {
  checkTime(heartbeat.timeUs ?? 0, 'heartbeat time', window);
  const pendingSinceUs = heartbeat.pendingSinceUs ?? 0;
  checkTime(pendingSinceUs, 'heartbeat pending-since time', window);
  return { pendingSinceUs };
}

export interface ValidHello {
  intent: 'register' | 'login';
  agentName: string;
  agentId: string;
  /** The agent's software version ("ferry-agent/0.1.0"), '' when it did not say. */
  software: string;
  /** The machine's OS as the agent describes it, '' when it did not say. */
  os: string;
  /** A failback session (`ferry agent failback`), not a replication session; login only. */
  failback: boolean;
}

export function validateHello(hello: ferry.IHello): ValidHello {
  const software = checkString(hello.software ?? '', Limits.maxNameLength, 'agent software');
  const os = checkString(hello.os ?? '', Limits.maxNameLength, 'agent os');
  const failback = hello.failback === true;
  if (hello.intent === ferry.Hello.Intent.REGISTER) {
    if (failback) bad(ErrorCode.BAD_FRAME, 'a failback session logs in with the credential of a registered agent; it cannot register');
    const agentName = checkString(hello.agentName ?? '', Limits.maxNameLength, 'agent name');
    if (agentName.length === 0) bad(ErrorCode.BAD_FRAME, 'registration needs an agent name');
    return { intent: 'register', agentName, agentId: '', software, os, failback };
  }
  if (hello.intent === ferry.Hello.Intent.LOGIN) {
    const agentId = hello.agentId ?? '';
    if (!isSafeId(agentId)) bad(ErrorCode.AUTH_FAILED, 'login with a malformed agent id');
    return { intent: 'login', agentName: '', agentId, software, os, failback };
  }
  return bad(ErrorCode.BAD_FRAME, `hello intent ${hello.intent} is not register or login`);
}

export function checkProof(proof: Uint8Array | null | undefined): Buffer {
  if (!proof) return bad(ErrorCode.AUTH_FAILED, 'proof is missing');
  if (proof.length === 0 || proof.length > Limits.maxProofBytes) bad(ErrorCode.AUTH_FAILED, 'proof has the wrong size');
  return Buffer.from(proof.buffer, proof.byteOffset, proof.byteLength);
}

export interface ValidRepairDone {
  volumeId: string;
  requestId: number;
  throughSeq: number;
  sentBytes: number;
}

/** An agent's word that a repair is in its stream: a declared volume, a seq it has sent. */
export function validateRepairDone(done: ferry.IRepairDone): ValidRepairDone {
  const volumeId = checkVolumeId(done.volumeId ?? '');
  const requestId = done.requestId ?? 0;
  if (!Number.isInteger(requestId) || requestId < 1) bad(ErrorCode.BAD_FRAME, `repair request id ${requestId} is not a repair this receiver asked for`);
  const throughSeq = done.throughSeq ?? 0;
  if (!Number.isSafeInteger(throughSeq) || throughSeq < 0) bad(ErrorCode.BAD_FRAME, `repair through seq ${throughSeq} is not a sequence number`);
  const sentBytes = done.sentBytes ?? 0;
  return { volumeId, requestId, throughSeq, sentBytes: Number.isSafeInteger(sentBytes) ? sentBytes : 0 };
}
