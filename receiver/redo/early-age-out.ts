// Early age-out (pure): under redo the retained spool records ARE the retention, so a spool
// file system that fills stays full unless the oldest points go early. When free space falls
// below the floor (or a write found none), the receiver advances the replica past the oldest
// spool segments, oldest first, until enough would be freed, before it holds or refuses the
// agent. Nothing acknowledged is lost by it: the advance writes those versions into the
// replica; only the points older than the new base stop being exportable.

/** One spool segment the volume holds, oldest first (the last one is the active one). */
export interface HeldSegment {
  firstSeq: number;
  bytes: number;
}

export interface AgeOutInput {
  /** The spool's segments, oldest first; the last is being appended to and is never freed. */
  segments: readonly HeldSegment[];
  /** The replica's base: points before it are gone already. */
  baseSeq: number;
  /** The furthest the base may move: applied (indexed) and checkpointed. */
  limitSeq: number;
  /** Bytes the space needs freed (the floor's shortfall plus a margin). */
  wantBytes: number;
}

export interface AgeOutPlan {
  /** Advance the base to this seq. */
  toSeq: number;
  /** Spool bytes the advance lets go (whole segments). */
  freedBytes: number;
  /** False when even everything the limit allows frees less than wanted. */
  enough: boolean;
}

/**
 * The smallest advance that frees `wantBytes` of spool segments (each segment is freed once the
 * base reaches the seq before the next segment's first), or the largest one the limit allows
 * when no advance frees that much. Undefined when no segment can be freed by an advance.
 */
export function planEarlyAgeOut(input: AgeOutInput): AgeOutPlan | undefined {
  if (input.wantBytes <= 0) return undefined;
  let freed = 0;
  let toSeq = input.baseSeq;
  for (let i = 0; i + 1 < input.segments.length; i++) {
    const through = input.segments[i + 1].firstSeq - 1;
    if (through > input.limitSeq) break;
    freed += input.segments[i].bytes;
    toSeq = Math.max(toSeq, through);
    if (freed >= input.wantBytes) break;
  }
  if (toSeq <= input.baseSeq) return undefined;
  return { toSeq, freedBytes: freed, enough: freed >= input.wantBytes };
}

/**
 * Free bytes an early age-out aims for on a file system: twice the floor (the hold ends at one
 * and a half times it), and at least a twentieth of the file system, so that a stream that
 * keeps the disk near full does not make the receiver age out one segment per write.
 */
export function ageOutTargetFree(floorBytes: number, totalBytes: number): number {
  return Math.max(2 * floorBytes, totalBytes / 20);
}
