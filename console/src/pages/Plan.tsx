import { useEffect, useMemo, useState } from 'preact/hooks';
import { ApiError, cleanupTestFailover, createPlan, deletePlan, getPlan, groupPoints, listJobs, replacePlan, testFailover } from '../api';
import type { GroupRound, Job, Machine, Plan } from '../api-types';
import { errorText, LoadError, Loading, OkNote } from '../components/Errors';
import { Field } from '../components/Field';
import { PlanEditor } from '../components/PlanEditor';
import { StateBadge } from '../components/StateBadge';
import { formatMs, formatTime } from '../format';
import { useLoad, useOverview, useTitle } from '../hooks';
import { subscribeJobs } from '../live';
import { draftOf, emptyDraft, errorPaths, localProblem, normalizeField, placeError, PlanDraft, planInput, pointWords } from '../plan-draft';
import { links, navigate } from '../router';

/**
 * #/plans/ID: GET /plans/:id, PUT /plans/:id {plan, revision} (409: someone else's change won),
 * DELETE /plans/:id, POST /plans/:id/test-failover {point}, POST /plans/:id/cleanup,
 * GET /jobs?plan=ID (then live from /jobs/stream), GET /groups/:gid/points for the point picker.
 * #/plans/new: POST /plans.
 */
export function PlanPage({ id }: { id: string | null }) {
  const loaded = useLoad<Plan | null>(() => (id === null ? Promise.resolve(null) : getPlan(id)), id ?? '(new)');
  useTitle(id === null ? 'New plan' : `Plan ${loaded.data?.name ?? id}`);
  if (loaded.error !== undefined) {
    return (
      <>
        <h1>Plan {id}</h1>
        <LoadError error={loaded.error} what={`Plan ${id ?? ''}`} />
      </>
    );
  }
  if (loaded.data === undefined) return <><h1>{id === null ? 'New plan' : `Plan ${id}`}</h1><Loading what="the plan" /></>;
  return <PlanBody key={id ?? '(new)'} plan={loaded.data} />;
}

interface SaveError {
  field: string;
  message: string;
}

function PlanBody({ plan: initial }: { plan: Plan | null }) {
  const overview = useOverview();
  const machines = overview?.machines ?? [];
  const [plan, setPlan] = useState<Plan | null>(initial);
  const [draft, setDraft] = useState<PlanDraft>(initial ? draftOf(initial) : emptyDraft());
  const [error, setError] = useState<SaveError | undefined>(undefined);
  const [conflict, setConflict] = useState<Plan | undefined>(undefined);
  const [saved, setSaved] = useState<number | undefined>(undefined);
  const [busy, setBusy] = useState(false);

  const paths = useMemo(() => errorPaths(draft), [draft]);
  const placed = error === undefined ? undefined : placeError(error.field, paths);
  const errorAt = (path: string): string | undefined => (error !== undefined && placed === path ? error.message : undefined);

  const edit = (d: PlanDraft): void => {
    setDraft(d);
    setSaved(undefined);
  };

  const save = async (e: Event): Promise<void> => {
    e.preventDefault();
    setError(undefined);
    setSaved(undefined);
    setConflict(undefined);
    const local = localProblem(draft);
    if (local) {
      setError(local);
      return;
    }
    setBusy(true);
    try {
      if (plan === null) {
        const created = await createPlan(planInput(draft));
        navigate(`/plans/${encodeURIComponent(created.id)}`);
        return;
      }
      const updated = await replacePlan(plan.id, planInput(draft), plan.revision);
      setPlan(updated);
      setDraft(draftOf(updated));
      setSaved(updated.revision);
    } catch (err) {
      if (plan !== null && err instanceof ApiError && err.status === 409) {
        // Someone else's edit won: learn the revision now, keep our draft on screen, save nothing.
        try {
          const now = await getPlan(plan.id);
          if (now.revision !== plan.revision) setConflict(now);
          else setError({ field: '', message: err.message });
        } catch {
          setError({ field: '', message: err.message });
        }
      } else {
        setError({ field: err instanceof ApiError ? normalizeField(err.field) : '', message: errorText(err) });
      }
    } finally {
      setBusy(false);
    }
  };

  const reload = async (): Promise<void> => {
    try {
      const now = plan === null ? undefined : await getPlan(plan.id);
      if (now) {
        setPlan(now);
        setDraft(draftOf(now));
      }
      setConflict(undefined);
      setError(undefined);
    } catch (err) {
      setError({ field: '', message: errorText(err) });
    }
  };

  const remove = async (): Promise<void> => {
    if (plan === null || !window.confirm(`Delete plan ${plan.name}? This cannot be undone.`)) return;
    try {
      await deletePlan(plan.id);
      navigate('/plans');
    } catch (err) {
      setError({ field: '', message: errorText(err) });
    }
  };

  return (
    <>
      <div class="title-row">
        <h1>{plan === null ? 'New plan' : `Plan ${plan.name}`}</h1>
        {plan !== null && (
          <span class="muted">
            Revision {plan.revision} · updated {formatTime(plan.updatedMs)}
          </span>
        )}
      </div>
      <div class="plan-layout">
        <form class="card editor" onSubmit={save} noValidate aria-label="Plan editor">
          <PlanEditor draft={draft} setDraft={edit} machines={machines} errorAt={errorAt} />
          {conflict && (
            <div class="note note-error" role="alert">
              <p>
                Someone else changed this plan (now revision {conflict.revision}). Your edits were not saved.
              </p>
              <button type="button" onClick={reload}>
                Reload plan
              </button>
            </div>
          )}
          {error !== undefined && placed === '' && (
            <p class="note note-error" role="alert">
              {error.field !== '' ? `${error.field}: ` : ''}
              {error.message}
            </p>
          )}
          {error !== undefined && placed !== '' && <p class="note note-error">Not saved: see the field marked below or above.</p>}
          {saved !== undefined && <OkNote>Plan saved (revision {saved})</OkNote>}
          <div class="actions">
            <button type="submit" class="btn-primary" disabled={busy}>
              {plan === null ? 'Create plan' : 'Save plan'}
            </button>
            {plan !== null && (
              <button type="button" class="btn-danger" onClick={remove}>
                Delete plan
              </button>
            )}
          </div>
        </form>
        {plan !== null && (
          <div class="side">
            <RunPanel plan={plan} machines={machines} />
            <PlanJobs planId={plan.id} />
          </div>
        )}
      </div>
    </>
  );
}

/** Done rounds of the groups the plan's machines belong to, newest first. */
function usePlanRounds(plan: Plan, machines: Machine[]): GroupRound[] {
  const groupIds = useMemo(() => {
    const ids = new Set(plan.bootGroups.flatMap((g) => g.machines));
    return [...new Set(machines.filter((m) => ids.has(m.id) && m.groupId !== null).map((m) => m.groupId as string))].sort();
  }, [plan, machines]);
  const key = groupIds.join(',');
  const [rounds, setRounds] = useState<GroupRound[]>([]);
  useEffect(() => {
    let live = true;
    Promise.all(groupIds.map((g) => groupPoints(g).catch(() => []))).then((all) => {
      if (!live) return;
      const done = all.flat().map((x) => x.round).filter((r) => r.state === 'done');
      setRounds(done.sort((a, b) => b.id - a.id).slice(0, 50));
    });
    return () => {
      live = false;
    };
  }, [key]);
  return rounds;
}

function RunPanel({ plan, machines }: { plan: Plan; machines: Machine[] }) {
  const rounds = usePlanRounds(plan, machines);
  const [choice, setChoice] = useState('default');
  const [time, setTime] = useState('');
  const [error, setError] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const overview = useOverview();
  const groupName = new Map((overview?.groups ?? []).map((g) => [g.id, g.name]));

  /** The point word for the API; undefined: the plan's default point. */
  const pointWord = (): string | undefined | null => {
    if (choice === 'default') return undefined;
    if (choice === 'time') {
      const ms = time === '' ? Number.NaN : new Date(time).getTime();
      return Number.isFinite(ms) ? new Date(ms).toISOString() : null;
    }
    return choice;
  };

  const run = async (what: 'test' | 'cleanup'): Promise<void> => {
    setError(undefined);
    const word = pointWord();
    if (what === 'test' && word === null) {
      setError('Give the time to recover to.');
      return;
    }
    setBusy(true);
    try {
      const job = what === 'test' ? await testFailover(plan.id, word ?? undefined) : await cleanupTestFailover(plan.id);
      navigate(`/jobs/${job.id}`);
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section class="card">
      <h2>Test failover</h2>
      <Field id="run-point" label="Recovery point">
        <select id="run-point" value={choice} onChange={(e) => setChoice(e.currentTarget.value)}>
          <option value="default">Plan default ({pointWords(plan.defaultPoint)})</option>
          <option value="latest">Latest</option>
          <option value="latest-app">Latest app-consistent</option>
          {rounds.length > 0 && (
            <optgroup label="Group rounds">
              {rounds.map((r) => (
                <option key={r.id} value={`round:${r.id}`}>
                  Round {r.id} of {groupName.get(r.groupId) ?? r.groupId}, {formatTime(r.startedMs)} ({r.app ? 'app' : 'crash'})
                </option>
              ))}
            </optgroup>
          )}
          <option value="time">A time…</option>
        </select>
      </Field>
      {choice === 'time' && (
        <Field id="run-time" label="Recover to (local time)">
          <input id="run-time" type="datetime-local" step={1} value={time} onInput={(e) => setTime(e.currentTarget.value)} />
        </Field>
      )}
      {error !== undefined && <p class="note note-error" role="alert">{error}</p>}
      <div class="actions">
        <button type="button" class="btn-primary" disabled={busy} onClick={() => run('test')}>
          Test failover
        </button>
        <button type="button" disabled={busy} onClick={() => run('cleanup')}>
          Cleanup test failover
        </button>
      </div>
    </section>
  );
}

function PlanJobs({ planId }: { planId: string }) {
  const jobs = useLoad(() => listJobs(planId, 10), planId);
  const [live, setLive] = useState<Map<number, Job>>(new Map());
  useEffect(
    () =>
      subscribeJobs(
        (job) => {
          if (job.planId === planId) setLive((m) => new Map(m).set(job.id, job));
        },
        () => jobs.reload(),
      ),
    [planId],
  );
  const merged = new Map<number, Job>();
  for (const j of jobs.data ?? []) merged.set(j.id, j);
  for (const [id, j] of live) merged.set(id, j);
  const list = [...merged.values()].sort((a, b) => b.id - a.id).slice(0, 10);
  return (
    <section class="card">
      <h2>Recent jobs</h2>
      {jobs.error !== undefined ? (
        <LoadError error={jobs.error} what="the jobs" />
      ) : !jobs.data ? (
        <Loading what="jobs" />
      ) : list.length === 0 ? (
        <p class="muted">No jobs yet.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th scope="col">Job</th>
              <th scope="col">Kind</th>
              <th scope="col">State</th>
              <th scope="col">Started</th>
              <th scope="col" class="num">RTO</th>
            </tr>
          </thead>
          <tbody>
            {list.map((j) => (
              <tr key={j.id}>
                <th scope="row"><a href={links.job(j.id)}>Job {j.id}</a></th>
                <td>{j.kind}</td>
                <td><StateBadge state={j.state} /></td>
                <td class="nowrap">{formatTime(j.startedMs)}</td>
                <td class="num">{formatMs(j.rtoMs)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
