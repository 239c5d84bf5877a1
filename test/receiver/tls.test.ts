import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReceiverConnection } from '../../agent/transport/receiver-connection';
import { makeTempDir, ReceiverProcess, startReceiverProcess, writePassphrase } from '../helpers/receiver-process';

describe('transport trust', () => {
  const dir = makeTempDir('tls');
  const dataDir = path.join(dir, 'data');
  const { file: passFile, passphrase } = writePassphrase(dir);
  let rx: ReceiverProcess;

  beforeAll(async () => {
    rx = await startReceiverProcess(dataDir, passFile);
  });
  afterAll(async () => {
    await rx?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('prints the fingerprint of the certificate it serves, and a pinned agent registers', async () => {
    const conn = await ReceiverConnection.connect(rx.url, { fingerprint: rx.fingerprint.toLowerCase().replace(/:/g, '') });
    const { agentId, credential } = await conn.register(passphrase, 'pinned');
    expect(agentId).toMatch(/^agent-[0-9a-f]{16}$/);
    expect(credential.length).toBe(32);
    await conn.close();
  });

  it('refuses a receiver whose fingerprint does not match the pin', async () => {
    const wrong = 'AA:'.repeat(31) + 'AA';
    await expect(ReceiverConnection.connect(rx.url, { fingerprint: wrong })).rejects.toMatchObject({ kind: 'untrusted', message: /does not match the pinned one/ });
  });

  it('verifies against a CA file: the receiver certificate itself works, another does not', async () => {
    const conn = await ReceiverConnection.connect(rx.url.replace('127.0.0.1', 'localhost'), { caFile: path.join(dataDir, 'tls', 'cert.pem') });
    await conn.close();
    const otherCa = path.join(dir, 'other.pem');
    const other = makeTempDir('tls-other');
    const rx2 = await startReceiverProcess(other, passFile);
    await rx2.stop();
    fs.copyFileSync(path.join(other, 'tls', 'cert.pem'), otherCa);
    fs.rmSync(other, { recursive: true, force: true });
    await expect(ReceiverConnection.connect(rx.url.replace('127.0.0.1', 'localhost'), { caFile: otherCa })).rejects.toMatchObject({ kind: 'untrusted' });
  });

  it('speaks TLS 1.3 only', async () => {
    const outcome = await new Promise<string>((resolve) => {
      const socket = tls.connect({ host: '127.0.0.1', port: rx.port, maxVersion: 'TLSv1.2', rejectUnauthorized: false });
      socket.once('secureConnect', () => {
        resolve(`connected with ${socket.getProtocol()}`);
        socket.destroy();
      });
      socket.once('error', (err) => resolve(`refused: ${err.message}`));
    });
    expect(outcome).toMatch(/^refused: .*(protocol version|alert)/i);
  });

  it('reports an unreachable receiver clearly', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const port = (server.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await expect(ReceiverConnection.connect(`wss://127.0.0.1:${port}`, { fingerprint: rx.fingerprint })).rejects.toMatchObject({
      kind: 'unreachable',
      message: /cannot reach the receiver .*ECONNREFUSED/,
    });
  });
});
