import { useEffect, useState } from 'preact/hooks';
import { cancelJob, evidenceUrl, getJob, resumeJob, serialLog } from '../api';
import type { Job, JobMachine } from '../api-types';
import { errorText, LoadError, Loading } from '../components/Errors';
import { StateBadge } from '../components/StateBadge';
import { formatMs, formatTime } from '../format';
import { useLoad, useTitle } from '../hooks';
import { subscribeJobs } from '../live';
import { pointWords } from '../plan-draft';
import { links } from '../router';

/** GET /jobs/:id, then live from GET /jobs/stream; POST resume / cancel; the evidence routes. */
export function JobPage({ id }: { id: number }) {
  useTitle(`Job ${id}`);
  const loaded = useLoad(() => getJob(id), String(id));
  const [live, setLive] = useState<Job | undefined>(undefined);
  useEffect(() => {
    setLive(undefined);
    return subscribeJobs(
      (job) => {
        if (job.id === id) setLive(job);
      },
      // (Re)connected: what changed while the stream was down comes from a fresh GET.
      () => {
        getJob(id).then(setLive, () => undefined);
      },
    );
  }, [id]);
  const job = live ?? loaded.data;
  if (!job) {
    return (
      <>
        <h1>Job {id}</h1>
        {loaded.error !== undefined ? <LoadError error={loaded.error} what={`Job ${id}`} /> : <Loading what="the job" />}
      </>
    );
  }
  return <JobBody job={job} onChange={setLive} />;
}

function rto(job: Job): string {
  return job.rtoMs === null ? 'RTO –' : `RTO ${(job.rtoMs / 1000).toFixed(1)} s`;
}

function JobBody({ job, onChange }: { job: Job; onChange: (j: Job) => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>(undefined);
  const act = async (f: (id: number) => Promise<Job>): Promise<void> => {
    setBusy(true);
    setError(undefined);
    try {
      onChange(await f(job.id));
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };
  const waitingStep = job.steps.find((s) => s.state === 'waiting');
  return (
    <>
      <div class="title-row">
        <h1>Job {job.id}</h1>
        <span data-job-state={job.state}>
          <StateBadge state={job.state} />
        </span>
        <span class="rto" data-rto-ms={job.rtoMs ?? ''}>
          {rto(job)}
        </span>
      </div>
      <dl class="facts">
        <div><dt>Kind</dt><dd>{job.kind}</dd></div>
        <div><dt>Plan</dt><dd><a href={links.plan(job.planId)}>{job.planId}</a></dd></div>
        <div><dt>Point</dt><dd>{pointWords(job.point)}</dd></div>
        <div><dt>Started</dt><dd>{formatTime(job.startedMs)}</dd></div>
        <div><dt>Finished</dt><dd>{job.finishedMs === null ? 'not yet' : formatTime(job.finishedMs)}</dd></div>
      </dl>
      {job.reason !== '' && <p class="note note-error">{job.reason}</p>}
      {(job.state === 'waiting' || job.state === 'running') && (
        <div class="card action-bar">
          {job.state === 'waiting' && (
            <p>
              <strong>Waiting for an operator{waitingStep ? `: ${waitingStep.name}` : ''}.</strong> {waitingStep?.detail}
            </p>
          )}
          <div class="actions">
            {job.state === 'waiting' && (
              <button type="button" class="btn-primary" disabled={busy} onClick={() => act(resumeJob)}>
                Resume
              </button>
            )}
            <button type="button" class="btn-danger" disabled={busy} onClick={() => act(cancelJob)}>
              Cancel
            </button>
          </div>
          {error !== undefined && <p class="note note-error" role="alert">{error}</p>}
        </div>
      )}
      <div class="job-layout">
        <section class="card">
          <h2>Steps</h2>
          <ol class="steps">
            {job.steps.map((s) => (
              <li key={s.id} data-step-state={s.state}>
                <StateBadge state={s.state} /> <span class="step-name">{s.name}</span>
                {s.startedMs !== null && <span class="muted small"> {s.finishedMs !== null ? formatMs(s.finishedMs - s.startedMs) : `since ${formatTime(s.startedMs)}`}</span>}
                {s.detail !== '' && <div class="step-detail">{s.detail}</div>}
              </li>
            ))}
          </ol>
        </section>
        <section class="machines-cards" aria-label="Machines">
          {job.machines.map((m) => (
            <MachineCard key={m.machineId} job={job} machine={m} />
          ))}
          {job.machines.length === 0 && <p class="muted">No machines in this job.</p>}
        </section>
      </div>
    </>
  );
}

function MachineCard({ job, machine: m }: { job: Job; machine: JobMachine }) {
  const [log, setLog] = useState<string | undefined>(undefined);
  const [logError, setLogError] = useState<string | undefined>(undefined);
  const showLog = async (): Promise<void> => {
    setLogError(undefined);
    try {
      setLog(await serialLog(job.id, m.machineId));
    } catch (err) {
      setLogError(errorText(err));
    }
  };
  // A changing query string makes the browser fetch the screenshot again when the state moves on.
  const shot = `${evidenceUrl(job.id, m.machineId, 'screenshot')}?v=${encodeURIComponent(`${m.state}-${m.bootMs ?? ''}-${job.finishedMs ?? ''}`)}`;
  return (
    <article class="card machine-card" data-machine={m.machineId} aria-label={`Machine ${m.vmName}`}>
      <div class="title-row">
        <h3>{m.vmName}</h3>
        <StateBadge state={m.state} />
      </div>
      <dl class="facts small">
        <div><dt>Address</dt><dd class="mono">{m.address || '–'}</dd></div>
        <div><dt>Boot time</dt><dd>{formatMs(m.bootMs)}</dd></div>
        <div><dt>Runs on</dt><dd class="mono">{m.runsOn || '–'}</dd></div>
        <div><dt>Points</dt><dd>{Object.entries(m.points).map(([v, p]) => `${v}: ${p}`).join(', ') || '–'}</dd></div>
      </dl>
      {m.detail !== '' && <p class="small">{m.detail}</p>}
      {m.screenshot !== '' && <img class="screenshot" src={shot} alt={`Console screenshot of ${m.vmName}`} />}
      {m.serialLog !== '' && (
        <p class="actions">
          <a href={evidenceUrl(job.id, m.machineId, 'serial')} target="_blank" rel="noopener">
            Serial log of {m.vmName}
          </a>
          <button type="button" class="btn-small" onClick={showLog}>
            {log === undefined ? 'Show serial log' : 'Refresh serial log'}
          </button>
        </p>
      )}
      {logError !== undefined && <p class="note note-error" role="alert">{logError}</p>}
      {log !== undefined && (
        <pre class="serial" tabIndex={0} aria-label={`Serial log of ${m.vmName}`}>
          {log === '' ? '(empty)' : log}
        </pre>
      )}
    </article>
  );
}
