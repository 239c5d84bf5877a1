import { EventEmitter } from 'events';
import * as fs from 'fs';
import type { TLSSocket } from 'tls';
import WebSocket from 'ws';
import { computeProof, passphraseKey } from '../../proto/auth';
import { errorCodeName } from '../../proto/errors';
import { decodeFrame, DecodedFrame, encodeFrame, ferry, OutgoingFrame } from '../../proto/frames';
import { Limits } from '../../proto/limits';
import { agentSoftware, osDescription } from '../identity';
import type { Socket } from 'net';
import { WS_HEADER_ROOM, writeWsHeader } from './ws-frame';

/** How the agent decides that it talks to the right receiver. */
export interface ReceiverTrust {
  /** SHA-256 fingerprint of the receiver certificate (`AB:CD:...`, case and colons optional). */
  fingerprint?: string;
  /** PEM CA bundle that signed the receiver certificate. */
  caFile?: string;
}

export type ConnectionErrorKind = 'unreachable' | 'untrusted' | 'refused' | 'closed' | 'timeout';

/** A failure with an operator-facing message; `code` is the receiver's error code when it sent one. */
export class ConnectionError extends Error {
  constructor(
    readonly kind: ConnectionErrorKind,
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'ConnectionError';
  }
}

export interface VolumeProgress {
  durableSeq: number;
  appliedSeq: number;
}

export function normalizeFingerprint(fp: string): string {
  return fp.replace(/[^0-9a-f]/gi, '').toUpperCase();
}

/**
 * The agent end of one wss session with a receiver: TLS 1.3 with a pinned fingerprint or a
 * CA, the HMAC handshake, and helpers to send frames and wait for acknowledgements.
 */
export class ReceiverConnection extends EventEmitter {
  private failure: ConnectionError | undefined;
  private readonly progress = new Map<string, VolumeProgress>();
  throttleDelayMs = 0;

  private constructor(private readonly ws: WebSocket) {
    super();
    this.setMaxListeners(0);
    ws.on('message', (data: Buffer) => this.onMessage(data));
    ws.on('close', (code, reason) => {
      const why = reason.toString() || `code ${code}`;
      this.fail(new ConnectionError('closed', `receiver closed the connection (${why})`));
    });
    ws.on('error', (err) => this.fail(new ConnectionError('closed', `connection error: ${err.message}`)));
  }

  /** `localAddress` picks the address to dial from (tests play several peers from 127.0.0.0/8). */
  static connect(url: string, trust: ReceiverTrust, timeoutMs = 10_000, localAddress?: string): Promise<ReceiverConnection> {
    const pinned = trust.fingerprint ? normalizeFingerprint(trust.fingerprint) : undefined;
    if (!pinned && !trust.caFile) throw new ConnectionError('untrusted', 'no way to verify the receiver: give its certificate fingerprint or a CA file');
    const ws = new WebSocket(url, {
      perMessageDeflate: false,
      maxPayload: Limits.maxFrameBytes,
      minVersion: 'TLSv1.3',
      handshakeTimeout: timeoutMs,
      // A pinned self-signed certificate is checked against the fingerprint below instead.
      rejectUnauthorized: !pinned,
      ca: trust.caFile ? fs.readFileSync(trust.caFile) : undefined,
      localAddress,
      // A client's frame mask shields plain-HTTP intermediaries from crafted bytes; inside TLS no
      // intermediary reads them. A zero mask lets ws send each payload as is: no XOR pass over
      // every byte, no copy (the receiver accepts any mask).
      generateMask: (mask: Buffer) => void mask.fill(0),
    });
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (err?: Error): void => {
        if (settled) return;
        settled = true;
        if (err) {
          ws.terminate();
          reject(err);
        } else resolve(new ReceiverConnection(ws));
      };
      ws.once('upgrade', (res) => {
        if (!pinned) return;
        const cert = (res.socket as TLSSocket).getPeerCertificate();
        const actual = cert?.fingerprint256 ? normalizeFingerprint(cert.fingerprint256) : '';
        if (actual !== pinned) {
          settle(new ConnectionError('untrusted', `receiver certificate fingerprint ${cert?.fingerprint256 ?? '(none)'} does not match the pinned one: refusing to talk to it`));
        }
      });
      ws.once('open', () => settle());
      ws.once('error', (err: NodeJS.ErrnoException) => {
        const code = err.code ?? '';
        if (['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ETIMEDOUT', 'ENETUNREACH', 'EAI_AGAIN'].includes(code)) {
          settle(new ConnectionError('unreachable', `cannot reach the receiver at ${url}: ${code}`));
        } else if (/certificate|self.signed|CERT_|unable to verify/i.test(`${code} ${err.message}`)) {
          settle(new ConnectionError('untrusted', `receiver certificate is not trusted: ${err.message}`));
        } else {
          settle(new ConnectionError('unreachable', `cannot connect to the receiver at ${url}: ${err.message}`));
        }
      });
    });
  }

  private onMessage(data: Buffer): void {
    let frame: DecodedFrame;
    try {
      frame = decodeFrame(data);
    } catch (err) {
      this.fail(new ConnectionError('refused', `receiver sent an invalid frame: ${(err as Error).message}`));
      return;
    }
    if (frame.error) {
      const code = errorCodeName(frame.error.code ?? 0);
      this.fail(new ConnectionError('refused', `receiver refused: ${code}: ${frame.error.message ?? ''}`, code));
      return;
    }
    if (frame.ack) {
      for (const v of frame.ack.volumes ?? []) this.noteProgress(v.volumeId ?? '', v.durableSeq ?? 0, v.appliedSeq ?? 0);
    }
    if (frame.volumeState) {
      const s = frame.volumeState;
      this.noteProgress(s.volumeId ?? '', s.durableSeq ?? 0, s.appliedSeq ?? 0);
    }
    if (frame.throttle) {
      this.throttleDelayMs = frame.throttle.delayMs ?? 0;
      this.emit('throttle', this.throttleDelayMs);
    }
    this.emit('frame', frame);
  }

  private noteProgress(volumeId: string, durableSeq: number, appliedSeq: number): void {
    const p = this.progress.get(volumeId) ?? { durableSeq: 0, appliedSeq: 0 };
    p.durableSeq = Math.max(p.durableSeq, durableSeq);
    p.appliedSeq = Math.max(p.appliedSeq, appliedSeq);
    this.progress.set(volumeId, p);
    this.emit('progress', volumeId, p);
  }

  private fail(err: ConnectionError): void {
    if (this.failure) return;
    this.failure = err;
    this.emit('failed', err);
  }

  get error(): ConnectionError | undefined {
    return this.failure;
  }

  get isOpen(): boolean {
    return !this.failure && this.ws.readyState === WebSocket.OPEN;
  }

  send(frame: OutgoingFrame): void {
    this.sendRaw(encodeFrame(frame));
  }

  /** `written`: called once the socket is done with `bytes` (written, or failed): they may be reused then. */
  sendRaw(bytes: Buffer | string, written?: (err?: Error | null) => void): void {
    if (this.failure) throw this.failure;
    this.ws.send(bytes, { binary: typeof bytes !== 'string' }, written);
  }

  /**
   * Sends a binary message whose WS_HEADER_ROOM bytes before `bytes` (in the same memory) are
   * the caller's to overwrite: its WebSocket header is written there and both go to the socket
   * as one write (see ws-frame.ts). `written` as for sendRaw.
   */
  sendWithHeadroom(bytes: Buffer, written?: (err?: Error | null) => void): void {
    if (this.failure) throw this.failure;
    // ws writes its own frames to this socket at once (no compression, nothing queued), so a
    // message written here keeps its place among them. Without the socket (another ws), ws sends it.
    const socket = (this.ws as unknown as { _socket?: Socket })._socket;
    if (!socket || this.ws.readyState !== WebSocket.OPEN || bytes.byteOffset < WS_HEADER_ROOM) return this.sendRaw(bytes, written);
    const memory = Buffer.from(bytes.buffer, bytes.byteOffset - WS_HEADER_ROOM, bytes.length + WS_HEADER_ROOM);
    const start = writeWsHeader(memory, WS_HEADER_ROOM, bytes.length);
    socket.write(memory.subarray(start), written);
  }

  /** Waits for the first frame `pick` accepts; rejects when the session fails first. */
  waitFor<T>(pick: (frame: DecodedFrame) => T | undefined, timeoutMs = 30_000, what = 'a reply'): Promise<T> {
    return new Promise((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      const cleanup = (): void => {
        clearTimeout(timer);
        this.off('frame', onFrame);
        this.off('failed', onFail);
      };
      const onFrame = (frame: DecodedFrame): void => {
        const value = pick(frame);
        if (value === undefined) return;
        cleanup();
        resolve(value);
      };
      const onFail = (err: ConnectionError): void => {
        cleanup();
        reject(err);
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new ConnectionError('timeout', `timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      this.on('frame', onFrame);
      this.on('failed', onFail);
    });
  }

  /** Waits until the receiver reports a volume durable (or applied) through `seq`. */
  waitForProgress(volumeId: string, seq: number, which: keyof VolumeProgress = 'durableSeq', timeoutMs = 60_000): Promise<VolumeProgress> {
    return new Promise((resolve, reject) => {
      const current = this.progress.get(volumeId);
      if (current && current[which] >= seq) return resolve({ ...current });
      if (this.failure) return reject(this.failure);
      const cleanup = (): void => {
        clearTimeout(timer);
        this.off('progress', onProgress);
        this.off('failed', onFail);
      };
      const onProgress = (id: string, p: VolumeProgress): void => {
        if (id !== volumeId || p[which] < seq) return;
        cleanup();
        resolve({ ...p });
      };
      const onFail = (err: ConnectionError): void => {
        cleanup();
        reject(err);
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new ConnectionError('timeout', `timed out after ${timeoutMs} ms waiting for ${volumeId} ${which} >= ${seq}`));
      }, timeoutMs);
      this.on('progress', onProgress);
      this.on('failed', onFail);
    });
  }

  volumeProgress(volumeId: string): VolumeProgress | undefined {
    const p = this.progress.get(volumeId);
    return p && { ...p };
  }

  /** First contact: proves knowledge of the passphrase, returns the issued identity. */
  async register(passphrase: string, agentName: string): Promise<{ agentId: string; credential: Buffer }> {
    this.send({ hello: { intent: ferry.Hello.Intent.REGISTER, agentName, software: agentSoftware(), os: osDescription() } });
    const challenge = await this.waitFor((f) => f.challenge ?? undefined, 30_000, 'the challenge');
    const key = passphraseKey(passphrase, Buffer.from(challenge.salt ?? new Uint8Array()));
    const proof = computeProof(key, Buffer.from(challenge.nonce ?? new Uint8Array()), 'register', agentName);
    this.send({ register: { proof } });
    const welcome = await this.waitFor((f) => f.welcome ?? undefined, 30_000, 'registration');
    return { agentId: welcome.agentId ?? '', credential: Buffer.from(welcome.credential ?? new Uint8Array()) };
  }

  /** `failback`: a failback session (`ferry agent failback`) instead of replication. */
  async login(agentId: string, credential: Buffer, failback = false): Promise<void> {
    this.send({ hello: { intent: ferry.Hello.Intent.LOGIN, agentId, software: agentSoftware(), os: osDescription(), failback } });
    const challenge = await this.waitFor((f) => f.challenge ?? undefined, 30_000, 'the challenge');
    this.send({ login: { proof: computeProof(credential, Buffer.from(challenge.nonce ?? new Uint8Array()), 'login', agentId) } });
    await this.waitFor((f) => f.welcome ?? undefined, 30_000, 'login');
  }

  /** Declares a volume; resolves with where the receiver stands for it. */
  async declareVolume(volumeId: string, sizeBytes: number, blockSize: number): Promise<VolumeProgress> {
    this.send({ volumeInfo: { volumeId, sizeBytes, blockSize } });
    const state = await this.waitFor((f) => (f.volumeState?.volumeId === volumeId ? f.volumeState : undefined), 30_000, `state of ${volumeId}`);
    return { durableSeq: state.durableSeq ?? 0, appliedSeq: state.appliedSeq ?? 0 };
  }

  async tag(tag: ferry.ITag): Promise<number[]> {
    this.send({ tag });
    const ack = await this.waitFor((f) => (f.tagAck && f.tagAck.groupId === tag.groupId ? f.tagAck : undefined), 30_000, 'the tag ack');
    return (ack.pointIds ?? []).map(Number);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.ws.readyState === WebSocket.CLOSED) return resolve();
      this.ws.once('close', () => resolve());
      this.ws.close(1000, 'done');
    });
  }
}
