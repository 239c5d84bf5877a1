/**
 * What the web console needs from the management API, over real TLS: the session cookie
 * (HttpOnly, Secure, SameSite=Strict) and its CSRF token, the overview and its stream, machine
 * history and points, point export refusals, and the console's static files with their
 * security headers. The browser itself drives the console in test/console/console.test.ts.
 */
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunningManagementApi, startManagementApi } from '../../control/api/server';
import { loadOrCreateIdentity, ReceiverIdentity } from '../../receiver/identity';
import { DataLayout } from '../../receiver/layout';
import { runCli } from '../helpers/api-lab';
import { MemoryPlane } from '../helpers/memory-plane';
import { tempDirs } from '../helpers/temp-dirs';

const tempDir = tempDirs();

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function request(api: RunningManagementApi, identity: ReceiverIdentity, method: string, url: string, options: { body?: unknown; headers?: Record<string, string> } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
    const req = https.request(
      `${api.url}${url}`,
      {
        method,
        ca: identity.cert,
        checkServerIdentity: () => undefined,
        headers: { ...(payload ? { 'Content-Type': 'application/json' } : {}), ...options.headers },
      },
      (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** The first `event: overview` frame of the stream, then the connection is dropped. */
function firstOverviewFrame(api: RunningManagementApi, identity: ReceiverIdentity, cookie: string): Promise<{ status: number; data: unknown }> {
  return new Promise((resolve, reject) => {
    const req = https.get(`${api.url}/api/v1/overview/stream`, { ca: identity.cert, checkServerIdentity: () => undefined, headers: { Cookie: cookie } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => {
        text += c.toString();
        const m = /event: overview\ndata: (.*)\n\n/.exec(text);
        if (m) {
          req.destroy();
          resolve({ status: res.statusCode ?? 0, data: JSON.parse(m[1]) });
        }
      });
    });
    req.on('error', reject);
  });
}

describe('management API: what the console uses', () => {
  let dataDir: string;
  let identity: ReceiverIdentity;
  let plane: MemoryPlane;
  let api: RunningManagementApi;
  let consoleDir: string;
  const call = (method: string, url: string, options?: { body?: unknown; headers?: Record<string, string> }): Promise<Answer> => request(api, identity, method, url, options);

  beforeAll(async () => {
    dataDir = tempDir('api-console');
    consoleDir = tempDir('console-dist');
    fs.mkdirSync(path.join(consoleDir, 'assets'));
    fs.writeFileSync(path.join(consoleDir, 'index.html'), '<!doctype html><title>Ferry</title><script type="module" src="./assets/app-1.js"></script>');
    fs.writeFileSync(path.join(consoleDir, 'assets', 'app-1.js'), 'console.log(1)');
    identity = await loadOrCreateIdentity(new DataLayout(dataDir), {});
    plane = new MemoryPlane();
    plane.addMachine('m-web01', 'web01');
    plane.addPoints([{ id: 7, volumeId: 'm-web01-root', seq: 10, timeUs: Date.now() * 1000, kind: 'crash', accuracy: 'exact', origin: 'tag', groupId: '', name: '', groupRound: 0 }]);
    // The export writes a stand-in image (the real one, a child `ferry export`, is tested with real replicas in test/recovery).
    const exportPoint = async (r: { out: string; format?: string }): Promise<void> => fs.writeFileSync(r.out, `image ${r.format}`);
    api = await startManagementApi(plane, { host: '127.0.0.1', port: 0, cert: identity.cert, key: identity.key, dataDir, keepAliveMs: 200, consoleDir, exportPoint });
  });
  afterAll(async () => {
    await api.close();
  });

  async function signIn(): Promise<{ cookie: string; csrf: string }> {
    const r = await call('POST', '/api/v1/session', { body: { name: 'admin', password: api.newAdminPassword } });
    expect(r.status).toBe(201);
    const set = [r.headers['set-cookie'] ?? []].flat()[0] ?? '';
    return { cookie: set.split(';')[0], csrf: (JSON.parse(r.body) as { csrfToken: string }).csrfToken };
  }

  it('signs in with a session cookie that scripts cannot read and other sites cannot send', async () => {
    const r = await call('POST', '/api/v1/session', { body: { name: 'admin', password: api.newAdminPassword } });
    expect(r.status).toBe(201);
    const cookie = [r.headers['set-cookie'] ?? []].flat()[0] ?? '';
    expect(cookie).toMatch(/^ferry_session=[A-Za-z0-9_-]+;/);
    for (const flag of ['HttpOnly', 'Secure', 'SameSite=Strict', 'Path=/']) expect(cookie).toContain(flag);
    const body = JSON.parse(r.body) as { operator: string; expiresMs: number; csrfToken: string };
    expect(body.operator).toBe('admin');
    expect(body.expiresMs).toBeGreaterThan(Date.now());
    // The cookie alone reads.
    const me = await call('GET', '/api/v1/session', { headers: { Cookie: cookie.split(';')[0] } });
    expect(me.status).toBe(200);
    expect(JSON.parse(me.body)).toMatchObject({ operator: 'admin', csrfToken: body.csrfToken });
  });

  it('refuses a wrong password with 401 and sets no cookie', async () => {
    const r = await call('POST', '/api/v1/session', { body: { name: 'admin', password: 'not-the-password' } });
    expect(r.status).toBe(401);
    expect(r.headers['set-cookie']).toBeUndefined();
    expect(JSON.parse(r.body)).toMatchObject({ error: 'unauthorized', message: 'wrong operator name or password' });
  });

  it('refuses a change made with the cookie but without the CSRF token, and changes nothing', async () => {
    const { cookie, csrf } = await signIn();
    const before = plane.machine('m-web01').recovery.vcpus;
    for (const headers of [{ Cookie: cookie }, { Cookie: cookie, 'X-CSRF-Token': 'A'.repeat(csrf.length) }] as Array<Record<string, string>>) {
      const r = await call('PATCH', '/api/v1/machines/m-web01/recovery', { body: { vcpus: before + 1 }, headers });
      expect(r.status).toBe(403);
      expect(JSON.parse(r.body)).toMatchObject({ error: 'csrf' });
    }
    expect(plane.machine('m-web01').recovery.vcpus).toBe(before);
    const ok = await call('PATCH', '/api/v1/machines/m-web01/recovery', { body: { vcpus: before + 1 }, headers: { Cookie: cookie, 'X-CSRF-Token': csrf } });
    expect(ok.status).toBe(200);
    expect(plane.machine('m-web01').recovery.vcpus).toBe(before + 1);
  });

  it('ends the session on sign-out: the cookie is cleared and no longer works', async () => {
    const { cookie, csrf } = await signIn();
    const out = await call('DELETE', '/api/v1/session', { headers: { Cookie: cookie, 'X-CSRF-Token': csrf } });
    expect(out.status).toBe(204);
    expect([out.headers['set-cookie'] ?? []].flat()[0]).toMatch(/^ferry_session=;.*Max-Age=0/);
    const after = await call('GET', '/api/v1/machines', { headers: { Cookie: cookie } });
    expect(after.status).toBe(401);
    expect(JSON.parse(after.body).message).toMatch(/session has ended/);
  });

  it('answers the overview, at once on its stream, with every machine and the receiver side', async () => {
    const { cookie } = await signIn();
    const r = await call('GET', '/api/v1/overview', { headers: { Cookie: cookie } });
    expect(r.status).toBe(200);
    const overview = JSON.parse(r.body) as { machines: Array<{ id: string; volumes: Array<{ backlogBytes: number }> }>; protection: Record<string, string>; receiver: object; worstRpoSeconds: number };
    expect(overview.machines.map((m) => m.id)).toEqual(['m-web01']);
    expect(overview.machines[0].volumes[0].backlogBytes).toBe(0);
    expect(overview.protection).toEqual({ 'm-web01': 'protected' });
    expect(overview.receiver).toMatchObject({ spoolBytes: 0, unappliedBytes: 0 });
    const frame = await firstOverviewFrame(api, identity, cookie);
    expect(frame.status).toBe(200);
    expect(frame.data).toMatchObject({ machines: [{ id: 'm-web01' }] });
  });

  it("answers a machine's history and points, and refuses bad windows and unknown machines", async () => {
    const { cookie } = await signIn();
    const h = await call('GET', '/api/v1/machines/m-web01/history?window=day', { headers: { Cookie: cookie } });
    expect(h.status).toBe(200);
    expect(JSON.parse(h.body)).toMatchObject({ window: 'day', stepMs: 300_000 });
    const bad = await call('GET', '/api/v1/machines/m-web01/history?window=week', { headers: { Cookie: cookie } });
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body)).toMatchObject({ error: 'invalid', field: 'window' });
    const p = await call('GET', '/api/v1/machines/m-web01/points', { headers: { Cookie: cookie } });
    expect(JSON.parse(p.body)).toEqual({ points: [expect.objectContaining({ id: 7, volumeId: 'm-web01-root' })] });
    expect((await call('GET', '/api/v1/machines/nope/points', { headers: { Cookie: cookie } })).status).toBe(404);
    const crossed = await call('POST', '/api/v1/points/999/export', { body: {}, headers: { Cookie: cookie, 'X-CSRF-Token': (await signIn()).csrf } });
    expect(crossed.status).toBe(403); // another session's CSRF token does not fit this cookie
  });

  it('refuses to export a point that does not exist', async () => {
    const { cookie, csrf } = await signIn();
    const r = await call('POST', '/api/v1/points/999/export', { body: { format: 'raw' }, headers: { Cookie: cookie, 'X-CSRF-Token': csrf } });
    expect(r.status).toBe(404);
    const f = await call('POST', '/api/v1/points/7/export', { body: { format: 'qcow9' }, headers: { Cookie: cookie, 'X-CSRF-Token': csrf } });
    expect(f.status).toBe(400);
    expect(JSON.parse(f.body)).toMatchObject({ field: 'format' });
  });

  it("the CLI makes the console's reads and the export too: ferry machine history, points, export", async () => {
    const token = JSON.parse((await call('POST', '/api/v1/tokens', { body: { name: 'admin', password: api.newAdminPassword } })).body).token as string;
    const env = { FERRY_API: api.url, FERRY_TOKEN: token, FERRY_FINGERPRINT: identity.fingerprint, FERRY_CONFIG_DIR: tempDir('cli-config') };
    const history = await runCli(['machine', 'history', 'web01', '--window', 'hour', '--json'], env);
    expect(history.status, history.stderr).toBe(0);
    expect(JSON.parse(history.stdout)).toMatchObject({ window: 'hour', stepMs: 5000 });
    const points = await runCli(['machine', 'points', 'web01'], env);
    expect(points.stdout).toMatch(/^ID\s+TIME\s+VOLUME\s+KIND\s+ACCURACY/);
    expect(points.stdout).toMatch(/\n7\s+\S+\s+m-web01-root\s+crash\s+exact/);
    const exported = await runCli(['machine', 'export', 'web01', '--point', '7', '--format', 'vhd'], env);
    expect(exported.status, exported.stderr).toBe(0);
    const file = path.join(dataDir, 'exports', 'm-web01-root-point-7.vhd');
    expect(exported.stdout).toContain(file);
    expect(fs.readFileSync(file, 'utf8')).toBe('image vhd');
    const foreign = await runCli(['machine', 'export', 'web01', '--point', '8'], env);
    expect(foreign.status).toBe(3);
    expect(foreign.stderr).toMatch(/point 8 is not a point of web01/);
  });

  it('serves the console with a strict content security policy, and no other files', async () => {
    const page = await call('GET', '/');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toMatch(/text\/html/);
    expect(page.headers['content-security-policy']).toMatch(/default-src 'self'.*frame-ancestors 'none'/);
    expect(page.headers['x-frame-options']).toBe('DENY');
    expect(page.body).toContain('<title>Ferry</title>');
    const js = await call('GET', '/assets/app-1.js');
    expect(js.status).toBe(200);
    expect(js.headers['content-type']).toMatch(/javascript/);
    expect(js.headers['cache-control']).toMatch(/immutable/);
    expect((await call('GET', '/assets/../operators.db')).status).toBe(404);
    expect((await call('GET', '/assets/nope.js')).status).toBe(404);
  });
});
