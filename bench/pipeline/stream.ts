import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import WebSocket from 'ws';
import { DEFAULTS } from '../../agent/config';
import { Pipeline } from '../../agent/pipeline/pipeline';
import { ReceiverConnection, VolumeProgress } from '../../agent/transport/receiver-connection';
import { nowUs } from '../../common/time';
import type { ReceiverChild } from '../../receiver/child-process';
import { DataLayout } from '../../receiver/layout';
import { MiB, seededRandom } from '../common';
import { SyntheticSource } from './synthetic-source';

const RECORD_BYTES = 64 * 1024;
/** USER_HZ: what /proc reports times in (100 on every Linux this runs on). */
const CLOCK_TICKS_PER_SECOND = 100;
const VOLUME_BYTES = 1024 * MiB;
/** The agent's defaults. */
const PIPELINE = { maxBatchBytes: DEFAULTS.maxBatchBytes, maxBatchDelayMs: DEFAULTS.maxBatchDelayMs, windowBytes: DEFAULTS.windowBytes };

/**
 * Data like a used disk's: per 64 KiB block, either incompressible or text-like (lz4 halves
 * it). Generated once before anything is timed; blocks are reused from a 64 MiB pool.
 */
export class DataPool {
  private readonly pool: Buffer;

  constructor(bytes = 64 * MiB) {
    const random = seededRandom(1);
    this.pool = Buffer.alloc(bytes);
    const words = ['replica', 'journal', 'volume ', 'seq ', 'agent ', 'ferry ', '\n', 'spool '];
    for (let block = 0; block < bytes / RECORD_BYTES; block++) {
      const start = block * RECORD_BYTES;
      if (block % 2 === 0) {
        for (let i = start; i < start + RECORD_BYTES; i += 4) this.pool.writeUInt32LE((random() * 2 ** 32) >>> 0, i);
      } else {
        let i = start;
        while (i < start + RECORD_BYTES) {
          const w = `${words[Math.floor(random() * words.length)]}${Math.floor(random() * 1000)} `;
          i += this.pool.write(w, i, Math.min(w.length, start + RECORD_BYTES - i), 'latin1');
        }
      }
    }
  }

  block(index: number): Buffer {
    const blocks = this.pool.length / RECORD_BYTES;
    const start = (index % blocks) * RECORD_BYTES;
    return this.pool.subarray(start, start + RECORD_BYTES);
  }

  /** Distinct 1 MiB messages: `message(i)` repeats with this period. */
  get messageCount(): number {
    return this.pool.length / MiB;
  }

  /** 1 MiB messages for the link-limit run. */
  message(index: number): Buffer {
    const start = (index * MiB) % this.pool.length;
    return this.pool.subarray(start, start + MiB);
  }
}

/** CPU seconds (user + system) a process has used so far, from /proc. */
export function processCpuSeconds(pid: number): number {
  // Fields after the command name: state is [0], utime [11], stime [12], in clock ticks.
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
}

/** CPU used by this process and a peer process while `fn` runs. */
async function withCpu<T>(peerPid: number, fn: () => Promise<T>): Promise<{ result: T; cpu: CpuUse }> {
  const peer0 = processCpuSeconds(peerPid);
  const self0 = process.cpuUsage();
  const result = await fn();
  const self = process.cpuUsage(self0);
  return { result, cpu: { sender: (self.user + self.system) / 1e6, receiver: processCpuSeconds(peerPid) - peer0 } };
}

/** CPU seconds of the sending process (the agent side) and the receiving one. */
export interface CpuUse {
  sender: number;
  receiver: number;
}

/** (a) baseline: raw wss (TLS 1.3) throughput of the same bytes between two processes. */
export async function linkLimit(receiverDir: string, pool: DataPool, totalBytes: number): Promise<{ mbps: number; cpu: CpuUse }> {
  const layout = new DataLayout(receiverDir);
  const server = spawn(process.execPath, [path.join(__dirname, 'link-server.js'), layout.certFile, layout.keyFile, String(totalBytes)], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      server.stdout?.on('data', (c: Buffer) => {
        out += c.toString();
        const m = /port (\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      server.once('exit', (code) => reject(new Error(`link server exited (${code})`)));
    });
    const ws = new WebSocket(`wss://127.0.0.1:${port}`, { rejectUnauthorized: false, perMessageDeflate: false, minVersion: 'TLSv1.3' });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const { result: seconds, cpu } = await withCpu(server.pid as number, async () => {
      const start = process.hrtime.bigint();
      const done = new Promise<void>((resolve) => ws.once('message', () => resolve()));
      for (let i = 0; i < totalBytes / MiB; i++) {
        ws.send(pool.message(i));
        // Same flow control as the agent: never queue more than its window in the socket.
        while (ws.bufferedAmount > PIPELINE.windowBytes) await new Promise((r) => setImmediate(r));
      }
      await done;
      return Number(process.hrtime.bigint() - start) / 1e9;
    });
    ws.close();
    return { mbps: totalBytes / 1e6 / seconds, cpu };
  } finally {
    server.kill();
  }
}

/** A logged-in session with one declared volume and a pipeline fed by a synthetic source. */
async function streamSession(receiver: ReceiverChild, passphrase: string, volumeId: string, source: SyntheticSource): Promise<{ conn: ReceiverConnection; pipeline: Pipeline }> {
  const trust = { fingerprint: receiver.fingerprint };
  const reg = await ReceiverConnection.connect(receiver.url, trust);
  const { agentId, credential } = await reg.register(passphrase, `bench-${volumeId}`);
  await reg.close();
  const conn = await ReceiverConnection.connect(receiver.url, trust);
  await conn.login(agentId, credential);
  const progress: VolumeProgress = await conn.declareVolume(volumeId, VOLUME_BYTES, 4096);
  const pipeline = new Pipeline(source, PIPELINE);
  pipeline.attach(conn, new Map([[volumeId, progress]]));
  return { conn, pipeline };
}

/** (a) Ferry end to end: captured records until the receiver has applied them, lz4 + TLS. */
export async function endToEnd(receiver: ReceiverChild, passphrase: string, pool: DataPool, totalBytes: number): Promise<EndToEndFigures> {
  const source = new SyntheticSource('bench-a', VOLUME_BYTES, RECORD_BYTES, (seq) => pool.block(seq), totalBytes);
  const { conn, pipeline } = await streamSession(receiver, passphrase, 'bench-a', source);
  const fullGcsBefore = fullCollections(receiver);
  const { result, cpu } = await withCpu(receiver.child.pid as number, async () => {
    const start = process.hrtime.bigint();
    pipeline.start();
    await conn.waitForProgress('bench-a', source.lastSeq, 'durableSeq', 10 * 60_000);
    const durableSeconds = Number(process.hrtime.bigint() - start) / 1e9;
    await conn.waitForProgress('bench-a', source.lastSeq, 'appliedSeq', 10 * 60_000);
    return { durableSeconds, appliedSeconds: Number(process.hrtime.bigint() - start) / 1e9 };
  });
  const receiverFullGcs = fullCollections(receiver) - fullGcsBefore;
  await pipeline.stop();
  await conn.close();
  return {
    appliedMBps: totalBytes / 1e6 / result.appliedSeconds,
    durableMBps: totalBytes / 1e6 / result.durableSeconds,
    cpu,
    receiverFullGcs,
    receiverPeakRssBytes: residentBytes(receiver.child.pid as number, 'VmHWM'),
  };
}

export interface EndToEndFigures {
  appliedMBps: number;
  durableMBps: number;
  cpu: CpuUse;
  /** V8 full collections (mark-compact) in the receiver during the run (it runs with `--trace-gc`). */
  receiverFullGcs: number;
  receiverPeakRssBytes: number;
}

/** The receiver's mark-compact collections so far, from its `--trace-gc` lines. */
function fullCollections(receiver: ReceiverChild): number {
  return receiver.output().split('Mark-Compact').length - 1;
}

/** A process's resident memory now (VmRSS) or at its peak (VmHWM), in bytes; 0 once it is gone. */
export function residentBytes(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const kb = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return kb ? Number(kb[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

export interface RpoFigures {
  churnMBps: number;
  seconds: number;
  p50: number;
  p99: number;
  max: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

/** (b) RPO under a steady churn: sampled every 10 ms as now − oldest capture time not yet durable. */
export async function rpoAtChurn(receiver: ReceiverChild, passphrase: string, pool: DataPool, churnMBps: number, seconds: number): Promise<RpoFigures> {
  const total = Math.floor((churnMBps * 1e6 * seconds) / RECORD_BYTES) * RECORD_BYTES;
  const source = new SyntheticSource('bench-b', VOLUME_BYTES, RECORD_BYTES, (seq) => pool.block(seq * 7), total);
  const { conn, pipeline } = await streamSession(receiver, passphrase, 'bench-b', source);
  pipeline.start();
  source.startRate(churnMBps * 1e6);
  const samples: number[] = [];
  const sampler = setInterval(() => {
    const oldest = pipeline.oldestPendingCaptureUs();
    samples.push(oldest > 0 ? (nowUs() - oldest) / 1e6 : 0);
  }, 10);
  await conn.waitForProgress('bench-b', source.lastSeq, 'durableSeq', 10 * 60_000);
  clearInterval(sampler);
  await pipeline.stop();
  await conn.close();
  const sorted = [...samples].sort((a, b) => a - b);
  return { churnMBps, seconds, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted[sorted.length - 1] ?? 0 };
}
