import * as https from 'https';
import { AddressInfo, Socket } from 'net';
import { WebSocketServer } from 'ws';
import { ControlOptions, ControlPlane, planeOptions } from '../control/plane';
import { RunningManagementApi, startManagementApi } from '../control/api/server';
import { ExitCode, FerryError } from '../common/errors';
import { log } from '../common/log';
import { tuneMemoryForIngest } from '../common/memory';
import { ErrorCode, ProtocolError } from '../proto/errors';
import { Limits } from '../proto/limits';
import { ConnectionGate, peerAddress } from './admission';
import { AuthThrottle } from './auth-throttle';
import { Catalog } from './catalog';
import { ClientLimits, DEFAULT_CLIENT_LIMITS } from './client-limits';
import { ConnectionGuard } from './connection-guard';
import { CoreOptions, ReceiverCore } from './core';
import { FailbackAccess, FailbackSessions, FailbackTuning } from './failback-sender';
import { IdentityOptions, loadOrCreateIdentity, ReceiverIdentity } from './identity';
import { DataLayout } from './layout';
import { Session } from './session';
import { openRecovery, type RecoveryTargetChoice } from '../recovery/open';
import type { RecoveryService } from '../recovery/service';

export interface ReceiverOptions extends IdentityOptions, CoreOptions, Partial<ClientLimits>, ControlOptions {
  dataDir: string;
  host: string;
  port: number;
  /** Where the management API listens (HTTPS, same certificate); undefined: no API. */
  api?: { host: string; port: number };
  /** Where recovered machines run (default qemu; 'off': this receiver runs none). */
  recoveryTarget?: RecoveryTargetChoice;
  /** Why a machine's stream is refused now (the recovery service: it is failed over). */
  streamRefusal?: (agentId: string) => string | undefined;
  /** The recovery service's side of failback sessions; without it a failback login is refused. */
  failback?: FailbackAccess;
  failbackTuning?: FailbackTuning;
}

/** One accepted TCP connection: its bounds, and whether it was admitted or is only to be told why not. */
interface Connection {
  raw: Socket;
  guard: ConnectionGuard;
  address: string;
  refusal: string | undefined;
}

/** The raw and the TLS socket of one connection report the same remote end: that links them. */
function connectionKey(socket: Socket): string {
  return `${socket.remoteAddress ?? '?'}|${socket.remotePort ?? '?'}`;
}

export interface RunningReceiver {
  port: number;
  identity: ReceiverIdentity;
  core: ReceiverCore;
  /** The configuration server (machines, groups, rounds, events): what the management API serves. */
  plane: ControlPlane;
  /** The management API, when `api` was given. */
  api: RunningManagementApi | undefined;
  /** Recovery plans and jobs (test failover, failover, failback). */
  recovery: RecoveryService;
  close(): Promise<void>;
}

/** Starts the receiver: opens (and recovers) every volume, then serves wss with TLS 1.3 only. */
export async function startReceiver(options: ReceiverOptions): Promise<RunningReceiver> {
  tuneMemoryForIngest();
  const layout = new DataLayout(options.dataDir);
  const identity = await loadOrCreateIdentity(layout, options);
  const catalog = Catalog.open(layout.catalogFile);
  const core = new ReceiverCore(layout, catalog, identity, options);
  // The plane first: it gives the core each volume's retention window (its group's).
  const plane = ControlPlane.open(core, planeOptions(options));
  core.start();
  plane.start();
  const sessions = new Set<Session>();
  const recovery = await openRecovery({
    dataDir: options.dataDir,
    catalogFile: layout.catalogFile,
    core,
    plane,
    target: options.recoveryTarget ?? 'qemu',
    // A machine that fails over stops streaming at once: its live sessions end with FAILED_OVER.
    endStreams: (agentId, reason) => {
      for (const s of sessions) if (s.streams(agentId)) s.fail(new ProtocolError(ErrorCode.FAILED_OVER, reason));
    },
  });

  const limits: ClientLimits = { ...DEFAULT_CLIENT_LIMITS, ...definedOnly(options) };
  const auth = new AuthThrottle(limits);
  const failbackSessions = new FailbackSessions();
  const handshakeMs = limits.handshakeTimeoutMs;
  const server = https.createServer({
    cert: identity.cert,
    key: identity.key,
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    // Each phase of the handshake on its own is bounded too (the guard bounds them together).
    handshakeTimeout: handshakeMs,
    headersTimeout: handshakeMs,
    requestTimeout: handshakeMs,
    connectionsCheckingInterval: Math.min(30_000, Math.max(100, Math.floor(handshakeMs / 4))),
  });
  const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: Limits.maxFrameBytes + 1024 * 1024 });

  const connections = trackConnections(server, limits);
  // Only WebSocket upgrades are served: anything else is told so and closed.
  server.on('request', (_req, res) => {
    res.writeHead(426, { 'Content-Type': 'text/plain', Connection: 'close' });
    res.end('ferry receiver: agents connect with wss\n');
  });

  wss.on('connection', (ws, req) => {
    const peer = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`;
    const connection = connections.lookup(req.socket);
    if (!connection) {
      ws.terminate();
      return;
    }
    const { guard, address, refusal } = connection;
    const session = new Session(ws, core, peer, {
      peerAddress: address,
      auth,
      maxTimeAheadUs: limits.maxTimeAheadMs * 1000,
      closeGraceMs: limits.closeGraceMs,
      onLogin: () => guard.onLogin(),
      control: plane,
      streamRefusal: options.streamRefusal ?? ((agentId) => recovery.streamRefusal(agentId)),
      failback: options.failback ?? recovery.failbackAccess(),
      failbackTuning: options.failbackTuning,
      failbackSessions,
    });
    guard.bindSession(session);
    sessions.add(session);
    ws.on('message', (data, isBinary) => session.onMessage(data as Buffer, isBinary));
    ws.on('error', (err) => log.warn('connection error', { peer, error: err.message }));
    let endSession: (() => void) | undefined;
    ws.on('close', () => {
      sessions.delete(session);
      session.closed();
      endSession?.();
    });
    if (refusal) {
      session.fail(new ProtocolError(ErrorCode.TOO_MANY_CONNECTIONS, refusal));
      return;
    }
    endSession = core.openSession();
  });
  server.on('tlsClientError', (err, tls) => log.warn('TLS handshake refused', { peer: tls.remoteAddress, error: err.message }));

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new FerryError(`cannot listen on ${options.host}:${options.port}: ${err.code ?? err.message}`, ExitCode.failure)),
    );
    server.listen(options.port, options.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  core.listenAddress = `${options.host}:${port}`;
  core.writeStatus();
  let api: RunningManagementApi | undefined;
  try {
    api = options.api && (await startManagementApi(plane, { ...options.api, cert: identity.cert, key: identity.key, dataDir: options.dataDir, agentUrl: `wss://${options.host}:${port}`, recovery }));
  } catch (err) {
    for (const client of wss.clients) client.terminate();
    connections.destroyAll();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await recovery.stop();
    plane.stop();
    await core.settleStatus();
    core.stop();
    throw err;
  }

  return {
    port,
    identity,
    core,
    plane,
    api,
    recovery,
    close: async () => {
      await api?.close();
      await recovery.stop();
      for (const client of wss.clients) client.terminate();
      connections.destroyAll();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
      plane.stop();
      await core.settleStatus();
      core.stop();
    },
  };
}

/**
 * Admits every TCP connection within the caps (or marks it to be told TOO_MANY_CONNECTIONS,
 * or drops it) and puts it under a ConnectionGuard from accept to close.
 */
function trackConnections(server: https.Server, limits: ClientLimits): { lookup(socket: Socket): Connection | undefined; destroyAll(): void } {
  const gate = new ConnectionGate(limits);
  const connections = new Map<string, Connection>();
  server.on('connection', (raw: Socket) => {
    const admission = gate.admit(peerAddress(raw.remoteAddress));
    if (admission.kind === 'dropped') {
      raw.destroy();
      return;
    }
    const key = connectionKey(raw);
    const guard = new ConnectionGuard(raw, `${raw.remoteAddress ?? '?'}:${raw.remotePort ?? '?'}`, limits);
    connections.set(key, { raw, guard, address: peerAddress(raw.remoteAddress), refusal: admission.kind === 'refused' ? admission.message : undefined });
    raw.once('close', () => {
      guard.dispose();
      connections.delete(key);
      admission.release();
    });
  });
  server.on('secureConnection', (tls: Socket) => connections.get(connectionKey(tls))?.guard.watch(tls));
  return {
    lookup: (socket) => connections.get(connectionKey(socket)),
    // Connections that never became sessions would otherwise hold up the server's close.
    destroyAll: () => {
      for (const c of connections.values()) c.raw.destroy();
    },
  };
}

/** The options that are set (undefined ones must not override the defaults). */
function definedOnly(options: Partial<ClientLimits>): Partial<ClientLimits> {
  const keys = Object.keys(DEFAULT_CLIENT_LIMITS) as Array<keyof ClientLimits>;
  return Object.fromEntries(keys.filter((k) => options[k] !== undefined).map((k) => [k, options[k]]));
}
