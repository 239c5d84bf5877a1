// Per-host outcomes of a push install and how they are printed.

/** A per-host failure with a one-line reason for the operator (never a stack trace). */
export class PushFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PushFailure';
  }
}

export interface HostResult {
  label: string;
  ok: boolean;
  /** "installed agent 0.1.0 ..." or the failure reason. */
  detail: string;
  seconds: number;
}

export function failureReason(err: unknown): string {
  if (err instanceof PushFailure) return err.message;
  if (err instanceof Error) return `unexpected error: ${err.message}`;
  return `unexpected error: ${String(err)}`;
}

/** The closing table: one line per host, `ok` or `failed: reason`. */
export function formatResults(results: HostResult[]): string {
  const width = Math.max(4, ...results.map((r) => r.label.length));
  const lines = results.map((r) => `${r.label.padEnd(width)}  ${r.ok ? 'ok' : 'failed'}: ${r.detail} (${r.seconds.toFixed(1)}s)`);
  const failed = results.filter((r) => !r.ok).length;
  lines.push(`${results.length - failed} of ${results.length} host(s) installed${failed > 0 ? `, ${failed} failed` : ''}`);
  return `${lines.join('\n')}\n`;
}

/** Runs tasks with at most `limit` at a time, in input order of start. */
export async function runLimited<T, R>(items: T[], limit: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await task(items[index]);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return results;
}
