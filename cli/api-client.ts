import * as https from 'https';
import * as net from 'net';
import * as tls from 'tls';
import { ExitCode, ExitCodeValue, FerryError } from '../common/errors';

/** Where the management API is and how to trust it. */
export interface ApiTarget {
  /** https://HOST:PORT */
  url: string;
  /** SHA-256 of the API's certificate, pinned (AB:CD:... or plain hex). */
  fingerprint: string;
  token?: string;
}

export function normalizeFingerprint(fp: string): string {
  return fp.replace(/[^0-9a-f]/gi, '').toUpperCase();
}

/** The API's base URL, checked: https only, host and port, no path. */
export function parseApiUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new FerryError(`--api ${JSON.stringify(text)} is not a URL: expected https://HOST:PORT`, ExitCode.usage);
  }
  if (url.protocol !== 'https:') throw new FerryError(`--api ${text}: the management API speaks https only (https://HOST:PORT)`, ExitCode.usage);
  if (url.pathname !== '/' && url.pathname !== '') throw new FerryError(`--api ${text}: give only https://HOST:PORT, no path`, ExitCode.usage);
  return url;
}

/** A refused call: the API's status, error code, message and field at fault. */
export class ApiRefusal extends FerryError {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly apiMessage: string,
    readonly field: string | undefined,
  ) {
    super(`${apiMessage}${field && status === 400 ? ` (field: ${field})` : ''} [HTTP ${status} ${code}]`, exitCodeFor(status));
    this.name = 'ApiRefusal';
  }
}

export function exitCodeFor(status: number): ExitCodeValue {
  if (status === 400) return ExitCode.usage;
  if (status === 401 || status === 403 || status === 429) return ExitCode.auth;
  if (status === 404) return ExitCode.notFound;
  if (status === 503) return ExitCode.notReady;
  return ExitCode.failure;
}

function hostOf(url: URL): string {
  return url.hostname.replace(/^\[|\]$/g, '');
}

/**
 * A TLS 1.3 connection whose certificate has the pinned fingerprint (or, with `pinned`
 * undefined, any certificate: only for a first login, which reports the one it saw).
 * Nothing is sent before the check.
 */
export function connectPinned(url: URL, pinned: string | undefined, timeoutMs: number): Promise<{ socket: tls.TLSSocket; fingerprint: string }> {
  const host = hostOf(url);
  const port = Number(url.port || 443);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, servername: net.isIP(host) ? undefined : host, rejectUnauthorized: false, minVersion: 'TLSv1.3', ALPNProtocols: ['http/1.1'] });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new FerryError(`cannot reach the management API at ${url.origin}: no answer within ${timeoutMs / 1000}s`, ExitCode.unreachable));
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const seen = socket.getPeerCertificate()?.fingerprint256 ?? '';
      if (pinned !== undefined && normalizeFingerprint(seen) !== normalizeFingerprint(pinned)) {
        socket.destroy();
        reject(new FerryError(`the management API at ${url.origin} presents certificate ${seen || '(none)'}, not the pinned ${pinned}: refusing to talk to it (ferry login again if the receiver's certificate changed)`, ExitCode.auth));
        return;
      }
      resolve({ socket, fingerprint: seen });
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new FerryError(`cannot reach the management API at ${url.origin}: ${err.code ?? err.message}`, ExitCode.unreachable));
    });
  });
}

interface RawResponse {
  status: number;
  contentType: string;
  body: string;
}

export class ApiClient {
  private readonly base: URL;

  constructor(
    private readonly target: ApiTarget,
    private readonly timeoutMs = 60_000,
  ) {
    this.base = parseApiUrl(target.url);
  }

  get url(): string {
    return this.base.origin;
  }

  async get<T>(path: string, query: Record<string, string | number | undefined> = {}): Promise<T> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, String(v));
    const qs = params.toString();
    return this.call<T>('GET', qs ? `${path}?${qs}` : path);
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.raw(method, path, body);
    if (res.status >= 200 && res.status < 300) {
      if (res.status === 204 || res.body === '') return undefined as T;
      return res.contentType.includes('json') ? (JSON.parse(res.body) as T) : (res.body as T);
    }
    throw refusalOf(res);
  }

  /** Reads the event stream, handing each event's data to `onEvent` until `signal` aborts or the server ends it. */
  async stream(path: string, onEvent: (data: string) => void, signal?: AbortSignal, onOpen?: () => void): Promise<void> {
    const req = await this.open('GET', path, undefined);
    await new Promise<void>((resolve, reject) => {
      signal?.addEventListener('abort', () => {
        req.destroy();
        resolve();
      });
      req.once('response', (res) => {
        if (res.statusCode !== 200) {
          collect(res).then((r) => reject(refusalOf(r)), reject);
          return;
        }
        onOpen?.();
        let buffered = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffered += chunk;
          let end: number;
          while ((end = buffered.indexOf('\n\n')) >= 0) {
            const block = buffered.slice(0, end);
            buffered = buffered.slice(end + 2);
            const data = block
              .split('\n')
              .filter((l) => l.startsWith('data: '))
              .map((l) => l.slice(6))
              .join('\n');
            if (data !== '') onEvent(data);
          }
        });
        res.once('end', () => resolve());
        res.once('error', () => resolve());
      });
      req.once('error', (err) => (signal?.aborted ? resolve() : reject(err)));
      req.end();
    });
  }

  private async raw(method: string, path: string, body: unknown): Promise<RawResponse> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = await this.open(method, path, payload);
    return new Promise((resolve, reject) => {
      req.setTimeout(this.timeoutMs, () => req.destroy(new Error(`no answer within ${this.timeoutMs / 1000}s`)));
      req.once('response', (res) => collect(res).then(resolve, reject));
      req.once('error', (err) => reject(new FerryError(`management API call ${method} ${path} failed: ${err.message}`, ExitCode.unreachable)));
      req.end(payload);
    });
  }

  private async open(method: string, path: string, payload: string | undefined): Promise<ReturnType<typeof https.request>> {
    const { socket } = await connectPinned(this.base, this.target.fingerprint, Math.min(this.timeoutMs, 15_000));
    const headers: Record<string, string> = { Accept: 'application/json, text/event-stream, text/plain', Connection: 'close' };
    if (this.target.token) headers.Authorization = `Bearer ${this.target.token}`;
    if (payload !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = String(Buffer.byteLength(payload));
    }
    return https.request({ host: hostOf(this.base), port: Number(this.base.port || 443), method, path, headers, createConnection: () => socket });
  }
}

function collect(res: import('http').IncomingMessage): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.once('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), body: Buffer.concat(chunks).toString('utf8') }));
    res.once('error', reject);
  });
}

function refusalOf(res: RawResponse): ApiRefusal {
  let parsed: { error?: unknown; message?: unknown; field?: unknown } = {};
  try {
    parsed = JSON.parse(res.body) as typeof parsed;
  } catch {
    // Not JSON (a proxy's page): the status speaks for itself.
  }
  const message = typeof parsed.message === 'string' ? parsed.message : `the management API answered HTTP ${res.status}`;
  return new ApiRefusal(res.status, typeof parsed.error === 'string' ? parsed.error : 'error', message, typeof parsed.field === 'string' ? parsed.field : undefined);
}
