import { useState } from 'preact/hooks';
import { exportPoint } from '../api';
import type { ExportResult, GroupPoints, Machine, PointRow } from '../api-types';
import { formatBytes, formatTime } from '../format';
import { errorText } from './Errors';
import { StateBadge } from './StateBadge';

const MAX_ROUNDS = 100;

function ExportButton({ point, format }: { point: PointRow; format: 'raw' | 'vhd' }) {
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<ExportResult | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  return (
    <div class="export">
      <button
        type="button"
        class="btn-small"
        disabled={busy}
        aria-describedby={`point-${point.id}-label`}
        onClick={async () => {
          setBusy(true);
          setError(undefined);
          setResult(undefined);
          try {
            setResult(await exportPoint(point.id, format));
          } catch (err) {
            setError(errorText(err));
          } finally {
            setBusy(false);
          }
        }}
      >
        {busy ? 'Exporting…' : 'Export this point'}
      </button>
      {result && (
        <span class="export-result" role="status">
          Exported to <code>{result.file}</code> ({formatBytes(result.sizeBytes)}, {result.format})
        </span>
      )}
      {error !== undefined && (
        <span class="field-error" role="alert">
          {error}
        </span>
      )}
    </div>
  );
}

export function AccuracyLegend() {
  return (
    <dl class="legend">
      <div><dt><StateBadge state="exact" /></dt><dd>every write up to the cut</dd></div>
      <div><dt><StateBadge state="approximate" /></dt><dd>crash-consistent to within the capture's bound</dd></div>
      <div><dt><StateBadge state="none" /></dt><dd>cut during a resync: not usable</dd></div>
    </dl>
  );
}

/** A group's rounds and their per-volume points, newest first, each exportable (POST /points/:id/export). */
export function PointsTimeline({ rounds, machines }: { rounds: GroupPoints[]; machines: Machine[] }) {
  const [format, setFormat] = useState<'raw' | 'vhd'>('raw');
  const owner = new Map<string, string>();
  for (const m of machines) for (const v of m.volumes) owner.set(v.volumeId, m.name);
  const sorted = [...rounds].sort((a, b) => b.round.id - a.round.id).slice(0, MAX_ROUNDS);
  return (
    <>
      <div class="toolbar">
        <div class="field field-inline">
          <label for="export-format">Export format</label>
          <select id="export-format" value={format} onChange={(e) => setFormat(e.currentTarget.value === 'vhd' ? 'vhd' : 'raw')}>
            <option value="raw">raw image</option>
            <option value="vhd">VHD</option>
          </select>
        </div>
        <AccuracyLegend />
      </div>
      {sorted.length === 0 ? (
        <p class="muted">No group points yet.</p>
      ) : (
        <div class="table-scroll tall">
          <table class="timeline">
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Kind</th>
                <th scope="col" class="num">Round</th>
                <th scope="col">Points per volume</th>
              </tr>
            </thead>
            <tbody>
              {sorted.map(({ round, points }) => (
                <tr key={round.id} data-round={round.id}>
                  <td class="nowrap">{formatTime(round.startedMs)}</td>
                  <td>{round.app ? 'app' : 'crash'}</td>
                  <td class="num">
                    {round.id}
                    {round.state !== 'done' && (
                      <>
                        {' '}
                        <StateBadge state={round.state} />
                      </>
                    )}
                  </td>
                  <td>
                    {points.length === 0 ? (
                      <span class="muted">{round.reason || 'no points'}</span>
                    ) : (
                      <ul class="plain points">
                        {points.map((p) => (
                          <li key={p.id} data-point={p.id}>
                            <span id={`point-${p.id}-label`}>
                              {owner.get(p.volumeId) ?? ''} <span class="mono">{p.volumeId}</span> point {p.id}
                            </span>{' '}
                            <StateBadge state={p.accuracy} />
                            {p.damaged !== undefined && <span class="field-error"> damaged</span>} <ExportButton point={p} format={format} />
                          </li>
                        ))}
                      </ul>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}
