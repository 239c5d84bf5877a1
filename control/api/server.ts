import swagger from '@fastify/swagger';
import Fastify, { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Server } from 'https';
import * as path from 'path';
import { ExitCode, FerryError } from '../../common/errors';
import { log } from '../../common/log';
import { peerAddress } from '../../receiver/admission';
import { AuthThrottle } from '../../receiver/auth-throttle';
import { certificateFingerprint } from '../../receiver/identity';
import type { ControlPlaneApi } from '../contract';
import { OperatorStore, TokenInfo } from '../operators';
import { ApiError, refusalFor } from './errors';
import { EventStreams } from './event-stream';
import { registerAuthRoutes } from './auth-routes';
import { registerPlaneRoutes } from './plane-routes';
import { registerRecoveryRoutes } from './recovery-routes';
import { recoverySharedSchemas } from './recovery-schemas';
import { exportWithCli, PointExporter } from '../../recovery/exporter';
import { DEFAULT_CONSOLE_DIR, registerConsole } from './console-static';
import { overviewOf, registerOverviewRoutes } from './overview-routes';
import { OverviewStreams } from './overview-stream';
import { clearedSessionCookie, CSRF_HEADER, csrfProblem, sessionFromCookie } from './session';
import type { RecoveryApi } from '../../recovery/contract';
import { routeSchemas, sharedSchemas } from './schemas';

export const API_PREFIX = '/api/v1';
/** At most this many missed events are replayed to a stream client that reconnects. */
const MISSED_EVENTS_REPLAYED = 1000;
/** How often open overview streams look for a change. */
const OVERVIEW_INTERVAL_MS = 1000;

export interface ManagementApiOptions {
  host: string;
  /** 0: any free port. */
  port: number;
  /** The receiver's TLS identity (PEM). */
  cert: string;
  key: string;
  /** The receiver's data directory: operators.db and, on first run, admin-password live here. */
  dataDir: string;
  /** Where agents connect (wss://HOST:PORT), for push installs; shown by GET /api/v1/receiver. */
  agentUrl?: string;
  /** Failed logins per address before a lockout, the first lockout and its cap (default 5, 1 s, 5 min; doubling). */
  authLockoutAfter?: number;
  authLockoutMs?: number;
  authLockoutMaxMs?: number;
  /** Comment lines on the event stream (default 15 s). */
  keepAliveMs?: number;
  /** Plans, recovery jobs and protection; without it the recovery routes answer 503. */
  recovery?: RecoveryApi;
  /** The built web console served at `/` (default: console/dist of this install). */
  consoleDir?: string;
  /** Writes point images for POST /points/:id/export (default: a child `ferry export`). */
  exportPoint?: PointExporter;
}

export interface RunningManagementApi {
  port: number;
  /** https://HOST:PORT (localhost when listening on every address); the web console is at `${url}/`. */
  url: string;
  /** SHA-256 fingerprint of the certificate the API serves (what `ferry login` pins). */
  fingerprint: string;
  /** Set only on the first run: the generated password of `admin`, to show once (also in adminPasswordFile). */
  newAdminPassword?: string;
  adminPasswordFile: string;
  close(): Promise<void>;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Routes that need no bearer token. */
    public?: boolean;
  }
  interface FastifyRequest {
    operatorToken?: TokenInfo;
    /** Set when the request authenticated with the console's session cookie (not a bearer token). */
    sessionToken?: string;
  }
}

export function bearerToken(header: string | undefined): string | undefined {
  const m = /^Bearer ([A-Za-z0-9_\-.~+/]+=*)$/.exec(header ?? '');
  return m ? m[1] : undefined;
}

/** Builds the app without listening (tests of the HTTP layer may inject into it). */
export async function buildManagementApi(
  plane: ControlPlaneApi,
  operators: OperatorStore,
  options: ManagementApiOptions,
): Promise<{ app: FastifyInstance<Server>; streams: EventStreams; overviews: OverviewStreams }> {
  const app = Fastify({
    https: { cert: options.cert, key: options.key, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' },
    logger: false,
    bodyLimit: 64 * 1024,
    // A request (head and body) must arrive within this; answers, and event streams, may take longer.
    requestTimeout: 30_000,
    keepAliveTimeout: 10_000,
    // Open event streams must not hold up close().
    forceCloseConnections: true,
    return503OnClosing: true,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false } },
  }) as unknown as FastifyInstance<Server>;

  for (const schema of [...sharedSchemas, ...recoverySharedSchemas]) app.addSchema(schema);
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Ferry management API', version: '1.0.0', description: 'Machines, protection groups and policies, group rounds and points, events, webhooks, recovery plans and jobs. Durations are milliseconds.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    refResolver: { buildLocalReference: (json, _base, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
  });

  const limits = {
    authLockoutAfter: options.authLockoutAfter ?? 5,
    authLockoutMs: options.authLockoutMs ?? 1000,
    authLockoutMaxMs: options.authLockoutMaxMs ?? 5 * 60_000,
    failedRegistrationsPerSecond: 10,
  };
  const throttle = new AuthThrottle(limits);
  const streams = new EventStreams(
    (listener) => plane.subscribe(listener),
    (lastId) => plane.events({ limit: MISSED_EVENTS_REPLAYED }).filter((e) => e.id > lastId).sort((a, b) => a.id - b.id),
    options.keepAliveMs ?? 15_000,
  );

  app.addHook('onRequest', async (request: FastifyRequest) => {
    // Unknown routes answer 404 whoever asks; public routes need no token.
    if (request.routeOptions.url === undefined || request.routeOptions.config.public === true) return;
    const bearer = bearerToken(request.headers.authorization);
    const session = bearer === undefined ? sessionFromCookie(request.headers.cookie) : undefined;
    const token = bearer ?? session;
    if (token === undefined) throw new ApiError(401, 'unauthorized', 'a bearer token is required: Authorization: Bearer TOKEN (get one with POST /api/v1/tokens or ferry login), or sign in to the console');
    const info = operators.authenticate(token);
    if (!info) {
      throw new ApiError(401, 'unauthorized', session !== undefined ? 'the console session has ended (expired, signed out or revoked): sign in again' : 'the token is not valid (unknown, revoked or expired): log in again');
    }
    if (session !== undefined) {
      const problem = csrfProblem(request.method, request.headers[CSRF_HEADER], session);
      if (problem !== undefined) throw new ApiError(403, 'csrf', problem);
      request.sessionToken = session;
    }
    request.operatorToken = info;
  });

  app.setErrorHandler((err, request, reply: FastifyReply) => {
    const refusal = refusalFor(err);
    if (refusal.status >= 500 && refusal.body.error === 'internal') {
      log.error('management API request failed', { method: request.method, url: request.url, error: err instanceof Error ? err.message : String(err) });
    }
    if (refusal.status === 401) reply.header('WWW-Authenticate', 'Bearer');
    // A session that ended takes its cookie with it.
    if (refusal.status === 401 && sessionFromCookie(request.headers.cookie) !== undefined) reply.header('Set-Cookie', clearedSessionCookie());
    void reply.code(refusal.status).type('application/json').send(refusal.body);
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ error: 'not-found', message: `no such route: ${request.method} ${request.url.split('?')[0]}` });
  });

  const overviews = new OverviewStreams(() => JSON.stringify(overviewOf(plane, options.recovery)), OVERVIEW_INTERVAL_MS, options.keepAliveMs ?? 15_000);

  registerAuthRoutes(app, operators, throttle, (request) => peerAddress(request.socket.remoteAddress));
  registerPlaneRoutes(app, plane, streams);
  registerRecoveryRoutes(app, options.recovery, options.keepAliveMs ?? 15_000);
  registerOverviewRoutes(app, plane, options.recovery, overviews, { dataDir: options.dataDir, run: options.exportPoint ?? exportWithCli });
  registerConsole(app, options.consoleDir ?? DEFAULT_CONSOLE_DIR);

  const fingerprint = certificateFingerprint(options.cert);
  app.get(`${API_PREFIX}/receiver`, {
    schema: {
      tags: ['meta'],
      summary: 'The receiver: where agents connect and the certificate they pin',
      response: { 200: { type: 'object', properties: { agentUrl: { type: ['string', 'null'] }, fingerprint: { type: 'string' } }, required: ['agentUrl', 'fingerprint'] } },
    },
    handler: async () => ({ agentUrl: options.agentUrl ?? null, fingerprint }),
  });
  app.get(`${API_PREFIX}/openapi.json`, { config: { public: true }, schema: routeSchemas.openapi }, async () => app.swagger());
  app.get('/metrics', { schema: routeSchemas.metrics }, async (_request, reply) => {
    void reply.type('text/plain; version=0.0.4; charset=utf-8');
    return plane.metrics();
  });
  return { app, streams, overviews };
}

/**
 * Starts the management API: HTTPS (TLS 1.3 only) JSON on its own port with the receiver's
 * certificate, operators in `<dataDir>/operators.db`. On the first run it creates `admin` with a
 * random password (written to `<dataDir>/admin-password`, 0600, and returned to be shown once).
 */
export async function startManagementApi(plane: ControlPlaneApi, options: ManagementApiOptions): Promise<RunningManagementApi> {
  const operators = OperatorStore.open(path.join(options.dataDir, 'operators.db'));
  const adminPasswordFile = path.join(options.dataDir, 'admin-password');
  let started = false;
  try {
    const newAdminPassword = await operators.ensureAdmin(adminPasswordFile);
    const { app, streams, overviews } = await buildManagementApi(plane, operators, options);
    try {
      await app.listen({ host: options.host, port: options.port });
    } catch (err) {
      await app.close();
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw new FerryError(`management API cannot listen on ${options.host}:${options.port}: ${code}`, ExitCode.failure);
    }
    started = true;
    const address = app.server.address();
    const port = typeof address === 'object' && address !== null ? address.port : options.port;
    const shownHost = options.host === '0.0.0.0' || options.host === '::' ? 'localhost' : options.host.includes(':') ? `[${options.host}]` : options.host;
    return {
      port,
      url: `https://${shownHost}:${port}`,
      fingerprint: certificateFingerprint(options.cert),
      newAdminPassword,
      adminPasswordFile,
      close: async () => {
        streams.closeAll();
        overviews.closeAll();
        await app.close();
        operators.close();
      },
    };
  } finally {
    if (!started) operators.close();
  }
}

/** What the receiver prints when the API starts: where it is, and on the first run the admin password (once). */
export function managementApiBanner(api: RunningManagementApi): string[] {
  const lines = [`management API listening on ${api.url} (same certificate)`, `web console: ${api.url}/ (certificate fingerprint ${api.fingerprint})`];
  if (api.newAdminPassword !== undefined) {
    lines.push(`management API and console operator admin, password (shown once, also in ${api.adminPasswordFile}): ${api.newAdminPassword}`);
  }
  return lines;
}
