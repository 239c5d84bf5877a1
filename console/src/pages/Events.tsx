import { useEffect, useState } from 'preact/hooks';
import { EventQuery, listEvents } from '../api';
import type { ControlEvent, EventSeverity } from '../api-types';
import { AckButton } from '../components/AlertList';
import { LoadError, Loading } from '../components/Errors';
import { StateBadge } from '../components/StateBadge';
import { formatTime, fromLocalInput } from '../format';
import { useLoad, useTitle } from '../hooks';
import { subscribeEvents } from '../live';

const LIMIT = 500;
const RANK: Record<EventSeverity, number> = { info: 0, warning: 1, error: 2 };

/** The API's filter, applied to a live event: severity at or above, subject exact, time at or after. */
function matches(e: ControlEvent, q: EventQuery): boolean {
  if (q.severity !== undefined && RANK[e.severity] < RANK[q.severity]) return false;
  if (q.subject !== undefined && q.subject !== '' && e.subjectId !== q.subject) return false;
  if (q.sinceMs !== undefined && e.timeMs < q.sinceMs) return false;
  return true;
}

/** GET /events?severity=&subject=&since=&limit=, new ones from GET /events/stream, POST /events/:id/acknowledge. */
export function EventsPage() {
  useTitle('Events');
  const [severity, setSeverity] = useState<'' | EventSeverity>('');
  const [subject, setSubject] = useState('');
  const [since, setSince] = useState('');
  const [applied, setApplied] = useState<EventQuery>({ limit: LIMIT });
  const key = JSON.stringify(applied);
  // Newest first on screen; the API answers oldest first.
  const loaded = useLoad(async () => (await listEvents(applied)).reverse(), key);
  const [events, setEvents] = useState<ControlEvent[]>([]);
  useEffect(() => {
    if (loaded.data) setEvents(loaded.data);
  }, [loaded.data]);

  useEffect(
    () =>
      subscribeEvents((e) => {
        if (!matches(e, applied)) return;
        setEvents((list) => (list.some((x) => x.id === e.id) ? list : [e, ...list].slice(0, LIMIT)));
      }),
    [key],
  );

  const apply = (e: Event): void => {
    e.preventDefault();
    const q: EventQuery = { limit: LIMIT };
    if (severity !== '') q.severity = severity;
    if (subject.trim() !== '') q.subject = subject.trim();
    const ms = fromLocalInput(since);
    if (ms !== undefined) q.sinceMs = ms;
    setApplied(q);
  };
  const clear = (): void => {
    setSeverity('');
    setSubject('');
    setSince('');
    setApplied({ limit: LIMIT });
  };

  const acked = (e: ControlEvent): void => setEvents((list) => list.map((x) => (x.id === e.id ? e : x)));

  return (
    <>
      <h1>Events</h1>
      <form class="card filters" onSubmit={apply} aria-label="Event filters">
        <div class="field">
          <label for="ev-severity">Severity</label>
          <select id="ev-severity" value={severity} onChange={(e) => setSeverity(e.currentTarget.value as '' | EventSeverity)}>
            <option value="">All</option>
            <option value="info">Info and above</option>
            <option value="warning">Warning and above</option>
            <option value="error">Error</option>
          </select>
        </div>
        <div class="field">
          <label for="ev-subject">Subject</label>
          <input id="ev-subject" value={subject} placeholder="machine, group or volume id" onInput={(e) => setSubject(e.currentTarget.value)} />
        </div>
        <div class="field">
          <label for="ev-since">Since</label>
          <input id="ev-since" type="datetime-local" value={since} onInput={(e) => setSince(e.currentTarget.value)} />
        </div>
        <div class="actions">
          <button type="submit" class="btn-primary">
            Apply filters
          </button>
          <button type="button" onClick={clear}>
            Clear
          </button>
        </div>
      </form>
      <section class="card">
        {loaded.error !== undefined ? (
          <LoadError error={loaded.error} what="the events" />
        ) : loaded.loading && events.length === 0 ? (
          <Loading what="events" />
        ) : events.length === 0 ? (
          <p class="muted">No events match.</p>
        ) : (
          <table class="events">
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Severity</th>
                <th scope="col">Kind</th>
                <th scope="col">Subject</th>
                <th scope="col">Text</th>
                <th scope="col">Acknowledged</th>
              </tr>
            </thead>
            <tbody>
              {events.map((e) => (
                <tr key={e.id} data-event={e.id}>
                  <td class="nowrap">{formatTime(e.timeMs)}</td>
                  <td><StateBadge state={e.severity} /></td>
                  <td class="mono">{e.kind}</td>
                  <td>
                    <span class="muted">{e.subjectKind}</span> {e.subjectId}
                  </td>
                  <td>{e.text}</td>
                  <td>{e.acknowledged ? 'Yes' : <AckButton event={e} onDone={acked} />}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </>
  );
}
