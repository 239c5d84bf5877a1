import { randomBytes } from 'crypto';
import type { WebSocket } from 'ws';
import { log } from '../common/log';
import { nowUs } from '../common/time';
import { ErrorCode, ProtocolError } from '../proto/errors';
import { decodeFrame, DecodedFrame, encodeFrame, errorFrame, ferry, OutgoingFrame } from '../proto/frames';
import { checkVolumeId } from '../proto/check-ids';
import { ScratchBuffer } from '../proto/payload';
import {
  checkChangeSetTimes,
  checkProof,
  checkTagTime,
  timeWindow,
  TimeWindow,
  validateChangeSet,
  validateHashRequest,
  validateHeartbeat,
  validateHello,
  validateRepairDone,
  validateTag,
  validateVolumeInfo,
  ValidHello,
} from '../proto/validate';
import { computeProof, newCredential, newNonce, proofMatches } from '../proto/auth';
import { tagGroupRound, validateAgentEvent, validateGroupHeld, validateVolumeReports } from '../proto/validate-control';
import type { AgentControl, SessionControl } from './agent-link';
import type { AuthIntent, AuthThrottle } from './auth-throttle';
import type { RepairRow } from './catalog';
import type { ReceiverCore, VolumeAttachment } from './core';
import { admitFailback, FailbackAccess, FailbackSession, FailbackSessions, FailbackTuning } from './failback-sender';
import type { VolumeHold, VolumeListener, VolumeSeqs } from './volume-events';
import type { VolumeStore } from './volume-store';

type State = 'hello' | 'proof' | 'ready' | 'closed';

/** What a session needs from the receiver's limits on clients. */
export interface SessionPolicy {
  /** The peer's address without port: the key of login lockouts. */
  peerAddress: string;
  auth: AuthThrottle;
  /** How far past the receiver's clock a capture or tag time may be. */
  maxTimeAheadUs: number;
  /** After an Error frame, how long the peer has to close before the socket is destroyed. */
  closeGraceMs: number;
  /** Called once, when the agent has proved who it is. */
  onLogin(): void;
  /** The configuration server: hears what the agent reports and may send it frames. */
  control: SessionControl;
  /** Why this machine's stream is refused now (recovery: it is failed over), or undefined. */
  streamRefusal?(agentId: string): string | undefined;
  /** The recovery service's side of failback sessions; without it, a failback login is refused. */
  failback?: FailbackAccess;
  /** Pacing of failback passes (tests make the pause short). */
  failbackTuning?: FailbackTuning;
  /** The receiver's failback sessions: a machine's newer one takes over from an older one. */
  failbackSessions?: FailbackSessions;
}

/**
 * Where change sets are decompressed to be validated at ingest. Nothing keeps that data (the
 * volume keeps the frame, and apply decompresses it again into its own arena), so one buffer
 * reused frame after frame spares a fresh multi-megabyte buffer per change set.
 */
const VALIDATION_SCRATCH = new ScratchBuffer();

/** The delay a Throttle frame asks of a held agent. */
const THROTTLE_DELAY_MS = 200;

/**
 * One agent connection: handshake (HMAC challenge), then volumes, change sets and tags.
 * Frames are handled in arrival order; anything invalid ends the session with an Error
 * frame carrying a stable code, and nothing of that frame reaches the disk.
 * The session alone speaks to its agent: what the core reports about the volumes it declared
 * (their events) becomes Ack, Throttle, RepairRequest or Error frames here.
 */
export class Session {
  private state: State = 'hello';
  private hello: ValidHello | undefined;
  private nonce: Buffer = Buffer.alloc(0);
  private closeTimer: NodeJS.Timeout | undefined;
  agentId = '';
  /** The volumes declared in this session, in declaration order. */
  private readonly volumes = new Map<string, VolumeAttachment>();
  /** Each declared volume's hold, as its events last said. */
  private readonly holds = new Map<string, VolumeHold>();
  private throttle: string | undefined;
  /** Set from login to close. */
  private control: AgentControl | undefined;
  /** Set when the login asked for a failback session: it then takes every frame. */
  private failback: FailbackSession | undefined;

  /** A logged-in replication session of this agent (not a failback session, not refused). */
  streams(agentId: string): boolean {
    return this.agentId === agentId && this.state === 'ready' && this.failback === undefined;
  }
  /** When a failure of the control plane was last logged (they are logged at most every 30 s). */
  private controlFailureLoggedMs = 0;
  private readonly volumeEvents: VolumeListener = {
    durable: (seqs) => this.ack(seqs),
    applied: (seqs) => this.ack(seqs),
    throttle: (hold) => this.noteHold(hold),
    failed: ({ error }) => this.fail(error),
    repair: (repair) => this.sendRepair(repair),
  };

  constructor(
    private readonly ws: WebSocket,
    private readonly core: ReceiverCore,
    readonly peer: string,
    private readonly policy: SessionPolicy,
  ) {}

  send(frame: OutgoingFrame): void {
    if (this.state === 'closed') return;
    this.ws.send(encodeFrame(frame));
  }

  private ack(seqs: VolumeSeqs): void {
    this.send({ ack: { volumes: [seqs] } });
  }

  private sendRepair(repair: RepairRow): void {
    this.send({ repairRequest: { volumeId: repair.volumeId, requestId: repair.id, ranges: repair.ranges, reason: repair.reason } });
  }

  /** A volume's hold changed: the agent is held while any of its volumes says so. */
  private noteHold(hold: VolumeHold): void {
    if (!this.volumes.has(hold.volumeId)) return;
    this.holds.set(hold.volumeId, hold);
    this.refreshThrottle();
  }

  /** Holds the agent's change sets or lets them go; tells it when the reason changes. */
  private refreshThrottle(): void {
    const held = this.throttle !== undefined;
    let reason: string | undefined;
    let spoolBytes = 0;
    for (const [volumeId, { store }] of this.volumes) {
      spoolBytes = Math.max(spoolBytes, store.unappliedBytes);
      const hold = this.holds.get(volumeId);
      reason ??= held ? hold?.keepReason : hold?.reason;
    }
    if (reason === this.throttle) return;
    if (reason) log.warn('throttling agent', { agent: this.agentId, reason, spoolBytes });
    else log.info('releasing agent', { agent: this.agentId, spoolBytes });
    this.throttle = reason;
    if (this.state !== 'ready') return;
    this.send({ throttle: { delayMs: reason ? THROTTLE_DELAY_MS : 0, reason: reason ?? 'resumed', spoolBytes } });
  }

  onMessage(data: Buffer, isBinary: boolean): void {
    if (this.state === 'closed') return;
    try {
      if (!isBinary) throw new ProtocolError(ErrorCode.BAD_FRAME, 'text messages are not part of the protocol');
      this.handle(decodeFrame(data), data);
    } catch (err) {
      this.fail(err);
    }
  }

  /** Ends the session with an Error frame (stable code) and a policy-violation close. */
  fail(err: unknown): void {
    if (this.state === 'closed') return;
    const perr = err instanceof ProtocolError ? err : new ProtocolError(ErrorCode.INTERNAL, `internal error: ${(err as Error).message}`);
    if (perr.code === ErrorCode.INTERNAL) log.error('session failed', { peer: this.peer, agent: this.agentId, error: (err as Error).stack });
    else log.warn('refused frame', { peer: this.peer, agent: this.agentId, code: perr.codeName, reason: perr.message });
    this.ws.send(errorFrame(perr.code, perr.message));
    this.state = 'closed';
    this.failback?.close(`the session ended: ${perr.codeName}: ${perr.message}`);
    // The control plane stops counting on the agent now, not when the socket is gone.
    this.closeControl();
    this.ws.close(1008, perr.codeName);
    // A peer that never answers the close (stalled, or still sending) holds nothing for long.
    this.closeTimer = setTimeout(() => this.ws.terminate(), this.policy.closeGraceMs);
    this.closeTimer.unref();
  }

  closed(): void {
    this.state = 'closed';
    clearTimeout(this.closeTimer);
    if (this.failback) {
      this.failback.close();
      this.policy.failbackSessions?.closed(this.agentId, this.failback);
    }
    for (const volume of this.volumes.values()) volume.detach();
    this.closeControl();
  }

  private closeControl(): void {
    const control = this.control;
    this.control = undefined;
    try {
      control?.closed();
    } catch (err) {
      log.error('the control plane did not take the end of a session', { agent: this.agentId, error: (err as Error).message });
    }
  }

  /** After the Welcome: the control plane hears of the agent (and sends it its Policy). */
  private linkControl(registered: boolean): void {
    const hello = this.hello as ValidHello;
    this.tellControl('login', () => {
      this.control = this.policy.control.loggedIn(
        { agentId: this.agentId, send: (frame) => this.send(frame) },
        { name: hello.agentName, software: hello.software, os: hello.os, registered },
      );
    });
  }

  /**
   * Reports to the control plane. Its failures (its tables on a failing disk, a bug) never end
   * the session: the data plane replicates whatever the control plane manages to record. Only
   * its refusals of the agent's frames (ProtocolError) do.
   */
  private tellControl(what: string, report: () => void): void {
    try {
      report();
    } catch (err) {
      if (err instanceof ProtocolError) throw err;
      const now = Date.now();
      if (now - this.controlFailureLoggedMs < 30_000) return;
      this.controlFailureLoggedMs = now;
      log.error('the control plane did not take a report (replication goes on)', { agent: this.agentId, report: what, error: (err as Error).message });
    }
  }

  private handle(frame: DecodedFrame, raw: Buffer): void {
    switch (this.state) {
      case 'hello': {
        const hello = frame.hello;
        if (!hello) throw new ProtocolError(ErrorCode.NOT_AUTHENTICATED, `expected Hello, got ${frame.body}`);
        return this.authStep(hello.intent === ferry.Hello.Intent.REGISTER ? 'register' : 'login', () => this.onHello(hello));
      }
      case 'proof': {
        const register = frame.register;
        const login = frame.login;
        if (register && this.hello?.intent === 'register') return this.authStep('register', () => this.onRegister(register.proof));
        if (login && this.hello?.intent === 'login') return this.authStep('login', () => this.onLogin(login.proof));
        throw new ProtocolError(ErrorCode.NOT_AUTHENTICATED, `expected the ${this.hello?.intent} proof, got ${frame.body}`);
      }
      case 'ready':
        return this.onReadyFrame(frame, raw);
      default:
        return;
    }
  }

  /**
   * One step of the handshake under the lockout rules: a locked-out address (or, for a
   * registration, a spent global budget) is refused before any proof is looked at, and every
   * AUTH_FAILED counts against the address. Checked at Hello and again at the proof, so
   * connections opened before a lockout cannot keep guessing.
   */
  private authStep(intent: AuthIntent, step: () => void): void {
    const { auth, peerAddress } = this.policy;
    const refusal = auth.refusal(peerAddress, intent);
    if (refusal) throw new ProtocolError(ErrorCode.AUTH_LOCKED, refusal);
    try {
      step();
    } catch (err) {
      if (err instanceof ProtocolError && err.code === ErrorCode.AUTH_FAILED) auth.noteFailure(peerAddress, intent);
      throw err;
    }
  }

  private onHello(hello: ferry.IHello): void {
    this.hello = validateHello(hello);
    this.nonce = newNonce();
    this.state = 'proof';
    const salt = this.hello.intent === 'register' ? this.core.identity.passphraseSalt : Buffer.alloc(0);
    this.send({ challenge: { nonce: this.nonce, salt } });
  }

  private onRegister(proofBytes: Uint8Array | null | undefined): void {
    const name = (this.hello as ValidHello).agentName;
    const expected = computeProof(this.core.identity.passphraseKey, this.nonce, 'register', name);
    if (!proofMatches(expected, checkProof(proofBytes))) {
      throw new ProtocolError(ErrorCode.AUTH_FAILED, 'registration refused: the passphrase proof does not match (wrong passphrase?)');
    }
    const credential = newCredential();
    const agentId = `agent-${randomBytes(8).toString('hex')}`;
    this.core.catalog.addAgent({ id: agentId, name, credential, createdUs: nowUs() });
    this.agentId = agentId;
    this.state = 'ready';
    this.policy.auth.noteRegistered(this.policy.peerAddress);
    this.policy.onLogin();
    log.info('agent registered', { agent: agentId, name, peer: this.peer });
    this.send({ welcome: { agentId, credential, serverTimeUs: nowUs() } });
    this.linkControl(true);
  }

  private onLogin(proofBytes: Uint8Array | null | undefined): void {
    const agentId = (this.hello as ValidHello).agentId;
    const agent = this.core.catalog.agent(agentId);
    const proof = checkProof(proofBytes);
    // Compute a proof even for an unknown agent so timing does not reveal which ids exist.
    const expected = computeProof(agent?.credential ?? newCredential(), this.nonce, 'login', agentId);
    if (!agent || !proofMatches(expected, proof)) {
      throw new ProtocolError(ErrorCode.AUTH_FAILED, 'login refused: unknown agent or wrong credential (register again)');
    }
    const refusal = this.policy.streamRefusal?.(agentId);
    if ((this.hello as ValidHello).failback) return this.startFailback(agentId, refusal);
    if (refusal) throw new ProtocolError(ErrorCode.FAILED_OVER, refusal);
    this.agentId = agentId;
    this.state = 'ready';
    this.policy.onLogin();
    this.send({ welcome: { agentId, serverTimeUs: nowUs() } });
    this.linkControl(false);
  }

  /** A failback session: not replication, so the control plane does not hear of it. */
  private startFailback(agentId: string, streamRefusal: string | undefined): void {
    const access = admitFailback(agentId, this.policy.failback, streamRefusal);
    this.agentId = agentId;
    this.state = 'ready';
    this.policy.onLogin();
    this.send({ welcome: { agentId, serverTimeUs: nowUs() } });
    const peer = { send: (frame: OutgoingFrame) => this.send(frame), fail: (err: unknown) => this.fail(err) };
    this.failback = new FailbackSession(agentId, access, peer, (volumeId) => this.core.catalog.volume(volumeId)?.agentId, this.policy.failbackTuning);
    this.policy.failbackSessions?.open(agentId, this.failback);
  }

  /** The capture and tag times accepted now. */
  private timeWindow(): TimeWindow {
    return timeWindow(nowUs(), this.policy.maxTimeAheadUs);
  }

  private onReadyFrame(frame: DecodedFrame, raw: Buffer): void {
    if (this.failback) return this.failback.onFrame(frame);
    if (frame.volumeInfo) return this.onVolumeInfo(frame.volumeInfo);
    if (frame.changeSet) return this.onChangeSet(frame.changeSet, raw);
    if (frame.tag) return this.onTag(frame.tag);
    if (frame.heartbeat) return this.onHeartbeat(frame.heartbeat);
    if (frame.groupHeld) {
      const held = validateGroupHeld(frame.groupHeld);
      return this.tellControl('group held', () => this.control?.groupHeld(held));
    }
    if (frame.agentEvent) {
      const event = validateAgentEvent(frame.agentEvent);
      return this.tellControl('agent event', () => this.control?.agentEvent(event));
    }
    if (frame.hashRequest) return this.onHashRequest(frame.hashRequest);
    if (frame.repairDone) return this.onRepairDone(frame.repairDone);
    throw new ProtocolError(ErrorCode.UNEXPECTED_FRAME, `${frame.body} is not accepted from an agent`);
  }

  private onHeartbeat(heartbeat: ferry.IHeartbeat): void {
    const { pendingSinceUs } = validateHeartbeat(heartbeat, this.timeWindow());
    const reports = validateVolumeReports(heartbeat.volumes);
    this.core.noteHeartbeat(this.volumes.keys(), pendingSinceUs);
    this.tellControl('heartbeat', () => this.control?.heartbeat(reports));
  }

  private onVolumeInfo(info: ferry.IVolumeInfo): void {
    const spec = validateVolumeInfo(info);
    // Declared again: the new declaration replaces the old one.
    this.volumes.get(spec.volumeId)?.detach();
    this.volumes.delete(spec.volumeId);
    const attachment = this.core.attachVolume(this.agentId, spec, this.volumeEvents);
    this.volumes.set(spec.volumeId, attachment);
    const { store } = attachment;
    this.send({ volumeState: { volumeId: spec.volumeId, durableSeq: store.durableSeq, appliedSeq: store.appliedSeq } });
    this.holds.set(spec.volumeId, attachment.hold);
    this.refreshThrottle();
    for (const repair of this.core.pendingRepairs(spec.volumeId)) this.sendRepair(repair);
  }

  /** The session's own volume, or a clear refusal for a foreign, undeclared or malformed id. */
  private ownVolume(volumeId: string): VolumeStore {
    checkVolumeId(volumeId);
    const volume = this.volumes.get(volumeId);
    if (volume) return volume.store;
    const owner = this.core.catalog.volume(volumeId)?.agentId;
    if (owner !== undefined && owner !== this.agentId) {
      throw new ProtocolError(ErrorCode.FORBIDDEN_VOLUME, `volume ${volumeId} belongs to another agent`);
    }
    throw new ProtocolError(ErrorCode.UNKNOWN_VOLUME, `volume ${volumeId} was not declared with VolumeInfo in this session`);
  }

  private onChangeSet(cs: ferry.IChangeSet, raw: Buffer): void {
    const volume = this.ownVolume(cs.volumeId ?? '');
    this.core.checkIngest(volume.spec.volumeId);
    const batch = validateChangeSet(cs, volume.spec.sizeBytes, true, (size) => VALIDATION_SCRATCH.get(size));
    checkChangeSetTimes(batch, this.timeWindow());
    // Once durable, the volume's `durable` event acknowledges it.
    this.core.ingest(volume, raw, batch).catch((err: unknown) => this.fail(err));
  }

  /** The agent has every block of a repair in its stream: it counts once applied. */
  private onRepairDone(done: ferry.IRepairDone): void {
    const valid = validateRepairDone(done);
    const volume = this.ownVolume(valid.volumeId);
    if (valid.throughSeq > volume.acceptedSeq) {
      throw new ProtocolError(ErrorCode.BAD_FRAME, `repair ${valid.requestId} of ${valid.volumeId} ends at seq ${valid.throughSeq}, past the last change received (${volume.acceptedSeq})`);
    }
    this.core.repairDone(volume, valid.requestId, valid.throughSeq);
  }

  /**
   * Block hashes for a hash-compare resync. They must reflect every change this session sent
   * before the request, so the answer waits until apply has caught up with what was accepted.
   */
  private onHashRequest(request: ferry.IHashRequest): void {
    const volume = this.ownVolume(request.volumeId ?? '');
    const req = validateHashRequest(request, volume.spec.sizeBytes);
    this.core.flush(volume);
    this.core.whenApplied(volume, volume.acceptedSeq, (err) => {
      if (err) return this.fail(err);
      volume.replicaHashesAsync(req.offset, req.blockSize, req.count).then(
        (hashes) => this.send({ blockHashes: { volumeId: req.volumeId, offset: req.offset, blockSize: req.blockSize, hashes, requestId: req.requestId } }),
        (readErr: unknown) => this.fail(readErr),
      );
    });
  }

  private onTag(tagFrame: ferry.ITag): void {
    const tag = validateTag(tagFrame);
    checkTagTime(tag, this.timeWindow());
    // A tag answering a group round counts only while that round is committing and waits on this agent.
    const groupRound = tagGroupRound(tagFrame);
    if (groupRound > 0) {
      if (!this.control) throw new ProtocolError(ErrorCode.BAD_TAG, `the tag answers group round ${groupRound}, but this session has no group round`);
      this.control.checkTagRound(groupRound);
    }
    for (const cut of tag.cuts) {
      const volume = this.ownVolume(cut.volumeId);
      if (cut.seq > volume.acceptedSeq) {
        throw new ProtocolError(ErrorCode.BAD_TAG, `tag cut of ${cut.volumeId} at seq ${cut.seq} is past the last change received (${volume.acceptedSeq})`);
      }
      this.core.flush(volume);
    }
    const pointIds = this.core.recordPoints(
      tag.cuts.map((cut) => ({
        volumeId: cut.volumeId,
        seq: cut.seq,
        timeUs: tag.timeUs || nowUs(),
        kind: tag.kind,
        // The agent knows the capture state at the cut (resync, scan, kernel mode): its word counts.
        accuracy: cut.accuracy,
        origin: 'tag' as const,
        groupId: tag.groupId,
        name: tag.name,
        groupRound,
      })),
    );
    this.send({ tagAck: { groupId: tag.groupId, pointIds } });
    if (groupRound > 0) this.tellControl('group tag', () => this.control?.tagRecorded(groupRound, pointIds));
  }
}
