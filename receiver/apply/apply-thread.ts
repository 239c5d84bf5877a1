import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { MessageChannel, MessagePort, receiveMessageOnPort, Worker } from 'worker_threads';
import { log } from '../../common/log';
import { EngineFiles, EngineOpened, RolledBack, StepInput, StepOutput } from './apply-engine';
import { PassSums, PassTicket, PassWriter, WritePass } from '../redo/write-pass';
import { EngineHost, EngineReply, EngineRequest, fromWireError, PackedStep } from './engine-host';

/** Built next to this file; from TypeScript sources (tests) the built copy under dist/. */
const WORKER_SCRIPTS = [path.join(__dirname, 'apply-worker.js'), path.resolve(__dirname, '../../dist/receiver/apply/apply-worker.js')];
/** A synchronous request gives up on a thread that has not answered in this long. */
const SYNC_WAIT_LIMIT_MS = 10 * 60 * 1000;

/** A request sent: `reply` is set as soon as it is answered (before `answered` resolves). */
interface Posted {
  reply?: EngineReply;
  readonly answered: Promise<EngineReply>;
}

/** Where engine requests go: a worker thread, or this thread when none can run. */
interface Channel {
  call(req: EngineRequest, transfer: ArrayBuffer[]): Promise<EngineReply>;
  callSync(req: EngineRequest): EngineReply;
  post(req: EngineRequest, transfer: ArrayBuffer[]): Posted;
  /** Waits on this thread until `posted` is answered. */
  waitFor(posted: Posted, op: string): EngineReply;
  readonly failed: boolean;
  volumes: number;
}

/** This thread does the work (no worker script, or FERRY_APPLY_THREADS=0). */
class LocalChannel implements Channel {
  private readonly host = new EngineHost();
  private nextId = 1;
  volumes = 0;

  call(req: EngineRequest): Promise<EngineReply> {
    return Promise.resolve(this.callSync(req));
  }

  callSync(req: EngineRequest): EngineReply {
    return this.host.handle(this.nextId++, req);
  }

  post(req: EngineRequest): Posted {
    const reply = this.callSync(req);
    return { reply, answered: Promise.resolve(reply) };
  }

  waitFor(posted: Posted): EngineReply {
    return posted.reply as EngineReply;
  }

  get failed(): boolean {
    return false;
  }
}

/**
 * A worker thread serving engines. Requests are answered in order; a synchronous request
 * blocks this thread (Atomics.wait on a shared counter the worker bumps after each reply)
 * until its answer, taking any earlier answers off the port on the way.
 */
class WorkerChannel implements Channel {
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private readonly signal = new Int32Array(new SharedArrayBuffer(4));
  private readonly pending = new Map<number, (reply: EngineReply) => void>();
  private nextId = 1;
  private dead: Error | undefined;
  volumes = 0;

  constructor(script: string) {
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    this.worker = new Worker(script, { workerData: { port: port2, signal: this.signal }, transferList: [port2] });
    this.worker.unref();
    this.port.on('message', (reply: EngineReply) => this.deliver(reply));
    this.port.unref();
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => this.fail(new Error(`apply thread exited (code ${code})`)));
  }

  get failed(): boolean {
    return this.dead !== undefined;
  }

  /** Stops the thread; its volumes fail as if it had died. */
  async terminate(): Promise<void> {
    await this.worker.terminate();
    this.fail(new Error('apply thread stopped'));
  }

  call(req: EngineRequest, transfer: ArrayBuffer[]): Promise<EngineReply> {
    if (this.dead) return Promise.reject(this.dead);
    return this.post(req, transfer).answered;
  }

  callSync(req: EngineRequest): EngineReply {
    if (this.dead) throw this.dead;
    return this.waitFor(this.post(req, []), req.op);
  }

  post(req: EngineRequest, transfer: ArrayBuffer[]): Posted {
    if (this.dead) {
      const reply: EngineReply = { id: 0, error: { name: 'Error', message: `apply thread failed: ${this.dead.message}` } };
      return { reply, answered: Promise.resolve(reply) };
    }
    const id = this.nextId++;
    let resolveAnswer: (reply: EngineReply) => void = () => undefined;
    const posted: Posted = { answered: new Promise<EngineReply>((resolve) => (resolveAnswer = resolve)) };
    this.pending.set(id, (reply) => {
      posted.reply = reply;
      resolveAnswer(reply);
    });
    this.port.ref();
    this.port.postMessage({ id, req }, transfer);
    return posted;
  }

  waitFor(posted: Posted, op: string): EngineReply {
    const deadline = Date.now() + SYNC_WAIT_LIMIT_MS;
    for (;;) {
      const seen = Atomics.load(this.signal, 0);
      for (let msg = receiveMessageOnPort(this.port); msg; msg = receiveMessageOnPort(this.port)) this.deliver(msg.message as EngineReply);
      if (posted.reply) return posted.reply;
      if (Date.now() > deadline) throw new Error(`the apply thread did not answer ${op} in ${SYNC_WAIT_LIMIT_MS / 1000} s`);
      Atomics.wait(this.signal, 0, seen, 1000);
    }
  }

  private deliver(reply: EngineReply): void {
    const resolve = this.pending.get(reply.id);
    this.pending.delete(reply.id);
    if (this.pending.size === 0) this.port.unref();
    resolve?.(reply);
  }

  private fail(err: Error): void {
    if (this.dead) return;
    this.dead = err;
    log.error('apply thread failed: its volumes stop applying until they recover', { error: err.message });
    for (const [id, resolve] of this.pending) resolve({ id, error: { name: 'Error', message: `apply thread failed: ${err.message}` } });
    this.pending.clear();
    this.port.unref();
  }
}

function threadCount(): number {
  const set = process.env.FERRY_APPLY_THREADS;
  if (set !== undefined && /^\d+$/.test(set)) return Math.min(8, Number(set));
  return Math.min(4, Math.max(1, os.availableParallelism() - 1));
}

/** The process's apply threads, shared by every volume; a failed one is replaced. */
class ApplyThreads {
  private readonly channels: Array<WorkerChannel | undefined> = [];
  private local: LocalChannel | undefined;
  private readonly script = WORKER_SCRIPTS.find((f) => fs.existsSync(f));
  private readonly count = threadCount();

  /** The least loaded channel (a failed worker is replaced first). */
  assign(): Channel {
    if (this.count === 0 || !this.script) {
      this.local ??= new LocalChannel();
      return this.local;
    }
    let best: WorkerChannel | undefined;
    for (let i = 0; i < this.count; i++) {
      let ch = this.channels[i];
      if (!ch || ch.failed) {
        ch = new WorkerChannel(this.script);
        this.channels[i] = ch;
      }
      if (!best || ch.volumes < best.volumes) best = ch;
    }
    return best as WorkerChannel;
  }

  async terminate(): Promise<void> {
    await Promise.all(this.channels.map((ch) => ch?.terminate()));
  }
}

let threads: ApplyThreads | undefined;

/** Stops every apply thread (volumes still open fail and recover on fresh ones, as after a crash of the thread). */
export async function stopApplyThreads(): Promise<void> {
  await threads?.terminate();
}

function unwrap<T>(reply: EngineReply): T {
  if (reply.error) throw fromWireError(reply.error);
  return reply.value as T;
}

function pack(input: StepInput): { step: PackedStep; transfer: ArrayBuffer[] } {
  const total = input.records.reduce((n, r) => n + r.frame.length, 0);
  const frames = new Uint8Array(new ArrayBuffer(total));
  let pos = 0;
  const records = input.records.map((r) => {
    frames.set(r.frame, pos);
    const at = { firstSeq: r.firstSeq, lastSeq: r.lastSeq, afterSeq: r.afterSeq, segment: r.segment, recordOffset: r.recordOffset, start: pos, end: pos + r.frame.length };
    pos += r.frame.length;
    return at;
  });
  return { step: { records, frames, autoAfterUs: input.autoAfterUs, capturedUs: input.capturedUs }, transfer: [frames.buffer as ArrayBuffer] };
}

/**
 * The apply side of one volume as the ingest thread sees it: every method forwards to the
 * volume's ApplyEngine on an apply thread. `step` is asynchronous (ingest goes on meanwhile);
 * the others wait for the thread, which answers after the step it is running.
 */
export class VolumeEngine {
  private segments = 0;
  private readonly volumeId: string;

  private constructor(
    private channel: Channel,
    private readonly files: EngineFiles,
  ) {
    this.volumeId = files.volumeId;
  }

  static open(files: EngineFiles): { engine: VolumeEngine; opened: EngineOpened } {
    threads ??= new ApplyThreads();
    const channel = threads.assign();
    const engine = new VolumeEngine(channel, files);
    const opened = engine.sync<EngineOpened>({ op: 'open', files });
    channel.volumes++;
    return { engine, opened };
  }

  get journalSegments(): number {
    return this.segments;
  }

  private sync<T>(req: EngineRequest): T {
    const reply = this.channel.callSync(req);
    if (reply.journalSegments !== undefined) this.segments = reply.journalSegments;
    return unwrap<T>(reply);
  }

  rollBackTo(seq: number, tolerateLost: boolean): RolledBack {
    return this.sync<RolledBack>({ op: 'rollBack', volumeId: this.volumeId, seq, tolerateLost });
  }

  /**
   * Rolls back to `checkpointSeq` after a failed step (see ApplyEngine.recover). When the
   * volume's apply thread itself failed, the volume is opened again on a fresh one.
   */
  recover(checkpointSeq: number): number {
    if (this.channel instanceof WorkerChannel && this.channel.failed) {
      this.channel.volumes--;
      this.channel = (threads as ApplyThreads).assign();
      this.sync<EngineOpened>({ op: 'open', files: this.files });
      this.channel.volumes++;
    }
    return this.sync<number>({ op: 'recover', volumeId: this.volumeId, checkpointSeq });
  }

  async step(input: StepInput): Promise<StepOutput> {
    const { step, transfer } = pack(input);
    const reply = await this.channel.call({ op: 'step', volumeId: this.volumeId, step }, transfer);
    if (reply.journalSegments !== undefined) this.segments = reply.journalSegments;
    return unwrap<StepOutput>(reply);
  }

  /** The same as `step`, waiting here (tests and tools that apply without an event loop). */
  stepSync(input: StepInput): StepOutput {
    return this.sync<StepOutput>({ op: 'step', volumeId: this.volumeId, step: pack(input).step });
  }

  syncData(): void {
    this.sync<undefined>({ op: 'sync', volumeId: this.volumeId });
  }

  async syncDataAsync(): Promise<void> {
    unwrap<undefined>(await this.channel.call({ op: 'sync', volumeId: this.volumeId }, []));
  }

  pruneThrough(seq: number): number {
    return this.sync<number>({ op: 'prune', volumeId: this.volumeId, seq });
  }

  /** Journal segments are unlinked on the apply thread: quick, nothing to slice. */
  async pruneThroughAsync(seq: number): Promise<number> {
    return this.pruneThrough(seq);
  }

  /** The undo replica holds everything through the checkpoint: the spool is needed after it only. */
  spoolNeededAfter(checkpointSeq: number): number {
    return checkpointSeq;
  }

  /** Undo keeps its history in the journal, apart from the spool: no spool segment is retention. */
  get retainsSpool(): boolean {
    return false;
  }

  /** Undo has no base: how far back points go is the journal's (and the catalog's) to say. */
  get oldestRetainedSeq(): number {
    return 0;
  }

  /** Block hashes of the replica, answered after the step in flight (this thread goes on meanwhile). */
  async hashesAsync(offset: number, blockSize: number, count: number): Promise<Buffer> {
    const u8 = unwrap<Uint8Array>(await this.channel.call({ op: 'hashes', volumeId: this.volumeId, offset, blockSize, count }, []));
    return Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
  }

  close(): void {
    this.channel.volumes--;
    this.sync<undefined>({ op: 'close', volumeId: this.volumeId });
  }
}

/**
 * A redo volume's pass writer on an apply thread (the volume's advance then neither writes
 * the replica nor sums its blocks on the ingest thread). `release` when the volume closes.
 */
export class HostedPassWriter implements PassWriter {
  private channel: Channel;
  private readonly posted = new WeakMap<PassTicket, { posted: Posted; channel: Channel }>();

  constructor() {
    threads ??= new ApplyThreads();
    this.channel = threads.assign();
    this.channel.volumes++;
  }

  submit(pass: WritePass): PassTicket {
    if (this.channel.failed) {
      // The thread died (its volumes recover on fresh ones): later passes go to a live one.
      this.channel.volumes--;
      this.channel = (threads as ApplyThreads).assign();
      this.channel.volumes++;
    }
    const posted = this.channel.post({ op: 'writePass', pass }, [pass.data.buffer as ArrayBuffer]);
    const ticket: PassTicket = { done: posted.answered.then((reply) => settle(ticket, reply)) };
    if (posted.reply) settle(ticket, posted.reply);
    this.posted.set(ticket, { posted, channel: this.channel });
    return ticket;
  }

  wait(ticket: PassTicket): PassSums {
    const sent = this.posted.get(ticket);
    if (!ticket.result && !ticket.error && sent) settle(ticket, sent.channel.waitFor(sent.posted, 'writePass'));
    if (ticket.error) throw ticket.error;
    return ticket.result as PassSums;
  }

  release(): void {
    this.channel.volumes--;
  }
}

function settle(ticket: PassTicket, reply: EngineReply): void {
  if (ticket.result || ticket.error) return;
  if (reply.error) ticket.error = fromWireError(reply.error);
  else ticket.result = reply.value as PassSums;
}
