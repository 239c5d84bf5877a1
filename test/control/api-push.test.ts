// `ferry group add G --ssh root@host`: a real push install over SSH (a real OpenSSH server on
// 127.0.0.1, scratch install paths) with the receiver's agent address and certificate taken from
// the management API of a real receiver process; the installed agent registers with it, is
// started the way its systemd unit says, and the CLI follows it to Protected.
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Group } from '../../control/model';
import { makePackage, scratchRoot } from '../install/cli-run';
import { KeyPair, makeKey, Sshd, startSshd } from '../install/peers';
import { runCli, startCli } from '../helpers/api-lab';
import { makeTempDir, ReceiverProcess, startReceiverProcess, writePassphrase } from '../helpers/receiver-process';

const work = makeTempDir('api-push');
let sshd: Sshd;
let key: KeyPair;
let knownHosts: string;
let pkg: string;
let rx: ReceiverProcess;
let passphraseFile: string;
let agent: ChildProcess | undefined;
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
  env = { FERRY_CONFIG_DIR: path.join(work, 'config') };
  const login = await runCli(['login', '--api', rx.apiUrl ?? '', '--password-file', path.join(rxDir, 'admin-password'), '--fingerprint', rx.fingerprint], env);
  expect(login.status, login.stderr).toBe(0);
  expect((await runCli(['group', 'create', 'shop'], env)).status).toBe(0);
});

afterAll(async () => {
  agent?.kill('SIGTERM');
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

    await run.waitForOutput(/added to group shop; following it to Protected/);
    // No systemd here: run exactly the unit's ExecStart, as systemd would.
    const unit = fs.readFileSync(path.join(s.unitDir, 'ferry-agent.service'), 'utf8');
    const execStart = /^ExecStart=(.+)$/m.exec(unit)?.[1].split(' ') ?? [];
    agent = spawn(execStart[0], execStart.slice(1), { stdio: 'ignore', env: { ...process.env, FERRY_LOG_LEVEL: 'warn' } });

    const result = await run.done;
    expect(result.status, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(/machine push01 is Protected in group shop/);
    const shop = JSON.parse((await runCli(['group', 'show', 'shop', '--json'], env)).stdout) as Group;
    expect(shop.members).toHaveLength(1);
    const machine = JSON.parse((await runCli(['machine', 'show', 'push01', '--json'], env)).stdout) as { id: string; state: string; groupId: string };
    expect(machine).toMatchObject({ id: shop.members[0], state: 'protected', groupId: 'shop' });
  });
});
