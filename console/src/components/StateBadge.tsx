import { stateWord } from '../format';

type Tone = 'good' | 'busy' | 'warn' | 'bad' | 'off' | 'info';

const TONES: Record<string, Tone> = {
  protected: 'good',
  healthy: 'good',
  succeeded: 'good',
  done: 'good',
  exact: 'good',
  resyncing: 'busy',
  running: 'busy',
  exporting: 'busy',
  booting: 'busy',
  preparing: 'busy',
  committing: 'busy',
  'failing-back': 'busy',
  degraded: 'warn',
  waiting: 'warn',
  approximate: 'warn',
  warning: 'warn',
  low: 'warn',
  disconnected: 'off',
  pending: 'off',
  stopped: 'off',
  skipped: 'off',
  cancelled: 'off',
  none: 'off',
  failed: 'bad',
  unhealthy: 'bad',
  aborted: 'bad',
  error: 'bad',
  'failed-over': 'info',
  info: 'info',
};

/** A state word as a badge: "Failed over" with data-state="failed-over". */
export function StateBadge({ state, label }: { state: string; label?: string }) {
  const tone = TONES[state] ?? 'off';
  return (
    <span class={`badge badge-${tone}`} data-state={state}>
      {label ?? stateWord(state)}
    </span>
  );
}
