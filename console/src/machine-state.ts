import type { Machine, Overview } from './api-types';

/** The states the console shows for a machine: the control plane's, or failed over (recovery's). */
export type ShownState = 'protected' | 'resyncing' | 'degraded' | 'disconnected' | 'failed' | 'failed-over';

export const SHOWN_STATES: ShownState[] = ['protected', 'resyncing', 'degraded', 'disconnected', 'failed', 'failed-over'];

/** A failed-over machine counts as failed over (its replication state is moot then). */
export function shownState(machine: Machine, overview: Overview | null): ShownState {
  return overview?.protection[machine.id] === 'failed-over' ? 'failed-over' : machine.state;
}
