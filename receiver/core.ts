import * as fs from 'fs';
import { log } from '../common/log';
import { nowUs } from '../common/time';
import { ErrorCode, ProtocolError } from '../proto/errors';
import { ChangeBatch, VolumeSpec } from '../proto/types';
import { Catalog, RepairRow } from './catalog';
import { ReceiverIdentity } from './identity';
import { DataLayout } from './layout';
import { RepairDesk } from './repairs';
import { StorageDamage } from './storage/damage';
import { StorageMonitor } from './storage-monitor';
import { AgedOutEarly, ReceiverAlert, ReceiverStatus, StatusFile, VolumeRuntimeStatus } from './status';
import { classifyStorageError, VolumeHealth } from './volume-health';
import { VolumeEmitter, VolumeHold, VolumeListener, VolumeSeqs } from './volume-events';
import { AppliedStep, VolumeStore } from './volume-store';
import { RetainedDataDamagedError } from './redo/retained-records';
import { ageOutTargetFree, planEarlyAgeOut } from './redo/early-age-out';

/** Total size of the file system holding `dir` (0 when it cannot be read). */
function fileSystemBytes(dir: string): number {
  try {
    const st = fs.statfsSync(dir);
    return st.blocks * st.bsize;
  } catch {
    return 0;
  }
}

/** How often a paused apply looks for its pause file to be gone. */
const PAUSE_POLL_MS = 200;
/** How often free space is read and failed volumes are looked at. */
const HEALTH_TICK_MS = 1000;
/**
 * The check of retained spool bodies after open (Spool.scrub): a slice of this many ms every
 * SCRUB_TICK_MS, so that it takes at most a fifth of the thread that ingests and acknowledges.
 */
const SCRUB_SLICE_MS = 10;
const SCRUB_TICK_MS = 50;
/** Every this many ticks, damage other processes recorded (verify) is looked for. */
const DAMAGE_POLL_TICKS = 3;

export interface CoreOptions {
  retentionUs: number;
  /** Unapplied spool bytes of one volume above which its agent is throttled. */
  spoolCapBytes: number;
  checkpointIntervalMs: number;
  retentionIntervalMs: number;
  /** Size at which spool and journal segments roll over. */
  segmentBytes: number;
  /** Free space below which agents are held (see StorageMonitor). */
  minFreeBytes: number;
  /** Space kept back for checkpoints and the catalog on a full disk. */
  reserveBytes: number;
}

interface VolumeRuntime {
  readonly spec: VolumeSpec;
  /** Undefined while the volume's files cannot be opened (see health). */
  store: VolumeStore | undefined;
  readonly health: VolumeHealth;
  lastContactUs: number;
  /** Reported by the agent: capture time of the oldest change it still holds beyond what is durable. */
  pendingSinceUs: number;
  /** Callbacks waiting for apply to reach a seq (hash requests), oldest first. */
  appliedWaiters: Array<{ seq: number; callback: (err?: Error) => void }>;
  /** Bytes ingested since free space was last read for this volume. */
  ingestedSinceSpaceCheck: number;
  /** Change-set bytes made durable since the receiver started (throughput is its rate). */
  receivedBytes: number;
  /** Why the volume's agent must be held or stay held, as its sessions were last told. */
  hold: VolumeHold;
  /**
   * Whether the volume held its agent when its hold was last refreshed: a held agent is let go
   * only below the cap's lower mark (hysteresis), and the status says `held` as long.
   */
  holding: boolean;
  /** The sessions that declared the volume hear what happens to it through this. */
  readonly events: VolumeEmitter;
  /** Points aged out before their time for lack of space (redo), since the receiver started. */
  agedOutEarly: AgedOutEarly | undefined;
  /** A redo advance (retention or early age-out) is running in slices: one at a time. */
  advancing: boolean;
}

/** An early age-out stays an alert this long after the last one. */
const AGED_OUT_ALERT_US = 3600e6;

/** A session's use of a volume it declared. */
export interface VolumeAttachment {
  readonly store: VolumeStore;
  /** Why the volume's agent must hold its change sets now. */
  readonly hold: VolumeHold;
  /** Ends the session's subscription to the volume's events. */
  detach(): void;
}

function seqsOf(store: VolumeStore): VolumeSeqs {
  return { volumeId: store.spec.volumeId, durableSeq: store.durableSeq, appliedSeq: store.appliedSeq };
}

/**
 * Free space is read again after this much ingest, not only at the health tick: a fast
 * stream must not cross the whole floor between two ticks and run the disk full.
 */
const SPACE_CHECK_BYTES = 1024 * 1024;

/**
 * The receiver's state shared by all sessions: catalog, open volumes, the apply pump,
 * checkpoints, retention, throttling, storage faults and repairs, and the status file.
 * It never speaks to an agent: what happens to a volume (durable, applied, throttle, failed,
 * repair) goes out as that volume's events, and the sessions that declared it say it.
 *
 * Storage faults stay inside one volume: a failed write or fsync stops that volume's ingest
 * (nothing unsynced is acknowledged) and a failed apply step stops its apply, each until it
 * recovers by itself (at once when a full disk has room again, else after a growing delay);
 * a volume whose files cannot be opened waits the same way while every other volume runs.
 */
export class ReceiverCore {
  private readonly volumes = new Map<string, VolumeRuntime>();
  private sessionCount = 0;
  private pumpScheduled = false;
  private pausePoll: NodeJS.Timeout | undefined;
  private timers: NodeJS.Timeout[] = [];
  private readonly monitor: StorageMonitor;
  private readonly repairs: RepairDesk;
  private readonly statusFile: StatusFile;
  private ticks = 0;
  /** The retention window of a volume; the receiver-wide one unless a group policy says otherwise. */
  private retentionOf: (volumeId: string) => number | undefined = () => undefined;
  listenAddress = '';
  prunedPoints = 0;
  prunedJournalSegments = 0;

  constructor(
    readonly layout: DataLayout,
    readonly catalog: Catalog,
    readonly identity: ReceiverIdentity,
    private readonly options: CoreOptions,
  ) {
    this.monitor = new StorageMonitor({ minFreeBytes: options.minFreeBytes, reserveBytes: options.reserveBytes, reserveFile: layout.reserveFile });
    this.repairs = new RepairDesk(catalog, (volumeId, repair) => this.sendRepair(volumeId, repair));
    this.statusFile = new StatusFile(layout.statusFile, (err) => log.warn('cannot write status file', { error: err.message }));
  }

  /** Opens every known volume (finishing crash recovery) and starts the background work. */
  start(): void {
    for (const row of this.catalog.volumes()) {
      const rt = this.runtime({ volumeId: row.id, sizeBytes: row.sizeBytes, blockSize: row.blockSize });
      if (row.damaged) {
        rt.health.fail('open', new Error(`${row.damaged}: its size and owner cannot be trusted (restore the catalog, or remove the volume)`));
        log.error('volume not opened', { volume: row.id, error: row.damaged, file: this.catalog.file });
        continue;
      }
      this.tryOpen(rt);
    }
    this.storageTick();
    this.runRetention();
    this.timers.push(setInterval(() => this.checkpointDue(), this.options.checkpointIntervalMs));
    this.timers.push(setInterval(() => this.runRetention(), this.options.retentionIntervalMs));
    this.timers.push(setInterval(() => this.healthTick(), HEALTH_TICK_MS));
    this.timers.push(setInterval(() => this.scrubTick(), SCRUB_TICK_MS));
    for (const t of this.timers) t.unref();
    this.schedulePump();
    this.writeStatus();
  }

  private runtime(spec: VolumeSpec): VolumeRuntime {
    let rt = this.volumes.get(spec.volumeId);
    if (!rt) {
      rt = {
        spec,
        store: undefined,
        health: new VolumeHealth(),
        lastContactUs: 0,
        pendingSinceUs: 0,
        appliedWaiters: [],
        ingestedSinceSpaceCheck: 0,
        receivedBytes: 0,
        hold: { volumeId: spec.volumeId, reason: undefined, keepReason: undefined },
        holding: false,
        events: new VolumeEmitter(),
        agedOutEarly: undefined,
        advancing: false,
      };
      this.volumes.set(spec.volumeId, rt);
    }
    return rt;
  }

  /** Opens a volume's files (crash recovery included); a failure leaves it waiting for a retry. */
  private tryOpen(rt: VolumeRuntime): boolean {
    const id = rt.spec.volumeId;
    try {
      const lastAuto = this.catalog.lastPoint(id, 'auto');
      const store = VolumeStore.open(this.layout, rt.spec, lastAuto?.timeUs ?? 0, this.options.segmentBytes);
      rt.store = store;
      const report = store.openReport;
      const { damage, ...facts } = report;
      if (report.rolledBackRecords > 0 || report.durableSeq > report.checkpointSeq || report.tornBytes > 0 || report.checkpointRecovered || report.sumsBuilt) {
        log.info('volume recovered', { volume: id, ...facts, checkpointRecovered: report.checkpointRecovered?.seq });
      }
      if (rt.health.recovered('open')) log.info('volume opened again', { volume: id });
      this.noteDamage(rt, damage);
      this.schedulePump();
      return true;
    } catch (err) {
      rt.health.fail('open', err);
      log.error('volume cannot be opened; other volumes go on, this one is retried', { volume: id, error: (err as Error).message });
      return false;
    }
  }

  /** A session began; call the returned function once when it ends. */
  openSession(): () => void {
    this.sessionCount++;
    let open = true;
    return () => {
      if (open) this.sessionCount--;
      open = false;
    };
  }

  /**
   * Declares a volume for an agent (created on first sight, someone else's refused) and
   * subscribes `listener` to its events.
   */
  attachVolume(agentId: string, spec: VolumeSpec, listener: VolumeListener): VolumeAttachment {
    const rt = this.declare(agentId, spec);
    // Held from the start when the receiver has no room (the agent must not send into it).
    this.refreshHold(rt);
    const detach = rt.events.subscribe(listener);
    return { store: rt.store as VolumeStore, hold: rt.hold, detach };
  }

  private declare(agentId: string, spec: VolumeSpec): VolumeRuntime {
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
    if (!row) return this.createVolume(agentId, spec);
    const rt = this.volumes.get(spec.volumeId) ?? this.runtime(spec);
    if (!rt.store) {
      if (!rt.health.failure('open') && this.tryOpen(rt)) return this.attached(rt);
      throw new ProtocolError(ErrorCode.VOLUME_FAILED, `volume ${spec.volumeId} cannot be opened on the receiver (${rt.health.describe() ?? 'unknown'}); it is retried`);
    }
    return this.attached(rt);
  }

  private attached(rt: VolumeRuntime): VolumeRuntime {
    rt.lastContactUs = nowUs();
    return rt;
  }

  /**
   * A new volume: its files are made first (a size the file system cannot hold is refused
   * here), and only then is it entered in the catalog, so a refusal leaves nothing behind.
   */
  private createVolume(agentId: string, spec: VolumeSpec): VolumeRuntime {
    const dir = this.layout.volumeDir(spec.volumeId);
    const existed = fs.existsSync(dir);
    const fsBytes = fileSystemBytes(fs.existsSync(this.layout.volumesDir) ? this.layout.volumesDir : this.layout.root);
    if (fsBytes > 0 && spec.sizeBytes > fsBytes) {
      throw new ProtocolError(
        ErrorCode.VOLUME_TOO_LARGE,
        `volume ${spec.volumeId} of ${spec.sizeBytes} bytes cannot fit on the receiver: the file system holding its replica has ${fsBytes} bytes in all`,
      );
    }
    let store: VolumeStore;
    try {
      store = VolumeStore.open(this.layout, spec, 0, this.options.segmentBytes);
    } catch (err) {
      if (!existed) fs.rmSync(dir, { recursive: true, force: true });
      const info = classifyStorageError(err);
      if (info.code === 'EFBIG' || info.code === 'EINVAL') {
        throw new ProtocolError(ErrorCode.VOLUME_TOO_LARGE, `volume ${spec.volumeId} of ${spec.sizeBytes} bytes is larger than the receiver's file system can hold (${info.code})`);
      }
      if (info.full) throw new ProtocolError(ErrorCode.STORAGE_FULL, `no room on the receiver for volume ${spec.volumeId}: ${info.message}`);
      throw new ProtocolError(ErrorCode.VOLUME_FAILED, `cannot create volume ${spec.volumeId} on the receiver: ${info.message}`);
    }
    try {
      this.catalog.addVolume({ id: spec.volumeId, agentId, sizeBytes: spec.sizeBytes, blockSize: spec.blockSize, createdUs: nowUs() });
    } catch (err) {
      store.abandon();
      if (!existed) fs.rmSync(dir, { recursive: true, force: true });
      const info = classifyStorageError(err);
      throw new ProtocolError(info.full ? ErrorCode.STORAGE_FULL : ErrorCode.VOLUME_FAILED, `cannot register volume ${spec.volumeId}: ${info.message}`);
    }
    log.info('volume registered', { volume: spec.volumeId, agent: agentId, sizeBytes: spec.sizeBytes });
    const rt = this.runtime(spec);
    rt.store = store;
    return this.attached(rt);
  }

  // ---- ingest --------------------------------------------------------------------------------

  /** Refuses change sets for a volume whose storage cannot take them now. */
  checkIngest(volumeId: string): void {
    const rt = this.volumes.get(volumeId);
    if (!rt?.store) throw new ProtocolError(ErrorCode.VOLUME_FAILED, `volume ${volumeId} is not open on the receiver (${rt?.health.describe() ?? 'unknown'})`);
    const failure = rt.health.failure('ingest');
    if (failure) {
      throw new ProtocolError(
        failure.full ? ErrorCode.STORAGE_FULL : ErrorCode.VOLUME_FAILED,
        `volume ${volumeId} ${failure.full ? 'has no room on the receiver' : 'failed on the receiver'}: ${failure.reason}; nothing was stored, retry later`,
      );
    }
  }

  /**
   * Spools a validated change set of `store` (see VolumeStore.ingest). Once it is durable, free
   * space and the volume's hold are looked at and the volume's sessions hear `durable`.
   * Throws what refuses it at once; the promise rejects with what failed later (a storage
   * failure is also the volume's `failed` event).
   */
  ingest(store: VolumeStore, frame: Buffer, batch: ChangeBatch): Promise<void> {
    let stored: Promise<'stored' | 'duplicate'>;
    try {
      stored = store.ingest(frame, batch);
    } catch (err) {
      throw this.ingestFailed(store, err);
    }
    return stored.then(
      () => this.ingested(store, frame.length, batch.pendingSinceUs),
      (err: unknown) => {
        throw this.ingestFailed(store, err);
      },
    );
  }

  /** Makes what `store` accepted durable now; a failure is the volume's, told as such. */
  flush(store: VolumeStore): void {
    try {
      store.flushSpool();
    } catch (err) {
      throw this.ingestFailed(store, err);
    }
  }

  /**
   * A spool write or fsync failed: nothing unsynced is acknowledged, ingest of the volume
   * stops until the spool recovers, and every session sending to it is told why (its agent
   * resends from the durable seq once it is back). Returns the error for the session.
   */
  private ingestFailed(store: VolumeStore, err: unknown): ProtocolError {
    if (err instanceof ProtocolError) return err;
    const rt = this.volumes.get(store.spec.volumeId);
    const info = classifyStorageError(err);
    const code = info.full ? ErrorCode.STORAGE_FULL : ErrorCode.VOLUME_FAILED;
    const perr = new ProtocolError(code, `volume ${store.spec.volumeId}: the receiver could not store the change set (${info.message}); nothing of it was acknowledged, resend after the durable seq`);
    if (rt && !rt.health.failure('ingest')) {
      rt.health.fail('ingest', err, this.freeNow(store.spec.volumeId));
      if (info.full) this.monitor.releaseReserve();
      if (info.full) this.ageOutForSpace(rt, true);
      log.error(info.full ? 'spool full: ingest held until there is room' : 'spool write failed: ingest stopped until the spool recovers', {
        volume: store.spec.volumeId,
        error: info.message,
        durableSeq: store.durableSeq,
      });
      rt.events.emit('failed', { volumeId: store.spec.volumeId, error: perr });
      this.refreshHolds();
    }
    return perr;
  }

  /**
   * A change set became durable: note the agent's backlog (for RPO), wake the apply pump, read
   * free space every SPACE_CHECK_BYTES of ingest (so a fast stream is held before it crosses
   * the floor), and tell the volume's sessions.
   */
  private ingested(store: VolumeStore, bytes: number, pendingSinceUs: number): void {
    const rt = this.volumes.get(store.spec.volumeId);
    if (!rt) return;
    rt.lastContactUs = nowUs();
    rt.pendingSinceUs = pendingSinceUs;
    this.schedulePump();
    rt.receivedBytes += bytes;
    rt.ingestedSinceSpaceCheck += bytes;
    if (rt.ingestedSinceSpaceCheck >= SPACE_CHECK_BYTES) {
      rt.ingestedSinceSpaceCheck = 0;
      this.readSpace(this.volumePaths(rt.spec.volumeId));
      this.ageOutForSpace(rt, false);
    }
    // The hold first: the agent hears it before the ack that would let it send more.
    this.refreshHold(rt);
    rt.events.emit('durable', seqsOf(store));
  }

  /** The agent of these volumes was heard from; `pendingSinceUs` dates its backlog. */
  noteHeartbeat(volumeIds: Iterable<string>, pendingSinceUs: number): void {
    for (const id of volumeIds) {
      const rt = this.volumes.get(id);
      if (!rt) continue;
      rt.lastContactUs = nowUs();
      rt.pendingSinceUs = pendingSinceUs;
    }
  }

  /** Why the volume's agent must hold its change sets now, or undefined. */
  private holdReason(rt: VolumeRuntime, wasHeld: boolean): string | undefined {
    const ingest = rt.health.failure('ingest');
    if (ingest) return ingest.full ? `no room for the spool of ${rt.spec.volumeId}` : `the spool of ${rt.spec.volumeId} failed; held while it recovers`;
    const low = this.monitor.isLow(this.volumePaths(rt.spec.volumeId));
    if (low) return `free space on the receiver is low (${Math.round(low.freeBytes / 1048576)} MiB free at ${low.path})`;
    const spool = rt.store?.unappliedBytes ?? 0;
    if (spool > this.options.spoolCapBytes || (wasHeld && spool > this.options.spoolCapBytes / 2)) return 'spool above cap';
    return undefined;
  }

  /** Tells the volume's sessions when its hold begins, ends or changes its reason. */
  private refreshHold(rt: VolumeRuntime): void {
    const reason = this.holdReason(rt, false);
    const keepReason = this.holdReason(rt, true);
    rt.holding = (rt.holding ? keepReason : reason) !== undefined;
    if (reason === rt.hold.reason && keepReason === rt.hold.keepReason) return;
    rt.hold = { volumeId: rt.spec.volumeId, reason, keepReason };
    rt.events.emit('throttle', rt.hold);
  }

  private refreshHolds(): void {
    for (const rt of this.volumes.values()) this.refreshHold(rt);
  }

  /** Records the points of a tag (all or none); no room in the catalog is the agent's to retry. */
  recordPoints(points: Parameters<Catalog['addPoints']>[0]): number[] {
    try {
      return this.catalog.addPoints(points);
    } catch (err) {
      const info = classifyStorageError(err);
      if (info.full) {
        this.monitor.releaseReserve();
        throw new ProtocolError(ErrorCode.STORAGE_FULL, `no room in the receiver's catalog for the points of this tag: ${info.message}`);
      }
      // An I/O error under the catalog (SQLITE_IOERR*, EIO): the tag is not recorded, the agent
      // tags again later; its data is not affected.
      if (/^(SQLITE_IOERR|EIO)/.test(info.code ?? '')) {
        throw new ProtocolError(ErrorCode.VOLUME_FAILED, `the receiver's catalog cannot be written (${info.message}): the points of this tag are not recorded; retry later`);
      }
      throw err;
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
    const failure = rt.health.failure('apply');
    while (rt.appliedWaiters.length > 0) {
      const next = rt.appliedWaiters[0];
      const stuck = failure && !failure.full;
      if (!stuck && (rt.store?.appliedSeq ?? 0) < next.seq) return;
      rt.appliedWaiters.shift();
      next.callback(stuck ? new ProtocolError(ErrorCode.VOLUME_FAILED, `apply stopped for volume ${rt.spec.volumeId}: ${failure.reason}; it is retried`) : undefined);
    }
  }

  // ---- apply ---------------------------------------------------------------------------------

  schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(() => this.pump());
  }

  /**
   * Starts a step on the apply thread for every volume with work and none running: ingest and
   * other volumes keep moving while it runs.
   */
  private pump(): void {
    this.pumpScheduled = false;
    let paused = false;
    for (const [id, rt] of this.volumes) {
      const store = rt.store;
      if (!store || rt.health.failure('apply') || store.stepping || !store.hasWork()) continue;
      if (fs.existsSync(this.layout.applyPauseFile(id))) {
        paused = true;
        continue;
      }
      void this.step(rt, store);
    }
    this.refreshHolds();
    if (paused && !this.pausePoll) {
      this.pausePoll = setTimeout(() => {
        this.pausePoll = undefined;
        this.schedulePump();
      }, PAUSE_POLL_MS);
      this.pausePoll.unref();
    }
  }

  private async step(rt: VolumeRuntime, store: VolumeStore): Promise<void> {
    let step: AppliedStep | undefined;
    try {
      step = await store.applyNextAsync(this.options.checkpointIntervalMs);
    } catch (err) {
      if (this.isCurrent(rt, store)) this.applyFailed(rt, err);
      return;
    }
    // The volume was closed or opened again while the step ran: it no longer counts.
    if (!this.isCurrent(rt, store)) return;
    try {
      if (step) this.afterStep(rt, store, step);
      this.refreshHolds();
    } catch (err) {
      log.error('after an apply step', { volume: rt.spec.volumeId, error: (err as Error).message });
    }
    if (store.hasWork()) this.schedulePump();
  }

  private isCurrent(rt: VolumeRuntime, store: VolumeStore): boolean {
    return this.volumes.get(rt.spec.volumeId) === rt && rt.store === store;
  }

  private afterStep(rt: VolumeRuntime, store: VolumeStore, step: AppliedStep): void {
    const id = rt.spec.volumeId;
    if (step.autoPoints.length > 0) {
      try {
        this.catalog.addPoints(
          step.autoPoints.map((p) => ({ volumeId: id, seq: p.seq, timeUs: p.timeUs, kind: 'crash' as const, accuracy: 'exact' as const, origin: 'auto' as const, groupId: 'auto', name: '' })),
        );
      } catch (err) {
        log.warn('automatic points not recorded', { volume: id, error: (err as Error).message });
      }
    }
    if (step.damage.length > 0 || step.lost.length > 0) {
      this.noteDamage(rt, [
        ...step.damage,
        ...step.lost.map((l): StorageDamage => ({
          kind: 'spool',
          file: l.stretches[0]?.file ?? this.layout.spoolDir(id),
          offset: l.stretches[0]?.offset ?? 0,
          length: l.stretches.reduce((n, s) => n + s.length, 0),
          seqFrom: l.fromSeq,
          seqTo: l.toSeq,
          detail: `change sets of seqs ${l.fromSeq}..${l.toSeq} are lost to damage: apply went on after them`,
        })),
      ]);
    }
    if (step.harmless.length > 0) {
      try {
        this.repairs.resolveHarmless(id, step.harmless, step.lastSeq);
      } catch (err) {
        log.warn('harmless spool damage not marked resolved in the catalog', { volume: id, error: (err as Error).message });
      }
    }
    this.repairs.settle(id, store.appliedSeq);
    rt.events.emit('applied', seqsOf(store));
    this.releaseAppliedWaiters(rt);
  }

  /**
   * An apply step or checkpoint failed: apply of the volume stops (ingest goes on, up to the
   * spool cap) until `recoverApply` succeeds. Nothing of the failed step counts as applied.
   */
  private applyFailed(rt: VolumeRuntime, err: unknown): void {
    const info = rt.health.fail('apply', err, this.freeNow(rt.spec.volumeId));
    if (info.full) this.monitor.releaseReserve();
    if (info.full) this.ageOutForSpace(rt, true);
    log.error(info.full ? 'no room to apply: apply held until there is room' : 'apply failed: held until it recovers', { volume: rt.spec.volumeId, error: info.message });
    this.releaseAppliedWaiters(rt);
  }

  /** Damage found in a volume: recorded, and a repair asked where the source can heal it. */
  private noteDamage(rt: VolumeRuntime, damage: readonly StorageDamage[]): void {
    if (damage.length === 0) return;
    const id = rt.spec.volumeId;
    let fresh;
    try {
      fresh = this.repairs.record(id, damage);
    } catch (err) {
      log.error('damage found but not recorded in the catalog', { volume: id, damage: damage.length, error: (err as Error).message });
      return;
    }
    const replica = fresh.filter((d) => d.kind === 'replica' && d.volumeOffset !== undefined);
    const lost = fresh.filter((d) => d.kind === 'spool' && d.seqFrom !== undefined);
    if (lost.length > 0) {
      this.repairs.request(id, `change sets lost to damage (seqs ${lost.map((d) => `${d.seqFrom}..${d.seqTo}`).join(', ')})`, [], [...lost, ...replica].map((d) => d.id));
    } else if (replica.length > 0) {
      this.repairs.request(
        id,
        'replica blocks do not match their checksums',
        replica.map((d) => ({ offset: d.volumeOffset as number, length: d.volumeLength ?? 0 })),
        replica.map((d) => d.id),
      );
    }
  }

  private sendRepair(volumeId: string, repair: RepairRow): void {
    this.volumes.get(volumeId)?.events.emit('repair', repair);
  }

  /**
   * The source's disk was rewritten outside its stream (a failback copied the recovered disk
   * onto it): its agent compares the whole volume with the replica and sends what differs.
   */
  requestWholeVolumeCompare(volumeId: string, reason: string): void {
    this.repairs.request(volumeId, reason, [], []);
  }

  /** Repairs still owed by the agent of `volumeId` (sent again after every login). */
  pendingRepairs(volumeId: string): RepairRow[] {
    return this.repairs.pending(volumeId);
  }

  /** The agent says every block of a repair is in its stream through `throughSeq`. */
  repairDone(volume: VolumeStore, repairId: number, throughSeq: number): void {
    if (!this.repairs.noteDone(volume.spec.volumeId, repairId, throughSeq, volume.appliedSeq)) {
      log.warn('RepairDone for a repair not pending', { volume: volume.spec.volumeId, repair: repairId });
    }
  }

  private checkpointDue(): void {
    for (const rt of this.volumes.values()) {
      const store = rt.store;
      if (!store || !store.checkpointDue(this.options.checkpointIntervalMs)) continue;
      try {
        store.saveCheckpoint();
      } catch (err) {
        this.applyFailed(rt, err);
      }
    }
  }

  // ---- storage health ---------------------------------------------------------------------

  /** Checks a slice of the retained spool bodies that volumes opened without reading. */
  private scrubTick(): void {
    for (const rt of this.volumes.values()) {
      const store = rt.store;
      if (!store?.scrubPending) continue;
      try {
        this.noteDamage(rt, store.scrubSpool(SCRUB_SLICE_MS));
        if (!store.scrubPending) log.info('retained change sets checked', { volume: rt.spec.volumeId });
      } catch (err) {
        log.warn('cannot check retained change sets', { volume: rt.spec.volumeId, error: (err as Error).message });
      }
      return; // one volume per tick
    }
  }

  /** Free space where a volume lives, read now (a failure compares later readings with it). */
  private freeNow(volumeId: string): number {
    this.monitor.refresh(this.volumePaths(volumeId));
    return this.monitor.freeFor(this.volumePaths(volumeId));
  }

  private volumePaths(volumeId: string): string[] {
    return [this.layout.volumeDir(volumeId), this.layout.spoolDir(volumeId), this.layout.journalDir(volumeId)];
  }

  /** Reads free space, holds or releases agents, and retries what failed when it is due. */
  private healthTick(): void {
    this.storageTick();
    this.ticks++;
    for (const rt of this.volumes.values()) {
      this.retryFailures(rt);
      if (rt.store && this.ticks % DAMAGE_POLL_TICKS === 0) {
        try {
          this.repairs.requestRecorded(rt.spec.volumeId);
        } catch (err) {
          log.warn('cannot read recorded damage', { volume: rt.spec.volumeId, error: (err as Error).message });
        }
      }
    }
    this.statusFile.request(() => this.status());
  }

  private storageTick(): void {
    for (const rt of this.volumes.values()) rt.ingestedSinceSpaceCheck = 0;
    this.readSpace([this.layout.root, ...[...this.volumes.keys()].flatMap((id) => this.volumePaths(id))]);
    for (const rt of this.volumes.values()) this.ageOutForSpace(rt, Boolean(rt.health.failure('ingest')?.full || rt.health.failure('apply')?.full));
    this.refreshHolds();
  }

  /**
   * Redo keeps its history in the spool, so a spool file system that fills stays full unless
   * points go early. When the file system holding a redo volume's files is below its floor, or
   * a write there found no room (`full`), the oldest points are aged out now: the replica is
   * advanced past the oldest spool segments until the free space would be back above the
   * target (ageOutTargetFree), and their points leave the catalog. Nothing acknowledged is lost:
   * the advance writes those versions into the replica. It is reported (warning log, status
   * `agedOutEarly`, an alert). The floor is met by aging out, so history alone never stops
   * replication; while the advance runs (in slices) the agent may be held at the floor, and is
   * let go once the space is back. What cannot be aged out (not yet applied, or an export
   * holding the volume) stays, and the agent is held or refused as before.
   */
  private ageOutForSpace(rt: VolumeRuntime, full: boolean): void {
    const store = rt.store;
    if (!store || !store.retainsSpool) return;
    const id = rt.spec.volumeId;
    const paths = this.volumePaths(id);
    const tight = this.monitor.tightest(paths);
    if (!tight || (!full && !tight.space.low)) return;
    const want = ageOutTargetFree(tight.floorBytes, tight.space.totalBytes) - tight.space.freeBytes - store.spoolBytesBeingFreed;
    if (rt.advancing) return;
    try {
      // The spool is freed up to the checkpoint only: make it current when no step runs.
      store.checkpointNow();
    } catch (err) {
      this.applyFailed(rt, err);
      return;
    }
    const plan = planEarlyAgeOut({ segments: store.spoolSegments(), baseSeq: store.oldestRetainedSeq, limitSeq: store.checkpointSeq, wantBytes: want });
    if (!plan) return;
    this.advanceInSlices(rt, store, plan.toSeq, () => {
      const points = this.catalog.prunePointsBeforeSeq(id, store.oldestRetainedSeq);
      this.prunedPoints += points;
      const prev = rt.agedOutEarly;
      rt.agedOutEarly = {
        points: (prev?.points ?? 0) + points,
        times: (prev?.times ?? 0) + 1,
        freedBytes: (prev?.freedBytes ?? 0) + plan.freedBytes,
        oldestRetainedSeq: store.oldestRetainedSeq,
        lastUs: nowUs(),
      };
      log.warn('points aged out early: no room for the retention window', {
        volume: id,
        path: tight.space.path,
        freeBytes: tight.space.freeBytes,
        points,
        oldestRetainedSeq: store.oldestRetainedSeq,
        freedBytes: plan.freedBytes,
        enough: plan.enough,
      });
      if (full) {
        rt.health.retryNow('ingest');
        rt.health.retryNow('apply');
      }
      this.readSpace(paths);
      this.refreshHold(rt);
    });
  }

  /**
   * Advances a redo volume's replica to `toSeq` in slices (ingest and apply go on between
   * them), one advance per volume at a time; `then` runs once it advanced (not when an export
   * held the volume, nor when the volume was closed meanwhile). A retained change set that
   * turns out damaged is recorded and a repair asked of the agent; the next run tries again.
   */
  private advanceInSlices(rt: VolumeRuntime, store: VolumeStore, toSeq: number, then: () => void): void {
    if (rt.advancing) return;
    rt.advancing = true;
    const id = rt.spec.volumeId;
    void store
      .pruneJournalThroughAsync(toSeq)
      .then((advanced) => {
        if (advanced > 0 && this.isCurrent(rt, store)) then();
      })
      .catch((err: unknown) => {
        log.warn('the redo replica was not advanced', { volume: id, toSeq, error: (err as Error).message });
        if (err instanceof RetainedDataDamagedError && this.isCurrent(rt, store)) this.noteDamage(rt, [err.damage]);
      })
      .finally(() => {
        rt.advancing = false;
      });
  }

  private readSpace(paths: string[]): void {
    for (const { space, becameLow } of this.monitor.refresh(paths)) {
      if (becameLow) log.warn('free space low on the receiver: agents are held', { path: space.path, freeBytes: space.freeBytes, minFreeBytes: this.options.minFreeBytes });
      else log.info('free space back on the receiver: agents released', { path: space.path, freeBytes: space.freeBytes });
    }
  }

  private retryFailures(rt: VolumeRuntime): void {
    const id = rt.spec.volumeId;
    const free = this.monitor.freeFor(this.volumePaths(id));
    if (!rt.store) {
      if (rt.health.due('open', free) && !this.catalog.volume(id)?.damaged) this.tryOpen(rt);
      return;
    }
    const store = rt.store;
    if (rt.health.due('ingest', free)) {
      try {
        store.recoverIngest();
        rt.health.recovered('ingest');
        log.info('ingest resumed: the spool takes change sets again', { volume: id, durableSeq: store.durableSeq });
        this.refreshHolds();
      } catch (err) {
        rt.health.fail('ingest', err, free);
        log.warn('spool still cannot take change sets', { volume: id, error: (err as Error).message });
      }
    }
    if (rt.health.due('apply', free) && rt.health.failure('apply')?.damaged) {
      // A spool record damaged since the volume was opened: open it again, which finds the
      // damage, reports it and lets apply go on after it.
      this.reopen(rt, store);
      return;
    }
    if (rt.health.due('apply', free)) {
      try {
        const rolledBack = store.recoverApply();
        rt.health.recovered('apply');
        log.info('apply resumed from the checkpoint', { volume: id, checkpointSeq: store.checkpointSeq, rolledBackRecords: rolledBack });
        this.schedulePump();
      } catch (err) {
        rt.health.fail('apply', err, free);
        log.warn('apply still cannot resume', { volume: id, error: (err as Error).message });
      }
    }
  }

  /** Closes a volume's files and opens them again; the sessions using it must declare it anew. */
  private reopen(rt: VolumeRuntime, store: VolumeStore): void {
    const perr = new ProtocolError(ErrorCode.VOLUME_FAILED, `volume ${rt.spec.volumeId} is being opened again on the receiver; declare it again`);
    rt.events.emit('failed', { volumeId: rt.spec.volumeId, error: perr });
    store.abandon();
    rt.store = undefined;
    rt.health.recovered('apply');
    rt.health.recovered('ingest');
    if (!this.tryOpen(rt)) return;
    log.info('volume opened again after damage appeared', { volume: rt.spec.volumeId });
  }

  /**
   * Who decides a volume's retention window (the control plane: its group's policy); undefined
   * from `windowUs` means the receiver-wide window.
   */
  useRetentionWindows(windowUs: (volumeId: string) => number | undefined): void {
    this.retentionOf = windowUs;
  }

  /** The retention window of a volume, µs. */
  retentionWindowUs(volumeId: string): number {
    return this.retentionOf(volumeId) ?? this.options.retentionUs;
  }

  /** Free space of every file system holding receiver data, as last read. */
  /** Bytes on disk in every volume's spool and journal (a directory that cannot be read counts 0). */
  diskUse(): { spoolBytes: number; journalBytes: number } {
    let spoolBytes = 0;
    let journalBytes = 0;
    for (const id of this.volumes.keys()) {
      spoolBytes += directoryBytes(this.layout.spoolDir(id));
      journalBytes += directoryBytes(this.layout.journalDir(id));
    }
    return { spoolBytes, journalBytes };
  }

  storageSpaces(): Array<{ path: string; freeBytes: number; totalBytes: number; low: boolean }> {
    return this.monitor.all.map((s) => ({ path: s.path, freeBytes: s.freeBytes, totalBytes: s.totalBytes, low: s.low }));
  }

  /** Drops points older than the window and the journal segments no remaining point needs. */
  runRetention(): void {
    const now = nowUs();
    for (const [id, rt] of this.volumes) {
      const store = rt.store;
      if (!store) continue;
      const cutoff = now - this.retentionWindowUs(id);
      try {
        // Points a redo base passed (an early age-out a crash interrupted, a migration) go too.
        const belowBase = store.oldestRetainedSeq > 0 ? this.catalog.prunePointsBeforeSeq(id, store.oldestRetainedSeq) : 0;
        const pruned = this.catalog.prunePointsBefore(id, cutoff) + belowBase;
        this.prunedPoints += pruned;
        const oldest = this.catalog.oldestPointSeq(id);
        const keepAfter = Math.min(oldest ?? store.checkpointSeq, store.checkpointSeq);
        if (store.retainsSpool) {
          // Redo: the advance takes seconds per GB; it runs in slices, off this turn.
          if (pruned > 0) log.info('retention pruned', { volume: id, points: pruned });
          this.advanceInSlices(rt, store, keepAfter, () => log.info('retention advanced the replica', { volume: id, oldestRetainedSeq: store.oldestRetainedSeq }));
          continue;
        }
        const segments = store.pruneJournalThrough(keepAfter);
        this.prunedJournalSegments += segments;
        if (pruned > 0 || segments > 0) log.info('retention pruned', { volume: id, points: pruned, journalSegments: segments });
      } catch (err) {
        log.warn('retention did not run for a volume', { volume: id, error: (err as Error).message });
        // A redo advance that needs a damaged retained change set: record it and ask the agent
        // (the hash-compare resync resends the blocks it serves); retention retries meanwhile.
        if (err instanceof RetainedDataDamagedError) this.noteDamage(rt, [err.damage]);
      }
    }
  }

  // ---- status --------------------------------------------------------------------------------

  volumeStatus(): VolumeRuntimeStatus[] {
    const now = nowUs();
    let openDamage: ReturnType<RepairDesk['openDamage']> = [];
    try {
      openDamage = this.repairs.openDamage();
    } catch {
      // the catalog cannot be read: the status still says what it can
    }
    return [...this.volumes.entries()].map(([id, rt]) => {
      const store = rt.store;
      const isConnected = rt.events.subscribed;
      let rpoUs: number;
      if (isConnected) rpoUs = rt.pendingSinceUs > 0 ? Math.max(0, now - rt.pendingSinceUs) : 0;
      // Offline: exposed since the agent was last heard from, or earlier if it then held
      // changes not yet durable here (scan capture dates them from the previous read).
      else rpoUs = rt.lastContactUs > 0 ? now - Math.min(rt.lastContactUs, rt.pendingSinceUs || rt.lastContactUs) : 0;
      const oldestUnapplied = store?.oldestUnappliedCaptureUs ?? 0;
      const damage = openDamage.filter((d) => d.volumeId === id);
      const held = this.holdReason(rt, rt.holding);
      const state = rt.health.state !== 'healthy' ? rt.health.state : damage.length > 0 ? 'damaged' : held ? 'held' : 'healthy';
      return {
        volumeId: id,
        connected: isConnected,
        state,
        problem: rt.health.describe() ?? (damage.length > 0 ? `${damage.length} damaged place(s), repair ${this.repairs.pending(id).length > 0 ? 'pending' : 'not possible'}` : held),
        durableSeq: store?.durableSeq ?? 0,
        appliedSeq: store?.appliedSeq ?? 0,
        checkpointSeq: store?.checkpointSeq ?? 0,
        rpoSeconds: rpoUs / 1e6,
        applyLagSeqs: store ? store.durableSeq - store.appliedSeq : 0,
        applyLagSeconds: oldestUnapplied > 0 ? Math.max(0, now - oldestUnapplied) / 1e6 : 0,
        unappliedBytes: store?.unappliedBytes ?? 0,
        receivedBytes: rt.receivedBytes,
        journalSegments: store?.journalSegments ?? 0,
        damage: damage.map((d) => ({ kind: d.kind, file: d.file, offset: d.offset, seqFrom: d.seqFrom, seqTo: d.seqTo, volumeOffset: d.volumeOffset, detail: d.detail })),
        applyError: rt.health.failure('apply')?.reason,
        agedOutEarly: rt.agedOutEarly,
      };
    });
  }

  /** What needs an operator now: low space, a used-up reserve, failed or damaged volumes. */
  alerts(volumes: VolumeRuntimeStatus[] = this.volumeStatus()): ReceiverAlert[] {
    const alerts: ReceiverAlert[] = [];
    for (const space of this.monitor.all) {
      if (space.low) alerts.push({ severity: 'warning', subject: space.path, message: `free space low: ${Math.round(space.freeBytes / 1048576)} MiB free; agents are held until there is room` });
    }
    if (this.monitor.reserveReleased) alerts.push({ severity: 'warning', subject: this.layout.reserveFile, message: 'the space reserve was used up by a full disk' });
    for (const v of volumes) {
      if (v.state === 'failed' || v.state === 'full') alerts.push({ severity: 'error', subject: v.volumeId, message: v.problem ?? v.state });
      const early = v.agedOutEarly;
      if (early && nowUs() - early.lastUs < AGED_OUT_ALERT_US) {
        alerts.push({
          severity: 'warning',
          subject: v.volumeId,
          message: `${early.points} point(s) aged out early for lack of space (${early.times} time(s)); points before seq ${early.oldestRetainedSeq} are gone: retention is shorter than its window until there is more room`,
        });
      }
      for (const d of v.damage) alerts.push({ severity: 'error', subject: v.volumeId, message: `damage in ${d.kind} ${d.file} at byte ${d.offset}: ${d.detail}` });
    }
    return alerts;
  }

  /** Rewrites the status file now, on the main thread (at start and stop). */
  writeStatus(): void {
    try {
      this.statusFile.writeNow(this.status());
    } catch (err) {
      log.warn('cannot write status file', { error: (err as Error).message });
    }
  }

  /** No periodic status write lands after this resolves; the server awaits it before `stop`. */
  settleStatus(): Promise<void> {
    return this.statusFile.settle();
  }

  private status(): ReceiverStatus {
    const volumes = this.volumeStatus();
    return {
      pid: process.pid,
      updatedUs: nowUs(),
      listen: this.listenAddress,
      fingerprint: this.identity.fingerprint,
      sessions: this.sessionCount,
      prunedPoints: this.prunedPoints,
      prunedJournalSegments: this.prunedJournalSegments,
      storage: this.monitor.all.map((s) => ({ path: s.path, freeBytes: s.freeBytes, totalBytes: s.totalBytes, low: s.low })),
      alerts: this.alerts(volumes),
      volumes,
    };
  }

  stop(): void {
    if (this.pausePoll) clearTimeout(this.pausePoll);
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    for (const rt of this.volumes.values()) {
      try {
        rt.store?.close();
      } catch (err) {
        log.warn('volume not closed cleanly', { volume: rt.spec.volumeId, error: (err as Error).message });
        rt.store?.abandon();
      }
    }
    this.volumes.clear();
    void this.statusFile.settle();
    this.writeStatus();
    this.catalog.close();
  }
}

function directoryBytes(dir: string): number {
  let total = 0;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    try {
      const st = fs.statSync(`${dir}/${name}`);
      if (st.isFile()) total += st.blocks * 512;
    } catch {
      // removed while counting
    }
  }
  return total;
}
