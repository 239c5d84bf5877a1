// The client side of the agent's control socket, apart from the server: `ferry agent tag`,
// `status` and `verify` load only this of the agent, so that they start fast.
import * as net from 'net';
import type { TagResult } from './control-api';
import type { AgentStatus } from './status';
import type { VerifyProgress, VerifyReport } from './verify/verifier';

/**
 * Requests the local control socket accepts: one JSON line in, one JSON line out (a verify
 * first sends `{"progress": ...}` lines while it runs).
 */
export type ControlRequest = { cmd: 'status' } | { cmd: 'tag'; app: boolean; name: string } | { cmd: 'verify'; volumeId?: string; repair: boolean };
export type ControlReply = { ok: true; status?: AgentStatus; tag?: TagResult; verify?: VerifyReport } | { ok: false; error: string; exitCode?: number };

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
