import * as fs from 'fs';
import * as http from 'http';
import * as net from 'net';
import { FerryError } from '../common/errors';
import { log } from '../common/log';
import { parseHostPort } from '../common/units';
import type { ControlledAgent, TagResult } from './control-api';
import { AgentStatus, prometheusText } from './status';
import type { VerifyProgress, VerifyReport } from './verify/verifier';

/**
 * Requests the local control socket accepts: one JSON line in, one JSON line out (a verify
 * first sends `{"progress": ...}` lines while it runs).
 */
export type ControlRequest = { cmd: 'status' } | { cmd: 'tag'; app: boolean; name: string } | { cmd: 'verify'; volumeId?: string; repair: boolean };
export type ControlReply = { ok: true; status?: AgentStatus; tag?: TagResult; verify?: VerifyReport } | { ok: false; error: string; exitCode?: number };

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

/**
 * Sends one request to a running agent; rejects with a clear message when none listens.
 * Progress lines the agent sends before its reply go to `onProgress`.
 */
export function controlRequest(socketPath: string, req: ControlRequest, timeoutMs: number, onProgress?: (p: VerifyProgress) => void): Promise<ControlReply> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(socketPath);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`the agent did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl >= 0 && buf.startsWith('{"progress"'); nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          onProgress?.((JSON.parse(line) as { progress: VerifyProgress }).progress);
        } catch {
          // a progress line is only for show
        }
      }
    });
    sock.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(buf) as ControlReply);
      } catch {
        reject(new Error('the agent sent an unreadable answer'));
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new Error(err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? `no agent is running (no control socket at ${socketPath})` : err.message));
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
