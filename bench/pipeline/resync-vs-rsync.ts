import { ChildProcess, execFileSync, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { controlRequest } from '../../agent/control';
import { agentNodeFlags } from '../../agent/node-flags';
import type { AgentStatus } from '../../agent/status';
import { FERRY_BIN, ReceiverChild } from '../../receiver/child-process';
import { MiB, seededRandom } from '../common';
import { makeKey, startSshd } from '../lab/sshd';
import { processCpuSeconds, residentBytes } from './stream';

export interface ResyncFigures {
  imageMiB: number;
  changedBytes: number;
  ferryInitialSeconds: number;
  ferryInitialSentBytes: number;
  ferryIncrementalSeconds: number;
  /** rsync --inplace between two local files (no encryption, no network). */
  rsyncInitialSeconds: number | null;
  rsyncIncrementalSeconds: number | null;
  /** rsync over ssh to a local sshd: encrypted like Ferry's TLS, the peer the figures are judged against. */
  rsyncSshInitialSeconds: number | null;
  rsyncSshIncrementalSeconds: number | null;
  agentPeakRssBytes: number;
  /** CPU seconds (user + system) of the agent and of the receiver from the agent's start until the initial resync was durable. */
  agentInitialCpuSeconds: number;
  receiverInitialCpuSeconds: number;
  scanIntervalMs: number;
}

const POLL_MS = 50;
const SCAN_INTERVAL_MS = 200;
const SCAN_BLOCK = 64 * 1024;
const CHANGE_BYTES = 4096;

/** A 2 GiB-class image like a used disk: 3/4 incompressible data, 1/4 zeroes, written once. */
function makeImage(file: string, bytes: number): void {
  const random = seededRandom(42);
  const fd = fs.openSync(file, 'w');
  const chunk = Buffer.alloc(MiB);
  try {
    for (let off = 0; off < bytes; off += MiB) {
      if ((off / MiB) % 4 === 3) chunk.fill(0);
      else for (let i = 0; i < MiB; i += 4) chunk.writeUInt32LE((random() * 2 ** 32) >>> 0, i);
      fs.writeSync(fd, chunk, 0, MiB, off);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Rewrites 1% of the image in random 4 KiB writes; returns how many 64 KiB scan blocks it touched. */
function changeOnePercent(file: string, bytes: number, seed: number): { blocks: number; bytes: number } {
  const random = seededRandom(seed);
  const fd = fs.openSync(file, 'r+');
  const touched = new Set<number>();
  const data = Buffer.alloc(CHANGE_BYTES);
  let written = 0;
  try {
    while (written < bytes / 100) {
      const offset = Math.floor(random() * (bytes / CHANGE_BYTES)) * CHANGE_BYTES;
      for (let i = 0; i < CHANGE_BYTES; i += 4) data.writeUInt32LE((random() * 2 ** 32) >>> 0, i);
      fs.writeSync(fd, data, 0, CHANGE_BYTES, offset);
      touched.add(Math.floor(offset / SCAN_BLOCK));
      written += CHANGE_BYTES;
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return { blocks: touched.size, bytes: written };
}

async function waitStatus(socket: string, what: string, ok: (s: AgentStatus) => boolean, timeoutMs: number, onPoll: () => void): Promise<AgentStatus> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    onPoll();
    try {
      const reply = await controlRequest(socket, { cmd: 'status' }, 5000);
      if (reply.ok && reply.status && ok(reply.status)) return reply.status;
    } catch {
      // the agent is starting: its control socket is not there yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

interface SshTarget {
  /** rsync's -e command. */
  shell: string;
  stop: () => Promise<void>;
}

/** A private sshd on 127.0.0.1 that root may log in to with a fresh key (the bench runs as root). */
async function sshTarget(dir: string): Promise<SshTarget> {
  const sshd = await startSshd(dir);
  const key = makeKey(path.join(dir, 'client_key'));
  sshd.authorize('root', key.publicLine);
  const knownHosts = path.join(dir, 'known_hosts');
  fs.writeFileSync(knownHosts, `${sshd.knownHostsLine('127.0.0.1')}\n`);
  return { shell: `ssh -p ${sshd.port} -i ${key.privateFile} -o BatchMode=yes -o UserKnownHostsFile=${knownHosts} -o StrictHostKeyChecking=yes`, stop: () => sshd.stop() };
}

/**
 * rsync's delta transfer of `src` onto `dst` (on this machine, or over `ssh` to its sshd).
 * --ignore-times: its quick check (size and mtime) would otherwise skip a file rewritten within
 * the same second without reading it.
 */
function timeRsync(src: string, dst: string, ssh?: SshTarget): number {
  const start = process.hrtime.bigint();
  const remote = ssh ? ['-e', ssh.shell] : [];
  const r = spawnSync('rsync', ['--inplace', '--no-whole-file', '--ignore-times', ...remote, src, ssh ? `root@127.0.0.1:${dst}` : dst], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new Error(`rsync failed: ${r.error?.message ?? r.stderr}`);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (!sameFiles(src, dst)) throw new Error('rsync left the destination different from the source');
  return seconds;
}

function sameFiles(a: string, b: string): boolean {
  return spawnSync('cmp', ['-s', a, b]).status === 0;
}

export function rsyncAvailable(): boolean {
  try {
    execFileSync('rsync', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * (c)+(d): the real agent process with scan capture protects an image: initial resync, then
 * an incremental cycle after 1% random 4 KiB changes; rsync of the same image is the peer.
 */
export async function resyncVersusRsync(
  dir: string,
  receiver: ReceiverChild,
  passphraseFile: string,
  imageMiB: number,
  progress: (s: string) => void,
  opts: { peers: boolean },
): Promise<ResyncFigures> {
  const bytes = imageMiB * MiB;
  const image = path.join(dir, 'source.img');
  progress(`writing a ${imageMiB} MiB image`);
  makeImage(image, bytes);
  const config = path.join(dir, 'agent.json');
  fs.writeFileSync(
    config,
    JSON.stringify({
      receiver: { url: receiver.url, fingerprint: receiver.fingerprint },
      stateDir: './agent-state',
      capture: 'scan',
      volumes: [{ id: 'resync', path: image }],
      scan: { intervalMs: SCAN_INTERVAL_MS },
    }),
  );
  const reg = spawnSync(process.execPath, [FERRY_BIN, 'agent', 'register', '--config', config, '--passphrase-file', passphraseFile], { encoding: 'utf8' });
  if (reg.status !== 0) throw new Error(`agent register failed: ${reg.stderr}`);
  const socket = path.join(dir, 'agent-state', 'agent.sock');
  progress('ferry: initial resync');
  const start = process.hrtime.bigint();
  const receiverCpu0 = processCpuSeconds(receiver.child.pid as number);
  const agent: ChildProcess = spawn(process.execPath, [...agentNodeFlags(), FERRY_BIN, 'agent', 'run', '--config', config], { stdio: 'ignore', env: { ...process.env, FERRY_LOG_LEVEL: 'warn' } });
  let peakRss = 0;
  let agentCpu = 0;
  const sampleRss = (): void => {
    peakRss = Math.max(peakRss, residentBytes(agent.pid ?? 0, 'VmRSS'));
    try {
      agentCpu = processCpuSeconds(agent.pid ?? 0);
    } catch {
      // not started yet, or gone
    }
  };
  try {
    const initial = await waitStatus(socket, 'the initial resync', (s) => s.volumes[0]?.resync?.finished === true && s.volumes[0].backlogBytes === 0, 30 * 60_000, sampleRss);
    const ferryInitialSeconds = Number(process.hrtime.bigint() - start) / 1e9;
    sampleRss();
    const agentInitialCpuSeconds = agentCpu;
    const receiverInitialCpuSeconds = processCpuSeconds(receiver.child.pid as number) - receiverCpu0;
    const base = initial.volumes[0].durableSeq;
    progress('ferry: incremental cycle after 1% random 4 KiB changes');
    const change = changeOnePercent(image, bytes, 7);
    const incStart = process.hrtime.bigint();
    await waitStatus(socket, 'the incremental cycle', (s) => s.volumes[0].durableSeq >= base + change.blocks && s.volumes[0].backlogBytes === 0, 10 * 60_000, sampleRss);
    const ferryIncrementalSeconds = Number(process.hrtime.bigint() - incStart) / 1e9;

    let rsyncInitialSeconds: number | null = null;
    let rsyncIncrementalSeconds: number | null = null;
    let rsyncSshInitialSeconds: number | null = null;
    let rsyncSshIncrementalSeconds: number | null = null;
    if (opts.peers && rsyncAvailable()) {
      // rsync runs on a second copy of the image, from the state before the changes.
      const rsSource = path.join(dir, 'rsync-source.img');
      makeImage(rsSource, bytes);
      const rsDest = path.join(dir, 'rsync-dest.img');
      const sshDest = path.join(dir, 'rsync-ssh-dest.img');
      const ssh = await sshTarget(path.join(dir, 'sshd'));
      try {
        progress('rsync: initial copy (local, then over ssh)');
        rsyncInitialSeconds = timeRsync(rsSource, rsDest);
        rsyncSshInitialSeconds = timeRsync(rsSource, sshDest, ssh);
        progress('rsync: incremental after the same 1% changes (local, then over ssh)');
        changeOnePercent(rsSource, bytes, 7);
        rsyncIncrementalSeconds = timeRsync(rsSource, rsDest);
        rsyncSshIncrementalSeconds = timeRsync(rsSource, sshDest, ssh);
      } finally {
        await ssh.stop();
      }
    }
    return {
      imageMiB,
      changedBytes: change.bytes,
      ferryInitialSeconds,
      ferryInitialSentBytes: initial.volumes[0].resync?.sentBytes ?? 0,
      ferryIncrementalSeconds,
      rsyncInitialSeconds,
      rsyncIncrementalSeconds,
      rsyncSshInitialSeconds,
      rsyncSshIncrementalSeconds,
      agentPeakRssBytes: peakRss,
      agentInitialCpuSeconds,
      receiverInitialCpuSeconds,
      scanIntervalMs: SCAN_INTERVAL_MS,
    };
  } finally {
    if (agent.exitCode === null && agent.signalCode === null) {
      const exited = new Promise((r) => agent.once('exit', r));
      agent.kill('SIGTERM');
      await exited;
    }
  }
}
