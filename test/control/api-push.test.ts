// `ferry group add G --ssh root@host`: a real push install over SSH (a real OpenSSH server on
// 127.0.0.1, scratch install paths) with the receiver's agent address and certificate taken from
// the management API; the installed agent registers with a real receiver process. The plane
// behind the API is the in-memory one until the receiver's plane is merged: the two lines marked
// STAND-IN play its part (the machine appears, then turns Protected) and go away then.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunningManagementApi, startManagementApi } from '../../control/api/server';
import type { Group } from '../../control/model';
import { loadOrCreateIdentity } from '../../receiver/identity';
import { DataLayout } from '../../receiver/layout';
import { makePackage, scratchRoot } from '../install/cli-run';
import { KeyPair, makeKey, Sshd, startSshd } from '../install/peers';
import { runCli, startCli } from '../helpers/api-lab';
import { MemoryPlane } from '../helpers/memory-plane';
import { makeTempDir, ReceiverProcess, startReceiverProcess, writePassphrase } from '../helpers/receiver-process';

const work = makeTempDir('api-push');
let sshd: Sshd;
let key: KeyPair;
let knownHosts: string;
let pkg: string;
let rx: ReceiverProcess;
let passphraseFile: string;
let plane: MemoryPlane;
let api: RunningManagementApi;
let env: Record<string, string>;

beforeAll(async () => {
  pkg = makePackage(work);
  key = makeKey(path.join(work, 'id_ed25519'));
  sshd = await startSshd(path.join(work, 'sshd'));
  sshd.authorize('root', key.publicLine);
  knownHosts = path.join(work, 'known_hosts');
  fs.writeFileSync(knownHosts, `${sshd.knownHostsLine('127.0.0.1')}\n`);
  passphraseFile = writePassphrase(work).file;
  const rxDir = path.join(work, 'rx');
  rx = await startReceiverProcess(rxDir, passphraseFile);
  // The API serves the receiver's certificate, as it does inside the receiver.
  const identity = await loadOrCreateIdentity(new DataLayout(rxDir), {});
  plane = new MemoryPlane();
  api = await startManagementApi(plane, { host: '127.0.0.1', port: 0, cert: identity.cert, key: identity.key, dataDir: rxDir, agentUrl: rx.url });
  const passwordFile = path.join(work, 'admin-password');
  fs.writeFileSync(passwordFile, `${api.newAdminPassword ?? ''}\n`);
  env = { FERRY_CONFIG_DIR: path.join(work, 'config') };
  const login = await runCli(['login', '--api', api.url, '--password-file', passwordFile, '--fingerprint', identity.fingerprint], env);
  expect(login.status, login.stderr).toBe(0);
  expect((await runCli(['group', 'create', 'shop'], env)).status).toBe(0);
});

afterAll(async () => {
  await api?.close();
  await rx?.stop();
  await sshd?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('ferry group add --ssh', () => {
  it('installs the agent with the API-given receiver and certificate, adds the machine and follows it to Protected', async () => {
    const image = path.join(work, 'push.img');
    fs.writeFileSync(image, Buffer.alloc(4 * 1024 * 1024, 7));
    const s = scratchRoot(path.join(work, 'host'));
    const run = startCli(
      [
        'group', 'add', 'shop',
        '--ssh', `root@127.0.0.1:${sshd.port}`,
        '--identity', key.privateFile,
        '--known-hosts', knownHosts,
        '--package', pkg,
        '--passphrase-file', passphraseFile,
        '--volume', `pushvol=${image}`,
        '--name', 'push01',
        '--capture', 'scan',
        '--register-timeout', '2m',
        '--protect-timeout', '2m',
        ...s.args,
      ],
      env,
    );
    await run.waitForOutput(/waiting for machine push01 to register/);
    expect(run.output()).toMatch(/registered as/);
    const config = fs.readFileSync(path.join(s.config, 'agent.yaml'), 'utf8');
    expect(config).toContain(rx.url);
    expect(config.replace(/:/g, '')).toContain(rx.fingerprint.replace(/:/g, ''));
    expect(config).toMatch(/name: push01/);

    plane.addMachine('m-push01', 'push01', { state: 'resyncing', connected: false }); // STAND-IN: the receiver registered it
    await run.waitForOutput(/added to group shop; following it to Protected/);
    await run.waitForOutput(/push01: resyncing/);
    plane.setState('m-push01', 'protected'); // STAND-IN: the agent's initial replication finished

    const result = await run.done;
    expect(result.status, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(/machine push01 is Protected in group shop/);
    const shop = JSON.parse((await runCli(['group', 'show', 'shop', '--json'], env)).stdout) as Group;
    expect(shop.members).toEqual(['m-push01']);
  });
});
