import * as net from 'node:net';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { controlRequest } from '../../agent/control';
import type { AgentStatus } from '../../agent/status';
import { readStatusFile } from '../../receiver/status';
import { AgentLab, waitFor } from '../helpers/agent-lab';
import { runFerryAsync } from '../helpers/receiver-process';

const MiB = 1024 * 1024;
const SCAN_INTERVAL_S = 3;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

async function liveStatus(lab: AgentLab): Promise<AgentStatus> {
  const reply = await controlRequest(path.join(lab.dir, 'agent-state', 'agent.sock'), { cmd: 'status' }, 5000);
  if (!reply.ok || !reply.status) throw new Error(`agent status failed: ${reply.ok ? 'no status' : reply.error}`);
  return reply.status;
}

describe('RPO of a scan-captured volume', () => {
  let lab: AgentLab | undefined;
  afterEach(async () => {
    await lab?.cleanup();
    lab = undefined;
  });

  it('counts the time since a pass last read the volume, and the receiver shows the agent\'s figure', async () => {
    lab = new AgentLab('rpo');
    const l = lab;
    await l.startReceiver();
    const image = l.volumeImage('vol1.img', 16 * MiB, 7);
    const metricsPort = await freePort();
    l.writeConfig({ volumes: [{ id: 'vol1', path: image }], scan: { intervalMs: SCAN_INTERVAL_S * 1000 }, metrics: { listen: `127.0.0.1:${metricsPort}` } });
    l.register();
    const agent = l.startAgent();
    await l.waitProtected('vol1', agent.child.pid as number);

    // Nothing is written and nothing is pending, yet a write made right after a pass read its
    // block would only be seen by the next pass: the RPO grows to about a pass interval.
    const agentRpo = async (): Promise<number> => {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      return Number(/ferry_volume_rpo_seconds\{volume="vol1"\} ([0-9.e+-]+)/.exec(text)?.[1] ?? NaN);
    };
    await waitFor('the Prometheus RPO to include most of a pass interval', async () => (await agentRpo()) >= 0.8 * SCAN_INTERVAL_S, 30_000, 100);

    // The receiver computes its RPO from the pendingSinceUs the agent reports: the moment the
    // exposure starts is the same on both sides (the receiver's at most a heartbeat behind,
    // never later than the agent's), over several passes.
    const rxStatusFile = path.join(l.receiverDir, 'status.json');
    const agreed: number[] = [];
    let rxRpoMax = 0;
    await waitFor(
      'the receiver to show the agent\'s exposure start over three passes',
      async () => {
        // The receiver's file first: the agent's figure is then the same age or newer.
        const rxStatus = readStatusFile(rxStatusFile);
        const rx = rxStatus?.volumes.find((v) => v.volumeId === 'vol1');
        const ag = await liveStatus(l);
        if (!rxStatus || !rx || !rx.connected) return false;
        const rxSinceUs = rxStatus.updatedUs - rx.rpoSeconds * 1e6;
        const agSinceUs = ag.updatedMs * 1000 - ag.volumes[0].rpoSeconds * 1e6;
        expect(rxSinceUs).toBeLessThanOrEqual(agSinceUs + 5000);
        rxRpoMax = Math.max(rxRpoMax, rx.rpoSeconds);
        if (Math.abs(agSinceUs - rxSinceUs) <= 5000 && !agreed.some((us) => Math.abs(us - agSinceUs) < 100_000)) agreed.push(agSinceUs);
        return agreed.length >= 3;
      },
      60_000,
      100,
    );
    expect(agreed[2]).toBeGreaterThan(agreed[1]);
    await waitFor('the receiver\'s RPO to include most of a pass interval', () => {
      const rx = readStatusFile(rxStatusFile)?.volumes.find((v) => v.volumeId === 'vol1');
      rxRpoMax = Math.max(rxRpoMax, rx?.rpoSeconds ?? 0);
      return rxRpoMax >= 0.8 * SCAN_INTERVAL_S;
    }, 30_000, 100);

    // `ferry agent status` and `ferry receiver status` carry the same figures.
    const cliAgent = JSON.parse((await runFerryAsync(['agent', 'status', '--config', l.configFile, '--json'])).stdout) as AgentStatus;
    const cliRx = JSON.parse((await runFerryAsync(['receiver', 'status', '--data', l.receiverDir, '--json'])).stdout) as { volumes: Array<{ rpoSeconds: number }> };
    expect(cliAgent.volumes[0].rpoSeconds).toBeGreaterThan(0);
    expect(cliRx.volumes[0].rpoSeconds).toBeGreaterThan(0);
  }, 180_000);
});
