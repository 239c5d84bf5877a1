import * as fs from 'fs';
import * as http from 'http';
import * as net from 'net';
import { FerryError } from '../common/errors';
import { log } from '../common/log';
import { parseHostPort } from '../common/units';
import type { ControlledAgent } from './control-api';
import type { ControlReply, ControlRequest } from './control-client';
import { prometheusText } from './status';
import type { VerifyProgress } from './verify/verifier';

export { controlRequest } from './control-client';
export type { ControlReply, ControlRequest } from './control-client';

const MAX_REQUEST_BYTES = 4096;

function parseRequest(line: string): ControlRequest {
  const doc = JSON.parse(line) as Record<string, unknown>;
  if (doc.cmd === 'status') return { cmd: 'status' };
  if (doc.cmd === 'tag') return { cmd: 'tag', app: doc.app === true, name: typeof doc.name === 'string' ? doc.name.slice(0, 128) : '' };
  if (doc.cmd === 'verify') return { cmd: 'verify', volumeId: typeof doc.volumeId === 'string' ? doc.volumeId.slice(0, 128) : undefined, repair: doc.repair !== false };
  throw new Error(`unknown command ${JSON.stringify(doc.cmd)}`);
}

/** The client of a request: where a verify's progress goes, and whether it went away. */
interface Requester {
  progress(p: VerifyProgress): void;
  gone(): boolean;
}

async function handle(agent: ControlledAgent, line: string, client: Requester): Promise<ControlReply> {
  try {
    const req = parseRequest(line);
    if (req.cmd === 'status') return { ok: true, status: agent.status() };
    if (req.cmd === 'verify') return { ok: true, verify: await agent.verify({ volumeId: req.volumeId, repair: req.repair }, client.progress, client.gone) };
    return { ok: true, tag: await agent.tag(req.app, req.name) };
  } catch (err) {
    return { ok: false, error: (err as Error).message, exitCode: err instanceof FerryError ? err.exitCode : undefined };
  }
}

/**
 * The agent's local control socket (a Unix socket in its state directory, mode 0600):
 * `ferry agent tag` and `ferry agent status` talk to the running agent through it.
 */
export function startControlServer(agent: ControlledAgent, socketPath: string): Promise<net.Server> {
  fs.rmSync(socketPath, { force: true });
  const server = net.createServer((sock) => {
    let buf = '';
    let handled = false;
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      if (handled) return;
      buf += chunk;
      if (buf.length > MAX_REQUEST_BYTES) return sock.destroy();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      handled = true;
      const client: Requester = {
        progress: (p) => {
          if (!sock.destroyed) sock.write(`${JSON.stringify({ progress: p })}\n`);
        },
        // A verify whose client is gone (Ctrl-C) stops at its next step.
        gone: () => sock.destroyed || sock.readableEnded,
      };
      void handle(agent, buf.slice(0, nl), client).then((reply) => {
        if (!sock.destroyed) sock.end(`${JSON.stringify(reply)}\n`);
      });
    });
    sock.on('error', () => undefined);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      fs.chmodSync(socketPath, 0o600);
      resolve(server);
    });
  });
}

/** Optional Prometheus text endpoint (GET /metrics) on a local port. */
export function startMetricsServer(agent: Pick<ControlledAgent, 'status'>, listen: string): Promise<http.Server> {
  const hp = parseHostPort(listen);
  if (!hp) throw new Error(`metrics.listen ${listen} is not HOST:PORT`);
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '/') !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(prometheusText(agent.status()));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(hp.port, hp.host, () => {
      log.info('metrics endpoint listening', { url: `http://${listen}/metrics` });
      resolve(server);
    });
  });
}
