import { useState } from 'preact/hooks';
import { ApiError, setRecovery } from '../api';
import type { Machine, RecoveryProperties } from '../api-types';
import { errorText, OkNote } from './Errors';
import { Field, invalidProps } from './Field';

type Key = keyof RecoveryProperties;
const KEYS: Key[] = ['recoveredName', 'vcpus', 'memoryMiB', 'network', 'bootOrder'];

interface Draft {
  recoveredName: string;
  vcpus: string;
  memoryMiB: string;
  network: string;
  bootOrder: string;
}

function draftOf(r: RecoveryProperties): Draft {
  return { recoveredName: r.recoveredName, vcpus: String(r.vcpus), memoryMiB: String(r.memoryMiB), network: r.network, bootOrder: String(r.bootOrder) };
}

/** The field name the API gave, as one of ours ('recovery.vcpus' and 'vcpus' alike). */
function keyOf(field: string | undefined): Key | undefined {
  const last = field?.split('.').pop();
  return KEYS.find((k) => k === last);
}

/** PATCH /machines/:id/recovery with the changed properties; the API's refusal shows at its field. */
export function RecoveryForm({ machine, onSaved }: { machine: Machine; onSaved: (m: Machine) => void }) {
  const [draft, setDraft] = useState<Draft>(draftOf(machine.recovery));
  const [error, setError] = useState<{ key?: Key; message: string } | undefined>(undefined);
  const [saved, setSaved] = useState(false);
  const [busy, setBusy] = useState(false);
  const set = (k: Key, v: string): void => {
    setDraft({ ...draft, [k]: v });
    setSaved(false);
  };

  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    setError(undefined);
    setSaved(false);
    // Numbers are sent as typed (an empty or odd value is the API's to refuse, at its field).
    const num = (s: string): number => (s.trim() === '' ? Number.NaN : Number(s));
    const wanted: RecoveryProperties = {
      recoveredName: draft.recoveredName.trim(),
      vcpus: num(draft.vcpus),
      memoryMiB: num(draft.memoryMiB),
      network: draft.network.trim(),
      bootOrder: num(draft.bootOrder),
    };
    for (const k of ['vcpus', 'memoryMiB', 'bootOrder'] as const) {
      if (!Number.isFinite(wanted[k])) {
        setError({ key: k, message: 'Give a whole number.' });
        return;
      }
    }
    const changes: Partial<RecoveryProperties> = {};
    for (const k of KEYS) if (wanted[k] !== machine.recovery[k]) (changes as Record<Key, unknown>)[k] = wanted[k];
    if (Object.keys(changes).length === 0) {
      setSaved(true);
      return;
    }
    setBusy(true);
    try {
      const m = await setRecovery(machine.id, changes);
      setDraft(draftOf(m.recovery));
      setSaved(true);
      onSaved(m);
    } catch (err) {
      setError({ key: err instanceof ApiError ? keyOf(err.field) : undefined, message: errorText(err) });
    } finally {
      setBusy(false);
    }
  };

  const errFor = (k: Key): string | undefined => (error?.key === k ? error.message : undefined);
  const input = (k: Key, label: string, type: 'text' | 'number', hint?: string, extra: Record<string, string | number> = {}) => {
    const id = `rec-${k}`;
    return (
      <Field id={id} label={label} error={errFor(k)} hint={hint}>
        <input id={id} type={type} value={draft[k]} onInput={(e) => set(k, e.currentTarget.value)} {...extra} {...invalidProps(id, errFor(k))} />
      </Field>
    );
  };

  return (
    <form onSubmit={submit} class="form-grid">
      {input('recoveredName', 'Recovered name', 'text')}
      {input('vcpus', 'vCPUs', 'number', undefined, { min: 1, step: 1 })}
      {input('memoryMiB', 'Memory MiB', 'number', undefined, { min: 1, step: 1 })}
      {input('network', 'Network', 'text', "Empty: the plan's isolated network.")}
      {input('bootOrder', 'Boot order', 'number', 'Lower boots earlier.', { step: 1 })}
      {error !== undefined && error.key === undefined && (
        <p class="note note-error span-all" role="alert">
          {error.message}
        </p>
      )}
      <div class="actions span-all">
        <button type="submit" class="btn-primary" disabled={busy}>
          Save
        </button>
        {saved && <OkNote>Recovery properties saved.</OkNote>}
      </div>
    </form>
  );
}
