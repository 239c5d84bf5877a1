/**
 * The "plain Debian server" of the boot-protection test (built by server-image.sh from
 * debian-image.sh's disk, cached): the same bootable Debian 12, grown, with dkms, gcc, make and
 * the headers of its own kernel, and a test-only step runner (see server-image.sh's header).
 *
 *   const img = await prepareServerImage();   // builds once (a minute or two), then reuses the cache
 *   await cloneImage(img.path, disk);          // never boot the cached image itself
 *
 * Needs root (loop devices, chroot).
 */
import * as path from 'node:path';
import { runCommand } from '../lab';
import { ImageError, parseImageInfo, type DebianImage } from './image';

export const SERVER_IMAGE_SCRIPT = path.join(__dirname, 'server-image.sh');
/** The label of the step disk the guest's ferry-step.service runs step.sh from. */
export const STEP_LABEL = 'FERRYSTEP';

let preparing: Promise<DebianImage> | undefined;

/** Builds the server image once (or finds it in the cache) and describes it. Once per process. */
export function prepareServerImage(): Promise<DebianImage> {
  preparing ??= (async () => {
    const r = await runCommand('bash', [SERVER_IMAGE_SCRIPT]);
    if (r.code !== 0) {
      throw new ImageError(`server-image.sh failed (exit ${r.code}):\n${r.stderr.split('\n').slice(-40).join('\n')}`);
    }
    return parseImageInfo(r.stdout);
  })();
  preparing.catch(() => (preparing = undefined));
  return preparing;
}

/** What the step runner reported on the second serial port. */
export interface StepReport {
  /** Seconds from kernel start to the runner's start (/proc/uptime), or null before it started. */
  uptimeAtStart: number | null;
  /** step.sh's exit code, or null while it runs. */
  rc: number | null;
  /** The step's own output (between the start and rc lines). */
  output: string;
}

/** Parses the runner's output on ttyS1 (pure). */
export function parseStepLog(log: string): StepReport {
  const text = log.replace(/\r/g, '');
  const start = /^FERRY-STEP start uptime=([0-9.]+)$/m.exec(text);
  const rc = /^FERRY-STEP rc=(\d+)/m.exec(text);
  const from = start ? start.index + start[0].length + 1 : 0;
  const to = rc ? rc.index : text.length;
  return {
    uptimeAtStart: start ? Number(start[1]) : null,
    rc: rc ? Number(rc[1]) : null,
    output: text.slice(from, Math.max(from, to)),
  };
}

/** The `KEY=value` lines a step printed as `FERRY-FACT KEY=value` (pure). */
export function stepFacts(output: string): Map<string, string> {
  const facts = new Map<string, string>();
  for (const m of output.matchAll(/^FERRY-FACT ([A-Za-z0-9_.-]+)=(.*)$/gm)) facts.set(m[1], m[2]);
  return facts;
}
