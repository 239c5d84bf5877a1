import type { ByteRange, ResyncNeed } from '../types';

/** What the previous agent left about a volume under ebpf capture (ebpf-state.json). */
export interface SavedEbpfState {
  /** The tracker instance that was tracking the volume. */
  instanceId: string;
  /** The agent stopped cleanly and saved everything it had not sent in `pending`. */
  clean: boolean;
  /** Ranges written but not durable at the receiver when it stopped. */
  pending: ByteRange[];
}

export interface EbpfAttachFacts {
  /** What the scan table alone asks for (it describes the receiver's copy, or does not). */
  table: ResyncNeed;
  /** The scan table could not describe the receiver's copy. */
  tableStale: boolean;
  saved: SavedEbpfState | undefined;
  instanceId: string;
  /** The tracker was already tracking the disk, with the same geometry, before this attach. */
  trackedBefore: boolean;
}

export interface EbpfAttachPlan {
  need: ResyncNeed;
  /** A delta resync reads these ranges only. */
  delta?: ByteRange[];
  /** Ranges to read back once any resync is done (the saved unsent ranges). */
  dirty: ByteRange[];
}

/**
 * How a volume under ebpf capture continues after an agent (re)start. Nothing was missed only
 * when the same tracker instance kept tracking the disk since an agent stopped cleanly with the
 * volume: then the saved unsent ranges are the delta. Anything else may have missed writes and
 * compares the whole volume with the receiver.
 */
export function planEbpfAttach(f: EbpfAttachFacts): EbpfAttachPlan {
  const compare = (reason: string): EbpfAttachPlan => ({ need: { kind: 'hash-compare', reason }, dirty: [] });
  if (f.tableStale) return { need: f.table, dirty: [] };
  if (!f.saved) return compare('first attach with ebpf capture: writes before the tracker watched the volume are unknown');
  if (f.saved.instanceId !== f.instanceId) {
    return compare(`the write tracker was reloaded since the volume was last captured (instance ${f.saved.instanceId}, now ${f.instanceId}: a reboot or an unload), so writes in between were not tracked`);
  }
  if (!f.trackedBefore) return compare('the write tracker was not tracking the disk any more (untracked or its geometry changed)');
  if (!f.saved.clean) return compare('the previous agent stopped without saving its unsent ranges (a crash or a kill)');
  const pending = f.saved.pending;
  const bytes = pending.reduce((n, r) => n + r.length, 0);
  if (f.table.kind === 'full' || f.table.kind === 'hash-compare') return { need: f.table, dirty: pending };
  if (f.table.kind === 'delta' || pending.length > 0) {
    return { need: { kind: 'delta', reason: `the previous agent stopped cleanly with ${bytes} bytes not sent yet; the tracker kept tracking` }, delta: pending, dirty: [] };
  }
  return { need: { kind: 'none', reason: 'the tracker kept tracking since the previous agent stopped cleanly' }, dirty: [] };
}
