import { useState } from 'preact/hooks';
import { ApiError, createGroup, listGroups } from '../api';
import { errorText, LoadError, Loading } from '../components/Errors';
import { Field, invalidProps } from '../components/Field';
import { formatSeconds, formatTime } from '../format';
import { useLoad, useOverview, useTitle } from '../hooks';
import { links, navigate } from '../router';

/** GET /groups (then live from the overview stream), POST /groups {name}. */
export function GroupsPage() {
  useTitle('Groups');
  const overview = useOverview();
  const fetched = useLoad(listGroups, 'groups');
  const groups = overview?.groups ?? fetched.data;
  const [name, setName] = useState('');
  const [error, setError] = useState<{ field: boolean; message: string } | undefined>(undefined);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    setError(undefined);
    setBusy(true);
    try {
      const g = await createGroup(name.trim());
      navigate(`/groups/${encodeURIComponent(g.id)}`);
    } catch (err) {
      setError({ field: err instanceof ApiError && (err.field === 'name' || err.field === undefined), message: errorText(err) });
    } finally {
      setBusy(false);
    }
  };
  const nameError = error?.field ? error.message : undefined;

  return (
    <>
      <h1>Groups</h1>
      <div class="grid-2 wide-left">
        <section class="card">
          <h2>Protection groups</h2>
          {groups === undefined ? (
            fetched.error !== undefined ? <LoadError error={fetched.error} what="the groups" /> : <Loading what="groups" />
          ) : groups.length === 0 ? (
            <p class="muted">No groups yet.</p>
          ) : (
            <table>
              <thead>
                <tr>
                  <th scope="col">Group</th>
                  <th scope="col" class="num">Members</th>
                  <th scope="col" class="num">RPO threshold</th>
                  <th scope="col" class="num">Revision</th>
                  <th scope="col">Created</th>
                </tr>
              </thead>
              <tbody>
                {groups.map((g) => (
                  <tr key={g.id}>
                    <th scope="row"><a href={links.group(g.id)}>{g.name}</a></th>
                    <td class="num">{g.members.length}</td>
                    <td class="num">{formatSeconds(g.policy.rpoThresholdMs / 1000)}</td>
                    <td class="num">{g.revision}</td>
                    <td>{formatTime(g.createdMs)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </section>
        <section class="card">
          <h2>Create group</h2>
          <form onSubmit={submit}>
            <Field id="group-name" label="Group name" error={nameError} hint="The default policy applies; change it on the group's page.">
              <input id="group-name" value={name} required onInput={(e) => setName(e.currentTarget.value)} {...invalidProps('group-name', nameError)} />
            </Field>
            {error !== undefined && !error.field && <p class="note note-error" role="alert">{error.message}</p>}
            <div class="actions">
              <button type="submit" class="btn-primary" disabled={busy}>
                Create group
              </button>
            </div>
          </form>
        </section>
      </div>
    </>
  );
}
