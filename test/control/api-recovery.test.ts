/**
 * The management API's recovery routes (plans, jobs, protection, evidence) and the CLI that
 * speaks to them (ferry plan / failover / jobs / job), over real TLS with real operators and
 * tokens. Behind the API: the in-memory control plane and an in-memory-jobs RecoveryApi
 * (test/helpers/memory-recovery.ts) whose plans, point choice and job records are the real
 * modules; the recovery service itself is tested with real VMs elsewhere.
 */
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../../cli/api-client';
import { RunningManagementApi, startManagementApi } from '../../control/api/server';
import type { Job, Plan, PlanInput } from '../../recovery/model';
import { loadOrCreateIdentity, ReceiverIdentity } from '../../receiver/identity';
import { DataLayout } from '../../receiver/layout';
import { refusal, runCli, startCli } from '../helpers/api-lab';
import { MemoryPlane } from '../helpers/memory-plane';
import { MemoryRecovery, TINY_PNG } from '../helpers/memory-recovery';
import { tempDirs } from '../helpers/temp-dirs';

const tempDir = tempDirs();
const T0 = Date.UTC(2026, 11, 3, 10, 0, 0);

interface Lab {
  identity: ReceiverIdentity;
  api: RunningManagementApi;
  recovery?: MemoryRecovery;
  adminPassword: string;
  client(token?: string): ApiClient;
  login(): Promise<string>;
  close(): Promise<void>;
}

/** The API with two machines (web01, db01, one volume each, three points each), with or without recovery. */
async function startLab(withRecovery: boolean): Promise<Lab> {
  const dataDir = tempDir('api-recovery');
  const identity = await loadOrCreateIdentity(new DataLayout(dataDir), {});
  const plane = new MemoryPlane();
  plane.addMachine('m-web01', 'web01');
  plane.addMachine('m-db01', 'db01');
  const points = ['m-web01-root', 'm-db01-root'].flatMap((volumeId, v) =>
    [1, 2, 3].map((n) => ({ id: v * 10 + n, volumeId, timeUs: (T0 + n * 60_000) * 1000, kind: 'crash' as const, accuracy: n === 3 && v === 1 ? ('none' as const) : ('exact' as const), groupRound: 0 })),
  );
  const recovery = withRecovery
    ? new MemoryRecovery({
        catalogFile: path.join(dataDir, 'catalog.db'),
        evidenceDir: path.join(dataDir, 'recovery'),
        machines: () => plane.machines().map((m) => ({ id: m.id, volumes: m.volumes.map((x) => x.volumeId) })),
        points,
      })
    : undefined;
  const api = await startManagementApi(plane, { host: '127.0.0.1', port: 0, cert: identity.cert, key: identity.key, dataDir, recovery });
  const adminPassword = api.newAdminPassword ?? '';
  const client = (token?: string): ApiClient => new ApiClient({ url: api.url, fingerprint: identity.fingerprint, token });
  return {
    identity,
    api,
    recovery,
    adminPassword,
    client,
    login: async () => (await client().call<{ token: string }>('POST', '/api/v1/tokens', { name: 'admin', password: adminPassword })).token,
    close: async () => {
      await api.close();
      recovery?.close();
    },
  };
}

/** Waits until `check` returns a value, polling, up to a deadline. */
async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const jobIn = (c: ApiClient, id: number, states: Job['state'][]) =>
  waitFor(`job ${id} in ${states.join('/')}`, async () => {
    const j = await c.call<Job>('GET', `/api/v1/jobs/${id}`);
    return states.includes(j.state) ? j : undefined;
  });

/** A GET whose body stays bytes (the evidence routes). */
function rawGet(lab: Lab, urlPath: string, token: string): Promise<{ status: number; type: string; body: Buffer }> {
  const url = new URL(lab.api.url);
  return new Promise((resolve, reject) => {
    const req = https.request({ host: url.hostname, port: Number(url.port), path: urlPath, method: 'GET', rejectUnauthorized: false, headers: { Authorization: `Bearer ${token}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

const twoGroups: PlanInput = {
  name: 'shop',
  bootGroups: [
    { machines: ['m-db01'], after: [{ kind: 'script', name: 'warm', command: 'echo warm', timeoutMs: 5000 }] },
    { machines: ['m-web01'], before: [{ kind: 'manual', name: 'check-dns', instructions: 'point www at the sandbox' }] },
  ],
};

describe('recovery API', () => {
  let lab: Lab;
  let admin: ApiClient;
  let token: string;

  beforeAll(async () => {
    lab = await startLab(true);
    token = await lab.login();
    admin = lab.client(token);
  });
  afterAll(async () => lab?.close());

  it('creates, shows, edits (refusing a stale revision with 409) and deletes a plan', async () => {
    const created = await admin.call<Plan>('POST', '/api/v1/plans', { name: 'edit-me', bootGroups: [{ machines: ['m-web01'] }] });
    expect(created).toMatchObject({ id: 'edit-me', revision: 1, health: { serialPattern: 'login:', tcpPort: 0, timeoutMs: 600_000 }, defaultPoint: { kind: 'latest' } });
    expect((await admin.call<Plan>('GET', '/api/v1/plans/edit-me')).bootGroups).toEqual([{ machines: ['m-web01'], before: [], after: [] }]);

    const edited = await admin.call<Plan>('PUT', '/api/v1/plans/edit-me', { plan: { name: 'edit-me', bootGroups: [{ machines: ['m-db01'] }, { machines: ['m-web01'] }], defaultPoint: { kind: 'latest-app' } }, revision: 1 });
    expect(edited).toMatchObject({ revision: 2, defaultPoint: { kind: 'latest-app' } });
    expect(edited.bootGroups.map((g) => g.machines)).toEqual([['m-db01'], ['m-web01']]);

    const stale = await refusal(admin.call('PUT', '/api/v1/plans/edit-me', { plan: { name: 'edit-me', bootGroups: [{ machines: ['m-web01'] }] }, revision: 1 }));
    expect([stale.status, stale.code, stale.field]).toEqual([409, 'conflict', 'revision']);
    expect(stale.apiMessage).toMatch(/changed since revision 1 \(it is at revision 2 now\)/);
    expect((await admin.call<Plan>('GET', '/api/v1/plans/edit-me')).bootGroups).toHaveLength(2);
    const bad = await refusal(admin.call('PUT', '/api/v1/plans/edit-me', { plan: { name: 'edit-me', bootGroups: [{ machines: ['ghost'] }] }, revision: 2 }));
    expect([bad.status, bad.field]).toEqual([400, 'plan.bootGroups[0].machines[0]']);
    const renamed = await refusal(admin.call('PUT', '/api/v1/plans/edit-me', { plan: { name: 'other', bootGroups: [{ machines: ['m-web01'] }] }, revision: 2 }));
    expect([renamed.status, renamed.field]).toEqual([400, 'plan.name']);

    const { plans } = await admin.call<{ plans: Plan[] }>('GET', '/api/v1/plans');
    expect(plans.map((p) => p.id)).toContain('edit-me');
    await admin.call('DELETE', '/api/v1/plans/edit-me');
    expect((await refusal(admin.call('GET', '/api/v1/plans/edit-me'))).status).toBe(404);
    expect((await refusal(admin.call('DELETE', '/api/v1/plans/edit-me'))).status).toBe(404);
  });

  it('refuses bad plans with 400 naming the field, and stores nothing', async () => {
    const cases: Array<{ body: unknown; field: string; message: RegExp }> = [
      { body: { name: 'p1', bootGroups: [{ machines: ['m-web01', 'ghost'] }] }, field: 'bootGroups[0].machines[1]', message: /no machine "ghost"/ },
      { body: { name: 'p1', bootGroups: [{ machines: ['m-web01'] }, { machines: ['m-web01'] }] }, field: 'bootGroups[1].machines[0]', message: /in the plan twice/ },
      { body: { name: 'p1', bootGroups: [] }, field: 'bootGroups', message: /at least one boot group/ },
      { body: { name: 'p1', bootGroups: [{ machines: ['m-web01'] }], defaultPoint: { kind: 'point', pointId: 0 } }, field: 'defaultPoint.pointId', message: /at least 1/ },
      { body: { name: 'p1', bootGroups: [{ machines: ['m-web01'] }], defaultPoint: { kind: 'someday' } }, field: 'defaultPoint.kind', message: /must be equal to one of/ },
      { body: { name: 'p1', bootGroups: [{ machines: ['m-web01'] }], health: { serialPattern: '(' } }, field: 'health.serialPattern', message: /not a valid regular expression/ },
      { body: { name: 'p1', bootGroups: [{ machines: ['m-web01'] }], colour: 'red' }, field: 'colour', message: /not a known field/ },
      { body: { name: 'bad name', bootGroups: [{ machines: ['m-web01'] }] }, field: 'name', message: /plan name/ },
    ];
    for (const c of cases) {
      const r = await refusal(admin.call('POST', '/api/v1/plans', c.body));
      expect({ status: r.status, field: r.field }).toEqual({ status: 400, field: c.field });
      expect(r.apiMessage).toMatch(c.message);
    }
    const { plans } = await admin.call<{ plans: Plan[] }>('GET', '/api/v1/plans');
    expect(plans.map((p) => p.id)).not.toContain('p1');
  });

  it('runs a test failover as a job: listed, shown, waiting at the manual step, resumed to success with evidence', async () => {
    await admin.call('POST', '/api/v1/plans', twoGroups);
    const started = await admin.call<Job>('POST', '/api/v1/plans/shop/test-failover', { point: 'latest' });
    expect(started).toMatchObject({ kind: 'test-failover', planId: 'shop', point: { kind: 'latest' } });
    // A second one while the first is up is a conflict.
    expect((await refusal(admin.call('POST', '/api/v1/plans/shop/test-failover', {}))).status).toBe(409);
    const waiting = await jobIn(admin, started.id, ['waiting']);
    expect(waiting.steps.find((s) => s.state === 'waiting')).toMatchObject({ name: 'manual check-dns (group 2)', detail: 'point www at the sandbox' });
    expect((await admin.get<{ jobs: Job[] }>('/api/v1/jobs', { plan: 'shop', state: 'waiting' })).jobs.map((j) => j.id)).toEqual([started.id]);

    await admin.call('POST', `/api/v1/jobs/${started.id}/resume`);
    const done = await jobIn(admin, started.id, ['succeeded', 'failed']);
    expect(done.state).toBe('succeeded');
    expect(done.rtoMs).not.toBeNull();
    expect(done.steps.map((s) => [s.name, s.state])).toEqual([
      ['boot group 1', 'succeeded'],
      ['script warm (group 1)', 'succeeded'],
      ['manual check-dns (group 2)', 'succeeded'],
      ['boot group 2', 'succeeded'],
    ]);
    // latest: db01's newest usable point is older than web01's, so both take their point at that time.
    expect(done.machines.map((m) => [m.machineId, m.points])).toEqual([
      ['m-db01', { 'm-db01-root': 12 }],
      ['m-web01', { 'm-web01-root': 2 }],
    ]);
    expect((await refusal(admin.call('POST', `/api/v1/jobs/${started.id}/resume`))).status).toBe(409);
    expect((await refusal(admin.call('POST', `/api/v1/jobs/${started.id}/cancel`))).status).toBe(409);

    const png = await rawGet(lab, `/api/v1/jobs/${started.id}/evidence/m-web01/screenshot`, token);
    expect([png.status, png.type]).toEqual([200, 'image/png']);
    expect(png.body.equals(TINY_PNG)).toBe(true);
    const serial = await rawGet(lab, `/api/v1/jobs/${started.id}/evidence/m-db01/serial`, token);
    expect(serial.status).toBe(200);
    expect(serial.type).toMatch(/^text\/plain/);
    expect(serial.body.toString()).toMatch(/m-db01 login: $/);
    expect((await rawGet(lab, `/api/v1/jobs/${started.id}/evidence/ghost/serial`, token)).status).toBe(404);
    expect((await rawGet(lab, `/api/v1/jobs/999/evidence/m-web01/serial`, token)).status).toBe(404);
    expect((await rawGet(lab, `/api/v1/jobs/${started.id}/evidence/m-web01/kernel`, token)).status).toBe(400);
    expect((await rawGet(lab, `/api/v1/jobs/${started.id}/evidence/m-web01/screenshot`, 'wrong')).status).toBe(401);

    // Cleanup ends the test failover; the plan can then run again.
    const cleanup = await admin.call<Job>('POST', '/api/v1/plans/shop/cleanup');
    expect((await jobIn(admin, cleanup.id, ['succeeded'])).kind).toBe('cleanup');
    expect((await refusal(admin.call('POST', '/api/v1/plans/shop/cleanup', {}))).status).toBe(409);
  });

  it('cancels a waiting job; refuses bad and unusable points with 400 naming point', async () => {
    const job = await admin.call<Job>('POST', '/api/v1/plans/shop/test-failover', {});
    await jobIn(admin, job.id, ['waiting']);
    expect((await refusal(admin.call('DELETE', '/api/v1/plans/shop'))).status).toBe(409);
    const cancelled = await admin.call<Job>('POST', `/api/v1/jobs/${job.id}/cancel`, {});
    expect(cancelled).toMatchObject({ state: 'cancelled', reason: 'cancelled by an operator' });
    expect(cancelled.steps.find((s) => s.name.startsWith('manual'))?.state).toBe('failed');

    const word = await refusal(admin.call('POST', '/api/v1/plans/shop/test-failover', { point: 'yesterday' }));
    expect([word.status, word.field]).toEqual([400, 'point']);
    expect(word.apiMessage).toMatch(/latest, latest-app, a point id, round:N or an ISO time/);
    const missing = await refusal(admin.call('POST', '/api/v1/plans/shop/test-failover', { point: '999' }));
    expect([missing.status, missing.field]).toEqual([400, 'point']);
    expect(missing.apiMessage).toMatch(/no point 999/);
    // db01's newest point was cut during a resync: a time after it takes the one before.
    const solo = await admin.call<Plan>('POST', '/api/v1/plans', { name: 'db-only', bootGroups: [{ machines: ['m-db01'] }] });
    const cut = await refusal(admin.call('POST', `/api/v1/plans/${solo.id}/test-failover`, { point: '13' }));
    expect(cut.apiMessage).toMatch(/cut during a resync/);
    const atTime = await admin.call<Job>('POST', `/api/v1/plans/${solo.id}/test-failover`, { point: new Date(T0 + 4 * 60_000).toISOString() });
    expect((await jobIn(admin, atTime.id, ['succeeded'])).machines[0].points).toEqual({ 'm-db01-root': 12 });
    const field = await refusal(admin.call('POST', '/api/v1/plans/shop/failover', { point: 'latest', wrong: true }));
    expect([field.status, field.field]).toEqual([400, 'wrong']);
  });

  it("fails over a plan and reports each machine's protection", async () => {
    await admin.call('POST', '/api/v1/plans', { name: 'web-only', bootGroups: [{ machines: ['m-web01'] }] });
    expect(await admin.call('GET', '/api/v1/machines/m-web01/protection')).toMatchObject({ state: 'protected', jobId: null });
    const job = await admin.call<Job>('POST', '/api/v1/plans/web-only/failover', { point: 'latest' });
    await jobIn(admin, job.id, ['succeeded']);
    expect(await admin.call('GET', '/api/v1/machines/m-web01/protection')).toMatchObject({ state: 'failed-over', runsOn: 'qemu:web-only-m-web01', jobId: job.id });
    expect((await refusal(admin.call('GET', '/api/v1/machines/ghost/protection'))).status).toBe(404);
    const planned = await refusal(admin.call('POST', '/api/v1/plans/web-only/failover', { point: 'latest', planned: true }));
    expect([planned.status, planned.field]).toEqual([400, 'point']);
    const commit = await admin.call<Job>('POST', '/api/v1/plans/web-only/commit', {});
    expect((await jobIn(admin, commit.id, ['succeeded'])).kind).toBe('commit');
    const { jobs } = await admin.get<{ jobs: Job[] }>('/api/v1/jobs', { plan: 'web-only' });
    expect(jobs.map((j) => j.kind)).toEqual(['commit', 'failover']);
    expect((await admin.get<{ jobs: Job[] }>('/api/v1/jobs', { kind: 'failover', limit: 1 })).jobs).toHaveLength(1);
    expect((await refusal(admin.get('/api/v1/jobs', { limit: 0 }))).field).toBe('limit');
  });

  it('streams every job change as server-sent events', async () => {
    const seen: Job[] = [];
    const stop = new AbortController();
    let opened!: () => void;
    const open = new Promise<void>((resolve) => (opened = resolve));
    const reading = admin.stream('/api/v1/jobs/stream', (data) => {
      const job = JSON.parse(data) as Job;
      seen.push(job);
      if (job.kind === 'commit' && job.state === 'succeeded') stop.abort();
    }, stop.signal, () => opened());
    await open;
    await admin.call('POST', '/api/v1/plans/web-only/failover', { point: 'latest' });
    await waitFor('the failover to end', async () => ((await admin.get<{ jobs: Job[] }>('/api/v1/jobs', { plan: 'web-only', limit: 1 })).jobs[0]?.state === 'succeeded' ? true : undefined));
    await admin.call('POST', '/api/v1/plans/web-only/commit', {});
    await reading;
    const failover = seen.filter((j) => j.kind === 'failover');
    expect(failover.length).toBeGreaterThan(3);
    expect(failover.at(-1)?.state).toBe('succeeded');
    expect(failover.some((j) => j.steps.some((s) => s.state === 'running'))).toBe(true);
    expect((await refusal(lab.client().call('GET', '/api/v1/jobs/stream'))).status).toBe(401);
  });

  it('needs a token (401) and documents the routes', async () => {
    expect((await refusal(lab.client().call('GET', '/api/v1/plans'))).status).toBe(401);
    expect((await refusal(lab.client().call('POST', '/api/v1/plans', twoGroups))).status).toBe(401);
    const doc = await lab.client().call<{ paths: Record<string, unknown> }>('GET', '/api/v1/openapi.json');
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/api/v1/plans', '/api/v1/plans/{id}/test-failover', '/api/v1/jobs/{id}/resume', '/api/v1/machines/{id}/protection']));
  });
});

describe('recovery API without a recovery service', () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await startLab(false);
  });
  afterAll(async () => lab?.close());

  it('answers 503 saying recovery is not available, after the token check', async () => {
    const admin = lab.client(await lab.login());
    for (const [method, p] of [['GET', '/api/v1/plans'], ['POST', '/api/v1/plans/shop/test-failover'], ['GET', '/api/v1/jobs/1'], ['GET', '/api/v1/jobs/stream']] as const) {
      const r = await refusal(admin.call(method, p, method === 'POST' ? {} : undefined));
      expect([r.status, r.code]).toEqual([503, 'unavailable']);
      expect(r.apiMessage).toMatch(/recovery is not available on this receiver/);
    }
    expect((await refusal(lab.client().call('GET', '/api/v1/plans'))).status).toBe(401);
  });
});

describe('ferry plan / failover / jobs / job against the API', () => {
  let lab: Lab;
  let env: Record<string, string>;
  let home: string;
  const ferry = (...args: string[]) => runCli(args, env);

  beforeAll(async () => {
    lab = await startLab(true);
    home = tempDir('cli-recovery');
    const passwordFile = path.join(home, 'password');
    fs.writeFileSync(passwordFile, `${lab.adminPassword}\n`, { mode: 0o600 });
    env = { FERRY_CONFIG_DIR: path.join(home, 'config') };
    const login = await ferry('login', '--api', lab.api.url, '--password-file', passwordFile, '--fingerprint', lab.identity.fingerprint);
    expect(login.status, login.stderr).toBe(0);
  });
  afterAll(async () => lab?.close());

  it('creates a plan from flags with machines by name, lists and shows it', async () => {
    const r = await ferry(
      'plan', 'create', 'shop',
      '--boot-group', 'db01',
      '--boot-group', 'web01',
      '--script-after', '1:warm:echo warm: ok',
      '--manual-before', '2:check-dns:point www at the sandbox',
      '--health-pattern', 'login: ?$',
      '--health-timeout', '2m',
      '--point', 'latest',
    );
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/created plan shop/);
    expect(r.stdout).toMatch(/boot group 1: db01 \(m-db01\)\n  after:  script warm: echo warm: ok \(timeout 5m\)/);
    expect(r.stdout).toMatch(/boot group 2: web01 \(m-web01\)\n  before: manual check-dns: point www at the sandbox/);
    expect(r.stdout).toMatch(/health check: serial console matches \/login: \?\$\/, within 2m/);
    expect((await ferry('plan', 'list')).stdout).toMatch(/^shop\s+2\s+2\s+latest\s+1\s+/m);
    const shown = JSON.parse((await ferry('plan', 'show', 'shop', '--json')).stdout) as Plan;
    expect(shown.bootGroups.map((g) => g.machines)).toEqual([['m-db01'], ['m-web01']]);
  });

  it('edits a plan from a file with the revision it read, and refuses a stale edit clearly', async () => {
    const file = path.join(home, 'shop.json');
    fs.writeFileSync(file, (await ferry('plan', 'show', 'shop', '--json')).stdout);
    const yamlFile = path.join(home, 'shop.yaml');
    fs.writeFileSync(yamlFile, ['name: shop', 'revision: 1', 'defaultPoint: latest-app', 'bootGroups:', '  - machines: [db01, web01]', 'health:', '  tcpPort: 22', ''].join('\n'));
    const edit = await ferry('plan', 'edit', 'shop', '--file', yamlFile);
    expect(edit.stderr).toBe('');
    expect(edit.stdout).toMatch(/updated plan shop to revision 2/);
    expect(edit.stdout).toMatch(/default point: latest-app/);
    // The JSON saved at revision 1 is stale now.
    const stale = await ferry('plan', 'edit', 'shop', '--file', file);
    expect(stale.status).toBe(1);
    expect(stale.stderr).toMatch(/^ferry: plan shop was changed by someone else since revision 1: .*nothing was changed/);
    expect(stale.stderr).not.toMatch(/\n\s+at /);
    const back = JSON.parse(fs.readFileSync(file, 'utf8')) as Plan;
    fs.writeFileSync(file, JSON.stringify({ ...back, revision: 2 }));
    expect((await ferry('plan', 'edit', 'shop', '--file', file)).stdout).toMatch(/revision 3/);
  });

  it('refuses bad input with a clear message and exit code, no stack', async () => {
    const cases: Array<{ args: string[]; status: number; message: RegExp }> = [
      { args: ['plan', 'create', 'p', '--boot-group', 'db01,,web01'], status: 2, message: /--boot-group.*expected machine names or ids separated by commas/ },
      { args: ['plan', 'create', 'p', '--boot-group', 'db01', '--colour', 'red'], status: 2, message: /unknown option '--colour'/ },
      { args: ['plan', 'create', 'p'], status: 2, message: /give the machines to boot: --boot-group/ },
      { args: ['plan', 'create', 'p', '--boot-group', 'ghost'], status: 3, message: /no machine ghost/ },
      { args: ['plan', 'create', 'p', '--boot-group', 'db01', '--script-after', '2:x:true'], status: 2, message: /there is no boot group 2/ },
      { args: ['plan', 'create', 'p', '--boot-group', 'db01', '--script-after', 'x:true'], status: 2, message: /expected GROUP:NAME:COMMAND/ },
      { args: ['plan', 'create', 'p', '--boot-group', 'db01', '--health-pattern', '('], status: 2, message: /not a valid regular expression: .*\(field: health\.serialPattern\)/ },
      { args: ['plan', 'create', 'p', '--file', '/nonexistent/plan.yaml'], status: 2, message: /cannot read plan file/ },
      { args: ['failover', 'test', '--plan', 'shop', '--point', 'yesterday'], status: 2, message: /expected latest, latest-app, a point id, round:N or an ISO time/ },
      { args: ['failover', 'test'], status: 2, message: /required option '--plan <plan>' not specified/ },
      { args: ['failover', 'test', '--plan', 'nope'], status: 3, message: /no plan nope/ },
      { args: ['job', 'show', 'x1'], status: 2, message: /expected a job id/ },
      { args: ['jobs', '--state', 'sleeping'], status: 2, message: /expected one of running, waiting/ },
    ];
    for (const c of cases) {
      const r = await ferry(...c.args);
      expect({ args: c.args, status: r.status }).toEqual({ args: c.args, status: c.status });
      expect(r.stderr).toMatch(c.message);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });

  it('follows a test failover through its manual step to the machines and the RTO', async () => {
    const run = startCli(['failover', 'test', '--plan', 'shop', '--point', 'latest'], env, 60_000);
    await run.waitForOutput(/waiting for an operator: ferry job resume (\d+)/, 30_000);
    const id = /ferry job resume (\d+)/.exec(run.output())?.[1] ?? '';
    const resumed = await ferry('job', 'resume', id);
    expect(resumed.stdout).toMatch(new RegExp(`resumed job ${id}`));
    const result = await run.done;
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/step \d+ boot group 1: succeeded/);
    expect(result.stdout).toMatch(/step \d+ manual check-dns \(group 2\): waiting - point www at the sandbox/);
    expect(result.stdout).toMatch(new RegExp(`job ${id} test-failover of plan shop at point latest: succeeded`));
    expect(result.stdout).toMatch(/^web01\s+healthy\s+1\.5s\s+10\.77\.0\.\d+\s+qemu:shop-m-web01/m);
    expect(result.stdout).toMatch(/web01: screenshot \/.*m-web01\.png/);
    expect(result.stdout).toMatch(/db01: serial log \/.*m-db01\.serial\.log/);
    expect(result.stdout).toMatch(/RTO \S+ \(start to every machine healthy\)/);

    const jobs = JSON.parse((await ferry('jobs', '--plan', 'shop', '--json')).stdout) as Job[];
    expect(jobs[0]).toMatchObject({ id: Number(id), state: 'succeeded' });
    expect((await ferry('jobs')).stdout).toMatch(new RegExp(`^${id}\\s+test-failover\\s+shop\\s+succeeded\\s+latest`, 'm'));
    const show = await ferry('job', 'show', id);
    expect(show.stdout).toMatch(/step \d+ script warm \(group 1\): succeeded/);
    expect((await ferry('failover', 'cleanup', '--plan', 'shop')).status).toBe(0);
  });

  it('ends non-zero when the job is cancelled, saying so', async () => {
    const started = await ferry('failover', 'test', '--plan', 'shop', '--no-wait', '--json');
    const job = JSON.parse(started.stdout) as Job;
    await jobIn(lab.client(await lab.login()), job.id, ['waiting']);
    expect((await ferry('job', 'cancel', String(job.id))).stdout).toMatch(/cancelled job \d+ .*cancelled by an operator/);
    const wait = await ferry('job', 'wait', String(job.id));
    expect(wait.status).toBe(1);
    expect(wait.stderr).toMatch(new RegExp(`ferry: job ${job.id} \\(test-failover of plan shop\\) cancelled: cancelled by an operator`));
    expect((await ferry('plan', 'delete', 'shop')).stdout).toMatch(/deleted plan shop/);
    expect((await ferry('plan', 'list')).stdout).toMatch(/no recovery plans/);
  });
});
