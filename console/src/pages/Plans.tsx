import { ApiError, listPlans } from '../api';
import { LoadError, Loading } from '../components/Errors';
import { formatTime } from '../format';
import { useLoad, useOverview, useTitle } from '../hooks';
import { links, navigate } from '../router';

/** GET /plans. */
export function PlansPage() {
  useTitle('Recovery plans');
  const plans = useLoad(listPlans, 'plans');
  const overview = useOverview();
  const names = new Map((overview?.machines ?? []).map((m) => [m.id, m.name]));
  return (
    <>
      <div class="title-row">
        <h1>Recovery plans</h1>
        <button type="button" class="btn-primary" onClick={() => navigate('/plans/new')}>
          New plan
        </button>
      </div>
      <section class="card">
        {plans.error instanceof ApiError && plans.error.status === 503 ? (
          <p class="note note-warn" role="alert">{plans.error.message}</p>
        ) : plans.error !== undefined ? (
          <LoadError error={plans.error} what="the plans" />
        ) : !plans.data ? (
          <Loading what="plans" />
        ) : plans.data.length === 0 ? (
          <p class="muted">No recovery plans yet. A plan says which machines boot in which order, and how to tell they are healthy.</p>
        ) : (
          <table>
            <thead>
              <tr>
                <th scope="col">Plan</th>
                <th scope="col">Boot groups</th>
                <th scope="col" class="num">Revision</th>
                <th scope="col">Updated</th>
              </tr>
            </thead>
            <tbody>
              {plans.data.map((p) => (
                <tr key={p.id}>
                  <th scope="row"><a href={links.plan(p.id)}>{p.name}</a></th>
                  <td>{p.bootGroups.map((g, i) => `${i + 1}: ${g.machines.map((m) => names.get(m) ?? m).join(', ')}`).join(' · ')}</td>
                  <td class="num">{p.revision}</td>
                  <td>{formatTime(p.updatedMs)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </>
  );
}
