import type { OutgoingFrame } from '../proto/frames';
import type { ValidAgentEvent, ValidVolumeReport } from '../proto/validate-control';

/**
 * Between a session and the configuration server (control/plane.ts). The session alone speaks
 * to its agent: it reports upward what the agent says (SessionControl / AgentControl, which
 * the control plane implements), and the plane sends through the AgentLink the session gives.
 */

/** A logged-in session, as the control plane sees it. */
export interface AgentLink {
  readonly agentId: string;
  /** Sends a frame to the agent (dropped once the session is closed). */
  send(frame: OutgoingFrame): void;
}

/** What the agent said of itself in its Hello. */
export interface AgentHello {
  /** The name it registered with ('' on a login: the registered one stands). */
  name: string;
  software: string;
  os: string;
  registered: boolean;
}

/** One session's reports to the control plane, from login to close. */
export interface AgentControl {
  heartbeat(reports: ValidVolumeReport[]): void;
  agentEvent(event: ValidAgentEvent): void;
  groupHeld(held: { roundId: number; ok: boolean; error: string }): void;
  /** Throws a BAD_TAG ProtocolError unless `roundId` is committing and includes this agent. */
  checkTagRound(roundId: number): void;
  /** The tag answering `roundId` is recorded as these points. */
  tagRecorded(roundId: number, pointIds: number[]): void;
  closed(): void;
}

export interface SessionControl {
  /** An agent proved who it is; the session reports to the returned AgentControl until it closes. */
  loggedIn(link: AgentLink, hello: AgentHello): AgentControl;
}
