import * as fs from 'node:fs';
import * as path from 'node:path';
import * as https from 'node:https';
import { afterAll, describe, expect, it } from 'vitest';
import { startCli } from '../helpers/api-lab';
import { makeTempDir, runFerryAsync } from '../helpers/receiver-process';

/** status and body of an HTTPS request to the quick start's console (its self-signed certificate, pinned here by the printed URL only). */
function fetchText(url: string, method = 'GET', body?: unknown): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = https.request(url, { method, rejectUnauthorized: false, headers: payload ? { 'Content-Type': 'application/json' } : {} }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(payload);
  });
}

describe('ferry quickstart (the README main job)', () => {
  const dir = makeTempDir('quickstart');
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('protects a sample volume, exports a point and finds it identical to the source', async () => {
    const work = path.join(dir, 'qs');
    const r = await runFerryAsync(['quickstart', '--dir', work, '--size', '32MiB', '--churn', '4MiB']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/identical to the source volume/);
    expect(r.stdout).toMatch(/recovery points\s+\d+/);
    if (r.stdout.includes('(ext4)')) expect(r.stdout).toMatch(/e2fsck clean; files: README.txt/);
    // A second run reuses (wipes) its own directory; a foreign non-empty directory is refused.
    expect((await runFerryAsync(['quickstart', '--dir', work, '--size', '8MiB', '--churn', '1MiB'])).status).toBe(0);
    const foreign = path.join(dir, 'foreign');
    fs.mkdirSync(foreign);
    fs.writeFileSync(path.join(foreign, 'precious.txt'), 'keep me');
    const refused = await runFerryAsync(['quickstart', '--dir', foreign]);
    expect(refused.status).toBe(2);
    expect(refused.stderr).toMatch(/was not made by `ferry quickstart`/);
    expect(fs.readFileSync(path.join(foreign, 'precious.txt'), 'utf8')).toBe('keep me');
  });

  it('with --serve, keeps running with the web console and prints its URL and the first operator', async () => {
    const work = path.join(dir, 'serve');
    const run = startCli(['quickstart', '--dir', work, '--size', '16MiB', '--churn', '2MiB', '--serve', '--console-listen', '127.0.0.1:0'], {});
    await run.waitForOutput(/Ctrl-C stops them/, 120_000);
    const url = /Web console: (https:\/\/\S+)/.exec(run.output())?.[1] ?? '';
    const password = /operator admin, password (\S+)/.exec(run.output())?.[1] ?? '';
    expect(url).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/$/);
    const page = await fetchText(url);
    expect(page.status).toBe(200);
    expect(page.body).toMatch(/<title>Ferry/);
    expect((await fetchText(`${url}api/v1/session`, 'POST', { name: 'admin', password })).status).toBe(201);
    run.kill('SIGINT');
    const done = await run.done;
    expect(done.status).toBe(0);
  });
});
