/** What kind of file at rest a piece of damage was found in. */
export type DamageKind = 'spool' | 'journal' | 'checkpoint' | 'replica' | 'catalog' | 'sums';

/**
 * Damage found in a file at rest: where it is (file and byte offset in it) and, when known,
 * which seqs or which volume range it concerns. Reported to the operator as it is.
 */
export interface StorageDamage {
  kind: DamageKind;
  file: string;
  /** Byte offset in `file`. */
  offset: number;
  /** Bytes of `file` that are damaged. */
  length: number;
  /** The seqs the damaged data held, when its header survived. */
  seqFrom?: number;
  seqTo?: number;
  /** The volume range the damaged data concerns, when known. */
  volumeOffset?: number;
  volumeLength?: number;
  detail: string;
}

export function describeDamage(d: StorageDamage): string {
  const seqs = d.seqFrom !== undefined ? `, seqs ${d.seqFrom}..${d.seqTo ?? d.seqFrom}` : '';
  const range = d.volumeOffset !== undefined ? `, volume bytes ${d.volumeOffset}+${d.volumeLength ?? 0}` : '';
  return `${d.kind} ${d.file} at byte ${d.offset} (${d.length} bytes${seqs}${range}): ${d.detail}`;
}
