import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentLab } from '../helpers/agent-lab';
import { ExitCode } from '../../common/errors';
import { CliResult, runFerry } from '../helpers/receiver-process';

function expectClean(r: CliResult, status: number, message: RegExp): void {
  expect(r.status, r.stderr).toBe(status);
  expect(r.stderr).toMatch(message);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
}

describe('agent trust and configuration errors (real receiver, real TLS)', () => {
  const lab = new AgentLab('trust');
  let image = '';
  beforeAll(async () => {
    await lab.startReceiver();
    image = lab.volumeImage('vol.img', 1024 * 1024, 1);
  });
  afterAll(() => lab.cleanup());

  const register = (passphraseFile = lab.passphraseFile): CliResult => runFerry(['agent', 'register', '--config', lab.configFile, '--passphrase-file', passphraseFile]);

  it('refuses a wrong passphrase (exit 5) and stores no credential', () => {
    lab.writeConfig({ volumes: [{ id: 'v', path: image }] });
    const wrong = path.join(lab.dir, 'wrong-passphrase');
    fs.writeFileSync(wrong, 'not the passphrase\n');
    expectClean(register(wrong), ExitCode.auth, /passphrase proof does not match/);
    expect(fs.existsSync(path.join(lab.dir, 'agent-state', 'credential.json'))).toBe(false);
  });

  it('refuses a receiver whose certificate does not match the pinned fingerprint (exit 6)', () => {
    lab.writeConfig({ volumes: [{ id: 'v', path: image }], fingerprint: 'AB'.repeat(32) });
    expectClean(register(), ExitCode.unreachable, /does not match the pinned one/);
  });

  it('reports an unreachable receiver (exit 6)', () => {
    lab.writeConfig({ volumes: [{ id: 'v', path: image }], url: 'wss://127.0.0.1:1' });
    expectClean(register(), ExitCode.unreachable, /cannot reach the receiver/);
  });

  it('refuses to run with a garbage credential file (exit 5), naming the fix', () => {
    lab.writeConfig({ volumes: [{ id: 'v', path: image }] });
    fs.mkdirSync(path.join(lab.dir, 'agent-state'), { recursive: true });
    fs.writeFileSync(path.join(lab.dir, 'agent-state', 'credential.json'), '{"agentId": "a1", "credential": "garbage"}');
    expectClean(runFerry(['agent', 'run', '--config', lab.configFile]), ExitCode.auth, /damaged.*ferry agent register/);
  });

  it('refuses to run with a well-formed credential the receiver never issued (exit 5)', () => {
    lab.writeConfig({ volumes: [{ id: 'v', path: image }] });
    const cred = { agentId: 'agent-0123456789abcdef', credential: Buffer.alloc(32, 7).toString('base64'), receiverUrl: lab.receiver.url };
    fs.writeFileSync(path.join(lab.dir, 'agent-state', 'credential.json'), JSON.stringify(cred));
    expectClean(runFerry(['agent', 'run', '--config', lab.configFile]), ExitCode.auth, /login refused/);
  });

  it('an unregistered agent is told to register (exit 5)', () => {
    fs.rmSync(path.join(lab.dir, 'agent-state'), { recursive: true, force: true });
    lab.writeConfig({ volumes: [{ id: 'v', path: image }] });
    expectClean(runFerry(['agent', 'run', '--config', lab.configFile]), ExitCode.auth, /not registered.*ferry agent register/);
  });

  it('rejects bad configs with the key at fault (exit 2) and missing volumes (exit 3)', () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ volumes: [{ id: 'v', path: image }] }, /receiver is required|receiver.url is required/],
      [{ receiver: { url: 'ws://x:1', fingerprint: 'AB'.repeat(32) }, volumes: [{ id: 'v', path: image }] }, /must use wss/],
      [{ receiver: { url: 'wss://x:1' }, volumes: [{ id: 'v', path: image }] }, /fingerprint or a caFile/],
      [{ receiver: { url: 'wss://x:1', fingerprint: 'AB'.repeat(32) }, volumes: [] }, /at least one volume/],
      [{ receiver: { url: 'wss://x:1', fingerprint: 'AB'.repeat(32) }, volumes: [{ id: '../etc', path: image }] }, /volumes\[0\]\.id/],
      [{ receiver: { url: 'wss://x:1', fingerprint: 'AB'.repeat(32) }, volumes: [{ id: 'v', path: image }], colour: 'blue' }, /unknown key colour/],
      [{ receiver: { url: 'wss://x:1', fingerprint: 'AB'.repeat(32) }, volumes: [{ id: 'v', path: image }], scan: { blockSize: 5000 } }, /scan.blockSize/],
    ];
    const file = path.join(lab.dir, 'bad.json');
    for (const [doc, message] of cases) {
      fs.writeFileSync(file, JSON.stringify(doc));
      expectClean(runFerry(['agent', 'run', '--config', file]), ExitCode.usage, message);
    }
    fs.writeFileSync(file, '{ not json');
    expectClean(runFerry(['agent', 'run', '--config', file]), ExitCode.usage, /cannot parse/);
    expectClean(runFerry(['agent', 'run', '--config', path.join(lab.dir, 'nope.yaml')]), ExitCode.usage, /cannot read config/);
    const yaml = path.join(lab.dir, 'missing-volume.yaml');
    fs.writeFileSync(yaml, `receiver:\n  url: ${lab.receiver.url}\n  fingerprint: "${lab.receiver.fingerprint}"\nstateDir: ./s2\nvolumes:\n  - id: v\n    path: ./no-such.img\n`);
    const credDir = path.join(lab.dir, 's2');
    fs.mkdirSync(credDir, { recursive: true });
    fs.writeFileSync(path.join(credDir, 'credential.json'), JSON.stringify({ agentId: 'agent-x', credential: Buffer.alloc(32).toString('base64') }));
    expectClean(runFerry(['agent', 'run', '--config', yaml]), ExitCode.notFound, /cannot open .*no-such\.img: ENOENT/);
  });

  it('agent tag and status say clearly that no agent is running', () => {
    lab.writeConfig({ volumes: [{ id: 'v', path: image }] });
    expectClean(runFerry(['agent', 'tag', '--config', lab.configFile]), ExitCode.notReady, /no agent is running/);
    expectClean(runFerry(['agent', 'status', '--config', lab.configFile]), ExitCode.notFound, /no agent has run/);
  });
});
