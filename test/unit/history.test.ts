import { describe, expect, it } from 'vitest';
import { DAY_STEP_MS, HistoryRecorder, HOUR_STEP_MS, ThroughputMeter } from '../../control/history';
import type { ControlEvent } from '../../control/model';
import { openAlerts } from '../../control/open-alerts';

describe('ThroughputMeter', () => {
  it('rates a counter over its span and starts over when the counter goes back', () => {
    const m = new ThroughputMeter(5000);
    expect(m.rate('v')).toBe(0);
    m.note('v', 0, 0);
    m.note('v', 1000, 10_000_000);
    expect(m.rate('v')).toBe(10_000_000);
    for (let t = 2000; t <= 10_000; t += 1000) m.note('v', t, 10_000_000);
    // Idle for longer than the span: the rate falls to 0.
    expect(m.rate('v')).toBe(0);
    m.note('v', 11_000, 5);
    expect(m.rate('v')).toBe(0);
    m.note('v', 12_000, 1005);
    expect(m.rate('v')).toBe(1000);
  });
});

describe('HistoryRecorder', () => {
  it('keeps one sample per step for the hour and the worst RPO and mean rate per day bucket', () => {
    const h = new HistoryRecorder();
    const t0 = 10 * DAY_STEP_MS;
    for (let i = 0; i < 120; i++) {
      // Called every second: only every HOUR_STEP_MS becomes a sample.
      for (let s = 0; s < HOUR_STEP_MS; s += 1000) h.record(t0 + i * HOUR_STEP_MS + s, [{ id: 'm1', rpoSeconds: i === 10 ? 42 : 1, bytesPerSecond: i < 60 ? 100 : 300 }]);
    }
    const hour = h.history('m1', 'hour');
    expect(hour.stepMs).toBe(HOUR_STEP_MS);
    expect(hour.samples).toHaveLength(120);
    expect(hour.samples[10]).toEqual({ timeMs: t0 + 10 * HOUR_STEP_MS, rpoSeconds: 42, bytesPerSecond: 100 });
    const day = h.history('m1', 'day');
    // 120 samples of 5 s = 10 min: two 5-min buckets.
    expect(day.samples).toEqual([
      { timeMs: t0, rpoSeconds: 42, bytesPerSecond: 100 },
      { timeMs: t0 + DAY_STEP_MS, rpoSeconds: 1, bytesPerSecond: 300 },
    ]);
    expect(h.history('nobody', 'hour').samples).toEqual([]);
  });

  it('drops a machine that is gone', () => {
    const h = new HistoryRecorder();
    h.record(0, [{ id: 'a', rpoSeconds: 1, bytesPerSecond: 0 }]);
    h.record(HOUR_STEP_MS, []);
    expect(h.history('a', 'hour').samples).toEqual([]);
  });
});

describe('openAlerts', () => {
  let id = 0;
  const ev = (kind: string, subjectId: string, severity: ControlEvent['severity'], acknowledged = false): ControlEvent => ({
    id: ++id,
    timeMs: id,
    severity,
    kind,
    subjectKind: 'machine',
    subjectId,
    text: kind,
    acknowledged,
  });

  it('closes a latched alert when its condition ends, keeps unlatched ones until acknowledged', () => {
    const events = [
      ev('machine-disconnected', 'm1', 'error'),
      ev('rpo-exceeded', 'v1', 'warning'),
      ev('round-aborted', 'g1', 'warning'),
      ev('round-aborted', 'g1', 'warning', true),
      ev('machine-reconnected', 'm1', 'info'),
      ev('resync-started', 'v2', 'info'),
    ];
    expect(openAlerts(events).map((e) => `${e.kind}:${e.subjectId}`)).toEqual(['round-aborted:g1', 'rpo-exceeded:v1']);
    expect(openAlerts([...events, ev('rpo-recovered', 'v1', 'info'), ev('machine-disconnected', 'm1', 'error')]).map((e) => e.kind)).toEqual(['machine-disconnected', 'round-aborted']);
  });
});
