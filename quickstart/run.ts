import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { Agent } from '../agent/agent';
import { parseAgentConfig } from '../agent/config';
import type { AgentStatus } from '../agent/status';
import { ExitCode, FerryError } from '../common/errors';
import { Catalog } from '../receiver/catalog';
import { startReceiverChild } from '../receiver/child-process';
import { exportPoint } from '../receiver/export';
import { DataLayout } from '../receiver/layout';
import { readCheckpoint } from '../receiver/storage/checkpoint';
import { SampleVolume } from './sample-volume';
import { sha256File } from '../common/file-hash';

export interface QuickstartOptions {
  dir: string;
  sizeBytes: number;
  churnBytes: number;
  progress: (line: string) => void;
  /**
   * Keep everything running after the report, with the web console on this local port, until
   * `serve` (given the report and the console's URL and first operator) resolves.
   */
  console?: { listen: { host: string; port: number }; serve: (report: QuickstartReport, console: QuickstartConsole) => Promise<void> };
}

export interface QuickstartConsole {
  url: string;
  operator: string;
  password: string;
  passwordFile: string;
}

export interface QuickstartReport {
  dir: string;
  volumeKind: string;
  sizeBytes: number;
  resyncSeconds: number;
  resyncBytesSent: number;
  churnBytes: number;
  maxRpoSeconds: number;
  points: number;
  pointId: number;
  pointAccuracy: string;
  exportFile: string;
  exportMatches: boolean;
  fsck?: { clean: boolean; files: string[] };
  receiverUrl: string;
  fingerprint: string;
}

const MARKER = '.ferry-quickstart';
const POLL_MS = 100;
const STEP_TIMEOUT_MS = 120_000;

/** A fresh working directory; refuses to wipe a directory a quick start did not create. */
function prepareDir(dir: string): void {
  if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) {
    if (!fs.existsSync(path.join(dir, MARKER))) throw new FerryError(`${dir} exists and was not made by \`ferry quickstart\`: choose another --dir`, ExitCode.usage);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(dir, MARKER), 'made by ferry quickstart; safe to delete\n');
}

async function waitUntil(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new FerryError(`quick start: timed out waiting for ${what}`, ExitCode.failure);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/**
 * The whole product on one machine, no root: a receiver, a sample volume protected by the
 * agent with scan capture, churn, a recovery point, its export and a byte-for-byte check.
 */
export async function runQuickstart(opts: QuickstartOptions): Promise<QuickstartReport> {
  const dir = path.resolve(opts.dir);
  prepareDir(dir);
  const passphraseFile = path.join(dir, 'passphrase');
  fs.writeFileSync(passphraseFile, `${randomBytes(18).toString('base64url')}\n`, { mode: 0o600 });
  const receiverDir = path.join(dir, 'receiver');
  opts.progress(`starting a receiver (data in ${receiverDir})`);
  // The demo writes a few MiB: hold the agent only when the disk is really about to fill up.
  const listen = opts.console?.listen;
  const apiListen = listen ? ['--api-listen', `${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${listen.port}`] : [];
  const receiver = await startReceiverChild(receiverDir, passphraseFile, ['--min-free', '64MiB', '--reserve', '16MiB', ...apiListen]);
  let agent: Agent | undefined;
  let agentRun: Promise<void> | undefined;
  try {
    const volume = SampleVolume.create(dir, opts.sizeBytes);
    opts.progress(`created a ${opts.sizeBytes / 1024 / 1024} MiB sample volume (${volume.kind}) at ${volume.file}`);
    const configFile = path.join(dir, 'agent.json');
    const config = {
      receiver: { url: receiver.url, fingerprint: receiver.fingerprint },
      name: 'quickstart',
      stateDir: './agent-state',
      capture: 'scan',
      passphraseFile: './passphrase',
      volumes: [{ id: 'sample', path: path.basename(volume.file) }],
      scan: { intervalMs: 250 },
      tags: { crashIntervalMs: 1000 },
    };
    fs.writeFileSync(configFile, `${JSON.stringify(config, null, 2)}\n`);
    agent = new Agent(parseAgentConfig(fs.readFileSync(configFile, 'utf8'), configFile));
    const running = agent;
    agentRun = running.run();
    agentRun.catch(() => undefined);
    const status = (): AgentStatus['volumes'][number] | undefined => running.status().volumes[0];

    opts.progress('protecting it: initial resync');
    const resyncStart = Date.now();
    await Promise.race([
      waitUntil('the initial resync', () => status()?.state === 'protected' && status()?.backlogBytes === 0 && status()?.resync?.finished === true),
      agentRun.then(() => {
        throw new FerryError('the agent stopped during the quick start', ExitCode.failure);
      }),
    ]);
    const resyncSeconds = (Date.now() - resyncStart) / 1000;
    const resyncBytesSent = status()?.resync?.sentBytes ?? 0;

    opts.progress(`writing ${Math.round(opts.churnBytes / 1024 / 1024)} MiB of churn`);
    let maxRpoSeconds = 0;
    const rpoWatch = setInterval(() => (maxRpoSeconds = Math.max(maxRpoSeconds, status()?.rpoSeconds ?? 0)), POLL_MS);
    const steps = 8;
    for (let i = 0; i < steps; i++) {
      volume.churn(Math.floor(opts.churnBytes / steps));
      await new Promise((r) => setTimeout(r, 150));
    }
    opts.progress('cutting a recovery point after a full pass over the (now quiet) volume');
    const tag = await running.tag(true, 'quickstart');
    clearInterval(rpoWatch);
    const sourceHash = sha256File(volume.file);
    const layout = new DataLayout(receiverDir);
    const pointId = tag.pointIds[0];
    const cutSeq = tag.cuts[0].seq;
    await waitUntil('the point to be applied', () => readCheckpoint(layout.checkpointFile('sample')) >= cutSeq);
    const exportFile = path.join(dir, 'export-sample.img');
    opts.progress(`exporting point ${pointId} to ${exportFile}`);
    exportPoint({ dataDir: receiverDir, volumeId: 'sample', point: String(pointId), out: exportFile, format: 'raw' });
    const exportMatches = sha256File(exportFile) === sourceHash;
    const inspected = volume.inspect(exportFile);
    const catalog = Catalog.open(layout.catalogFile, { readonly: true });
    const points = catalog.points('sample').length;
    catalog.close();
    const report: QuickstartReport = {
      dir,
      volumeKind: volume.kind,
      sizeBytes: opts.sizeBytes,
      resyncSeconds,
      resyncBytesSent,
      churnBytes: opts.churnBytes,
      maxRpoSeconds,
      points,
      pointId,
      pointAccuracy: tag.accuracy,
      exportFile,
      exportMatches,
      fsck: inspected && { clean: inspected.fsckClean, files: inspected.files },
      receiverUrl: receiver.url,
      fingerprint: receiver.fingerprint,
    };
    if (opts.console && receiver.apiUrl) {
      const passwordFile = path.join(receiverDir, 'admin-password');
      const shownHost = listen === undefined || listen.host === '0.0.0.0' || listen.host === '::' ? '127.0.0.1' : listen.host;
      const port = new URL(receiver.apiUrl).port;
      await opts.console.serve(report, { url: `https://${shownHost.includes(':') ? `[${shownHost}]` : shownHost}:${port}/`, operator: 'admin', password: fs.readFileSync(passwordFile, 'utf8').trim(), passwordFile });
    }
    return report;
  } finally {
    agent?.stop();
    await agentRun?.catch(() => undefined);
    await receiver.stop();
  }
}
