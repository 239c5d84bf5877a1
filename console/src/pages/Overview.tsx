import type { Overview } from '../api-types';
import { AlertList } from '../components/AlertList';
import { Loading } from '../components/Errors';
import { StateBadge } from '../components/StateBadge';
import { formatAgo, formatBytes, formatSeconds, stateWord } from '../format';
import { useNow, useOverview, useTitle } from '../hooks';
import { SHOWN_STATES, shownState } from '../machine-state';
import { links } from '../router';

/** Everything from GET /overview/stream; Acknowledge: POST /events/:id/acknowledge. */
export function OverviewPage() {
  useTitle('Overview');
  const overview = useOverview();
  return (
    <>
      <h1>Overview</h1>
      {overview === null ? <Loading what="the overview" /> : <OverviewBody overview={overview} />}
    </>
  );
}

function OverviewBody({ overview }: { overview: Overview }) {
  const now = useNow(5000);
  const counts = new Map<string, number>();
  for (const m of overview.machines) {
    const s = shownState(m, overview);
    counts.set(s, (counts.get(s) ?? 0) + 1);
  }
  const groupName = new Map(overview.groups.map((g) => [g.id, g.name]));
  const r = overview.receiver;
  return (
    <>
      <section aria-label="Machines by state" class="cards">
        {SHOWN_STATES.map((s) => (
          <div class={`count-card count-${s}${(counts.get(s) ?? 0) > 0 ? ' nonzero' : ''}`} key={s} data-count-state={s}>
            <span class="count">{counts.get(s) ?? 0}</span>
            <span class="count-label">{stateWord(s)}</span>
          </div>
        ))}
        <div class="count-card count-rpo">
          <span class="count">{formatSeconds(overview.worstRpoSeconds)}</span>
          <span class="count-label">Worst RPO now</span>
        </div>
      </section>

      <section class="card">
        <h2>Machines</h2>
        {overview.machines.length === 0 ? (
          <p class="muted">No machines yet: install the agent on a server and register it with this receiver.</p>
        ) : (
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">State</th>
                <th scope="col" class="num">Worst RPO</th>
                <th scope="col" class="num">Volumes</th>
                <th scope="col">Group</th>
                <th scope="col">Last seen</th>
              </tr>
            </thead>
            <tbody>
              {overview.machines.map((m) => (
                <tr key={m.id}>
                  <th scope="row">
                    <a href={links.machine(m.id)}>{m.name}</a>
                  </th>
                  <td>
                    <StateBadge state={shownState(m, overview)} />
                  </td>
                  <td class="num">{formatSeconds(m.rpoSeconds)}</td>
                  <td class="num">
                    {m.volumes.length} <span class="muted">({formatBytes(m.volumes.reduce((a, v) => a + v.sizeBytes, 0))})</span>
                  </td>
                  <td>{m.groupId === null ? <span class="muted">none</span> : <a href={links.group(m.groupId)}>{groupName.get(m.groupId) ?? m.groupId}</a>}</td>
                  <td title={m.lastSeenMs > 0 ? new Date(m.lastSeenMs).toISOString() : undefined}>{m.connected ? 'connected' : formatAgo(m.lastSeenMs, now)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>

      <div class="grid-2">
        <section class="card" aria-labelledby="open-alerts-heading">
          <h2 id="open-alerts-heading">Open alerts</h2>
          <AlertList alerts={overview.openAlerts} />
        </section>
        <section class="card">
          <h2>Groups</h2>
          {overview.groups.length === 0 ? (
            <p class="muted">
              No groups yet. <a href="#/groups">Create one</a>.
            </p>
          ) : (
            <table>
              <thead>
                <tr>
                  <th scope="col">Group</th>
                  <th scope="col" class="num">Members</th>
                  <th scope="col" class="num">RPO threshold</th>
                </tr>
              </thead>
              <tbody>
                {overview.groups.map((g) => (
                  <tr key={g.id}>
                    <th scope="row">
                      <a href={links.group(g.id)}>{g.name}</a>
                    </th>
                    <td class="num">{g.members.length}</td>
                    <td class="num">{formatSeconds(g.policy.rpoThresholdMs / 1000)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </section>
      </div>

      <section class="card">
        <h2>Receiver</h2>
        <dl class="facts">
          <div>
            <dt>Spool</dt>
            <dd>{formatBytes(r.spoolBytes)}</dd>
          </div>
          <div>
            <dt>Backlog (not yet applied)</dt>
            <dd>{formatBytes(r.unappliedBytes)}</dd>
          </div>
          <div>
            <dt>Retention journal</dt>
            <dd>{formatBytes(r.journalBytes)}</dd>
          </div>
        </dl>
        <table>
          <thead>
            <tr>
              <th scope="col">Path</th>
              <th scope="col" class="num">Free</th>
              <th scope="col" class="num">Total</th>
              <th scope="col">Disk</th>
            </tr>
          </thead>
          <tbody>
            {r.storage.map((s) => (
              <tr key={s.path}>
                <th scope="row" class="mono">
                  {s.path}
                </th>
                <td class="num">{formatBytes(s.freeBytes)}</td>
                <td class="num">{formatBytes(s.totalBytes)}</td>
                <td>
                  <meter min={0} max={s.totalBytes} value={s.totalBytes - s.freeBytes} aria-label={`${s.path} used`} />{' '}
                  {s.low ? <StateBadge state="low" /> : <span class="muted">{s.totalBytes > 0 ? `${Math.round((s.freeBytes / s.totalBytes) * 100)}% free` : ''}</span>}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {r.alerts.length > 0 && (
          <ul class="plain receiver-alerts">
            {r.alerts.map((a, i) => (
              <li key={i}>
                <StateBadge state={a.severity} /> <strong>{a.subject}</strong>: {a.message}
              </li>
            ))}
          </ul>
        )}
      </section>
    </>
  );
}
