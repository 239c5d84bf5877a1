import { useState } from 'preact/hooks';
import { ApiError, createOperator, listOperators } from '../api';
import { errorText, LoadError, Loading, OkNote } from '../components/Errors';
import { Field, invalidProps } from '../components/Field';
import { formatTime } from '../format';
import { useLoad, useTitle } from '../hooks';

/** GET /operators, POST /operators {name, password}. */
export function OperatorsPage({ self }: { self: string }) {
  useTitle('Operators');
  const ops = useLoad(listOperators, 'operators');
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [fieldError, setFieldError] = useState<{ field: 'name' | 'password' | 'form'; message: string } | undefined>(undefined);
  const [created, setCreated] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    setBusy(true);
    setFieldError(undefined);
    setCreated(undefined);
    try {
      const op = await createOperator(name.trim(), password);
      setCreated(op.name);
      setName('');
      setPassword('');
      ops.reload();
    } catch (err) {
      const field = err instanceof ApiError && (err.field === 'name' || err.field === 'password') ? err.field : 'form';
      setFieldError({ field, message: errorText(err) });
    } finally {
      setBusy(false);
    }
  };
  const errFor = (f: 'name' | 'password'): string | undefined => (fieldError?.field === f ? fieldError.message : undefined);

  return (
    <>
      <h1>Operators</h1>
      <div class="grid-2">
        <section class="card">
          <h2>Accounts</h2>
          {ops.error !== undefined ? (
            <LoadError error={ops.error} what="the operators" />
          ) : ops.data === undefined ? (
            <Loading what="operators" />
          ) : (
            <table>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Created</th>
                </tr>
              </thead>
              <tbody>
                {ops.data.map((o) => (
                  <tr key={o.name}>
                    <th scope="row">
                      {o.name}
                      {o.name === self && <span class="muted"> (you)</span>}
                    </th>
                    <td>{formatTime(o.createdMs)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </section>
        <section class="card">
          <h2>Create an operator</h2>
          <form onSubmit={submit}>
            <Field id="op-name" label="Name" error={errFor('name')} hint="Lower-case letters, digits, '.', '_' or '-', starting with a letter.">
              <input id="op-name" value={name} autoComplete="off" required onInput={(e) => setName(e.currentTarget.value)} {...invalidProps('op-name', errFor('name'))} />
            </Field>
            <Field id="op-password" label="Password" error={errFor('password')} hint="At least 12 characters.">
              <input id="op-password" type="password" autoComplete="new-password" value={password} required onInput={(e) => setPassword(e.currentTarget.value)} {...invalidProps('op-password', errFor('password'))} />
            </Field>
            {fieldError?.field === 'form' && (
              <p class="note note-error" role="alert">
                {fieldError.message}
              </p>
            )}
            {created !== undefined && <OkNote>Operator {created} created.</OkNote>}
            <div class="actions">
              <button type="submit" class="btn-primary" disabled={busy}>
                Create operator
              </button>
            </div>
          </form>
        </section>
      </div>
    </>
  );
}
