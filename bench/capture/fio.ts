// fio runs in the benchmark guest: the job lines and the figures read from fio's JSON output.

export interface FioJob {
  name: string;
  rw: 'randwrite' | 'write';
  bs: string;
  iodepth: number;
}

export const JOBS: readonly FioJob[] = [
  { name: 'rand4k', rw: 'randwrite', bs: '4k', iodepth: 16 },
  { name: 'seq1m', rw: 'write', bs: '1M', iodepth: 16 },
];

export interface FioFigures {
  iops: number;
  bytesPerSecond: number;
  p99LatencyUs: number;
}

/**
 * The fio command line (as one shell line) for `job` on `device`, `seconds` long, or, with
 * `ioSizeMiB`, until that much has been written (for a device that cannot take a long run).
 */
export function fioCommand(job: FioJob, device: string, seconds: number, ioSizeMiB?: number): string {
  const length = ioSizeMiB === undefined ? ['--time_based', `--runtime=${seconds}`, '--ramp_time=1'] : [`--io_size=${ioSizeMiB}m`];
  return [
    'fio',
    `--name=${job.name}`,
    `--filename=${device}`,
    `--rw=${job.rw}`,
    `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`,
    '--ioengine=libaio',
    '--direct=1',
    ...length,
    '--randrepeat=0',
    '--norandommap',
    '--refill_buffers',
    '--output-format=json',
  ].join(' ');
}

interface FioJson {
  jobs?: Array<{ write?: { iops?: number; bw_bytes?: number; clat_ns?: { percentile?: Record<string, number> } } }>;
}

/** IOPS, throughput and p99 completion latency from fio's JSON output. */
export function parseFio(text: string): FioFigures {
  let doc: FioJson;
  try {
    doc = JSON.parse(text.slice(text.indexOf('{'))) as FioJson;
  } catch {
    throw new Error(`fio printed no JSON: ${text.slice(0, 200)}`);
  }
  const w = doc.jobs?.[0]?.write;
  if (!w || w.iops === undefined || w.bw_bytes === undefined) throw new Error('fio JSON has no write figures');
  const p99 = w.clat_ns?.percentile?.['99.000000'] ?? 0;
  return { iops: w.iops, bytesPerSecond: w.bw_bytes, p99LatencyUs: p99 / 1000 };
}
