import { blockHash } from '../../../common/block-hash';
import { log } from '../../../common/log';
import type { KernelRecord } from '../../../native/addon';
import type { CapturedRecord, VolumeCut } from '../types';
import type { ControlDevice, ReadVolume } from './control-device';
import { markIsNoop } from './decisions';
import { pieceCount, piecesOf, planRecord, streamWidth, type RecordPlan } from './records';
import type { Anchor } from './stream-log';
import type { KernelVolume, PendingMark } from './volume';

/** Read-backs of one batch running at the same time, at most. */
const READ_CONCURRENCY = 8;

/** The volumes by device index, as the kernel source maps them. */
export interface VolumeDirectory {
  at(devIndex: number): KernelVolume | undefined;
  /** Maps device indexes to volumes again (a table was loaded, a device came or went). */
  refresh(): Promise<void>;
  /** Whether records of this device were dropped before (no configured volume is it). */
  isIgnored(devIndex: number): boolean;
  /** Drops the device's records from now on; true the first time (warn then). */
  ignore(devIndex: number): boolean;
}

export interface ConvertContext {
  volumes: VolumeDirectory;
  /** The device's next kernel seq once the batch's data was read (see AccuracyTracker). */
  control: Pick<ControlDevice, 'stats'>;
  /** Reads back data a record does not carry. */
  readVolume: ReadVolume;
}

/** Consecutive records of one kernel batch as the volumes' streams: one capture batch. */
export interface ConvertedBatch {
  records: CapturedRecord[];
  /** Where each volume's part sits in its stream: logged before the hand-out. */
  anchors: Map<KernelVolume, Anchor>;
  /** Walker marks converted per volume: their ring slots are freed by the commit. */
  marks: Map<KernelVolume, number>;
  /** TAG records reached: their cuts are delivered once the batch is handed out. */
  tags: Array<{ volume: KernelVolume; kseq: number; cut: VolumeCut }>;
}

type Push = (r: Omit<CapturedRecord, 'volumeId' | 'seq' | 'captureTimeUs' | 'accuracy'>) => void;

interface Item {
  v: KernelVolume;
  rec: KernelRecord;
  plan: RecordPlan;
  /** Stream seq of the item's first stream record. */
  stream: number;
  width: number;
  read?: Promise<Buffer[]>;
  /** A read-back whose data an earlier read-back of the kernel batch carries: NOOPs. */
  covered?: boolean;
  mark?: PendingMark;
}

/** Bounds concurrent work (read-backs). */
class Limiter {
  private active = 0;
  private readonly queue: Array<() => void> = [];

  constructor(private readonly max: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((resolve) => this.queue.push(resolve));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.queue.shift()?.();
    }
  }
}

/**
 * Turns records[from..] of a kernel batch into stream records, until about `maxBytes` of data
 * (payloads and read-backs; at least one record); returns them and how many records it took.
 * Each kernel record takes a fixed number of stream seqs (records.ts) in the order the kernel
 * hands records out; data that is not in the record (METADATA-mode writes, resync marks) is read
 * back from the volume here, after the record's kernel seq was assigned, which is what makes it
 * valid at that place in the stream. `records` must be copies: they outlive the kernel's batch
 * buffer. `covered`: indexes of read-backs an earlier read-back of the same kernel batch carries
 * (coveredReadBacks). What the records change (stream numbering, marks, modes, accuracy) is told
 * to their volumes.
 */
export async function convertKernelRecords(
  ctx: ConvertContext,
  records: readonly KernelRecord[],
  from: number,
  maxBytes: number,
  covered: ReadonlySet<number>,
): Promise<{ batch: ConvertedBatch; consumed: number }> {
  const out: ConvertedBatch = { records: [], anchors: new Map(), marks: new Map(), tags: [] };
  const part: KernelRecord[] = [];
  let bytes = 0;
  for (let i = from; i < records.length && (part.length === 0 || bytes < maxBytes); i++) {
    const r = records[i];
    part.push(r);
    const plan = planRecord(r);
    if (plan.kind === 'write' || plan.kind === 'mark' || (plan.kind === 'read' && !covered.has(i))) bytes += r.length;
  }
  const dir = ctx.volumes;
  if (part.some((r) => r.kind === 'start' || (!dir.at(r.devIndex) && !dir.isIgnored(r.devIndex)))) await dir.refresh();
  const items = await assign(ctx, part, from, covered, out);
  // Every read of the batch is done before the device's next seq is taken: records below it
  // may have had later writes read into the data (see AccuracyTracker).
  await Promise.all(items.map((i) => i.read ?? i.mark?.data));
  const nextKseq = new Map<KernelVolume, number>();
  for (const v of new Set(items.filter((i) => i.read || i.mark).map((i) => i.v))) {
    nextKseq.set(v, (await ctx.control.stats(v.devIndex)).device?.nextSeq ?? Number.MAX_SAFE_INTEGER);
  }
  for (const item of items) await emit(item, out, nextKseq.get(item.v) ?? Number.MAX_SAFE_INTEGER);
  return { batch: out, consumed: part.length };
}

/** First pass: stream seqs for every record (in kernel order), read-backs started. */
async function assign(ctx: ConvertContext, recs: KernelRecord[], from: number, covered: ReadonlySet<number>, out: ConvertedBatch): Promise<Item[]> {
  const reads = new Limiter(READ_CONCURRENCY);
  const items: Item[] = [];
  for (const [n, rec] of recs.entries()) {
    const v = ctx.volumes.at(rec.devIndex);
    if (!v) {
      if (ctx.volumes.ignore(rec.devIndex)) log.warn('records of a ferry device that no configured volume is: they are dropped', { devIndex: rec.devIndex });
      continue;
    }
    const plan = planRecord(rec);
    const width = streamWidth(rec, plan);
    const stream = v.numberRecord(rec, width);
    let anchor = out.anchors.get(v);
    if (!anchor) {
      anchor = { generation: v.generation, kseqFirst: rec.seq, kseqEnd: rec.seq, streamFirst: stream, streamEnd: stream };
      out.anchors.set(v, anchor);
    }
    anchor.kseqEnd = rec.seq + 1;
    anchor.streamEnd = stream + width;
    const item: Item = { v, rec, plan, stream, width };
    if (plan.kind === 'mark') item.mark = await v.takeMark(rec.seq);
    if (plan.kind === 'read' && covered.has(from + n)) item.covered = true;
    else if (plan.kind === 'read' || (plan.kind === 'mark' && !item.mark)) {
      const read = readBack(ctx.readVolume, reads, v, rec.offset, rec.length);
      read.catch(() => undefined); // awaited in order below
      item.read = read;
    }
    items.push(item);
  }
  return items;
}

function readBack(readVolume: ReadVolume, reads: Limiter, v: KernelVolume, offset: number, length: number): Promise<Buffer[]> {
  return Promise.all(
    piecesOf(offset, length).map((p) =>
      reads.run(async () => {
        const data = await readVolume(v.spec.path, p.offset, p.length);
        if (data.length !== p.length) throw new Error(`${v.spec.path}: short read at ${p.offset} (${data.length} of ${p.length} bytes)`);
        return data;
      }),
    ),
  );
}

/** Second pass, in stream order: records with their accuracy, bookkeeping, tags. */
async function emit(item: Item, out: ConvertedBatch, nextKseq: number): Promise<void> {
  const { v, rec, plan } = item;
  const timeUs = Number(rec.timeNs / 1000n);
  let seq = item.stream;
  const push: Push = (r) => {
    out.records.push({ volumeId: v.id, seq: seq++, captureTimeUs: timeUs, accuracy: 'none', ...r });
  };
  const writes = (pieces: Buffer[]): void => {
    let offset = rec.offset;
    for (const data of pieces) {
      push({ kind: 'write', offset, length: data.length, data });
      offset += data.length;
    }
  };
  const first = out.records.length;
  if (rec.kind === 'mode') v.noteModeRecord(rec.mode);
  else if (rec.kind === 'tag') out.tags.push({ volume: v, kseq: rec.seq, cut: { volumeId: v.id, seq: item.stream - 1, accuracy: v.accuracyAt(rec.seq) } });
  switch (plan.kind) {
    case 'skip':
      break;
    case 'write':
      writes(piecesOf(0, rec.length).map((p) => rec.data.subarray(p.offset, p.offset + p.length)));
      if (plan.fua) push({ kind: 'flush', offset: 0, length: 0 });
      v.noteTouched(rec.offset, rec.length);
      break;
    case 'read': {
      if (item.covered) {
        // The earlier read-back's data holds this write: same seqs, nothing to send again.
        for (let i = pieceCount(rec.length); i > 0; i--) push({ kind: 'noop', offset: 0, length: 0 });
        if (plan.fua) push({ kind: 'flush', offset: 0, length: 0 });
        v.noteTouched(rec.offset, rec.length);
        break;
      }
      const pieces = await (item.read as Promise<Buffer[]>);
      v.noteReadBack(nextKseq);
      writes(pieces);
      if (plan.fua) push({ kind: 'flush', offset: 0, length: 0 });
      v.noteTouched(rec.offset, rec.length);
      break;
    }
    case 'discard':
      push({ kind: 'discard', offset: rec.offset, length: rec.length });
      v.noteTouched(rec.offset, rec.length);
      break;
    case 'flush':
      push({ kind: 'flush', offset: 0, length: 0 });
      break;
    case 'mark':
      if (item.mark) await emitMark(item, item.mark, out, push, nextKseq);
      else {
        // A mark of an earlier run of the agent (redelivered): its data is read now.
        writes(await (item.read as Promise<Buffer[]>));
        v.noteReadBack(nextKseq);
        v.noteTouched(rec.offset, rec.length);
      }
      break;
  }
  const accuracy = v.accuracyAt(rec.seq);
  for (let i = first; i < out.records.length; i++) out.records[i].accuracy = accuracy;
}

async function emitMark(item: Item, mark: PendingMark, out: ConvertedBatch, push: Push, nextKseq: number): Promise<void> {
  const { v, rec } = item;
  const data = await mark.data;
  if (data.length !== rec.length) throw new Error(`${v.spec.path}: short read at ${rec.offset} (${data.length} of ${rec.length} bytes)`);
  const noop = markIsNoop(mark.expect, v.touchedSinceWalkStart(mark.block), () => blockHash(data));
  if (noop) push({ kind: 'noop', offset: 0, length: 0 });
  else push({ kind: 'write', offset: rec.offset, length: data.length, data });
  out.marks.set(v, (out.marks.get(v) ?? 0) + 1);
  v.noteMarkConverted(mark, item.stream + item.width - 1, rec.length, noop ? 0 : data.length, nextKseq);
}
