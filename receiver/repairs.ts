import { log } from '../common/log';
import { nowUs } from '../common/time';
import type { Catalog, DamageRow, RepairRow } from './catalog';
import { describeDamage, StorageDamage } from './storage/damage';

/** A RepairDone whose seqs are not applied yet: the repair counts once they are. */
interface DoneWaiting {
  repairId: number;
  throughSeq: number;
}

/** Ranges listed in one repair request, at most (more: the whole volume is compared). */
const MAX_RANGES = 256;

/**
 * Damage found in volumes' files and the repairs asked of their agents. Damage is recorded in
 * the catalog (once per place); damage the source can heal (replica blocks, lost change sets)
 * gets a repair request, which the agent answers with RepairDone; the repair counts once the
 * replica has applied through the seq it names.
 */
export class RepairDesk {
  private readonly waiting = new Map<string, DoneWaiting[]>();

  constructor(
    private readonly catalog: Catalog,
    private readonly send: (volumeId: string, repair: RepairRow) => void,
  ) {}

  /** Records damage; returns the rows that are new (already known places are not repeated). */
  record(volumeId: string, damage: readonly StorageDamage[]): DamageRow[] {
    const fresh: DamageRow[] = [];
    for (const d of damage) {
      const row = this.catalog.addDamage(volumeId, d, nowUs());
      if (!row) continue;
      fresh.push(row);
      log.error('damage found', { volume: volumeId, kind: d.kind, file: d.file, offset: d.offset, length: d.length, seqFrom: d.seqFrom, seqTo: d.seqTo, detail: describeDamage(d) });
    }
    return fresh;
  }

  /**
   * Asks the agent to send the ranges again where they differ (an empty list: the whole
   * volume). A volume with a pending whole-volume repair needs no other.
   */
  request(volumeId: string, reason: string, ranges: Array<{ offset: number; length: number }>, damageIds: number[]): RepairRow {
    const pending = this.catalog.repairs(volumeId, 'pending');
    const whole = pending.find((r) => r.ranges.length === 0);
    if (whole) {
      this.catalog.linkDamage(damageIds, whole.id);
      return whole;
    }
    const merged = ranges.length === 0 || ranges.length > MAX_RANGES ? [] : ranges;
    const repair = this.catalog.addRepair(volumeId, reason, merged, nowUs());
    this.catalog.linkDamage(damageIds, repair.id);
    log.warn('repair requested from the agent', { volume: volumeId, repair: repair.id, reason, ranges: merged.length === 0 ? 'whole volume' : merged.length });
    this.send(volumeId, repair);
    return repair;
  }

  pending(volumeId: string): RepairRow[] {
    return this.catalog.repairs(volumeId, 'pending');
  }

  /** The agent put every block of the repair in its stream through `throughSeq`. */
  noteDone(volumeId: string, repairId: number, throughSeq: number, appliedSeq: number): boolean {
    const repair = this.catalog.repairs(volumeId, 'pending').find((r) => r.id === repairId);
    if (!repair) return false;
    const list = this.waiting.get(volumeId) ?? [];
    if (!list.some((w) => w.repairId === repairId)) list.push({ repairId, throughSeq });
    this.waiting.set(volumeId, list);
    this.settle(volumeId, appliedSeq);
    return true;
  }

  /** Completes the repairs whose seqs are applied now. */
  settle(volumeId: string, appliedSeq: number): void {
    const list = this.waiting.get(volumeId);
    if (!list) return;
    const ready = list.filter((w) => w.throughSeq <= appliedSeq);
    if (ready.length === 0) return;
    for (const w of ready) {
      this.catalog.completeRepair(w.repairId, w.throughSeq, nowUs());
      log.info('repair applied: the volume is whole again', { volume: volumeId, repair: w.repairId, throughSeq: w.throughSeq });
    }
    const left = list.filter((w) => w.throughSeq > appliedSeq);
    if (left.length > 0) this.waiting.set(volumeId, left);
    else this.waiting.delete(volumeId);
  }

  /**
   * Spool damage that apply crossed with the seqs going on after it without a gap: an append
   * that never reached the disk (a crash after its write failed), whose change sets the agent
   * sent again. Nothing is lost, so nothing is asked of the agent.
   */
  resolveHarmless(volumeId: string, stretches: ReadonlyArray<{ file: string; offset: number }>, throughSeq: number): void {
    const n = this.catalog.resolveSpoolDamage(volumeId, stretches, throughSeq);
    if (n > 0) log.info('spool damage held nothing the replica needs: the seqs go on after it', { volume: volumeId, places: n, throughSeq });
  }

  /**
   * Asks for the repair of replica damage that another process (`ferry receiver verify`)
   * recorded and nobody asked for yet.
   */
  requestRecorded(volumeId: string): void {
    const rows = this.catalog.damage(volumeId).filter((d) => d.state === 'open' && d.kind === 'replica' && d.repairId === undefined && d.volumeOffset !== undefined);
    if (rows.length === 0) return;
    this.request(
      volumeId,
      'replica blocks do not match their checksums (found by verify)',
      rows.map((d) => ({ offset: d.volumeOffset as number, length: d.volumeLength ?? d.length })),
      rows.map((d) => d.id),
    );
  }

  openDamage(volumeId?: string): DamageRow[] {
    return this.catalog.damage(volumeId).filter((d) => d.state === 'open');
  }
}
