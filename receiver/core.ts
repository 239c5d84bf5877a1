import * as fs from 'fs';
import { log } from '../common/log';
import { nowUs } from '../common/time';
import { ErrorCode, ProtocolError } from '../proto/errors';
import { VolumeSpec } from '../proto/types';
import { Catalog } from './catalog';
import { ReceiverIdentity } from './identity';
import { DataLayout } from './layout';
import type { Session } from './session';
import { VolumeRuntimeStatus, writeStatusFile } from './status';
import { VolumeStore } from './volume-store';

/** How often a paused apply looks for its pause file to be gone. */
const PAUSE_POLL_MS = 200;

export interface CoreOptions {
  retentionUs: number;
  /** Unapplied spool bytes of one volume above which its agent is throttled. */
  spoolCapBytes: number;
  checkpointIntervalMs: number;
  retentionIntervalMs: number;
  /** Size at which spool and journal segments roll over. */
  segmentBytes: number;
}

interface VolumeRuntime {
  store: VolumeStore;
  lastContactUs: number;
  /** Reported by the agent: capture time of the oldest change it still holds beyond what is durable. */
  pendingSinceUs: number;
  lastDurableCaptureUs: number;
  applyError?: string;
  /** Callbacks waiting for apply to reach a seq (hash requests), oldest first. */
  appliedWaiters: Array<{ seq: number; callback: (err?: Error) => void }>;
}

/**
 * The receiver's state shared by all sessions: catalog, open volumes, the apply pump,
 * checkpoints, retention, throttling and the status file.
 */
export class ReceiverCore {
  private readonly volumes = new Map<string, VolumeRuntime>();
  readonly sessions = new Set<Session>();
  private pumpScheduled = false;
  private pausePoll: NodeJS.Timeout | undefined;
  private timers: NodeJS.Timeout[] = [];
  listenAddress = '';
  prunedPoints = 0;
  prunedJournalSegments = 0;

  constructor(
    readonly layout: DataLayout,
    readonly catalog: Catalog,
    readonly identity: ReceiverIdentity,
    private readonly options: CoreOptions,
  ) {}

  /** Opens every known volume (finishing crash recovery) and starts the background work. */
  start(): void {
    for (const row of this.catalog.volumes()) this.openVolume({ volumeId: row.id, sizeBytes: row.sizeBytes, blockSize: row.blockSize });
    this.runRetention();
    this.timers.push(setInterval(() => this.checkpointDue(), this.options.checkpointIntervalMs));
    this.timers.push(setInterval(() => this.runRetention(), this.options.retentionIntervalMs));
    this.timers.push(setInterval(() => this.writeStatus(), 1000));
    for (const t of this.timers) t.unref();
    this.schedulePump();
    this.writeStatus();
  }

  private openVolume(spec: VolumeSpec): VolumeRuntime {
    const lastAuto = this.catalog.lastPoint(spec.volumeId, 'auto');
    const store = VolumeStore.open(this.layout, spec, lastAuto?.timeUs ?? 0, this.options.segmentBytes);
    const report = store.openReport;
    if (report.rolledBackRecords > 0 || report.durableSeq > report.checkpointSeq) {
      log.info('volume recovered', { volume: spec.volumeId, ...report });
    }
    const rt: VolumeRuntime = { store, lastContactUs: 0, pendingSinceUs: 0, lastDurableCaptureUs: store.appliedCaptureUs, appliedWaiters: [] };
    this.volumes.set(spec.volumeId, rt);
    return rt;
  }

  /** Declares a volume for an agent: creates it on first sight, refuses someone else's. */
  attachVolume(agentId: string, spec: VolumeSpec): VolumeStore {
    const row = this.catalog.volume(spec.volumeId);
    if (row && row.agentId !== agentId) {
      throw new ProtocolError(ErrorCode.FORBIDDEN_VOLUME, `volume ${spec.volumeId} belongs to another agent`);
    }
    if (row && (row.sizeBytes !== spec.sizeBytes || row.blockSize !== spec.blockSize)) {
      throw new ProtocolError(
        ErrorCode.VOLUME_MISMATCH,
        `volume ${spec.volumeId} is registered as ${row.sizeBytes} bytes / ${row.blockSize}-byte blocks, not ${spec.sizeBytes} / ${spec.blockSize}`,
      );
    }
    if (!row) {
      this.catalog.addVolume({ id: spec.volumeId, agentId, sizeBytes: spec.sizeBytes, blockSize: spec.blockSize, createdUs: nowUs() });
      log.info('volume registered', { volume: spec.volumeId, agent: agentId, sizeBytes: spec.sizeBytes });
    }
    const rt = this.volumes.get(spec.volumeId) ?? this.openVolume(spec);
    rt.lastContactUs = nowUs();
    return rt.store;
  }

  /** A change set became durable: note the agent's backlog (for RPO) and wake the apply pump. */
  noteDurable(volume: VolumeStore, pendingSinceUs: number): void {
    const rt = this.volumes.get(volume.spec.volumeId);
    if (!rt) return;
    rt.lastContactUs = nowUs();
    rt.pendingSinceUs = pendingSinceUs;
    this.schedulePump();
  }

  noteHeartbeat(session: Session, pendingSinceUs: number): void {
    for (const volume of session.volumes.values()) {
      const rt = this.volumes.get(volume.spec.volumeId);
      if (!rt) continue;
      rt.lastContactUs = nowUs();
      rt.pendingSinceUs = pendingSinceUs;
    }
  }

  /** Throttle an agent whose volume's unapplied spool exceeds the cap. */
  afterIngest(session: Session, volume: VolumeStore): void {
    if (!session.throttled && volume.unappliedBytes > this.options.spoolCapBytes) {
      session.throttled = true;
      log.warn('throttling agent: spool above cap', { agent: session.agentId, volume: volume.spec.volumeId, spoolBytes: volume.unappliedBytes });
      session.send({ throttle: { delayMs: 200, reason: 'spool above cap', spoolBytes: volume.unappliedBytes } });
    }
  }

  private releaseThrottles(): void {
    for (const session of this.sessions) {
      if (!session.throttled) continue;
      const worst = Math.max(0, ...[...session.volumes.values()].map((v) => v.unappliedBytes));
      if (worst <= this.options.spoolCapBytes / 2) {
        session.throttled = false;
        session.send({ throttle: { delayMs: 0, reason: 'spool drained', spoolBytes: worst } });
      }
    }
  }

  /** Calls back once `volume` has applied through `seq` (at once if it has), or with the apply error. */
  whenApplied(volume: VolumeStore, seq: number, callback: (err?: Error) => void): void {
    const rt = this.volumes.get(volume.spec.volumeId);
    if (!rt) return callback(new Error(`volume ${volume.spec.volumeId} is not open`));
    rt.appliedWaiters.push({ seq, callback });
    this.releaseAppliedWaiters(rt);
    this.schedulePump();
  }

  private releaseAppliedWaiters(rt: VolumeRuntime): void {
    while (rt.appliedWaiters.length > 0) {
      const next = rt.appliedWaiters[0];
      if (!rt.applyError && rt.store.appliedSeq < next.seq) return;
      rt.appliedWaiters.shift();
      next.callback(rt.applyError ? new Error(`apply stopped for volume ${rt.store.spec.volumeId}: ${rt.applyError}`) : undefined);
    }
  }

  schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => this.pump());
  }

  /** Applies one step per volume per turn, so ingest and other volumes keep moving. */
  private pump(): void {
    this.pumpScheduled = false;
    let more = false;
    let paused = false;
    for (const [id, rt] of this.volumes) {
      if (rt.applyError) continue;
      if (rt.store.hasWork() && fs.existsSync(this.layout.applyPauseFile(id))) {
        paused = true;
        continue;
      }
      let step;
      try {
        step = rt.store.applyNext();
      } catch (err) {
        rt.applyError = (err as Error).message;
        log.error('apply stopped for volume', { volume: id, error: rt.applyError });
        this.releaseAppliedWaiters(rt);
        continue;
      }
      if (!step) continue;
      if (step.autoPoints.length > 0) {
        this.catalog.addPoints(
          step.autoPoints.map((p) => ({ volumeId: id, seq: p.seq, timeUs: p.timeUs, kind: 'crash' as const, accuracy: 'exact' as const, origin: 'auto' as const, groupId: 'auto', name: '' })),
        );
      }
      if (rt.store.hasWork()) more = true;
      else rt.store.saveCheckpoint();
      this.notifyApplied(rt.store);
      this.releaseAppliedWaiters(rt);
    }
    this.releaseThrottles();
    if (more) this.schedulePump();
    else if (paused && !this.pausePoll) {
      this.pausePoll = setTimeout(() => {
        this.pausePoll = undefined;
        this.schedulePump();
      }, PAUSE_POLL_MS);
      this.pausePoll.unref();
    }
  }

  private notifyApplied(store: VolumeStore): void {
    for (const session of this.sessions) {
      if (session.volumes.get(store.spec.volumeId) !== store) continue;
      session.send({ ack: { volumes: [{ volumeId: store.spec.volumeId, durableSeq: store.durableSeq, appliedSeq: store.appliedSeq }] } });
    }
  }

  private checkpointDue(): void {
    for (const rt of this.volumes.values()) {
      if (rt.store.checkpointDue(this.options.checkpointIntervalMs)) rt.store.saveCheckpoint();
    }
  }

  /** Drops points older than the window and the journal segments no remaining point needs. */
  runRetention(): void {
    const cutoff = nowUs() - this.options.retentionUs;
    for (const [id, rt] of this.volumes) {
      const pruned = this.catalog.prunePointsBefore(id, cutoff);
      this.prunedPoints += pruned;
      const oldest = this.catalog.oldestPointSeq(id);
      const keepAfter = Math.min(oldest ?? rt.store.checkpointSeq, rt.store.checkpointSeq);
      const segments = rt.store.pruneJournalThrough(keepAfter);
      this.prunedJournalSegments += segments;
      if (pruned > 0 || segments > 0) log.info('retention pruned', { volume: id, points: pruned, journalSegments: segments });
    }
  }

  volumeStatus(): VolumeRuntimeStatus[] {
    const now = nowUs();
    const connected = new Set<string>();
    for (const s of this.sessions) for (const id of s.volumes.keys()) connected.add(id);
    return [...this.volumes.entries()].map(([id, rt]) => {
      const store = rt.store;
      const isConnected = connected.has(id);
      let rpoUs: number;
      if (isConnected) rpoUs = rt.pendingSinceUs > 0 ? Math.max(0, now - rt.pendingSinceUs) : 0;
      else rpoUs = rt.lastContactUs > 0 ? now - rt.lastContactUs : 0;
      const oldestUnapplied = store.oldestUnappliedCaptureUs;
      return {
        volumeId: id,
        connected: isConnected,
        durableSeq: store.durableSeq,
        appliedSeq: store.appliedSeq,
        checkpointSeq: store.checkpointSeq,
        rpoSeconds: rpoUs / 1e6,
        applyLagSeqs: store.durableSeq - store.appliedSeq,
        applyLagSeconds: oldestUnapplied > 0 ? Math.max(0, now - oldestUnapplied) / 1e6 : 0,
        unappliedBytes: store.unappliedBytes,
        journalSegments: store.journalSegments,
        applyError: rt.applyError,
      };
    });
  }

  writeStatus(): void {
    try {
      writeStatusFile(this.layout.statusFile, {
        pid: process.pid,
        updatedUs: nowUs(),
        listen: this.listenAddress,
        fingerprint: this.identity.fingerprint,
        sessions: this.sessions.size,
        prunedPoints: this.prunedPoints,
        prunedJournalSegments: this.prunedJournalSegments,
        volumes: this.volumeStatus(),
      });
    } catch (err) {
      log.warn('cannot write status file', { error: (err as Error).message });
    }
  }

  stop(): void {
    if (this.pausePoll) clearTimeout(this.pausePoll);
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    for (const rt of this.volumes.values()) rt.store.close();
    this.volumes.clear();
    this.writeStatus();
    this.catalog.close();
  }
}
