import type { OutgoingFrame } from '../proto/frames';
import type { AgentLink } from '../receiver/agent-link';

/**
 * The live sessions by agent id: how the control plane reaches an agent. A newer session of an
 * agent replaces an older one that has not closed yet; the older one's close then changes
 * nothing.
 */
export class AgentRegistry {
  private readonly links = new Map<string, AgentLink>();

  attach(link: AgentLink): void {
    this.links.set(link.agentId, link);
  }

  /** Removes the link if it is still the agent's current one; true when it was. */
  detach(link: AgentLink): boolean {
    if (this.links.get(link.agentId) !== link) return false;
    this.links.delete(link.agentId);
    return true;
  }

  isCurrent(link: AgentLink): boolean {
    return this.links.get(link.agentId) === link;
  }

  isConnected(agentId: string): boolean {
    return this.links.has(agentId);
  }

  send(agentId: string, frame: OutgoingFrame): boolean {
    const link = this.links.get(agentId);
    if (!link) return false;
    link.send(frame);
    return true;
  }
}
