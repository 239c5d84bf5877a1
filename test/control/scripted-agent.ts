import { buildChangeSet } from '../../agent/transport/change-set';
import { computeProof, passphraseKey } from '../../proto/auth';
import { DecodedFrame, ferry } from '../../proto/frames';
import type { VolumeReportState } from '../../proto/validate-control';
import { RawWss, RawTarget } from '../helpers/raw-client';

/** How a scripted agent takes part in rounds: answer all, never answer the prepare, or hold and then send no tag. */
export type RoundBehaviour = 'answer' | 'stall' | 'no-tag';

interface Volume {
  id: string;
  sizeBytes: number;
  lastSeq: number;
}

/**
 * An agent scripted over the real protocol (a hand-made wss client, see raw-client.ts):
 * registers, declares volumes, sends change sets and heartbeats with volume reports, and
 * answers group rounds (held -> on commit, a tag at its current cut with group_round) or
 * stalls. Every frame it received stays in `ws.frames`.
 */
export class ScriptedAgent {
  readonly volumes = new Map<string, Volume>();
  rounds: RoundBehaviour = 'answer';
  /** What the next heartbeats say. */
  pendingSinceUs = 0;
  reportState: VolumeReportState = 'protected';
  private readonly handled = new Set<DecodedFrame>();
  private heartbeat: NodeJS.Timeout | undefined;

  private constructor(
    readonly ws: RawWss,
    readonly agentId: string,
    readonly credential: Buffer,
    readonly groupTag: () => string,
  ) {}

  static async register(target: RawTarget, passphrase: string, name: string, groupTag: () => string): Promise<ScriptedAgent> {
    const ws = await RawWss.open(target);
    ws.sendFrame({ hello: { intent: ferry.Hello.Intent.REGISTER, agentName: name, software: 'scripted-agent/1', os: 'linux test' } });
    const challenge = await ws.waitFrame((f) => f.challenge);
    const key = passphraseKey(passphrase, Buffer.from(challenge.salt ?? []));
    ws.sendFrame({ register: { proof: computeProof(key, Buffer.from(challenge.nonce ?? []), 'register', name) } });
    const welcome = await ws.waitFrame((f) => f.welcome ?? (f.error ? new Error(f.error.message ?? 'refused') : undefined));
    if (welcome instanceof Error) throw welcome;
    const agent = new ScriptedAgent(ws, welcome.agentId ?? '', Buffer.from(welcome.credential ?? []), groupTag);
    agent.start();
    return agent;
  }

  /** A new session of the same agent (the old one is left as it is). */
  async relogin(target: RawTarget): Promise<ScriptedAgent> {
    const ws = await RawWss.open(target);
    ws.sendFrame({ hello: { intent: ferry.Hello.Intent.LOGIN, agentId: this.agentId, software: 'scripted-agent/1', os: 'linux test' } });
    const challenge = await ws.waitFrame((f) => f.challenge);
    ws.sendFrame({ login: { proof: computeProof(this.credential, Buffer.from(challenge.nonce ?? []), 'login', this.agentId) } });
    await ws.waitFrame((f) => f.welcome);
    const agent = new ScriptedAgent(ws, this.agentId, this.credential, this.groupTag);
    agent.start();
    return agent;
  }

  private start(): void {
    this.heartbeat = setInterval(() => this.sendHeartbeat(), 500);
    void this.answerRounds();
  }

  sendHeartbeat(): void {
    this.ws.sendFrame({
      heartbeat: {
        timeUs: Date.now() * 1000,
        pendingSinceUs: this.pendingSinceUs,
        volumes: [...this.volumes.values()].map((v) => ({ volumeId: v.id, state: this.reportState, mode: 'exact', resyncPercent: this.reportState === 'resyncing' ? 50 : 0 })),
      },
    });
  }

  async declare(volumeId: string, sizeBytes = 1024 * 1024): Promise<void> {
    this.ws.sendFrame({ volumeInfo: { volumeId, sizeBytes, blockSize: 4096 } });
    const state = await this.ws.waitFrame((f) => (f.volumeState?.volumeId === volumeId ? f.volumeState : undefined));
    this.volumes.set(volumeId, { id: volumeId, sizeBytes, lastSeq: state.durableSeq ?? 0 });
  }

  /** Writes one 4 KiB block and waits for it to be durable. */
  async write(volumeId: string, fill: number): Promise<number> {
    const v = this.volumes.get(volumeId);
    if (!v) throw new Error(`${volumeId} not declared`);
    const seq = v.lastSeq + 1;
    const now = Date.now() * 1000;
    this.ws.sendFrame({ changeSet: buildChangeSet(volumeId, seq, [{ kind: 'write', offset: ((seq - 1) * 4096) % v.sizeBytes, length: 4096, captureTimeUs: now, data: Buffer.alloc(4096, fill) }], 'exact') });
    await this.ws.waitFrame((f) => f.ack?.volumes?.find((a) => a.volumeId === volumeId && (a.durableSeq ?? 0) >= seq));
    v.lastSeq = seq;
    return seq;
  }

  /** The tag a real agent cuts on a commit: every volume at its current seq. */
  tagFrame(roundId: number): ferry.ITag {
    return {
      kind: ferry.Tag.Kind.CRASH,
      groupId: this.groupTag(),
      timeUs: Date.now() * 1000,
      groupRound: roundId,
      cuts: [...this.volumes.values()].map((v) => ({ volumeId: v.id, seq: v.lastSeq, accuracy: ferry.Accuracy.EXACT })),
    };
  }

  private async answerRounds(): Promise<void> {
    try {
      for (;;) {
        const f = await this.ws.waitFrame((x) => ((x.groupPrepare || x.groupCommit) && !this.handled.has(x) ? x : undefined));
        this.handled.add(f);
        if (f.groupPrepare && this.rounds !== 'stall') this.ws.sendFrame({ groupHeld: { roundId: f.groupPrepare.roundId, ok: true } });
        if (f.groupCommit && this.rounds === 'answer') this.ws.sendFrame({ tag: this.tagFrame(f.groupCommit.roundId ?? 0) });
      }
    } catch {
      // closed
    }
  }

  policies(): ferry.IPolicy[] {
    return this.ws.frames.filter((f) => f.policy).map((f) => f.policy as ferry.IPolicy);
  }

  /** Waits for a Policy frame `pick` accepts. */
  waitPolicy(pick: (p: ferry.IPolicy) => boolean): Promise<ferry.IPolicy> {
    return this.ws.waitFrame((f) => (f.policy && pick(f.policy) ? f.policy : undefined));
  }

  close(): void {
    clearInterval(this.heartbeat);
    this.ws.destroy();
  }
}
