import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export interface ChartProps {
  /** The figure's accessible name, e.g. "RPO chart". */
  label: string;
  /** The series' name in the legend, e.g. "RPO (s)". */
  seriesName: string;
  /** Times in ms, oldest first. */
  times: number[];
  values: number[];
  format: (v: number) => string;
  /** How the caption names the span, e.g. "the last hour". */
  span: string;
  color: string;
  height?: number;
}

/**
 * A uPlot line chart in a <figure> with a text summary in the caption (latest and peak value)
 * and data-samples: how many samples it draws.
 */
export function Chart({ label, seriesName, times, values, format, span, color, height = 170 }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const fmt = useRef(format);
  fmt.current = format;

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [
        { stroke: '#3d4451', grid: { stroke: '#e4e7ec' }, ticks: { stroke: '#c9ced6' } },
        { stroke: '#3d4451', grid: { stroke: '#e4e7ec' }, ticks: { stroke: '#c9ced6' }, size: 84, values: (_u, splits) => splits.map((v) => fmt.current(v)) },
      ],
      series: [{}, { label: seriesName, stroke: color, width: 2, fill: `${color}22`, points: { show: false } }],
    };
    const u = new uPlot(opts, [[], []], el);
    plot.current = u;
    const ro = new ResizeObserver(() => u.setSize({ width: Math.max(200, el.clientWidth), height }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
      plot.current = null;
    };
  }, [seriesName, color, height]);

  useEffect(() => {
    plot.current?.setData([times.map((t) => t / 1000), values]);
  }, [times, values, seriesName, color, height]);

  const latest = values.length > 0 ? values[values.length - 1] : undefined;
  const peak = values.length > 0 ? Math.max(...values) : undefined;
  return (
    <figure class="chart" aria-label={label} data-samples={String(values.length)} data-peak={String(peak ?? 0)} data-latest={String(latest ?? 0)}>
      <div class="chart-plot" ref={box} aria-hidden="true" />
      <figcaption>
        <strong>{seriesName}</strong>:{' '}
        {latest === undefined || peak === undefined
          ? `no samples over ${span} yet.`
          : `latest ${format(latest)}, peak ${format(peak)} over ${span} (${values.length} samples).`}
      </figcaption>
    </figure>
  );
}
