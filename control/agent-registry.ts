import type { OutgoingFrame } from '../proto/frames';
import type { AgentLink } from '../receiver/agent-link';

/**
 * The live sessions by agent id: how the control plane reaches an agent. An agent may have a
 * newer session while an older one has not closed yet: the newest is the one spoken to, and if
 * it closes first the older one is again.
 */
export class AgentRegistry {
  private readonly links = new Map<string, AgentLink[]>();

  attach(link: AgentLink): void {
    const list = this.links.get(link.agentId) ?? [];
    list.push(link);
    this.links.set(link.agentId, list);
  }

  /** Removes a session's link; true when the agent has no session left. */
  detach(link: AgentLink): boolean {
    const list = (this.links.get(link.agentId) ?? []).filter((l) => l !== link);
    if (list.length > 0) {
      this.links.set(link.agentId, list);
      return false;
    }
    const had = this.links.delete(link.agentId);
    return had;
  }

  isConnected(agentId: string): boolean {
    return this.links.has(agentId);
  }

  send(agentId: string, frame: OutgoingFrame): boolean {
    const list = this.links.get(agentId);
    if (!list) return false;
    list[list.length - 1].send(frame);
    return true;
  }
}
