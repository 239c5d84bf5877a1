import * as fs from 'node:fs';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import * as selfsigned from 'selfsigned';
import { WebSocket, WebSocketServer } from 'ws';
import { blockHashes } from '../../common/block-hash';
import { decodeFrame, DecodedFrame, encodeFrame, ferry, OutgoingFrame } from '../../proto/frames';
import { validateChangeSet } from '../../proto/validate';
import { certificateFingerprint } from '../../receiver/identity';

const AGENT_ID = 'agent-0123456789abcdef';

export interface ReceivedWrite {
  volumeId: string;
  seq: number;
  offset: number;
  length: number;
}

/**
 * A receiver that speaks just enough of the protocol to test the agent's side of a frame
 * exchange: login (any credential), volumes kept in memory, change sets applied and acked at
 * once, block hashes, tags. The test reads what arrived and sends frames of its own.
 */
export class FakeReceiver {
  readonly replicas = new Map<string, Buffer>();
  readonly durable = new Map<string, number>();
  readonly writes: ReceivedWrite[] = [];
  readonly repairDone: ferry.IRepairDone[] = [];
  /** Per RepairDone, the highest seq this receiver had acknowledged as durable when it came. */
  readonly ackedWhenDone: number[] = [];
  /** Every Hello, heartbeat, tag (with when it arrived), GroupHeld and AgentEvent the agent sent. */
  readonly hellos: ferry.IHello[] = [];
  readonly heartbeats: ferry.IHeartbeat[] = [];
  readonly tags: Array<{ tag: ferry.ITag; atMs: number }> = [];
  readonly groupHeld: ferry.IGroupHeld[] = [];
  readonly events: ferry.IAgentEvent[] = [];
  /** Acks are held this long (a receiver slow to make data durable). */
  ackDelayMs = 0;
  private readonly acked = new Map<string, number>();
  /** Frames sent to the agent right after every login (before it declares its volumes). */
  onLogin: OutgoingFrame[] = [];
  logins = 0;
  private session: WebSocket | undefined;
  private readonly sockets = new Set<WebSocket>();
  private nextPointId = 1;

  private constructor(
    private readonly server: https.Server,
    readonly fingerprint: string,
    private readonly sizes: Record<string, number>,
  ) {
    const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 80 * 1024 * 1024 });
    wss.on('connection', (ws) => {
      this.sockets.add(ws);
      ws.on('close', () => this.sockets.delete(ws));
      ws.on('message', (data: Buffer) => this.onFrame(ws, decodeFrame(data)));
      ws.on('error', () => undefined);
    });
  }

  static async start(sizes: Record<string, number>): Promise<FakeReceiver> {
    const pems = await selfsigned.generate([{ name: 'commonName', value: 'fake-receiver' }], { keyType: 'ec', curve: 'P-256', algorithm: 'sha256' });
    const server = https.createServer({ cert: pems.cert, key: pems.private, minVersion: 'TLSv1.3' });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return new FakeReceiver(server, certificateFingerprint(pems.cert), sizes);
  }

  get url(): string {
    return `wss://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** A credential the agent can log in with (this receiver accepts any). */
  writeCredential(stateDir: string): void {
    fs.mkdirSync(stateDir, { recursive: true });
    const doc = { agentId: AGENT_ID, credential: Buffer.alloc(32, 7).toString('base64'), receiverUrl: this.url };
    fs.writeFileSync(path.join(stateDir, 'credential.json'), JSON.stringify(doc));
  }

  get connected(): boolean {
    return this.session?.readyState === WebSocket.OPEN;
  }

  send(frame: OutgoingFrame): void {
    if (!this.session) throw new Error('no agent is connected');
    this.session.send(encodeFrame(frame));
  }

  /** Ends the session: the agent reconnects and logs in again. */
  dropSession(): void {
    this.session?.terminate();
    this.session = undefined;
  }

  private onFrame(ws: WebSocket, f: DecodedFrame): void {
    const reply = (frame: OutgoingFrame): void => ws.send(encodeFrame(frame));
    if (f.hello) this.hellos.push(f.hello);
    if (f.heartbeat) this.heartbeats.push(f.heartbeat);
    if (f.groupHeld) this.groupHeld.push(f.groupHeld);
    if (f.agentEvent) this.events.push(f.agentEvent);
    if (f.hello) reply({ challenge: { nonce: Buffer.alloc(32, 1), salt: Buffer.alloc(0) } });
    else if (f.login) {
      this.session = ws;
      this.logins++;
      reply({ welcome: { agentId: AGENT_ID } });
      for (const frame of this.onLogin) reply(frame);
    } else if (f.volumeInfo) {
      const id = f.volumeInfo.volumeId ?? '';
      if (!this.replicas.has(id)) this.replicas.set(id, Buffer.alloc(this.sizes[id] ?? 0));
      const d = this.durable.get(id) ?? 0;
      reply({ volumeState: { volumeId: id, durableSeq: d, appliedSeq: d } });
    } else if (f.changeSet) {
      const replica = this.replicas.get(f.changeSet.volumeId ?? '') as Buffer;
      const cs = validateChangeSet(f.changeSet, replica.length);
      const have = this.durable.get(cs.volumeId) ?? 0;
      for (const e of cs.extents) {
        if (e.seq <= have) continue; // sent again after a reconnect
        if (e.kind === 'write') {
          cs.data.copy(replica, e.offset, e.dataOffset, e.dataOffset + e.length);
          this.writes.push({ volumeId: cs.volumeId, seq: e.seq, offset: e.offset, length: e.length });
        } else if (e.kind === 'discard') replica.fill(0, e.offset, e.offset + e.length);
      }
      const d = Math.max(have, cs.lastSeq);
      this.durable.set(cs.volumeId, d);
      const ack = (): void => {
        if (ws.readyState !== WebSocket.OPEN) return;
        this.acked.set(cs.volumeId, Math.max(this.acked.get(cs.volumeId) ?? 0, d));
        reply({ ack: { volumes: [{ volumeId: cs.volumeId, durableSeq: d, appliedSeq: d }] } });
      };
      if (this.ackDelayMs > 0) setTimeout(ack, this.ackDelayMs);
      else ack();
    } else if (f.hashRequest) {
      const r = f.hashRequest;
      const replica = this.replicas.get(r.volumeId ?? '') as Buffer;
      const offset = r.offset ?? 0;
      const end = Math.min(replica.length, offset + (r.count ?? 0) * (r.blockSize ?? 0));
      reply({ blockHashes: { volumeId: r.volumeId, offset, blockSize: r.blockSize, hashes: blockHashes(replica.subarray(offset, end), r.blockSize ?? 0), requestId: r.requestId } });
    } else if (f.tag) {
      this.tags.push({ tag: f.tag, atMs: Date.now() });
      reply({ tagAck: { groupId: f.tag.groupId, pointIds: (f.tag.cuts ?? []).map(() => this.nextPointId++) } });
    } else if (f.repairDone) {
      this.repairDone.push(f.repairDone);
      this.ackedWhenDone.push(this.acked.get(f.repairDone.volumeId ?? '') ?? 0);
    }
  }

  async close(): Promise<void> {
    for (const ws of this.sockets) ws.terminate();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
