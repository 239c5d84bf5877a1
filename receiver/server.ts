import * as https from 'https';
import { AddressInfo } from 'net';
import { WebSocketServer } from 'ws';
import { ExitCode, FerryError } from '../common/errors';
import { log } from '../common/log';
import { limitHeapRetention } from '../common/memory';
import { Limits } from '../proto/limits';
import { Catalog } from './catalog';
import { CoreOptions, ReceiverCore } from './core';
import { IdentityOptions, loadOrCreateIdentity, ReceiverIdentity } from './identity';
import { DataLayout } from './layout';
import { Session } from './session';

export interface ReceiverOptions extends IdentityOptions, CoreOptions {
  dataDir: string;
  host: string;
  port: number;
}

export interface RunningReceiver {
  port: number;
  identity: ReceiverIdentity;
  core: ReceiverCore;
  close(): Promise<void>;
}

/** Starts the receiver: opens (and recovers) every volume, then serves wss with TLS 1.3 only. */
export async function startReceiver(options: ReceiverOptions): Promise<RunningReceiver> {
  limitHeapRetention();
  const layout = new DataLayout(options.dataDir);
  const identity = await loadOrCreateIdentity(layout, options);
  const catalog = Catalog.open(layout.catalogFile);
  const core = new ReceiverCore(layout, catalog, identity, options);
  core.start();

  const server = https.createServer({ cert: identity.cert, key: identity.key, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' });
  const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: Limits.maxFrameBytes + 1024 * 1024 });
  wss.on('connection', (ws, req) => {
    const peer = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`;
    const session = new Session(ws, core, peer);
    core.sessions.add(session);
    ws.on('message', (data, isBinary) => session.onMessage(data as Buffer, isBinary));
    ws.on('error', (err) => log.warn('connection error', { peer, error: err.message }));
    ws.on('close', () => {
      session.closed();
      core.sessions.delete(session);
    });
  });
  server.on('tlsClientError', (err) => log.warn('TLS handshake refused', { error: err.message }));

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new FerryError(`cannot listen on ${options.host}:${options.port}: ${err.code ?? err.message}`, ExitCode.failure)),
    );
    server.listen(options.port, options.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  core.listenAddress = `${options.host}:${port}`;
  core.writeStatus();

  return {
    port,
    identity,
    core,
    close: async () => {
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await new Promise<void>((resolve) => server.close(() => resolve()));
      core.stop();
    },
  };
}
