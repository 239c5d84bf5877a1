import { useState } from 'preact/hooks';
import { ApiError, setPolicy } from '../api';
import type { Group, GroupPolicy } from '../api-types';
import { errorText, OkNote } from './Errors';
import { CheckField, Field, invalidProps } from './Field';

type Key = keyof GroupPolicy;
type NumKey = Exclude<Key, 'multiMachineConsistency'>;

/** Each duration field: the unit the form shows and its size in ms. */
const UNITS: Record<NumKey, { label: string; ms: number; step: string }> = {
  rpoThresholdMs: { label: 'RPO threshold (seconds)', ms: 1000, step: 'any' },
  retentionMs: { label: 'Retention (hours)', ms: 3_600_000, step: 'any' },
  crashConsistentIntervalMs: { label: 'Crash-consistent interval (seconds)', ms: 1000, step: 'any' },
  appConsistentIntervalMs: { label: 'App-consistent interval (minutes, 0 = off)', ms: 60_000, step: 'any' },
};
const NUM_KEYS = Object.keys(UNITS) as NumKey[];

type Draft = Record<NumKey, string> & { multiMachineConsistency: boolean };

function draftOf(p: GroupPolicy): Draft {
  const d = { multiMachineConsistency: p.multiMachineConsistency } as Draft;
  for (const k of NUM_KEYS) d[k] = String(Number((p[k] / UNITS[k].ms).toFixed(3)));
  return d;
}

const UNIT_WORDS: Record<number, string> = { 1000: 's', 60_000: 'min', 3_600_000: 'h' };

/** The API speaks milliseconds ("rpoThresholdMs must be >= 1000"); the form speaks its field's unit ("at least 1 s"). */
export function inFieldUnits(message: string, k: NumKey): string {
  const unit = UNITS[k];
  const shown = (ms: string): string => `${Number((Number(ms) / unit.ms).toFixed(3))} ${UNIT_WORDS[unit.ms]}`;
  const text = message
    .replace(new RegExp(`^(?:[a-z]+\\.)?${k}\\s*`), '')
    .replace(/>=\s*(\d+)/g, (_m, n: string) => `at least ${shown(n)}`)
    .replace(/<=\s*(\d+)/g, (_m, n: string) => `at most ${shown(n)}`)
    .replace(/(\d+)\s*ms\b/g, (_m, n: string) => shown(n));
  return `${unit.label.replace(/ \(.*$/, '')} ${text}`;
}

function keyOf(field: string | undefined): Key | undefined {
  const last = field?.split('.').pop();
  return last === 'multiMachineConsistency' ? last : NUM_KEYS.find((k) => k === last);
}

/**
 * PATCH /groups/:id/policy. Durations are shown in seconds, hours or minutes and sent in ms.
 * A refusal shows at the field it names and keeps what the operator typed; nothing is saved.
 */
export function PolicyForm({ group, onSaved }: { group: Group; onSaved: (g: Group) => void }) {
  const [draft, setDraft] = useState<Draft>(draftOf(group.policy));
  const [error, setError] = useState<{ key?: Key; message: string } | undefined>(undefined);
  const [savedRevision, setSavedRevision] = useState<number | undefined>(undefined);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    setError(undefined);
    setSavedRevision(undefined);
    const policy: Partial<GroupPolicy> = { multiMachineConsistency: draft.multiMachineConsistency };
    for (const k of NUM_KEYS) {
      const text = draft[k].trim();
      const n = Number(text);
      if (text === '' || !Number.isFinite(n)) {
        setError({ key: k, message: 'Give a number.' });
        return;
      }
      policy[k] = Math.round(n * UNITS[k].ms);
    }
    setBusy(true);
    try {
      const g = await setPolicy(group.id, policy);
      setDraft(draftOf(g.policy));
      setSavedRevision(g.revision);
      onSaved(g);
    } catch (err) {
      const key = err instanceof ApiError ? keyOf(err.field) : undefined;
      const message = errorText(err);
      setError({ key, message: key !== undefined && key !== 'multiMachineConsistency' ? inFieldUnits(message, key) : message });
    } finally {
      setBusy(false);
    }
  };

  const errFor = (k: Key): string | undefined => (error?.key === k ? error.message : undefined);
  return (
    <form onSubmit={submit} class="form-grid" noValidate>
      {NUM_KEYS.map((k) => {
        const id = `policy-${k}`;
        return (
          <Field key={k} id={id} label={UNITS[k].label} error={errFor(k)}>
            <input
              id={id}
              type="number"
              step={UNITS[k].step}
              value={draft[k]}
              onInput={(e) => {
                setDraft({ ...draft, [k]: e.currentTarget.value });
                setSavedRevision(undefined);
              }}
              {...invalidProps(id, errFor(k))}
            />
          </Field>
        );
      })}
      <div class="span-all">
        <CheckField
          id="policy-multiMachineConsistency"
          label="Multi-machine consistency"
          checked={draft.multiMachineConsistency}
          error={errFor('multiMachineConsistency')}
          onChange={(v) => {
            setDraft({ ...draft, multiMachineConsistency: v });
            setSavedRevision(undefined);
          }}
        />
      </div>
      {error !== undefined && error.key === undefined && (
        <p class="note note-error span-all" role="alert">
          {error.message}
        </p>
      )}
      <div class="actions span-all">
        <button type="submit" class="btn-primary" disabled={busy}>
          Save policy
        </button>
        {savedRevision !== undefined && <OkNote>Policy saved (revision {savedRevision})</OkNote>}
      </div>
    </form>
  );
}
