import { writePass, WritePass } from '../redo/write-pass';
import { ApplyEngine, EngineFiles, StepInput } from './apply-engine';

/** A step's change sets as they cross to an apply thread: frames packed in one buffer. */
export interface PackedStep {
  records: Array<{ firstSeq: number; lastSeq: number; afterSeq: number; segment: number; recordOffset: number; start: number; end: number }>;
  frames: Uint8Array;
  autoAfterUs: number;
  capturedUs: number;
}

export type EngineRequest =
  | { op: 'open'; files: EngineFiles }
  | { op: 'rollBack'; volumeId: string; seq: number; tolerateLost: boolean }
  | { op: 'recover'; volumeId: string; checkpointSeq: number }
  | { op: 'step'; volumeId: string; step: PackedStep }
  | { op: 'sync'; volumeId: string }
  | { op: 'prune'; volumeId: string; seq: number }
  | { op: 'hashes'; volumeId: string; offset: number; blockSize: number; count: number }
  | { op: 'close'; volumeId: string }
  /** A redo advance's write pass (receiver/redo/write-pass.ts): written and summed here. */
  | { op: 'writePass'; pass: WritePass };

/** An error as it crosses threads: what classifyStorageError and the logs look at. */
export interface WireError {
  name: string;
  message: string;
  code?: string;
}

export interface EngineReply {
  id: number;
  value?: unknown;
  error?: WireError;
  /** The volume's undo journal segments after the request (for status). */
  journalSegments?: number;
}

export function toWireError(err: unknown): WireError {
  const e = err as { name?: unknown; message?: unknown; code?: unknown; failure?: { code?: unknown } };
  const code = typeof e.code === 'string' ? e.code : typeof e.failure?.code === 'string' ? e.failure.code : undefined;
  return { name: typeof e.name === 'string' ? e.name : 'Error', message: typeof e.message === 'string' ? e.message : String(err), code };
}

export function fromWireError(w: WireError): Error {
  const err = new Error(w.message) as Error & { code?: string };
  err.name = w.name;
  if (w.code !== undefined) err.code = w.code;
  return err;
}

function unpack(step: PackedStep): StepInput {
  const frames = Buffer.from(step.frames.buffer, step.frames.byteOffset, step.frames.byteLength);
  return {
    records: step.records.map((r) => ({ firstSeq: r.firstSeq, lastSeq: r.lastSeq, afterSeq: r.afterSeq, segment: r.segment, recordOffset: r.recordOffset, frame: frames.subarray(r.start, r.end) })),
    autoAfterUs: step.autoAfterUs,
    capturedUs: step.capturedUs,
  };
}

/** The engines of the volumes one apply thread serves, and the requests they answer. */
export class EngineHost {
  private readonly engines = new Map<string, ApplyEngine>();

  handle(id: number, req: EngineRequest): EngineReply {
    try {
      const value = this.run(req);
      if (req.op === 'writePass') return { id, value };
      const volumeId = req.op === 'open' ? req.files.volumeId : req.volumeId;
      return { id, value, journalSegments: this.engines.get(volumeId)?.journalSegments };
    } catch (err) {
      return { id, error: toWireError(err) };
    }
  }

  private engine(volumeId: string): ApplyEngine {
    const engine = this.engines.get(volumeId);
    if (!engine) throw new Error(`volume ${volumeId} is not open in this apply thread`);
    return engine;
  }

  private run(req: EngineRequest): unknown {
    switch (req.op) {
      case 'open': {
        this.closeQuietly(req.files.volumeId);
        const engine = ApplyEngine.open(req.files);
        this.engines.set(req.files.volumeId, engine);
        return engine.opened;
      }
      case 'rollBack':
        return this.engine(req.volumeId).rollBackTo(req.seq, req.tolerateLost);
      case 'recover':
        return this.engine(req.volumeId).recover(req.checkpointSeq);
      case 'step':
        return this.engine(req.volumeId).step(unpack(req.step));
      case 'sync':
        this.engine(req.volumeId).sync();
        return undefined;
      case 'prune':
        return this.engine(req.volumeId).pruneThrough(req.seq);
      case 'hashes':
        return this.engine(req.volumeId).hashes(req.offset, req.blockSize, req.count);
      case 'writePass':
        return writePass(req.pass);
      case 'close': {
        const engine = this.engines.get(req.volumeId);
        this.engines.delete(req.volumeId);
        engine?.close();
        return undefined;
      }
    }
  }

  private closeQuietly(volumeId: string): void {
    const engine = this.engines.get(volumeId);
    this.engines.delete(volumeId);
    try {
      engine?.close();
    } catch {
      // replaced by a fresh open
    }
  }
}
