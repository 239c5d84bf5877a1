import { log } from '../common/log';
import type { ferry } from '../proto/frames';
import { Limits } from '../proto/limits';
import type { ByteRange, ProtectedVolume, RepairResult } from './capture/types';

/** Ranges one RepairRequest may list (as many as a change set may carry extents). */
export const MAX_REPAIR_RANGES = Limits.maxExtents;
/** RepairDone answers kept per volume, to answer a request the receiver repeats after a login. */
const DONE_KEPT = 64;

export interface ValidRepairRequest {
  volumeId: string;
  requestId: number;
  /** Empty: the whole volume. */
  ranges: ByteRange[];
  reason: string;
}

export type RepairRequestCheck = { ok: true; request: ValidRepairRequest } | { ok: false; why: string };

function printable(text: string): string {
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}...` : text);
}

/** Checks a RepairRequest against the volumes this agent protects; a refusal says why. */
export function checkRepairRequest(req: ferry.IRepairRequest, volumes: ReadonlyMap<string, ProtectedVolume>): RepairRequestCheck {
  const volumeId = req.volumeId ?? '';
  const volume = volumes.get(volumeId);
  if (!volume) return { ok: false, why: `volume ${printable(volumeId)} is not one this agent protects` };
  const list = req.ranges ?? [];
  if (list.length > MAX_REPAIR_RANGES) return { ok: false, why: `${list.length} ranges: at most ${MAX_REPAIR_RANGES} are allowed` };
  const ranges: ByteRange[] = [];
  for (const [i, r] of list.entries()) {
    const offset = Number(r.offset ?? 0);
    const length = Number(r.length ?? 0);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0) {
      return { ok: false, why: `range ${i} (${String(r.offset)}+${String(r.length)}) is not a non-empty byte range` };
    }
    if (offset + length > volume.sizeBytes) {
      return { ok: false, why: `range ${i} (${offset}+${length}) ends past the end of the volume (${volume.sizeBytes} bytes)` };
    }
    ranges.push({ offset, length });
  }
  const reason = (req.reason ?? '').slice(0, Limits.maxMessageLength);
  return { ok: true, request: { volumeId, requestId: req.requestId ?? 0, ranges, reason } };
}

export interface RepairDeskDeps {
  volumes(): ReadonlyMap<string, ProtectedVolume>;
  /** Runs the repair (CaptureSource.repair); resolves once its records are durable at the receiver. */
  run(volumeId: string, ranges: ByteRange[], reason: string): Promise<RepairResult>;
  /** Sends RepairDone in the current session; false when there is none (the receiver asks again). */
  send(done: ferry.IRepairDone): boolean;
}

interface VolumeRepairs {
  running: number | undefined;
  queue: ValidRepairRequest[];
  /** Answers given, by request id, with what was asked (an id a receiver reuses for other ranges runs again). */
  done: Map<number, { asked: string; answer: ferry.IRepairDone }>;
}

function whatIsAsked(r: ValidRepairRequest): string {
  return JSON.stringify([r.ranges, r.reason]);
}

/**
 * The receiver's RepairRequests: checked, run one at a time per volume (a request id already
 * running or queued is not run twice), answered with RepairDone once the repair is durable.
 * Nothing is persisted: the receiver asks again after every login until it has the answer.
 */
export class RepairDesk {
  private ready = false;
  private early: ferry.IRepairRequest[] = [];
  private readonly volumes = new Map<string, VolumeRepairs>();

  constructor(private readonly deps: RepairDeskDeps) {}

  /** The volumes are attached: requests that came before are taken now. */
  start(): void {
    this.ready = true;
    for (const req of this.early.splice(0)) this.onRequest(req);
  }

  onRequest(req: ferry.IRepairRequest): void {
    if (!this.ready) {
      if (this.early.length < 1024) this.early.push(req);
      return;
    }
    const check = checkRepairRequest(req, this.deps.volumes());
    if (!check.ok) {
      log.warn('ignoring a malformed repair request from the receiver', { volume: req.volumeId, requestId: req.requestId, why: check.why });
      return;
    }
    const r = check.request;
    const vol = this.volume(r.volumeId);
    const done = vol.done.get(r.requestId);
    if (done && done.asked === whatIsAsked(r)) {
      log.info('repair request already done: answering it again', { volume: r.volumeId, requestId: r.requestId, throughSeq: done.answer.throughSeq });
      this.deps.send(done.answer);
      return;
    }
    if (vol.running === r.requestId || vol.queue.some((q) => q.requestId === r.requestId)) {
      log.info('repair request already running or queued: not run twice', { volume: r.volumeId, requestId: r.requestId });
      return;
    }
    log.info('the receiver asks for a repair', {
      volume: r.volumeId,
      requestId: r.requestId,
      ranges: r.ranges.length === 0 ? 'the whole volume' : r.ranges.length,
      reason: r.reason,
      queuedBehind: vol.running,
    });
    vol.queue.push(r);
    this.next(r.volumeId);
  }

  private volume(volumeId: string): VolumeRepairs {
    let vol = this.volumes.get(volumeId);
    if (!vol) {
      vol = { running: undefined, queue: [], done: new Map() };
      this.volumes.set(volumeId, vol);
    }
    return vol;
  }

  private next(volumeId: string): void {
    const vol = this.volume(volumeId);
    if (vol.running !== undefined) return;
    const r = vol.queue.shift();
    if (!r) return;
    vol.running = r.requestId;
    this.deps
      .run(r.volumeId, r.ranges, r.reason === '' ? 'receiver request' : `receiver: ${r.reason}`)
      .then(
        (result) => {
          const done: ferry.IRepairDone = { volumeId: r.volumeId, requestId: r.requestId, throughSeq: result.throughSeq, sentBytes: result.sentBytes };
          vol.done.delete(r.requestId);
          vol.done.set(r.requestId, { asked: whatIsAsked(r), answer: done });
          if (vol.done.size > DONE_KEPT) vol.done.delete(vol.done.keys().next().value as number);
          const sent = this.deps.send(done);
          log.info('repair request done', { volume: r.volumeId, requestId: r.requestId, throughSeq: result.throughSeq, sentBytes: result.sentBytes, answered: sent });
        },
        (err: unknown) => log.warn('repair request not done: the receiver will ask again', { volume: r.volumeId, requestId: r.requestId, error: (err as Error).message }),
      )
      .finally(() => {
        vol.running = undefined;
        this.next(volumeId);
      });
  }
}
