import { useState } from 'preact/hooks';
import { addMember, getGroup, groupPoints, listMachines, removeMember, runRound } from '../api';
import type { Group, Machine, Overview } from '../api-types';
import { errorText, LoadError, Loading, OkNote } from '../components/Errors';
import { PointsTimeline } from '../components/PointsTimeline';
import { PolicyForm } from '../components/PolicyForm';
import { StateBadge } from '../components/StateBadge';
import { formatSeconds } from '../format';
import { useLoad, useOverview, useTitle } from '../hooks';
import { shownState } from '../machine-state';
import { links } from '../router';

/**
 * GET /groups/:id and GET /machines (then live from the overview stream), POST/DELETE members,
 * PATCH policy, GET /groups/:id/points, POST /groups/:id/rounds, POST /points/:id/export.
 */
export function GroupPage({ id }: { id: string }) {
  const overview = useOverview();
  const fetched = useLoad(() => getGroup(id), id);
  const fetchedMachines = useLoad(listMachines, `machines-${id}`);
  const [local, setLocal] = useState<Group | undefined>(undefined);
  const live = overview?.groups.find((g) => g.id === id);
  // The newest of what the stream sent and what our own call answered.
  const candidates = [live, local, fetched.data].filter((g): g is Group => g !== undefined && g.id === id);
  const group = candidates.sort((a, b) => b.revision - a.revision)[0];
  const machines = overview?.machines ?? fetchedMachines.data ?? [];
  useTitle(group ? `Group ${group.name}` : 'Group');
  if (!group) {
    return (
      <>
        <h1>Group</h1>
        {fetched.error !== undefined ? <LoadError error={fetched.error} what={`Group ${id}`} /> : <Loading what="the group" />}
      </>
    );
  }
  return <GroupBody group={group} machines={machines} overview={overview} onChanged={setLocal} />;
}

function GroupBody({ group, machines, overview, onChanged }: { group: Group; machines: Machine[]; overview: Overview | null; onChanged: (g: Group) => void }) {
  return (
    <>
      <h1>Group {group.name}</h1>
      <p class="muted">
        Revision {group.revision} · {group.members.length} {group.members.length === 1 ? 'member' : 'members'} · RPO threshold {formatSeconds(group.policy.rpoThresholdMs / 1000)}
      </p>
      <div class="grid-2">
        <section class="card">
          <h2>Members</h2>
          <Members group={group} machines={machines} overview={overview} onChanged={onChanged} />
        </section>
        <section class="card">
          <h2>Policy</h2>
          <PolicyForm key={group.id} group={group} onSaved={onChanged} />
        </section>
      </div>
      <section class="card">
        <Timeline group={group} machines={machines} />
      </section>
    </>
  );
}

function Members({ group, machines, overview, onChanged }: { group: Group; machines: Machine[]; overview: Overview | null; onChanged: (g: Group) => void }) {
  const [pick, setPick] = useState('');
  const [error, setError] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const byId = new Map(machines.map((m) => [m.id, m]));
  const free = machines.filter((m) => m.groupId === null && !group.members.includes(m.id));
  const chosen = free.some((m) => m.id === pick) ? pick : (free[0]?.id ?? '');

  const act = async (f: () => Promise<Group>): Promise<void> => {
    setBusy(true);
    setError(undefined);
    try {
      onChanged(await f());
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      {group.members.length === 0 ? (
        <p class="muted">No members yet.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th scope="col">Machine</th>
              <th scope="col">State</th>
              <th scope="col" class="num">RPO</th>
              <th scope="col"><span class="sr-only">Action</span></th>
            </tr>
          </thead>
          <tbody>
            {group.members.map((mid) => {
              const m = byId.get(mid);
              return (
                <tr key={mid}>
                  <th scope="row">{m ? <a href={links.machine(mid)}>{m.name}</a> : <span class="mono">{mid}</span>}</th>
                  <td>{m && <StateBadge state={shownState(m, overview)} />}</td>
                  <td class="num">{m ? formatSeconds(m.rpoSeconds) : '–'}</td>
                  <td>
                    <button type="button" class="btn-small" disabled={busy} aria-label={`Remove ${m?.name ?? mid}`} onClick={() => act(() => removeMember(group.id, mid))}>
                      Remove
                    </button>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          if (chosen !== '') void act(() => addMember(group.id, chosen));
        }}
      >
        <div class="field field-inline">
          <label for="add-member">Machine to add</label>
          <select id="add-member" value={chosen} disabled={free.length === 0} onChange={(e) => setPick(e.currentTarget.value)}>
            {free.length === 0 && <option value="">No machine outside a group</option>}
            {free.map((m) => (
              <option key={m.id} value={m.id}>
                {m.name}
              </option>
            ))}
          </select>
        </div>
        <button type="submit" disabled={busy || chosen === ''}>
          Add to group
        </button>
      </form>
      {error !== undefined && <p class="note note-error" role="alert">{error}</p>}
    </>
  );
}

function Timeline({ group, machines }: { group: Group; machines: Machine[] }) {
  const pts = useLoad(() => groupPoints(group.id), group.id);
  const [busy, setBusy] = useState(false);
  const [note, setNote] = useState<{ ok: boolean; text: string } | undefined>(undefined);
  const take = async (app: boolean): Promise<void> => {
    setBusy(true);
    setNote(undefined);
    try {
      const r = await runRound(group.id, app);
      setNote(r.state === 'done' ? { ok: true, text: `Round ${r.id} done: ${r.pointIds.length} points.` } : { ok: false, text: `Round ${r.id} ${r.state}${r.reason ? `: ${r.reason}` : ''}` });
      pts.reload();
    } catch (err) {
      setNote({ ok: false, text: errorText(err) });
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <div class="title-row">
        <h2>Points timeline</h2>
        <div class="actions">
          <button type="button" disabled={busy || group.members.length === 0} onClick={() => take(false)}>
            Take a point now
          </button>
          <button type="button" disabled={busy || group.members.length === 0} onClick={() => take(true)}>
            Take an app-consistent point now
          </button>
          <button type="button" onClick={pts.reload}>
            Refresh
          </button>
        </div>
      </div>
      {note && (note.ok ? <OkNote>{note.text}</OkNote> : <p class="note note-error" role="alert">{note.text}</p>)}
      {pts.error !== undefined ? <LoadError error={pts.error} what="the group's points" /> : !pts.data ? <Loading what="points" /> : <PointsTimeline rounds={pts.data} machines={machines} />}
    </>
  );
}
