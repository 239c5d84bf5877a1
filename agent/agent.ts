import * as fs from 'fs';
import type * as http from 'http';
import type * as net from 'net';
import { ExitCode, FerryError } from '../common/errors';
import { log } from '../common/log';
import { limitHeapRetention } from '../common/memory';
import { Signal } from '../common/signal';
import { nowUs } from '../common/time';
import { createCaptureSource, degradedBootVolumes } from './capture/select';
import { EbpfSource } from './capture/ebpf-source';
import type { CaptureSource, ProtectedVolume } from './capture/types';
import type { AgentConfig } from './config';
import { Pipeline } from './pipeline/pipeline';
import { AgentState } from './state';
import { AgentStatus, VolumeStatus, volumeState, writeAgentStatus } from './status';
import { cutAppConsistent, cutWithVss, weakestCut } from './tags/app-tag';
import { startControlServer, startMetricsServer } from './control';
import type { ControlledAgent, TagResult } from './control-api';
import { ConnectionError, ReceiverConnection, VolumeProgress } from './transport/receiver-connection';
import { registerAgent } from './register';
import { ReconnectBackoff } from './transport/backoff';
import { connectionFailure } from './transport/failure';
import { HashRequests } from './transport/hash-requests';
import { probeVolume } from './volumes';
import { RepairDesk } from './repair-requests';
import { VerifyProgress, VerifyReport, VolumeVerifier } from './verify/verifier';
import type { DecodedFrame, ferry } from '../proto/frames';
import { validateGroupAbort, validateGroupCommit, validateGroupPrepare } from '../proto/validate-control';
import { AgentEventInput, EventOutbox } from './events';
import { emptyRoundStats, realClock, RoundParticipant } from './group-round';
import { PolicyKeeper } from './policy/policy-keeper';
import { Repeater } from './schedule';
import { HookFreezeQuiescer } from './tags/quiesce';

/** Longest hold of new writes when a kernel source cuts a multi-volume tag. */
const TAG_HOLD_MS = 300;
/** How long an operator's crash tag waits for the writes completed before it to be in the stream (ebpf: read back). */
const OPERATOR_TAG_SETTLE_MS = 30_000;
const HEARTBEAT_MS = 1000;
const STATUS_MS = 1000;
const RESYNC_LOG_MS = 5000;
const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 30_000;
const TAG_ACK_TIMEOUT_MS = 60_000;
/** Block offsets a verify report lists per kind at most. */
const VERIFY_MAX_LISTED = 100;
/**
 * Receiver refusals that retrying cannot fix. Everything else is retried with backoff, among
 * them AUTH_LOCKED and TOO_MANY_CONNECTIONS (the receiver is busy or holding back an address),
 * HANDSHAKE_TIMEOUT and IDLE_TIMEOUT (a slow or stalled link), and BAD_TIME (a clock that is
 * off until it is set right: the error stays in the status meanwhile).
 */
const FATAL_CODES = new Set(['AUTH_FAILED', 'FORBIDDEN_VOLUME', 'VOLUME_MISMATCH', 'BAD_VOLUME_ID', 'UNSUPPORTED_VERSION']);

/**
 * The protection agent ("mobility service"): captures the configured volumes, resyncs them
 * when needed and streams their changes to the receiver, reconnecting with backoff, cutting
 * crash-consistent tags every interval and app-consistent tags on request.
 */
export class Agent implements ControlledAgent {
  readonly state: AgentState;
  private source: CaptureSource | undefined;
  /** Why this capture source protects the machine (status). */
  private captureReason = '';
  private pipeline: Pipeline | undefined;
  private volumes: ProtectedVolume[] = [];
  private attached = false;
  private conn: ReceiverConnection | undefined;
  private stopping = false;
  private readonly stopSignal = new Signal();
  private fatal: FerryError | undefined;
  private timers: NodeJS.Timeout[] = [];
  private lastError: string | undefined;
  private agentId = '';
  private lastCrashCuts = '';
  private crashTagBusy = false;
  private lastCrashTagMs = 0;
  private lastAppTagMs = 0;
  private tagsSent = 0;
  private verifying = false;
  /** An application-consistent tag (operator's or scheduled) is being cut. */
  private appTagBusy = false;
  private readonly policy: PolicyKeeper;
  private readonly events = new EventOutbox();
  private rounds: RoundParticipant | undefined;
  /** The session's receiver speaks the configuration-server frames (it sent a policy or a round). */
  private controlCapable = false;
  private readonly crashTicker = new Repeater(() => void this.crashTag());
  private readonly appTicker = new Repeater(() => void this.scheduledAppPoint());
  /** Resyncs announced as events: per volume, the start time of the last one and whether its end was. */
  private readonly resyncSeen = new Map<string, { startedMs: number; finishAnnounced: boolean }>();
  private readonly resyncReasons = new Map<string, string>();
  /** Block-hash requests of resyncs, repairs and verifies: they outlive a connection. */
  private readonly hashes = new HashRequests();
  private readonly repairs = new RepairDesk({
    volumes: () => new Map(this.volumes.map((v) => [v.id, v])),
    run: (volumeId, ranges, reason) => {
      const source = this.source as CaptureSource;
      return source.repair(volumeId, ranges, this.hashes.request, reason);
    },
    send: (done) => {
      const conn = this.conn;
      if (!conn?.isOpen) return false;
      try {
        conn.send({ repairDone: done });
        return true;
      } catch {
        return false;
      }
    },
  });

  constructor(readonly config: AgentConfig) {
    this.state = new AgentState(config.stateDir);
    this.policy = new PolicyKeeper(this.state.policyFile, config.policy);
  }

  /** Runs until `stop` (resolves) or an unrecoverable error (rejects with a FerryError). */
  async run(): Promise<void> {
    limitHeapRetention();
    this.state.ensure();
    const credential = this.state.loadCredential() ?? (await this.registerFromConfig());
    this.agentId = credential.agentId;
    this.volumes = this.config.volumes.map(probeVolume);
    const capture = await createCaptureSource(this.config, this.state);
    this.source = capture.source;
    this.captureReason = capture.reason;
    for (const d of degradedBootVolumes(this.config, capture)) this.emit({ severity: 'warning', kind: 'capture-degraded', volumeId: d.volumeId, text: d.text });
    this.pipeline = new Pipeline(this.source, this.config.pipeline);
    this.pipeline.onFatalError((err) => this.fail(new FerryError(`replication stopped: ${err.message}`, ExitCode.failure)));
    this.pipeline.start();
    this.rounds = this.createRoundParticipant(this.source, this.pipeline);
    this.startTimers();
    const servers: Array<net.Server | http.Server> = [await startControlServer(this, this.state.socketPath)];
    if (this.config.metricsListen) servers.push(await startMetricsServer(this, this.config.metricsListen));
    log.info('agent started', { name: this.config.name, agent: this.agentId, capture: this.source.kind, captureReason: this.captureReason, volumes: this.volumes.map((v) => v.id) });
    try {
      await this.sessionLoop(credential.credential);
    } finally {
      for (const server of servers) server.close();
      await this.shutdown();
    }
    if (this.fatal) throw this.fatal;
  }

  private async registerFromConfig(): Promise<{ agentId: string; credential: Buffer }> {
    const file = this.config.passphraseFile;
    if (!file) {
      throw new FerryError(`this agent is not registered: run \`ferry agent register --config ${this.config.file}\` first`, ExitCode.auth);
    }
    const passphrase = fs.readFileSync(file, 'utf8').trim();
    return registerAgent(this.config, this.state, passphrase);
  }

  stop(): void {
    this.stopping = true;
    this.stopSignal.notify();
    void this.conn?.close();
  }

  private fail(err: FerryError): void {
    if (!this.fatal) this.fatal = err;
    log.error('agent stopping', { error: err.message });
    this.stop();
  }

  // ---- the session with the receiver -------------------------------------------------------

  private async sessionLoop(credential: Buffer): Promise<void> {
    const backoff = new ReconnectBackoff(MIN_BACKOFF_MS, MAX_BACKOFF_MS);
    while (!this.stopping) {
      try {
        await this.oneSession(credential, () => backoff.reset());
      } catch (err) {
        if (this.stopping) break;
        const cerr = err instanceof ConnectionError ? err : undefined;
        this.lastError = (err as Error).message;
        if (cerr && (cerr.kind === 'untrusted' || FATAL_CODES.has(cerr.code ?? ''))) {
          this.fail(connectionFailure(cerr));
          break;
        }
        if (!cerr) {
          this.fail(err instanceof FerryError ? err : new FerryError((err as Error).message, ExitCode.failure));
          break;
        }
      }
      if (this.stopping) break;
      const { stepMs, delayMs } = backoff.next();
      log.warn('no session with the receiver; retrying', { error: this.lastError, backoffMs: stepMs, retryInMs: delayMs });
      await this.stopSignal.wait(delayMs);
    }
  }

  /** One session: connect, log in, declare the volumes (then `established`), stream until it fails. */
  private async oneSession(credential: Buffer, established: () => void): Promise<void> {
    const { receiver } = this.config;
    const conn = await ReceiverConnection.connect(receiver.url, { fingerprint: receiver.fingerprint, caFile: receiver.caFile });
    this.conn = conn;
    // The receiver may ask for repairs as soon as it has logged the agent in.
    conn.on('frame', (frame: DecodedFrame) => {
      if (frame.repairRequest) this.repairs.onRequest(frame.repairRequest);
      else this.onControlFrame(conn, frame);
    });
    const pipeline = this.pipeline as Pipeline;
    let attachedToPipeline = false;
    try {
      await conn.login(this.agentId, credential);
      const durable = new Map<string, VolumeProgress>();
      for (const v of this.volumes) durable.set(v.id, await conn.declareVolume(v.id, v.sizeBytes, v.blockSize));
      established();
      if (!this.attached) await this.attachVolumes(durable);
      const failed = new Promise<ConnectionError>((resolve) => {
        if (conn.error) resolve(conn.error);
        conn.once('failed', resolve);
      });
      pipeline.attach(conn, durable);
      this.hashes.attach(conn);
      attachedToPipeline = true;
      this.lastError = undefined;
      log.info('connected to the receiver', { url: receiver.url, durable: Object.fromEntries([...durable].map(([id, p]) => [id, p.durableSeq])) });
      if (this.stopping) return;
      const err = await Promise.race([failed, this.stopSignal.wait(2 ** 31 - 1).then(() => undefined)]);
      if (err && !this.stopping) throw err;
    } finally {
      this.controlCapable = false;
      void this.rounds?.sessionLost();
      if (attachedToPipeline) {
        pipeline.detach(conn.error ?? new Error('session closed'));
        this.hashes.detach();
      }
      this.conn = undefined;
      await conn.close();
    }
  }

  /** First session: the source learns where each stream stands and starts any resync needed. */
  private async attachVolumes(durable: Map<string, VolumeProgress>): Promise<void> {
    const source = this.source as CaptureSource;
    for (const v of this.volumes) {
      const need = await source.attach(v, durable.get(v.id)?.durableSeq ?? 0);
      log.info(need.kind === 'none' ? 'volume protected, no resync needed' : 'volume needs a resync', { volume: v.id, resync: need.kind, reason: need.reason });
      if (need.kind !== 'none') {
        this.resyncReasons.set(v.id, need.reason);
        source.startResync(v.id, need.kind, this.hashes.request);
      }
    }
    this.attached = true;
    this.repairs.start();
  }

  // ---- timers: heartbeat, crash tags, status -----------------------------------------------

  private startTimers(): void {
    const every = (ms: number, fn: () => void): void => {
      const t = setInterval(fn, ms);
      t.unref();
      this.timers.push(t);
    };
    every(HEARTBEAT_MS, () => this.heartbeat());
    every(STATUS_MS, () => {
      this.noteResyncEvents();
      this.writeStatus();
    });
    this.applyEffectivePolicy();
    every(RESYNC_LOG_MS, () => this.logResyncProgress());
  }

  /** A crash-consistent tag across all volumes, skipped when no stream moved since the last. */
  private async crashTag(): Promise<void> {
    const source = this.source;
    const pipeline = this.pipeline;
    if (!source || !pipeline || !this.attached || !pipeline.isConnected || this.crashTagBusy || this.rounds?.isActive) return;
    this.crashTagBusy = true;
    try {
      const cuts = await source.tag(this.volumes.map((v) => v.id), { holdMs: TAG_HOLD_MS, quiesced: false });
      const key = JSON.stringify(cuts);
      if (key === this.lastCrashCuts) return;
      await withTimeout(pipeline.tag('crash', cuts), TAG_ACK_TIMEOUT_MS, 'the crash tag ack');
      this.lastCrashCuts = key;
      this.lastCrashTagMs = Date.now();
      this.tagsSent++;
    } catch (err) {
      log.debug('crash tag not confirmed', { error: (err as Error).message });
    } finally {
      this.crashTagBusy = false;
    }
  }

  /** A tag requested by an operator (or the app schedule): app-consistent (freeze + hooks) or a plain crash tag. */
  async tag(app: boolean, name: string): Promise<TagResult> {
    const source = this.source;
    const pipeline = this.pipeline;
    if (!source || !pipeline || !this.attached) throw new Error('the agent is still starting: no volume is attached yet');
    if (!pipeline.isConnected) throw new Error('the agent has no session with the receiver right now');
    const ids = this.volumes.map((v) => v.id);
    if (!app) {
      // An operator's point holds the writes completed before the request (the periodic crash
      // tags do not wait for them).
      const cuts = await source.tag(ids, { holdMs: TAG_HOLD_MS, quiesced: false, completedWritesByMs: Date.now() + OPERATOR_TAG_SETTLE_MS });
      const pointIds = await withTimeout(pipeline.tag('crash', cuts, name), TAG_ACK_TIMEOUT_MS, 'the tag ack');
      this.tagsSent++;
      return { pointIds, kind: 'crash', cuts, accuracy: weakestCut(cuts), appConsistent: false };
    }
    if (this.appTagBusy) throw new Error('an application-consistent tag is already being cut');
    if (this.rounds?.isActive) throw new Error('a group round is holding the writes right now');
    this.appTagBusy = true;
    try {
      return await this.appTag(source, pipeline, ids, name);
    } finally {
      this.appTagBusy = false;
    }
  }

  private async appTag(source: CaptureSource, pipeline: Pipeline, ids: string[], name: string): Promise<TagResult> {
    const mounts = this.mounts();
    const settings = { ...this.config.tags, holdMs: TAG_HOLD_MS };
    // Windows has no FIFREEZE: the VSS writers freeze and the filter cuts at that point.
    const cut = process.platform === 'win32' ? await cutWithVss(source, ids, mounts, settings) : await cutAppConsistent(source, ids, mounts, settings);
    // A cut that missed the freeze is still a good crash-consistent point: record it as one.
    const kind = cut.appConsistent ? 'app' : 'crash';
    if (!cut.appConsistent) {
      // No mount point is a standing choice of the config, not a fault: the event is for information.
      const severity = cut.reasonCode === 'no-mount' ? 'info' : 'warning';
      log[severity === 'info' ? 'info' : 'warn']('the app tag is not application-consistent: recording a crash point', { reasonCode: cut.reasonCode, reason: cut.note });
      this.emit({ severity, kind: 'app-point-failed', text: `${name ? `point "${name}"` : 'app point'} recorded as crash-consistent [${cut.reasonCode ?? 'unknown'}] ${cut.note ?? ''}`.trim() });
    }
    if (cut.postHookError) this.emit({ severity: 'warning', kind: 'app-point-failed', text: `the post-hook failed after the cut (the point stands): ${cut.postHookError}` });
    if (source instanceof EbpfSource && cut.frozenMs !== undefined) {
      // The freeze lasts as long as reading back what was written since the last drain.
      log.info(`ebpf app point: frozen ${cut.frozenMs} ms, read back ${source.settleReadBytes} bytes`, { frozenMs: cut.frozenMs, readBackBytes: source.settleReadBytes });
    }
    const pointIds = await withTimeout(pipeline.tag(kind, cut.cuts, name), TAG_ACK_TIMEOUT_MS, 'the tag ack');
    if (cut.appConsistent) this.lastAppTagMs = Date.now();
    this.tagsSent++;
    return {
      pointIds,
      kind,
      cuts: cut.cuts,
      accuracy: cut.accuracy,
      frozenMs: cut.frozenMs,
      appConsistent: cut.appConsistent,
      reasonCode: cut.reasonCode,
      reason: cut.note,
      postHookError: cut.postHookError,
    };
  }

  private mounts(): string[] {
    return this.config.volumes.flatMap((v) => (v.mount ? [v.mount] : []));
  }

  /** An app-consistent point the policy schedules; one that cannot be cut is reported as missed. */
  private async scheduledAppPoint(): Promise<void> {
    const interval = this.appTicker.periodMs;
    try {
      await this.tag(true, 'scheduled');
    } catch (err) {
      this.emit({ severity: 'warning', kind: 'app-point-missed', text: `the scheduled app-consistent point (every ${interval / 1000} s) was not cut: ${(err as Error).message}` });
    }
  }

  // ---- policy, group rounds, events --------------------------------------------------------

  /** Frames of the configuration-server role: the group policy and group rounds. */
  private onControlFrame(conn: ReceiverConnection, frame: DecodedFrame): void {
    if (!frame.policy && !frame.groupPrepare && !frame.groupCommit && !frame.groupAbort) return;
    if (!this.controlCapable) {
      this.controlCapable = true;
      this.flushEvents();
    }
    if (frame.policy) this.applyPolicy(frame.policy);
    else if (frame.groupPrepare) this.onGroupPrepare(conn, frame.groupPrepare);
    else if (frame.groupCommit) this.onRoundFrame('GroupCommit', () => void this.rounds?.commit(validateGroupCommit(frame.groupCommit as ferry.IGroupCommit).roundId));
    else if (frame.groupAbort) {
      this.onRoundFrame('GroupAbort', () => {
        const a = validateGroupAbort(frame.groupAbort as ferry.IGroupAbort);
        void this.rounds?.abort(a.roundId, a.reason);
      });
    }
  }

  private onGroupPrepare(conn: ReceiverConnection, p: ferry.IGroupPrepare): void {
    const rounds = this.rounds;
    if (!rounds) return;
    let valid;
    try {
      valid = validateGroupPrepare(p);
    } catch (err) {
      const error = (err as Error).message;
      log.warn('invalid GroupPrepare ignored', { error });
      const roundId = p.roundId ?? 0;
      if (Number.isSafeInteger(roundId) && roundId >= 1) this.sendQuietly(conn, { groupHeld: { roundId, ok: false, error } });
      return;
    }
    void rounds.prepare(valid);
  }

  private onRoundFrame(what: string, handle: () => void): void {
    try {
      handle();
    } catch (err) {
      log.warn(`invalid ${what} ignored`, { error: (err as Error).message });
    }
  }

  private createRoundParticipant(source: CaptureSource, pipeline: Pipeline): RoundParticipant {
    return new RoundParticipant({
      source,
      volumeIds: () => this.volumes.map((v) => v.id),
      // Windows has no FIFREEZE (its app points go through VSS): a round there runs the hooks only.
      quiescer: new HookFreezeQuiescer(this.config.tags, process.platform === 'win32' ? [] : this.mounts()),
      clock: realClock,
      held: (reply) => {
        const conn = this.conn;
        if (conn) this.sendQuietly(conn, { groupHeld: reply });
      },
      tag: (kind, cuts, roundId) => {
        withTimeout(pipeline.tag(kind, cuts, '', roundId), TAG_ACK_TIMEOUT_MS, 'the group tag ack').then(
          () => {
            this.tagsSent++;
            if (kind === 'app') this.lastAppTagMs = Date.now();
            else this.lastCrashTagMs = Date.now();
          },
          (err: unknown) => log.warn('group round tag not confirmed', { round: roundId, error: (err as Error).message }),
        );
      },
      event: (e) => this.emit(e),
      busy: () => {
        if (!this.attached) return 'the agent is still starting: no volume is attached yet';
        if (this.appTagBusy) return 'an application-consistent tag is being cut';
        return undefined;
      },
    });
  }

  private sendQuietly(conn: ReceiverConnection, frame: Parameters<ReceiverConnection['send']>[0]): boolean {
    if (!conn.isOpen) return false;
    try {
      conn.send(frame);
      return true;
    } catch {
      return false;
    }
  }

  /** A Policy frame: applied live when valid and newer; an invalid one keeps the current policy. */
  private applyPolicy(frame: ferry.IPolicy): void {
    const outcome = this.policy.offer(frame);
    if (outcome.kind === 'invalid') {
      log.warn('invalid policy ignored: keeping the current one', { error: outcome.error });
      this.emit({ severity: 'warning', kind: 'policy-invalid', text: `the policy from the receiver was refused, the current one stays: ${outcome.error}` });
      return;
    }
    if (outcome.kind === 'stale') {
      log.debug('policy not applied', { reason: outcome.reason });
      return;
    }
    const e = outcome.effective;
    log.info('policy applied', {
      group: e.groupId || undefined,
      revision: e.revision,
      crashIntervalMs: `${e.crashIntervalMs.value} (${e.crashIntervalMs.sourceLabel})`,
      appIntervalMs: `${e.appIntervalMs.value} (${e.appIntervalMs.sourceLabel})`,
      rpoThresholdMs: `${e.rpoThresholdMs.value} (${e.rpoThresholdMs.sourceLabel})`,
    });
    this.applyEffectivePolicy();
  }

  private applyEffectivePolicy(): void {
    const e = this.policy.effective;
    this.crashTicker.set(e.crashIntervalMs.value);
    this.appTicker.set(e.appIntervalMs.value);
  }

  private emit(e: AgentEventInput): void {
    this.events.push(e);
    this.flushEvents();
  }

  /** Sends queued events, once the session's receiver is known to take them (an older one would refuse the frame). */
  private flushEvents(): void {
    const conn = this.conn;
    if (!conn || !this.controlCapable) return;
    this.events.flush((agentEvent) => this.sendQuietly(conn, { agentEvent }));
  }

  private heartbeat(): void {
    const pipeline = this.pipeline;
    if (!pipeline) return;
    const volumes: ferry.IVolumeReport[] = this.status().volumes.map((v) => ({
      volumeId: v.volumeId,
      state: v.state,
      mode: v.mode,
      resyncPercent: v.resync && !v.resync.finished ? Math.floor(v.resync.percent) : 0,
    }));
    pipeline.heartbeat(volumes);
    this.flushEvents();
  }

  /** Resync started / finished events, from what the source reports. */
  private noteResyncEvents(): void {
    const source = this.source;
    if (!source || !this.attached) return;
    for (const v of this.volumes) {
      const p = source.resyncProgress(v.id);
      if (!p) continue;
      let seen = this.resyncSeen.get(v.id);
      if (!seen || seen.startedMs !== p.startedMs) {
        seen = { startedMs: p.startedMs, finishAnnounced: false };
        this.resyncSeen.set(v.id, seen);
        const reason = this.resyncReasons.get(v.id);
        this.emit({ severity: 'info', kind: 'resync-started', volumeId: v.id, text: `${p.kind} resync of ${v.id} started${reason ? `: ${reason}` : ''}` });
      }
      if (p.finishedMs !== undefined && !seen.finishAnnounced) {
        seen.finishAnnounced = true;
        const seconds = ((p.finishedMs - p.startedMs) / 1000).toFixed(1);
        this.emit({ severity: 'info', kind: 'resync-finished', volumeId: v.id, text: `${p.kind} resync of ${v.id} finished in ${seconds} s (${p.sentBytes} bytes of block data sent)` });
      }
    }
  }

  // ---- online verify -----------------------------------------------------------------------

  /**
   * `ferry agent verify`: compares every block of the volumes (or of one) with the replica while
   * they are in use, and repairs real divergence through the capture source unless told not to.
   */
  async verify(request: { volumeId?: string; repair: boolean }, onProgress: (p: VerifyProgress) => void, cancelled: () => boolean = () => false): Promise<VerifyReport> {
    const source = this.source;
    const pipeline = this.pipeline;
    if (!source || !pipeline || !this.attached) throw new FerryError('the agent is still starting: no volume is attached yet', ExitCode.notReady);
    if (!pipeline.isConnected) throw new FerryError('the agent has no session with the receiver right now', ExitCode.notReady);
    const volumes = request.volumeId === undefined ? this.volumes : this.volumes.filter((v) => v.id === request.volumeId);
    if (volumes.length === 0) {
      throw new FerryError(`unknown volume ${request.volumeId ?? ''}: this agent protects ${this.volumes.map((v) => v.id).join(', ')}`, ExitCode.usage);
    }
    for (const v of volumes) {
      const r = source.resyncProgress(v.id);
      if (r && r.finishedMs === undefined) {
        const percent = r.totalBytes > 0 ? ((100 * r.doneBytes) / r.totalBytes).toFixed(0) : '0';
        throw new FerryError(`volume ${v.id} is resyncing (${percent}%): verify it once the resync is done`, ExitCode.notReady);
      }
    }
    if (this.verifying) throw new FerryError('a verify is already running on this agent', ExitCode.notReady);
    this.verifying = true;
    try {
      const deps = { source, remote: this.hashes.request, whenDurable: (id: string, seq: number) => pipeline.whenDurable(id, seq), isStopping: () => this.stopping || cancelled() };
      const reports = [];
      for (const v of volumes) {
        log.info('verify started', { volume: v.id, repair: request.repair });
        const report = await new VolumeVerifier(deps, v, { repair: request.repair, maxListed: VERIFY_MAX_LISTED, onProgress }).run();
        const fields = { volume: v.id, diverged: report.divergedBlocks, busy: report.busyBlocks, repaired: report.repaired, seconds: report.durationMs / 1000 };
        if (report.divergedBlocks > 0) log.warn('verify found divergence between the source and the replica', { ...fields, offsets: report.divergedOffsets.slice(0, 10) });
        else log.info('verify found no divergence', fields);
        reports.push(report);
      }
      return { volumes: reports };
    } finally {
      this.verifying = false;
    }
  }

  // ---- status ----------------------------------------------------------------------------------

  status(): AgentStatus {
    const pipeline = this.pipeline;
    const source = this.source;
    const connected = pipeline?.isConnected ?? false;
    const throttled = pipeline?.isThrottled ?? false;
    const now = nowUs();
    const volumes: VolumeStatus[] = this.volumes.map((v) => {
      const p = pipeline?.volumeStatus(v.id);
      const progress = this.attached ? source?.resyncProgress(v.id) : undefined;
      const repair = this.attached ? source?.repairProgress(v.id) : undefined;
      const mode = this.attached && source ? source.mode(v.id) : 'starting';
      const resyncing = progress !== undefined && progress.finishedMs === undefined;
      const repairing = repair !== undefined && repair.finishedMs === undefined;
      const state = volumeState({ connected, resyncing, repairing, throttled, kind: source?.kind, mode });
      const oldest = p?.oldestPendingCaptureUs ?? 0;
      const elapsedS = progress ? Math.max(0.001, ((progress.finishedMs ?? Date.now()) - progress.startedMs) / 1000) : 0;
      const rate = progress ? progress.doneBytes / elapsedS : 0;
      return {
        volumeId: v.id,
        path: v.path,
        sizeBytes: v.sizeBytes,
        state,
        mode,
        rpoSeconds: oldest > 0 ? Math.max(0, now - oldest) / 1e6 : 0,
        backlogBytes: p?.backlogBytes ?? 0,
        capturedSeq: p?.capturedSeq ?? 0,
        durableSeq: p?.durableSeq ?? 0,
        resync: progress && {
          kind: progress.kind,
          percent: progress.totalBytes > 0 ? (100 * progress.doneBytes) / progress.totalBytes : 100,
          doneBytes: progress.doneBytes,
          totalBytes: progress.totalBytes,
          sentBytes: progress.sentBytes,
          rateBytesPerSecond: rate,
          etaSeconds: resyncing && rate > 0 ? (progress.totalBytes - progress.doneBytes) / rate : null,
          finished: !resyncing,
        },
        repair: repair && {
          reason: repair.reason,
          percent: repair.totalBytes > 0 ? (100 * repair.doneBytes) / repair.totalBytes : 100,
          doneBytes: repair.doneBytes,
          totalBytes: repair.totalBytes,
          sentBytes: repair.sentBytes,
          finished: !repairing,
        },
      };
    });
    return {
      pid: process.pid,
      updatedMs: Date.now(),
      name: this.config.name,
      agentId: this.agentId,
      receiver: this.config.receiver.url,
      capture: source?.kind ?? 'scan',
      captureReason: this.captureReason,
      connected,
      throttled,
      lastError: this.lastError,
      sentBytes: pipeline?.sent.total ?? 0,
      throughputBytesPerSecond: pipeline?.sent.bytesPerSecond() ?? 0,
      rssBytes: process.memoryUsage.rss(),
      points: { lastCrashTagMs: this.lastCrashTagMs, lastAppTagMs: this.lastAppTagMs, tagsSent: this.tagsSent },
      policy: this.policy.effective,
      rounds: this.rounds?.stats() ?? emptyRoundStats(),
      events: { queued: this.events.queued, dropped: this.events.dropped },
      volumes,
    };
  }

  private writeStatus(): void {
    try {
      writeAgentStatus(this.state.statusFile, this.status());
    } catch (err) {
      log.warn('cannot write the status file', { error: (err as Error).message });
    }
  }

  private logResyncProgress(): void {
    for (const v of this.status().volumes) {
      if (v.state !== 'resyncing' || !v.resync) continue;
      log.info('resync progress', {
        volume: v.volumeId,
        percent: Number(v.resync.percent.toFixed(1)),
        rateMBps: Number((v.resync.rateBytesPerSecond / 1e6).toFixed(1)),
        etaSeconds: v.resync.etaSeconds === null ? null : Math.round(v.resync.etaSeconds),
      });
    }
  }

  private async shutdown(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.crashTicker.stop();
    this.appTicker.stop();
    await this.rounds?.sessionLost();
    await this.pipeline?.stop();
    this.hashes.stop();
    await this.source?.close();
    this.writeStatus();
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    timer.unref();
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
