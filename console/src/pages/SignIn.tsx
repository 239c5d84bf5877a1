import { useState } from 'preact/hooks';
import { ApiError, signIn } from '../api';
import type { Session } from '../api-types';
import { errorText } from '../components/Errors';
import { useTitle } from '../hooks';

/** POST /session; a 401 is a wrong name or password, a 429 a lockout. */
export function SignInPage({ next, ended, onSignedIn }: { next: string; ended: boolean; onSignedIn: (s: Session, next: string) => void }) {
  useTitle('Sign in');
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event): Promise<void> => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const s = await signIn(name.trim(), password);
      onSignedIn(s, next);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) setError(`Wrong operator name or password. ${err.message === 'wrong operator name or password' ? '' : err.message}`.trim());
      else if (err instanceof ApiError && err.status === 429) setError(`Too many failed attempts: ${err.message}`);
      else setError(errorText(err));
      setPassword('');
    } finally {
      setBusy(false);
    }
  };

  return (
    <section class="signin">
      <h1>Sign in</h1>
      {ended && !error && (
        <p class="note note-warn" role="alert">
          Your session has ended. Sign in again.
        </p>
      )}
      <form onSubmit={submit} class="card form-narrow">
        <div class="field">
          <label for="signin-name">Operator</label>
          <input id="signin-name" name="username" autoComplete="username" value={name} required onInput={(e) => setName(e.currentTarget.value)} />
        </div>
        <div class="field">
          <label for="signin-password">Password</label>
          <input id="signin-password" name="password" type="password" autoComplete="current-password" value={password} required onInput={(e) => setPassword(e.currentTarget.value)} />
        </div>
        {error !== undefined && (
          <p class="note note-error" role="alert">
            {error}
          </p>
        )}
        <div class="actions">
          <button type="submit" class="btn-primary" disabled={busy}>
            Sign in
          </button>
        </div>
      </form>
    </section>
  );
}
