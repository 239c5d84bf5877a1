import { blockHash } from '../../../common/block-hash';
import { log } from '../../../common/log';
import { readDirect, START_STATES, type KernelRecord, type FerryControl, type StartState } from '../../../native/addon';
import type { CapturedRecord, VolumeCut } from '../types';
import { pieceCount, piecesOf, planRecord, streamWidth, type RecordPlan } from './records';
import type { Anchor } from './stream-log';
import type { KernelVolume, PendingMark } from './volume';

/** Read-backs of one batch running at the same time, at most. */
const READ_CONCURRENCY = 8;

export interface ConverterContext {
  control: FerryControl;
  volumeAt(devIndex: number): KernelVolume | undefined;
  /** Maps device indexes to volumes again (a table was loaded, a device came or went). */
  refreshIndexes(): Promise<void>;
  /** A START record of a new load of the volume's device. */
  onNewLoad(v: KernelVolume, generation: number, startState: StartState): void;
  /** The stream lost records (a gap in kernel seqs): resync the volume. */
  onGap(v: KernelVolume, expected: number, got: number): void;
}

/** Consecutive records of one kernel batch as the volumes' streams: one capture batch. */
export interface ConvertedBatch {
  kernelBatchId: number;
  records: CapturedRecord[];
  /** Where each volume's part sits in its stream: logged before the hand-out. */
  anchors: Map<KernelVolume, Anchor>;
  /** Walker marks converted per volume: their ring slots are freed by the commit. */
  marks: Map<KernelVolume, number>;
  dataBytes: number;
  oldestCaptureUs: number;
  /** TAG records reached: their cuts are delivered once the batch is handed out. */
  tags: Array<{ volume: KernelVolume; kseq: number; cut: VolumeCut }>;
}

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
 * Turns kernel batches into stream records. Each kernel record takes a fixed number of stream
 * seqs (records.ts) in the order the kernel hands records out; data that is not in the record
 * (METADATA-mode writes, resync marks) is read back from the volume here, after the record's
 * kernel seq was assigned, which is what makes it valid at that place in the stream.
 */
export class Converter {
  private readonly reads = new Limiter(READ_CONCURRENCY);
  private readonly unknownWarned = new Set<number>();

  constructor(private readonly ctx: ConverterContext) {}

  /**
   * Converts records[from..] of kernel batch `kernelBatchId` until about `maxBytes` of data
   * (payloads and read-backs; at least one record); returns the batch and how many records it
   * took. `records` must be copies: they outlive the kernel's batch buffer. `covered`: indexes
   * of read-backs an earlier read-back of the same kernel batch carries (coveredReadBacks).
   */
  async convert(
    records: readonly KernelRecord[],
    from: number,
    kernelBatchId: number,
    maxBytes: number,
    covered: ReadonlySet<number>,
  ): Promise<{ batch: ConvertedBatch; consumed: number }> {
    const out: ConvertedBatch = { kernelBatchId, records: [], anchors: new Map(), marks: new Map(), dataBytes: 0, oldestCaptureUs: 0, tags: [] };
    const part: KernelRecord[] = [];
    let bytes = 0;
    for (let i = from; i < records.length && (part.length === 0 || bytes < maxBytes); i++) {
      const r = records[i];
      part.push(r);
      const plan = planRecord(r);
      if (plan.kind === 'write' || plan.kind === 'mark' || (plan.kind === 'read' && !covered.has(i))) bytes += r.length;
    }
    if (part.some((r) => r.kind === 'start' || (!this.ctx.volumeAt(r.devIndex) && !this.unknownWarned.has(r.devIndex)))) await this.ctx.refreshIndexes();
    const items = await this.assign(part, from, covered, out);
    // Every read of the batch is done before the device's next seq is taken: records below it
    // may have had later writes read into the data (see AccuracyTracker).
    await Promise.all(items.map((i) => i.read ?? i.mark?.data));
    const nextKseq = new Map<KernelVolume, number>();
    for (const v of new Set(items.filter((i) => i.read || i.mark).map((i) => i.v))) {
      nextKseq.set(v, (await this.ctx.control.stats(v.devIndex)).device?.nextSeq ?? Number.MAX_SAFE_INTEGER);
    }
    for (const item of items) await this.emit(item, out, nextKseq.get(item.v) ?? Number.MAX_SAFE_INTEGER);
    return { batch: out, consumed: part.length };
  }

  /** First pass: stream seqs for every record (in kernel order), read-backs started. */
  private async assign(recs: KernelRecord[], from: number, covered: ReadonlySet<number>, out: ConvertedBatch): Promise<Item[]> {
    const items: Item[] = [];
    for (const [n, rec] of recs.entries()) {
      const v = this.ctx.volumeAt(rec.devIndex);
      if (!v) {
        if (!this.unknownWarned.has(rec.devIndex)) {
          this.unknownWarned.add(rec.devIndex);
          log.warn('records of a ferry device that no configured volume is: they are dropped', { devIndex: rec.devIndex });
        }
        continue;
      }
      if (rec.kind === 'start') {
        // The START of the load the agent attached to may come (again); any other is a new start.
        if (rec.offset !== v.generation || rec.seq !== v.loadFirstSeq) {
          v.loadFirstSeq = rec.seq;
          this.ctx.onNewLoad(v, rec.offset, START_STATES[rec.length] ?? 'unknown');
        }
        v.expectKseq = rec.seq;
      }
      if (v.expectKseq !== undefined && rec.seq !== v.expectKseq) this.ctx.onGap(v, v.expectKseq, rec.seq);
      v.expectKseq = rec.seq + 1;
      let anchor = out.anchors.get(v);
      if (!anchor) {
        anchor = { generation: v.generation, kseqFirst: rec.seq, kseqEnd: rec.seq, streamFirst: v.nextStream, streamEnd: v.nextStream };
        out.anchors.set(v, anchor);
      }
      const plan = planRecord(rec);
      const width = streamWidth(rec, plan);
      const item: Item = { v, rec, plan, stream: v.nextStream, width };
      v.nextStream += width;
      anchor.kseqEnd = rec.seq + 1;
      anchor.streamEnd = v.nextStream;
      if (plan.kind === 'mark') {
        let mark = v.marks.get(rec.seq);
        if (!mark && v.markPlacing) {
          await v.markPlacing;
          mark = v.marks.get(rec.seq);
        }
        if (mark) {
          v.marks.delete(rec.seq);
          item.mark = mark;
        }
      }
      if (plan.kind === 'read' && covered.has(from + n)) item.covered = true;
      else if (plan.kind === 'read' || (plan.kind === 'mark' && !item.mark)) {
        const read = this.readBack(v, rec.offset, rec.length);
        read.catch(() => undefined); // awaited in order below
        item.read = read;
      }
      items.push(item);
    }
    return items;
  }

  private readBack(v: KernelVolume, offset: number, length: number): Promise<Buffer[]> {
    return Promise.all(
      piecesOf(offset, length).map((p) =>
        this.reads.run(async () => {
          const data = await readDirect(v.spec.path, p.offset, p.length);
          if (data.length !== p.length) throw new Error(`${v.spec.path}: short read at ${p.offset} (${data.length} of ${p.length} bytes)`);
          return data;
        }),
      ),
    );
  }

  /** Second pass, in stream order: records with their accuracy, bookkeeping, tags. */
  private async emit(item: Item, out: ConvertedBatch, nextKseq: number): Promise<void> {
    const { v, rec, plan } = item;
    const timeUs = Number(rec.timeNs / 1000n);
    let seq = item.stream;
    const push = (r: Omit<CapturedRecord, 'volumeId' | 'seq' | 'captureTimeUs' | 'accuracy'>): void => {
      const record: CapturedRecord = { volumeId: v.id, seq: seq++, captureTimeUs: timeUs, accuracy: 'none', ...r };
      out.records.push(record);
      if (r.data) out.dataBytes += r.data.length;
      if (timeUs > 0 && (out.oldestCaptureUs === 0 || timeUs < out.oldestCaptureUs)) out.oldestCaptureUs = timeUs;
    };
    const writes = (pieces: Buffer[]): void => {
      let offset = rec.offset;
      for (const data of pieces) {
        push({ kind: 'write', offset, length: data.length, data });
        offset += data.length;
      }
    };
    const first = out.records.length;
    switch (rec.kind) {
      case 'mode':
        this.noteMode(v, rec);
        break;
      case 'tag':
        out.tags.push({ volume: v, kseq: rec.seq, cut: { volumeId: v.id, seq: item.stream - 1, accuracy: v.tracker.at(rec.seq) } });
        break;
      default:
        break;
    }
    switch (plan.kind) {
      case 'skip':
        break;
      case 'write':
        writes(piecesOf(0, rec.length).map((p) => rec.data.subarray(p.offset, p.offset + p.length)));
        if (plan.fua) push({ kind: 'flush', offset: 0, length: 0 });
        v.touched?.addRange(rec.offset, rec.length);
        break;
      case 'read': {
        if (item.covered) {
          // The earlier read-back's data holds this write: same seqs, nothing to send again.
          for (let i = pieceCount(rec.length); i > 0; i--) push({ kind: 'noop', offset: 0, length: 0 });
          if (plan.fua) push({ kind: 'flush', offset: 0, length: 0 });
          v.touched?.addRange(rec.offset, rec.length);
          break;
        }
        const pieces = await (item.read as Promise<Buffer[]>);
        v.tracker.readBack(nextKseq);
        writes(pieces);
        if (plan.fua) push({ kind: 'flush', offset: 0, length: 0 });
        v.touched?.addRange(rec.offset, rec.length);
        break;
      }
      case 'discard':
        push({ kind: 'discard', offset: rec.offset, length: rec.length });
        v.touched?.addRange(rec.offset, rec.length);
        break;
      case 'flush':
        push({ kind: 'flush', offset: 0, length: 0 });
        break;
      case 'mark':
        if (item.mark) await this.emitMark(item, item.mark, out, push, nextKseq);
        else {
          writes(await (item.read as Promise<Buffer[]>));
          v.tracker.readBack(nextKseq);
          v.touched?.addRange(rec.offset, rec.length);
        }
        break;
    }
    const accuracy = v.tracker.at(rec.seq);
    for (let i = first; i < out.records.length; i++) out.records[i].accuracy = accuracy;
  }

  private async emitMark(
    item: Item,
    mark: PendingMark,
    out: ConvertedBatch,
    push: (r: Omit<CapturedRecord, 'volumeId' | 'seq' | 'captureTimeUs' | 'accuracy'>) => void,
    nextKseq: number,
  ): Promise<void> {
    const { v, rec } = item;
    const data = await mark.data;
    if (data.length !== rec.length) throw new Error(`${v.spec.path}: short read at ${rec.offset} (${data.length} of ${rec.length} bytes)`);
    const w = mark.walk;
    const same = mark.expect !== undefined && mark.expect.length > 0 && !v.touched?.has(mark.block) && blockHash(data).equals(mark.expect);
    if (same) push({ kind: 'noop', offset: 0, length: 0 });
    else {
      push({ kind: 'write', offset: rec.offset, length: data.length, data });
      w.progress.sentBytes += data.length;
    }
    w.progress.doneBytes += rec.length;
    out.marks.set(v, (out.marks.get(v) ?? 0) + 1);
    w.marksConverted++;
    mark.window.marksConverted++;
    mark.window.streamSeq = item.stream + item.width - 1;
    w.lastStream = mark.window.streamSeq;
    if (w.placedAll && w.marksConverted === w.marksPlaced) v.walkReadDone(w, nextKseq);
  }

  private noteMode(v: KernelVolume, rec: KernelRecord): void {
    const from = v.mode;
    v.mode = rec.mode;
    if (rec.mode === 'bitmap') {
      v.tracker.bitmapEntered();
      log.warn('capture fell back to the dirty bitmap (the agent is behind): points are not usable until it is drained', { volume: v.id });
    } else if (rec.mode === 'draining') {
      v.drainRequested = true;
    } else if (rec.mode === 'metadata') {
      log.warn('capture pool full: writes are read back from the volume (approximate points)', { volume: v.id });
    } else if (from !== 'data') {
      log.info('capture is back to full data', { volume: v.id, from });
    }
    v.changed.notify();
  }
}
