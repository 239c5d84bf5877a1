import type { ComponentChildren } from 'preact';

/** The attributes an input gets when the API named it as the field at fault. */
export function invalidProps(id: string, error: string | undefined): Record<string, string> {
  return error === undefined ? {} : { 'aria-invalid': 'true', 'aria-describedby': `${id}-error` };
}

/** A labelled form row; the error (the API's message) sits under the input, announced. */
export function Field({ id, label, error, hint, children }: { id: string; label: string; error?: string; hint?: string; children: ComponentChildren }) {
  return (
    <div class={`field${error !== undefined ? ' field-invalid' : ''}`}>
      <label for={id}>{label}</label>
      {children}
      {hint !== undefined && <span class="hint">{hint}</span>}
      {error !== undefined && (
        <span class="field-error" id={`${id}-error`} role="alert">
          {error}
        </span>
      )}
    </div>
  );
}

/** A checkbox with its label after it. */
export function CheckField({ id, label, checked, onChange, error }: { id: string; label: string; checked: boolean; onChange: (v: boolean) => void; error?: string }) {
  return (
    <div class={`field field-check${error !== undefined ? ' field-invalid' : ''}`}>
      <input id={id} type="checkbox" checked={checked} onChange={(e) => onChange((e.currentTarget as HTMLInputElement).checked)} {...invalidProps(id, error)} />
      <label for={id}>{label}</label>
      {error !== undefined && (
        <span class="field-error" id={`${id}-error`} role="alert">
          {error}
        </span>
      )}
    </div>
  );
}
