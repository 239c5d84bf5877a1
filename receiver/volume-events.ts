import type { ProtocolError } from '../proto/errors';
import type { RepairRow } from './catalog';

/** Where a volume stands at the receiver: what an Ack tells its agent. */
export interface VolumeSeqs {
  volumeId: string;
  durableSeq: number;
  appliedSeq: number;
}

/**
 * Whether the agent of a volume must hold its change sets, and why (undefined: it may send).
 * An agent already held is let go later than a free one is held (hysteresis on the spool cap).
 */
export interface VolumeHold {
  volumeId: string;
  /** Why a free agent must be held now. */
  reason: string | undefined;
  /** Why an agent already held stays held. */
  keepReason: string | undefined;
}

/**
 * What the receiver's core tells the sessions using a volume. The core never speaks to an agent
 * itself: a session turns these into frames.
 */
export interface VolumeEvents {
  /** A change set of the volume is durable (fsync'd). */
  durable: VolumeSeqs;
  /** Apply moved on. */
  applied: VolumeSeqs;
  /** The volume's hold began, ended or changed its reason. */
  throttle: VolumeHold;
  /** The volume's storage failed (or it is being opened again): sessions using it end with `error`. */
  failed: { volumeId: string; error: ProtocolError };
  /** The receiver needs blocks of the volume sent again (damage). */
  repair: RepairRow;
}

export type VolumeListener = { [K in keyof VolumeEvents]: (event: VolumeEvents[K]) => void };

/** The subscribers of one volume's events. */
export class VolumeEmitter {
  private readonly listeners = new Set<VolumeListener>();

  /** Returns the unsubscribe. */
  subscribe(listener: VolumeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit<K extends keyof VolumeEvents>(name: K, event: VolumeEvents[K]): void {
    // A listener may unsubscribe (a failed session) while this runs.
    for (const listener of [...this.listeners]) listener[name](event);
  }

  get subscribed(): boolean {
    return this.listeners.size > 0;
  }
}
