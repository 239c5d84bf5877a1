// `ferry agent failback`: the original machine pulls its volumes back from the recovery site.
// It dials the receiver like the agent (invariant 6: it opens no port), logs in with a failback
// Hello, declares each volume, and then answers what the receiver drives: hash requests about
// its disks, and change sets with the blocks that differ, written and fsync'd before each ack.
import * as fs from 'fs';
import { ExitCode, FerryError } from '../common/errors';
import { formatBytes } from '../common/units';
import { log } from '../common/log';
import { nowUs } from '../common/time';
import { deviceSize } from '../native/addon';
import { ErrorCode, ProtocolError } from '../proto/errors';
import type { DecodedFrame } from '../proto/frames';
import { validateFailbackState, ValidFailbackState } from '../proto/validate-failback';
import type { AgentConfig, VolumeConfig } from './config';
import { DiskWriteError, FailbackSink } from './failback-sink';
import { dmFerryWrapped, findDiskUsage } from './failback-usage';
import { AgentState } from './state';
import { connectionFailure } from './transport/failure';
import { ConnectionError, ReceiverConnection } from './transport/receiver-connection';

const HEARTBEAT_MS = 10_000;

export interface FailbackRequest {
  config: AgentConfig;
  /** --volume ID=DEVICE: the plain device to write for a volume instead of its configured path. */
  devices: ReadonlyMap<string, string>;
  /** Write even when the disk is in use (mounted, held, attached to a loop device). */
  force: boolean;
  /** The compare block size. */
  blockSize: number;
  /** One line of progress for the operator. */
  progress(line: string): void;
}

export interface VolumeFailbackSummary {
  volumeId: string;
  path: string;
  sizeBytes: number;
  /** Block data the receiver sent (what differed, all passes). */
  sentBytes: number;
  passes: number;
  differingBlocks: number;
}

export interface FailbackTarget {
  id: string;
  path: string;
}

/**
 * The disk to write for each configured volume: the configured path, or the one `devices`
 * names for it. A device given for a volume the config does not list is refused.
 */
export function failbackTargets(volumes: readonly VolumeConfig[], devices: ReadonlyMap<string, string>): FailbackTarget[] {
  const known = new Set(volumes.map((v) => v.id));
  for (const id of devices.keys()) {
    if (!known.has(id)) throw new FerryError(`--volume ${id}=...: the config lists no volume ${id} (it has ${[...known].join(', ')})`, ExitCode.usage);
  }
  return volumes.map((v) => ({ id: v.id, path: devices.get(v.id) ?? v.path }));
}

interface OpenDisk {
  target: FailbackTarget;
  fd: number;
  sizeBytes: number;
}

/** Opens a disk to overwrite; refuses one in use unless `force`. */
export function openFailbackDisk(target: FailbackTarget, force: boolean): OpenDisk {
  const { id, path: diskPath } = target;
  let stat: fs.Stats;
  try {
    stat = fs.statSync(diskPath);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new FerryError(`volume ${id}: cannot open ${diskPath}: ${code}`, code === 'ENOENT' ? ExitCode.notFound : ExitCode.failure);
  }
  if (!stat.isFile() && !stat.isBlockDevice()) throw new FerryError(`volume ${id}: ${diskPath} is neither a block device nor an image file`, ExitCode.usage);
  const inUse = (why: string): FerryError =>
    new FerryError(
      `volume ${id}: ${diskPath} is in use (${why}): failback overwrites the disk, which must not be in use; unmount it (or boot the machine from rescue media) and run again, or pass --force`,
      ExitCode.notReady,
    );
  const wrapped = force ? undefined : dmFerryWrapped(diskPath);
  if (wrapped !== undefined) {
    throw new FerryError(
      `volume ${id}: ${diskPath} is a dm-ferry device (over ${wrapped}): writing through it would capture the failback's writes as new changes; ` +
        `give the plain device with --volume ${id}=DEVICE (the one it wraps, or the disk the machine boots from), or pass --force`,
      ExitCode.usage,
    );
  }
  const usage = findDiskUsage(diskPath);
  if (usage.length > 0 && !force) throw inUse(usage.join('; '));
  // O_EXCL on a block device: the kernel refuses it while anything holds the device.
  const flags = fs.constants.O_RDWR | (stat.isBlockDevice() && !force ? fs.constants.O_EXCL : 0);
  let fd: number;
  try {
    fd = fs.openSync(diskPath, flags);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    if (code === 'EBUSY') throw inUse('the kernel reports it busy');
    throw new FerryError(`volume ${id}: cannot open ${diskPath} for writing: ${code}`, code === 'EACCES' || code === 'EPERM' ? ExitCode.usage : ExitCode.failure);
  }
  const sizeBytes = deviceSize(fd);
  if (sizeBytes === 0 || sizeBytes % 512 !== 0) {
    fs.closeSync(fd);
    throw new FerryError(`volume ${id}: ${diskPath} is ${sizeBytes} bytes: not a disk of whole 512-byte sectors`, ExitCode.usage);
  }
  return { target, fd, sizeBytes };
}

/** What each volume has reached, as the receiver's FailbackState frames say. */
class FailbackLedger {
  private readonly states = new Map<string, ValidFailbackState>();

  constructor(
    private readonly disks: readonly OpenDisk[],
    private readonly progress: (line: string) => void,
  ) {}

  note(state: ValidFailbackState): void {
    if (!this.disks.some((d) => d.target.id === state.volumeId)) {
      throw new ProtocolError(ErrorCode.UNKNOWN_VOLUME, `failback state for ${state.volumeId}, which this session did not declare`);
    }
    this.states.set(state.volumeId, state);
    const sent = `${formatBytes(state.sentBytes)} sent, ${state.differingBlocks} blocks differed`;
    if (state.state === 'copying') this.progress(`${state.volumeId}: pass ${state.pass} started${state.final ? ' (final: the recovered machine is stopped)' : ''}`);
    else if (state.state === 'in-sync') this.progress(`${state.volumeId}: pass ${state.pass} done (${sent} so far); the recovered machine still runs: another pass follows`);
    else this.progress(`${state.volumeId}: done after ${state.pass} passes: equal to the recovered disk (${sent})`);
  }

  get allDone(): boolean {
    return this.disks.every((d) => this.states.get(d.target.id)?.state === 'done');
  }

  summary(): VolumeFailbackSummary[] {
    return this.disks.map(({ target, sizeBytes }) => {
      const s = this.states.get(target.id);
      return { volumeId: target.id, path: target.path, sizeBytes, sentBytes: s?.sentBytes ?? 0, passes: s?.pass ?? 0, differingBlocks: s?.differingBlocks ?? 0 };
    });
  }
}

/** Runs a failback to the end: resolves with each volume's figures once every disk equals its recovered disk. */
export async function runFailback(req: FailbackRequest): Promise<VolumeFailbackSummary[]> {
  const { config } = req;
  const credential = new AgentState(config.stateDir).loadCredential();
  if (!credential) throw new FerryError(`this machine is not registered (no credential in ${config.stateDir}): failback logs in as the agent that protected it`, ExitCode.auth);
  const disks: OpenDisk[] = [];
  try {
    for (const target of failbackTargets(config.volumes, req.devices)) disks.push(openFailbackDisk(target, req.force));
    return await session(req, credential.agentId, credential.credential, disks);
  } finally {
    for (const d of disks) fs.closeSync(d.fd);
  }
}

async function session(req: FailbackRequest, agentId: string, credential: Buffer, disks: OpenDisk[]): Promise<VolumeFailbackSummary[]> {
  const { receiver } = req.config;
  let conn: ReceiverConnection | undefined;
  let heartbeat: NodeJS.Timeout | undefined;
  try {
    conn = await ReceiverConnection.connect(receiver.url, { fingerprint: receiver.fingerprint, caFile: receiver.caFile });
    await conn.login(agentId, credential, true);
    req.progress(`logged in to ${receiver.url} as ${agentId} for failback of ${disks.map((d) => `${d.target.id} (${d.target.path})`).join(', ')}`);
    const sinks = new Map(disks.map((d) => [d.target.id, new FailbackSink({ volumeId: d.target.id, fd: d.fd, sizeBytes: d.sizeBytes })]));
    const ledger = new FailbackLedger(disks, req.progress);
    const live = conn;
    const finished = new Promise<void>((resolve, reject) => {
      // After the first failure nothing more is written or acked.
      let over = false;
      live.on('failed', (err: ConnectionError) => {
        over = true;
        reject(err);
      });
      live.on('frame', (frame: DecodedFrame) => {
        if (over) return;
        try {
          handleFrame(frame, live, sinks, ledger);
          if (ledger.allDone) {
            over = true;
            resolve();
          }
        } catch (err) {
          over = true;
          reject(refuseToReceiver(live, err));
        }
      });
    });
    for (const d of disks) conn.send({ failbackVolume: { volumeId: d.target.id, sizeBytes: d.sizeBytes, blockSize: req.blockSize } });
    heartbeat = setInterval(() => live.isOpen && live.send({ heartbeat: { timeUs: nowUs() } }), HEARTBEAT_MS);
    await finished;
    return ledger.summary();
  } catch (err) {
    if (err instanceof ConnectionError) throw connectionFailure(err);
    throw err;
  } finally {
    clearInterval(heartbeat);
    await conn?.close();
  }
}

function handleFrame(frame: DecodedFrame, conn: ReceiverConnection, sinks: ReadonlyMap<string, FailbackSink>, ledger: FailbackLedger): void {
  const sink = (volumeId: string | null | undefined): FailbackSink => {
    const found = sinks.get(volumeId ?? '');
    if (!found) throw new ProtocolError(ErrorCode.UNKNOWN_VOLUME, `the receiver named volume ${volumeId ?? ''}, which this session did not declare`);
    return found;
  };
  if (frame.hashRequest) {
    conn.send({ blockHashes: sink(frame.hashRequest.volumeId).hashes(frame.hashRequest) });
  } else if (frame.changeSet) {
    const target = sink(frame.changeSet.volumeId);
    const durableSeq = target.apply(frame.changeSet);
    conn.send({ ack: { volumes: [{ volumeId: target.volumeId, durableSeq }] } });
  } else if (frame.failbackState) {
    ledger.note(validateFailbackState(frame.failbackState));
  } else if (!frame.welcome) {
    throw new ProtocolError(ErrorCode.UNEXPECTED_FRAME, `${frame.body} is not part of a failback session`);
  }
}

/** Tells the receiver why the agent stops (an Error frame) and turns the failure into the CLI's error. */
function refuseToReceiver(conn: ReceiverConnection, err: unknown): FerryError {
  const code = err instanceof ProtocolError ? err.code : err instanceof DiskWriteError ? ErrorCode.VOLUME_FAILED : ErrorCode.INTERNAL;
  const message = (err as Error).message;
  log.error('failback stopped', { error: message });
  try {
    if (conn.isOpen) conn.send({ error: { code, message: message.slice(0, 1000) } });
  } catch {
    // The connection is gone: the receiver sees that too.
  }
  const what = err instanceof ProtocolError ? `the agent refused a frame of the receiver (${err.codeName}): ${message}` : message;
  return new FerryError(`failback stopped: ${what}; every change acked before this is on the disk`, ExitCode.failure);
}
