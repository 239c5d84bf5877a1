import { useState } from 'preact/hooks';
import { acknowledgeEvent } from '../api';
import type { ControlEvent } from '../api-types';
import { formatTime } from '../format';
import { errorText } from './Errors';
import { StateBadge } from './StateBadge';

/** Acknowledge button for one event: POST /events/:id/acknowledge. */
export function AckButton({ event, onDone }: { event: ControlEvent; onDone: (e: ControlEvent) => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>(undefined);
  return (
    <>
      <button
        type="button"
        class="btn-small"
        disabled={busy}
        onClick={async () => {
          setBusy(true);
          setError(undefined);
          try {
            onDone(await acknowledgeEvent(event.id));
          } catch (err) {
            setError(errorText(err));
          } finally {
            setBusy(false);
          }
        }}
      >
        Acknowledge
      </button>
      {error !== undefined && (
        <span class="field-error" role="alert">
          {error}
        </span>
      )}
    </>
  );
}

/** Open alerts (unacknowledged warnings and errors), newest first. */
export function AlertList({ alerts }: { alerts: ControlEvent[] }) {
  const [acked, setAcked] = useState<Set<number>>(new Set());
  const shown = alerts.filter((a) => !acked.has(a.id));
  if (shown.length === 0) return <p class="muted">No open alerts.</p>;
  return (
    <table>
      <thead>
        <tr>
          <th scope="col">Time</th>
          <th scope="col">Severity</th>
          <th scope="col">Subject</th>
          <th scope="col">Text</th>
          <th scope="col">
            <span class="sr-only">Action</span>
          </th>
        </tr>
      </thead>
      <tbody>
        {shown.map((a) => (
          <tr key={a.id}>
            <td class="nowrap">{formatTime(a.timeMs)}</td>
            <td>
              <StateBadge state={a.severity} />
            </td>
            <td>
              {a.subjectKind} {a.subjectId}
            </td>
            <td>{a.text}</td>
            <td>
              <AckButton event={a} onDone={(e) => setAcked(new Set([...acked, e.id]))} />
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
