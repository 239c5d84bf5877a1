/**
 * The management API (HTTPS JSON, control/api/) and the CLI that speaks to it, end to end over
 * real TLS: operators and tokens, validation, error mapping, the event stream, the OpenAPI
 * document, and bin/ferry's login/group/machine/events commands.
 *
 * The control plane behind the API is created in one place (makePlane): for now an in-memory
 * ControlPlaneApi (test/helpers/memory-plane.ts), which makes this a test of the HTTP layer; it is
 * switched to the receiver's real plane once that is merged.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient, connectPinned } from '../../cli/api-client';
import { parseSince } from '../../cli/events-command';
import { policyPatch } from '../../cli/group-commands';
import { refusalFor } from '../../control/api/errors';
import { RunningManagementApi, startManagementApi } from '../../control/api/server';
import { ControlError } from '../../control/contract';
import type { ControlEvent, Group, Machine } from '../../control/model';
import { loadOrCreateIdentity, ReceiverIdentity } from '../../receiver/identity';
import { DataLayout } from '../../receiver/layout';
import { refusal, runCli } from '../helpers/api-lab';
import { MemoryPlane } from '../helpers/memory-plane';
import { tempDirs } from '../helpers/temp-dirs';

const tempDir = tempDirs();

/** The one place the plane is made, with two registered machines (web01, db01). */
function makePlane(): MemoryPlane {
  const plane = new MemoryPlane();
  plane.addMachine('m-web01', 'web01');
  plane.addMachine('m-db01', 'db01', { state: 'resyncing' });
  return plane;
}

interface Lab {
  dataDir: string;
  identity: ReceiverIdentity;
  plane: MemoryPlane;
  api: RunningManagementApi;
  adminPassword: string;
  client(token?: string): ApiClient;
  login(name?: string, password?: string): Promise<string>;
}

async function startLab(options: { authLockoutAfter?: number } = {}): Promise<Lab> {
  const dataDir = tempDir('api');
  const identity = await loadOrCreateIdentity(new DataLayout(dataDir), {});
  const plane = makePlane();
  const api = await startManagementApi(plane, {
    host: '127.0.0.1',
    port: 0,
    cert: identity.cert,
    key: identity.key,
    dataDir,
    agentUrl: 'wss://127.0.0.1:7443',
    keepAliveMs: 200,
    ...options,
  });
  const adminPassword = api.newAdminPassword ?? '';
  const client = (token?: string): ApiClient => new ApiClient({ url: api.url, fingerprint: identity.fingerprint, token });
  return {
    dataDir,
    identity,
    plane,
    api,
    adminPassword,
    client,
    login: async (name = 'admin', password = adminPassword) => (await client().call<{ token: string }>('POST', '/api/v1/tokens', { name, password })).token,
  };
}

describe('management API', () => {
  let lab: Lab;
  let admin: ApiClient;

  beforeAll(async () => {
    lab = await startLab();
    admin = lab.client(await lab.login());
  });
  afterAll(async () => lab?.api.close());

  it('creates admin on first run with a password file and operator store only the owner can read', async () => {
    expect(lab.adminPassword.length).toBeGreaterThanOrEqual(20);
    const file = path.join(lab.dataDir, 'admin-password');
    expect(fs.readFileSync(file, 'utf8').trim()).toBe(lab.adminPassword);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.join(lab.dataDir, 'operators.db')).mode & 0o777).toBe(0o600);
    expect(lab.api.fingerprint).toBe(lab.identity.fingerprint);
  });

  it('keeps the admin password of the first run on a restart (no new one is shown)', async () => {
    const again = await startManagementApi(lab.plane, { host: '127.0.0.1', port: 0, cert: lab.identity.cert, key: lab.identity.key, dataDir: lab.dataDir });
    try {
      expect(again.newAdminPassword).toBeUndefined();
      const c = new ApiClient({ url: again.url, fingerprint: lab.identity.fingerprint });
      const issued = await c.call<{ token: string }>('POST', '/api/v1/tokens', { name: 'admin', password: lab.adminPassword });
      expect(issued.token.length).toBeGreaterThan(30);
    } finally {
      await again.close();
    }
  });

  it('refuses calls without a token or with a wrong one (401), and changes nothing', async () => {
    const none = await refusal(lab.client().call('POST', '/api/v1/groups', { name: 'sneaky' }));
    expect(none.status).toBe(401);
    expect(none.code).toBe('unauthorized');
    const wrong = await refusal(lab.client('not-a-real-token').call('GET', '/api/v1/groups'));
    expect(wrong.status).toBe(401);
    const metrics = await refusal(lab.client().call('GET', '/metrics'));
    expect(metrics.status).toBe(401);
    const { groups } = await admin.call<{ groups: Group[] }>('GET', '/api/v1/groups');
    expect(groups.map((g) => g.name)).not.toContain('sneaky');
  });

  it('refuses a wrong password (401) and a token that was revoked', async () => {
    const bad = await refusal(lab.client().call('POST', '/api/v1/tokens', { name: 'admin', password: 'wrong-password-1' }));
    expect(bad.status).toBe(401);
    expect(bad.apiMessage).toMatch(/wrong operator name or password/);
    const token = await lab.login();
    const c = lab.client(token);
    const { tokens } = await c.call<{ tokens: Array<{ id: string; token?: string }> }>('GET', '/api/v1/tokens');
    expect(tokens.length).toBeGreaterThanOrEqual(2);
    expect(tokens.every((t) => t.token === undefined)).toBe(true);
    await c.call('DELETE', '/api/v1/tokens/current');
    expect((await refusal(c.call('GET', '/api/v1/groups'))).status).toBe(401);
  });

  it('validates requests: 400 naming the field, and nothing changes', async () => {
    await admin.call('POST', '/api/v1/groups', { name: 'valid', policy: { rpoThresholdMs: 20_000 } });
    const cases: Array<{ method: string; path: string; body?: unknown; field: string }> = [
      { method: 'PATCH', path: '/api/v1/groups/valid/policy', body: { rpoThresholdMs: 10 }, field: 'rpoThresholdMs' },
      { method: 'PATCH', path: '/api/v1/groups/valid/policy', body: { crashConsistentIntervalMs: '1s' }, field: 'crashConsistentIntervalMs' },
      { method: 'PATCH', path: '/api/v1/groups/valid/policy', body: { appConsistentIntervalMs: 5 }, field: 'appConsistentIntervalMs' },
      { method: 'PATCH', path: '/api/v1/groups/valid/policy', body: { rpoThreshold: 30_000 }, field: 'rpoThreshold' },
      { method: 'PATCH', path: '/api/v1/groups/valid/policy', body: {}, field: 'body' },
      { method: 'POST', path: '/api/v1/groups', body: { name: 'bad name!' }, field: 'name' },
      { method: 'POST', path: '/api/v1/groups', body: {}, field: 'name' },
      { method: 'POST', path: '/api/v1/groups', body: { name: 'g2', policy: { multiMachineConsistency: 'yes' } }, field: 'policy.multiMachineConsistency' },
      { method: 'PATCH', path: '/api/v1/machines/m-web01/recovery', body: { vcpus: 0 }, field: 'vcpus' },
      { method: 'GET', path: '/api/v1/machines?state=sleeping', field: 'state' },
      { method: 'GET', path: '/api/v1/events?limit=0', field: 'limit' },
      { method: 'POST', path: '/api/v1/webhooks', body: { url: 'ftp://example.com/x' }, field: 'url' },
      { method: 'POST', path: '/api/v1/operators', body: { name: 'eve', password: 'short' }, field: 'password' },
    ];
    for (const c of cases) {
      const r = await refusal(admin.call(c.method, c.path, c.body));
      expect({ path: c.path, status: r.status, field: r.field }).toEqual({ path: c.path, status: 400, field: c.field });
      expect(r.code).toBe('invalid');
      expect(r.apiMessage.length).toBeGreaterThan(5);
    }
    const group = await admin.call<Group>('GET', '/api/v1/groups/valid');
    expect(group.policy.rpoThresholdMs).toBe(20_000);
    expect(group.revision).toBe(1);
    const { groups } = await admin.call<{ groups: Group[] }>('GET', '/api/v1/groups');
    expect(groups.map((g) => g.name).sort()).toEqual(['valid']);
    expect((await admin.call<Machine>('GET', '/api/v1/machines/m-web01')).recovery.vcpus).toBe(1);
    const { operators } = await admin.call<{ operators: Array<{ name: string }> }>('GET', '/api/v1/operators');
    expect(operators.map((o) => o.name)).toEqual(['admin']);
  });

  it('answers 404 for an unknown group, machine or route, and 409 for a conflict', async () => {
    const group = await refusal(admin.call('GET', '/api/v1/groups/nope'));
    expect([group.status, group.code]).toEqual([404, 'not-found']);
    expect(group.apiMessage).toMatch(/nope/);
    expect((await refusal(admin.call('PATCH', '/api/v1/groups/nope/policy', { rpoThresholdMs: 60_000 }))).status).toBe(404);
    expect((await refusal(admin.call('GET', '/api/v1/machines/ghost'))).status).toBe(404);
    const route = await refusal(lab.client().call('GET', '/api/v1/nothing-here'));
    expect([route.status, route.code]).toEqual([404, 'not-found']);

    await admin.call('POST', '/api/v1/groups', { name: 'web' });
    const dup = await refusal(admin.call('POST', '/api/v1/groups', { name: 'web' }));
    expect([dup.status, dup.code, dup.field]).toEqual([409, 'conflict', 'name']);
    await admin.call('POST', '/api/v1/groups/web/members', { machineId: 'm-web01' });
    const busy = await refusal(admin.call('DELETE', '/api/v1/groups/web'));
    expect(busy.status).toBe(409);
    expect((await admin.call<Group>('GET', '/api/v1/groups/web')).members).toEqual(['m-web01']);
    await admin.call('DELETE', '/api/v1/groups/web/members/m-web01');
    await admin.call('DELETE', '/api/v1/groups/web');
    expect((await refusal(admin.call('GET', '/api/v1/groups/web'))).status).toBe(404);
  });

  it('maps every ControlError kind, and hides internal errors', () => {
    expect(refusalFor(new ControlError('unavailable', 'catalog is read-only'))).toEqual({ status: 503, body: { error: 'unavailable', message: 'catalog is read-only' } });
    expect(refusalFor(new ControlError('invalid', 'too small', 'vcpus')).body.field).toBe('vcpus');
    const internal = refusalFor(new TypeError('cannot read properties of undefined (reading x) at /opt/ferry/dist/control/plane.js:12'));
    expect(internal.status).toBe(500);
    expect(JSON.stringify(internal.body)).not.toMatch(/plane\.js|undefined/);
  });

  it('lists machines with filters, runs a round, lists events with filters, and serves metrics', async () => {
    const resyncing = await admin.get<{ machines: Machine[] }>('/api/v1/machines', { state: 'resyncing' });
    expect(resyncing.machines.map((m) => m.name)).toEqual(['db01']);
    await admin.call('POST', '/api/v1/groups', { name: 'tier', policy: { multiMachineConsistency: true } });
    await admin.call('POST', '/api/v1/groups/tier/members', { machineId: 'm-db01' });
    expect((await admin.get<{ machines: Machine[] }>('/api/v1/machines', { group: 'tier' })).machines.map((m) => m.id)).toEqual(['m-db01']);
    const round = await admin.call<{ id: number; state: string; members: string[] }>('POST', '/api/v1/groups/tier/rounds');
    expect(round.state).toBe('done');
    expect(round.members).toEqual(['m-db01']);
    expect((await admin.get<{ rounds: unknown[] }>('/api/v1/groups/tier/rounds', { limit: 5 })).rounds).toHaveLength(1);
    expect((await admin.call<{ points: unknown[] }>('GET', '/api/v1/groups/tier/points')).points).toHaveLength(1);

    lab.plane.emit('warning', 'rpo-exceeded', 'm-db01', 'RPO 40s over the 30s threshold');
    lab.plane.emit('info', 'resync-finished', 'm-web01', 'resync finished');
    const warnings = await admin.get<{ events: ControlEvent[] }>('/api/v1/events', { severity: 'warning' });
    expect(warnings.events.map((e) => e.kind)).toContain('rpo-exceeded');
    expect(warnings.events.map((e) => e.kind)).not.toContain('resync-finished');
    const mine = await admin.get<{ events: ControlEvent[] }>('/api/v1/events', { subject: 'm-web01', since: Date.now() - 60_000 });
    expect(mine.events.map((e) => e.kind)).toEqual(['resync-finished']);
    const acked = await admin.call<ControlEvent>('POST', `/api/v1/events/${warnings.events[0].id}/acknowledge`);
    expect(acked.acknowledged).toBe(true);

    const hook = await admin.call<{ id: number; minSeverity: string }>('POST', '/api/v1/webhooks', { url: 'http://127.0.0.1:9/hook' });
    expect(hook.minSeverity).toBe('warning');
    expect((await admin.call<{ webhooks: unknown[] }>('GET', '/api/v1/webhooks')).webhooks).toHaveLength(1);
    expect((await admin.call<{ deliveries: unknown[] }>('GET', '/api/v1/webhooks/deliveries')).deliveries).toEqual([]);
    await admin.call('DELETE', `/api/v1/webhooks/${hook.id}`);

    const metrics = await admin.call<string>('GET', '/metrics');
    expect(metrics).toMatch(/^ferry_rpo_seconds\{machine="m-db01"/m);

    const info = await admin.call<{ agentUrl: string; fingerprint: string }>('GET', '/api/v1/receiver');
    expect(info).toEqual({ agentUrl: 'wss://127.0.0.1:7443', fingerprint: lab.identity.fingerprint });
  });

  it('streams every new event over SSE', async () => {
    const stop = new AbortController();
    const received: ControlEvent[] = [];
    let opened!: () => void;
    const open = new Promise<void>((resolve) => (opened = resolve));
    let got!: () => void;
    const arrived = new Promise<void>((resolve) => (got = resolve));
    const streaming = admin.stream(
      '/api/v1/events/stream',
      (data) => {
        received.push(JSON.parse(data) as ControlEvent);
        if (received.length === 2) got();
      },
      stop.signal,
      opened,
    );
    await open;
    lab.plane.emit('error', 'round-aborted', 'tier', 'round 7 aborted: db01 did not hold within 300 ms');
    lab.plane.emit('info', 'rpo-recovered', 'm-db01', 'RPO back under the threshold');
    await arrived;
    stop.abort();
    await streaming;
    expect(received.map((e) => e.kind)).toEqual(['round-aborted', 'rpo-recovered']);
    expect(received[0].text).toMatch(/did not hold/);
    expect((await refusal(lab.client().stream('/api/v1/events/stream', () => undefined))).status).toBe(401);
  });

  it('replays what a reconnecting stream client missed (Last-Event-ID), then keeps the stream alive with comment lines', async () => {
    const missedFrom = lab.plane.emit('info', 'resync-started', 'm-web01', 'resync started');
    const missed = lab.plane.emit('warning', 'machine-disconnected', 'm-web01', 'web01 disconnected for 60s');
    const { socket } = await connectPinned(new URL(lab.api.url), lab.identity.fingerprint, 5000);
    const token = await lab.login();
    let text = '';
    const seen = new Promise<void>((resolve) =>
      socket.on('data', (chunk: Buffer) => {
        text += chunk.toString();
        if (text.includes(': keep-alive')) resolve();
      }),
    );
    socket.write(`GET /api/v1/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nLast-Event-ID: ${missedFrom.id}\r\n\r\n`);
    await seen;
    socket.destroy();
    expect(text).toMatch(/^HTTP\/1\.1 200/);
    expect(text).toMatch(/content-type: text\/event-stream/i);
    const replayed = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    expect(replayed).toEqual([missed.id]);
  });

  it('lets an operator create another, who can log in', async () => {
    const created = await admin.call<{ name: string }>('POST', '/api/v1/operators', { name: 'alice', password: 'alice-password-1' });
    expect(created.name).toBe('alice');
    expect((await refusal(admin.call('POST', '/api/v1/operators', { name: 'alice', password: 'another-password' }))).status).toBe(409);
    const alice = lab.client(await lab.login('alice', 'alice-password-1'));
    const { operators } = await alice.call<{ operators: Array<{ name: string }> }>('GET', '/api/v1/operators');
    expect(operators.map((o) => o.name)).toEqual(['admin', 'alice']);
  });

  it('refuses to talk to an API whose certificate is not the pinned one', async () => {
    const c = new ApiClient({ url: lab.api.url, fingerprint: 'AA'.repeat(32) });
    await expect(c.call('GET', '/api/v1/openapi.json')).rejects.toThrow(/not the pinned/);
  });

  it('publishes an OpenAPI document (no token) listing every route with its schemas', async () => {
    const doc = await lab.client().call<{ openapi: string; paths: Record<string, Record<string, { security?: unknown[]; responses?: object; requestBody?: object }>> }>('GET', '/api/v1/openapi.json');
    expect(doc.openapi).toMatch(/^3\./);
    const routes = Object.entries(doc.paths).flatMap(([p, methods]) => Object.keys(methods).map((m) => `${m.toUpperCase()} ${p}`));
    expect(routes.sort()).toEqual(
      [
        'GET /api/v1/machines',
        'GET /api/v1/machines/{id}',
        'PATCH /api/v1/machines/{id}/recovery',
        'GET /api/v1/groups',
        'POST /api/v1/groups',
        'GET /api/v1/groups/{id}',
        'PATCH /api/v1/groups/{id}/policy',
        'DELETE /api/v1/groups/{id}',
        'POST /api/v1/groups/{id}/members',
        'DELETE /api/v1/groups/{id}/members/{machineId}',
        'GET /api/v1/groups/{id}/rounds',
        'POST /api/v1/groups/{id}/rounds',
        'GET /api/v1/groups/{id}/points',
        'GET /api/v1/events',
        'POST /api/v1/events/{id}/acknowledge',
        'GET /api/v1/events/stream',
        'GET /api/v1/webhooks',
        'POST /api/v1/webhooks',
        'DELETE /api/v1/webhooks/{id}',
        'GET /api/v1/webhooks/deliveries',
        'POST /api/v1/tokens',
        'GET /api/v1/tokens',
        'DELETE /api/v1/tokens/{id}',
        'GET /api/v1/operators',
        'POST /api/v1/operators',
        'GET /api/v1/receiver',
        'GET /api/v1/openapi.json',
        'GET /metrics',
        'GET /api/v1/plans',
        'POST /api/v1/plans',
        'GET /api/v1/plans/{id}',
        'PUT /api/v1/plans/{id}',
        'DELETE /api/v1/plans/{id}',
        'POST /api/v1/plans/{id}/test-failover',
        'POST /api/v1/plans/{id}/cleanup',
        'POST /api/v1/plans/{id}/failover',
        'POST /api/v1/plans/{id}/commit',
        'POST /api/v1/plans/{id}/failback-prepare',
        'POST /api/v1/plans/{id}/failback',
        'GET /api/v1/jobs',
        'GET /api/v1/jobs/{id}',
        'GET /api/v1/jobs/stream',
        'POST /api/v1/jobs/{id}/resume',
        'POST /api/v1/jobs/{id}/cancel',
        'GET /api/v1/jobs/{id}/evidence/{machineId}/{kind}',
        'GET /api/v1/machines/{id}/protection',
        'GET /api/v1/machines/{id}/history',
        'GET /api/v1/machines/{id}/points',
        'POST /api/v1/points/{id}/export',
        'GET /api/v1/overview',
        'GET /api/v1/overview/stream',
        'POST /api/v1/session',
        'GET /api/v1/session',
        'DELETE /api/v1/session',
      ].sort(),
    );
    expect(doc.paths['/api/v1/groups/{id}/policy'].patch.requestBody).toBeDefined();
    expect(doc.paths['/api/v1/tokens'].post.security).toEqual([]);
    expect(JSON.stringify(doc.paths['/api/v1/machines'].get.responses)).toMatch(/Machine/);
  });
});

describe('management API login throttling', () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await startLab({ authLockoutAfter: 3 });
  });
  afterAll(async () => lab?.api.close());

  it('locks an address out after repeated wrong passwords, even for the right one', async () => {
    for (let i = 0; i < 3; i++) expect((await refusal(lab.login('admin', `wrong-password-${i}`))).status).toBe(401);
    const locked = await refusal(lab.login());
    expect([locked.status, locked.code]).toEqual([429, 'too-many-attempts']);
    expect(locked.apiMessage).toMatch(/locked out until .* \(retry in \d+ s\)/);
  });
});

describe('CLI pure parts', () => {
  it('reads durations and since-times as an operator writes them', () => {
    expect(policyPatch({ rpoThreshold: 45_000, appInterval: 0, multiMachine: true })).toEqual({ rpoThresholdMs: 45_000, appConsistentIntervalMs: 0, multiMachineConsistency: true });
    expect(parseSince('10m', 1_000_000_000)).toBe(1_000_000_000 - 600_000);
    expect(parseSince('2026-01-31T12:00:00Z')).toBe(Date.parse('2026-01-31T12:00:00Z'));
    expect(() => parseSince('yesterday')).toThrow(/duration ago/);
  });
});

describe('ferry login / group / machine / events against the API', () => {
  let lab: Lab;
  let env: Record<string, string>;
  let passwordFile: string;
  const ferry = (...args: string[]) => runCli(args, env);

  beforeAll(async () => {
    lab = await startLab();
    const home = tempDir('cli');
    passwordFile = path.join(home, 'password');
    fs.writeFileSync(passwordFile, `${lab.adminPassword}\n`, { mode: 0o600 });
    env = { FERRY_CONFIG_DIR: path.join(home, 'config') };
  });
  afterAll(async () => lab?.api.close());

  it('needs a login first, and says how', async () => {
    const r = await ferry('group', 'list');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/ferry login --api https:\/\/HOST:PORT/);
  });

  it('refuses a wrong password with the API message and exit code 5', async () => {
    const bad = path.join(path.dirname(passwordFile), 'bad');
    fs.writeFileSync(bad, 'wrong-password-x\n');
    const r = await ferry('login', '--api', lab.api.url, '--password-file', bad, '--fingerprint', lab.identity.fingerprint);
    expect(r.status).toBe(5);
    expect(r.stderr).toMatch(/wrong operator name or password/);
    expect(fs.existsSync(path.join(env.FERRY_CONFIG_DIR, 'api.json'))).toBe(false);
  });

  it('logs in, pinning the certificate and saving the token 0600', async () => {
    const r = await ferry('login', '--api', lab.api.url, '--password-file', passwordFile);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/logged in to https:\/\/127\.0\.0\.1:\d+ as admin/);
    expect(r.stdout).toMatch(/pinned the API's certificate/);
    const file = path.join(env.FERRY_CONFIG_DIR, 'api.json');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    const saved = JSON.parse(fs.readFileSync(file, 'utf8')) as { fingerprint: string; token: string };
    expect(saved.fingerprint).toBe(lab.identity.fingerprint.replace(/:/g, ''));
    expect(saved.token.length).toBeGreaterThan(30);
  });

  it('creates, sets, fills and shows a group', async () => {
    const created = await ferry('group', 'create', 'shop', '--rpo-threshold', '45s', '--app-interval', 'off', '--json');
    expect(created.stderr).toBe('');
    const group = JSON.parse(created.stdout) as Group;
    expect(group.policy).toMatchObject({ rpoThresholdMs: 45_000, appConsistentIntervalMs: 0, crashConsistentIntervalMs: 1000 });

    const set = await ferry('group', 'set', 'shop', '--crash-interval', '5s', '--multi-machine', 'on');
    expect(set.status).toBe(0);
    expect(set.stdout).toMatch(/crash-consistent every 5s/);

    expect((await ferry('group', 'add', 'shop', 'web01')).stdout).toMatch(/added web01 to group shop/);
    expect((await ferry('group', 'add', 'shop', 'm-db01')).status).toBe(0);

    const shown = JSON.parse((await ferry('group', 'show', 'shop', '--json')).stdout) as Group & { machines: Machine[] };
    expect(shown.members.sort()).toEqual(['m-db01', 'm-web01']);
    expect(shown.policy).toMatchObject({ rpoThresholdMs: 45_000, crashConsistentIntervalMs: 5000, multiMachineConsistency: true });
    expect(shown.machines.map((m) => m.name).sort()).toEqual(['db01', 'web01']);

    const table = await ferry('group', 'show', 'shop');
    expect(table.stdout).toMatch(/policy: RPO threshold 45s, retention 24h, crash-consistent every 5s, app-consistent off, multi-machine consistency on/);
    expect(table.stdout).toMatch(/m-db01\s+db01\s+resyncing\s+shop/);
    expect((await ferry('group', 'list')).stdout).toMatch(/^shop\s+2\s+45s\s+24h\s+5s\s+off\s+on\s+4$/m);
  });

  it('prints the API refusal with the field, and the right exit code', async () => {
    const small = await ferry('group', 'set', 'shop', '--rpo-threshold', '10ms');
    expect(small.status).toBe(2);
    expect(small.stderr).toMatch(/^ferry: rpoThresholdMs must be >= 1000 \(field: rpoThresholdMs\) \[HTTP 400 invalid\]$/m);
    const missing = await ferry('group', 'show', 'nope');
    expect(missing.status).toBe(3);
    expect(missing.stderr).toBe('ferry: no group nope [HTTP 404 not-found]\n');
    const busy = await ferry('group', 'delete', 'shop');
    expect(busy.status).toBe(1);
    expect(busy.stderr).toMatch(/still has 2 member/);
    const unchanged = JSON.parse((await ferry('group', 'show', 'shop', '--json')).stdout) as Group;
    expect(unchanged.policy.rpoThresholdMs).toBe(45_000);
  });

  it('lists, shows and sets machines', async () => {
    const list = JSON.parse((await ferry('machine', 'list', '--state', 'resyncing', '--json')).stdout) as Machine[];
    expect(list.map((m) => m.name)).toEqual(['db01']);
    const set = await ferry('machine', 'set', 'db01', '--vcpus', '4', '--memory', '8GiB', '--json');
    expect(set.stderr).toBe('');
    expect((JSON.parse(set.stdout) as Machine).recovery).toMatchObject({ vcpus: 4, memoryMiB: 8192 });
    const shown = await ferry('machine', 'show', 'db01');
    expect(shown.stdout).toMatch(/recovery: name db01, 4 vCPU, 8192 MiB/);
  });

  it('lists events as JSON and as a table', async () => {
    lab.plane.emit('warning', 'rpo-exceeded', 'm-web01', 'RPO 50s over the 45s threshold of group shop');
    const json = await ferry('events', '--since', '10m', '--json');
    expect(json.stderr).toBe('');
    const events = JSON.parse(json.stdout) as ControlEvent[];
    expect(events.map((e) => e.kind)).toContain('rpo-exceeded');
    const table = await ferry('events', '--severity', 'warning');
    expect(table.stdout).toMatch(/warning\s+rpo-exceeded\s+machine m-web01\s+RPO 50s over/);
    const badSince = await ferry('events', '--since', 'yesterday');
    expect(badSince.status).toBe(2);
    expect(badSince.stderr).toMatch(/'yesterday' is invalid\. expected a duration ago/);
  });

  it('checks a push-install add before touching any host', async () => {
    const both = await ferry('group', 'add', 'shop', 'web01', '--ssh', 'root@127.0.0.1');
    expect(both.status).toBe(2);
    expect(both.stderr).toMatch(/either a MACHINE or --ssh\/--smb/);
    const noPassphrase = await ferry('group', 'add', 'shop', '--ssh', 'root@127.0.0.1');
    expect(noPassphrase.status).toBe(2);
    expect(noPassphrase.stderr).toMatch(/--passphrase-file/);
    const passphrase = path.join(path.dirname(passwordFile), 'passphrase');
    fs.writeFileSync(passphrase, 'correct horse battery staple\n');
    const noGroup = await ferry('group', 'add', 'nope', '--ssh', 'root@127.0.0.1:1', '--passphrase-file', passphrase);
    expect(noGroup.status).toBe(3);
    expect(noGroup.stderr).toMatch(/no group nope/);
    expect(noGroup.stdout).not.toMatch(/\[root@/);
  });

  it('removes a member and deletes the emptied group; logout revokes the token', async () => {
    expect((await ferry('group', 'remove', 'shop', 'web01')).stdout).toMatch(/removed web01 from group shop/);
    expect((await ferry('group', 'remove', 'shop', 'db01')).status).toBe(0);
    expect((await ferry('group', 'delete', 'shop')).stdout).toMatch(/deleted group shop/);
    const saved = JSON.parse(fs.readFileSync(path.join(env.FERRY_CONFIG_DIR, 'api.json'), 'utf8')) as { token: string };
    expect((await ferry('logout')).stdout).toMatch(/token revoked/);
    expect((await refusal(lab.client(saved.token).call('GET', '/api/v1/groups'))).status).toBe(401);
  });
});
