import * as fs from 'fs';
import * as path from 'path';
import { ExitCode, FerryError } from '../common/errors';
import { writeFileAtomic } from '../common/fsutil';
import { isSafeId } from '../proto/ids';
import { Limits } from '../proto/limits';

/** The identity the receiver issued at registration. */
export interface AgentCredential {
  agentId: string;
  credential: Buffer;
  receiverUrl: string;
}

/** Files the agent keeps in its state directory. */
export class AgentState {
  constructor(readonly dir: string) {}

  get credentialFile(): string {
    return path.join(this.dir, 'credential.json');
  }

  get statusFile(): string {
    return path.join(this.dir, 'status.json');
  }

  /** The last group policy the receiver sent (kept across restarts). */
  get policyFile(): string {
    return path.join(this.dir, 'policy.json');
  }

  get socketPath(): string {
    return path.join(this.dir, 'agent.sock');
  }

  volumeDir(volumeId: string): string {
    return path.join(this.dir, 'volumes', volumeId);
  }

  ensure(): void {
    try {
      fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new FerryError(`cannot create state directory ${this.dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, ExitCode.failure);
    }
  }

  saveCredential(cred: AgentCredential): void {
    this.ensure();
    const doc = { agentId: cred.agentId, credential: cred.credential.toString('base64'), receiverUrl: cred.receiverUrl };
    writeFileAtomic(this.credentialFile, `${JSON.stringify(doc, null, 2)}\n`, 0o600);
  }

  /** The stored credential; undefined when the agent never registered; throws when the file is damaged. */
  loadCredential(): AgentCredential | undefined {
    let text: string;
    try {
      text = fs.readFileSync(this.credentialFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new FerryError(`cannot read ${this.credentialFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, ExitCode.failure);
    }
    const damaged = (why: string): never => {
      throw new FerryError(`credential file ${this.credentialFile} is damaged (${why}): remove it and run \`ferry agent register\` again`, ExitCode.auth);
    };
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      return damaged('not JSON');
    }
    const { agentId, credential, receiverUrl } = (doc ?? {}) as Record<string, unknown>;
    if (typeof agentId !== 'string' || !isSafeId(agentId)) return damaged('bad agent id');
    if (typeof credential !== 'string') return damaged('no credential');
    const bytes = Buffer.from(credential, 'base64');
    if (bytes.length !== Limits.credentialBytes) return damaged('credential has the wrong length');
    return { agentId, credential: bytes, receiverUrl: typeof receiverUrl === 'string' ? receiverUrl : '' };
  }
}
