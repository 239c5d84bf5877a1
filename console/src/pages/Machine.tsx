import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { ApiError, getMachine, machineHistory, machinePoints, machineProtection } from '../api';
import type { HistoryWindow, Machine, MachineHistory, Overview } from '../api-types';
import { Chart } from '../components/Chart';
import { errorText, LoadError, Loading } from '../components/Errors';
import { RecoveryForm } from '../components/RecoveryForm';
import { StateBadge } from '../components/StateBadge';
import { formatAgo, formatBytes, formatRate, formatSeconds, formatTime } from '../format';
import { useLoad, useNow, useOverview, useTitle } from '../hooks';
import { shownState } from '../machine-state';
import { links } from '../router';

/** At most one history GET per this long while overview updates for the machine arrive. */
const HISTORY_REFRESH_MS = 5000;

/**
 * GET /machines/:id (then live from the overview stream), GET /machines/:id/history?window=,
 * GET /machines/:id/points?limit=20, GET /machines/:id/protection, PATCH /machines/:id/recovery.
 */
export function MachinePage({ id }: { id: string }) {
  const overview = useOverview();
  const fetched = useLoad(() => getMachine(id), id);
  const live = overview?.machines.find((m) => m.id === id);
  const machine = live ?? fetched.data;
  useTitle(machine?.name ?? 'Machine');
  if (!machine) {
    if (fetched.error !== undefined) return <><h1>Machine</h1><LoadError error={fetched.error} what={`Machine ${id}`} /></>;
    return <><h1>Machine</h1><Loading what="the machine" /></>;
  }
  return <MachineBody machine={machine} overview={overview} onSaved={fetched.setData} />;
}

function MachineBody({ machine, overview, onSaved }: { machine: Machine; overview: Overview | null; onSaved: (m: Machine) => void }) {
  const now = useNow(5000);
  const group = overview?.groups.find((g) => g.id === machine.groupId);
  return (
    <>
      <div class="title-row">
        <h1>{machine.name}</h1>
        <StateBadge state={shownState(machine, overview)} />
      </div>
      <dl class="facts">
        <div><dt>Machine id</dt><dd class="mono">{machine.id}</dd></div>
        <div><dt>OS</dt><dd>{machine.os || '–'}</dd></div>
        <div><dt>Agent</dt><dd>{machine.agentVersion || '–'}</dd></div>
        <div><dt>Worst RPO</dt><dd>{formatSeconds(machine.rpoSeconds)}</dd></div>
        <div><dt>Group</dt><dd>{machine.groupId === null ? 'none' : <a href={links.group(machine.groupId)}>{group?.name ?? machine.groupId}</a>}</dd></div>
        <div><dt>Last seen</dt><dd>{machine.connected ? 'connected now' : formatAgo(machine.lastSeenMs, now)}</dd></div>
      </dl>
      {machine.stateReasons && machine.stateReasons.length > 0 && (
        <ul class="reasons">
          {machine.stateReasons.map((r, i) => <li key={i}>{r}</li>)}
        </ul>
      )}

      <section class="card">
        <h2>Volumes</h2>
        <VolumeTable machine={machine} />
      </section>

      <HistoryCharts machine={machine} />

      <div class="grid-2">
        <section class="card">
          <h2>Recovery properties</h2>
          <RecoveryForm key={machine.id} machine={machine} onSaved={onSaved} />
        </section>
        <section class="card">
          <h2>Protection</h2>
          <Protection id={machine.id} />
          <h2>Recent points</h2>
          <RecentPoints id={machine.id} />
        </section>
      </div>
    </>
  );
}

function VolumeTable({ machine }: { machine: Machine }) {
  if (machine.volumes.length === 0) return <p class="muted">No volumes reported yet.</p>;
  return (
    <div class="table-scroll">
      <table>
        <thead>
          <tr>
            <th scope="col">Volume</th>
            <th scope="col" class="num">Size</th>
            <th scope="col">State</th>
            <th scope="col">Capture mode</th>
            <th scope="col" class="num">RPO</th>
            <th scope="col" class="num">Backlog</th>
            <th scope="col" class="num">Throughput</th>
            <th scope="col">Resync</th>
          </tr>
        </thead>
        <tbody>
          {machine.volumes.map((v) => (
            <tr key={v.volumeId} data-volume={v.volumeId}>
              <th scope="row" class="mono">{v.volumeId}</th>
              <td class="num">{formatBytes(v.sizeBytes)}</td>
              <td><StateBadge state={v.state} /></td>
              <td>{v.mode}</td>
              <td class="num">{formatSeconds(v.rpoSeconds)}</td>
              <td class="num" title={`apply lag ${formatSeconds(v.applyLagSeconds ?? 0)}`}>{formatBytes(v.backlogBytes ?? 0)}</td>
              <td class="num">{formatRate(v.bytesPerSecond ?? 0)}</td>
              <td class="nowrap">
                <progress max={100} value={v.resyncPercent} aria-label={`Resync of ${v.volumeId}`} />{' '}
                <span>{Math.floor(v.resyncPercent)}%</span>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function HistoryCharts({ machine }: { machine: Machine }) {
  const [win, setWin] = useState<HistoryWindow>('hour');
  const [history, setHistory] = useState<MachineHistory | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const lastFetch = useRef(0);
  const pending = useRef<ReturnType<typeof setTimeout> | null>(null);
  const token = useRef(0);
  const machineKey = JSON.stringify(machine);

  const fetchNow = (w: HistoryWindow): void => {
    const mine = ++token.current;
    lastFetch.current = Date.now();
    machineHistory(machine.id, w).then(
      (h) => {
        if (mine !== token.current) return;
        setHistory(h);
        setError(undefined);
      },
      (err: unknown) => {
        if (mine === token.current) setError(errorText(err));
      },
    );
  };

  // A new window or machine: fetch at once.
  useEffect(() => {
    setHistory(undefined);
    fetchNow(win);
    return () => {
      if (pending.current) clearTimeout(pending.current);
      pending.current = null;
    };
  }, [machine.id, win]);

  // Each overview update of this machine (a new `machine` object): refresh, at most every 5 s.
  useEffect(() => {
    if (pending.current) return;
    const wait = Math.max(0, lastFetch.current + HISTORY_REFRESH_MS - Date.now());
    pending.current = setTimeout(() => {
      pending.current = null;
      fetchNow(win);
    }, wait);
  }, [machineKey]);

  const series = useMemo(() => {
    const s = history?.samples ?? [];
    return { times: s.map((x) => x.timeMs), rpo: s.map((x) => x.rpoSeconds), mbps: s.map((x) => x.bytesPerSecond / 1e6) };
  }, [history]);
  const span = win === 'hour' ? 'the last hour' : 'the last day';

  return (
    <section class="card">
      <div class="title-row">
        <h2>History</h2>
        <div class="toggle" role="group" aria-label="Chart window">
          <button type="button" aria-pressed={win === 'hour'} onClick={() => setWin('hour')}>
            Last hour
          </button>
          <button type="button" aria-pressed={win === 'day'} onClick={() => setWin('day')}>
            Last day
          </button>
        </div>
      </div>
      {error !== undefined && <p class="note note-error" role="alert">Could not load the history: {error}</p>}
      <div class="grid-2 charts">
        <Chart label="RPO chart" seriesName="RPO" times={series.times} values={series.rpo} format={formatSeconds} span={span} color="#1f5fbf" />
        <Chart label="Throughput chart" seriesName="Throughput" times={series.times} values={series.mbps} format={(v) => `${v < 10 ? v.toFixed(2) : v.toFixed(1)} MB/s`} span={span} color="#1b7f4b" />
      </div>
    </section>
  );
}

function Protection({ id }: { id: string }) {
  const p = useLoad(() => machineProtection(id), id);
  if (p.error instanceof ApiError && p.error.status === 503) return <p class="muted">Recovery is not available on this receiver.</p>;
  if (p.error !== undefined) return <LoadError error={p.error} what="the protection state" />;
  if (!p.data) return <Loading what="the protection state" />;
  const d = p.data;
  return (
    <p>
      <StateBadge state={d.state} />
      {d.state !== 'protected' && (
        <>
          {' '}on <span class="mono">{d.runsOn || '–'}</span>
          {d.jobId !== null && (
            <>
              {' '}by <a href={links.job(d.jobId)}>job {d.jobId}</a>
            </>
          )}
          {d.sinceMs > 0 && <> since {formatTime(d.sinceMs)}</>}
        </>
      )}
    </p>
  );
}

function RecentPoints({ id }: { id: string }) {
  const pts = useLoad(() => machinePoints(id, 20), id);
  return (
    <>
      {pts.error !== undefined ? (
        <LoadError error={pts.error} what="the points" />
      ) : !pts.data ? (
        <Loading what="points" />
      ) : pts.data.length === 0 ? (
        <p class="muted">No recovery points yet.</p>
      ) : (
        <div class="table-scroll short">
          <table>
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Kind</th>
                <th scope="col">Accuracy</th>
                <th scope="col">Volume</th>
                <th scope="col" class="num">Point</th>
              </tr>
            </thead>
            <tbody>
              {pts.data.map((p) => (
                <tr key={p.id}>
                  <td class="nowrap">{formatTime(p.timeUs / 1000)}</td>
                  <td>{p.kind}</td>
                  <td><StateBadge state={p.accuracy} />{p.damaged !== undefined && <span class="field-error"> damaged</span>}</td>
                  <td class="mono">{p.volumeId}</td>
                  <td class="num">{p.id}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <button type="button" class="btn-small" onClick={pts.reload}>
        Refresh points
      </button>
    </>
  );
}
