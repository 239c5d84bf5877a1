// Operator accounts and bearer tokens (control/operators.ts) on a real SQLite file, with a clock
// the test moves: expiry, revocation, the admin created once, the file modes.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ControlError } from '../../control/contract';
import { OperatorStore } from '../../control/operators';
import { tempDirs } from '../helpers/temp-dirs';

const tempDir = tempDirs();

function openStore(): { store: OperatorStore; dir: string; clock: { now: number } } {
  const dir = tempDir('operators');
  const clock = { now: 1_700_000_000_000 };
  return { store: OperatorStore.open(path.join(dir, 'operators.db'), () => clock.now), dir, clock };
}

describe('operator store', () => {
  it('creates admin once, with a password that verifies and a 0600 password file', async () => {
    const { store, dir } = openStore();
    const file = path.join(dir, 'admin-password');
    const password = await store.ensureAdmin(file);
    expect(password).toBeDefined();
    expect(fs.readFileSync(file, 'utf8')).toBe(`${password}\n`);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(await store.ensureAdmin(file)).toBeUndefined();
    expect(await store.verifyPassword('admin', password ?? '')).toBe(true);
    expect(await store.verifyPassword('admin', `${password}x`)).toBe(false);
    expect(await store.verifyPassword('nobody', password ?? '')).toBe(false);
    store.close();
  });

  it('refuses bad names, short passwords and duplicates, naming the field', async () => {
    const { store } = openStore();
    const refusal = async (p: Promise<unknown>): Promise<ControlError> => p.then(() => { throw new Error('accepted'); }, (e: unknown) => e as ControlError);
    expect(await refusal(store.create('Bad Name', 'long-enough-password'))).toMatchObject({ kind: 'invalid', field: 'name' });
    expect(await refusal(store.create('bob', 'short'))).toMatchObject({ kind: 'invalid', field: 'password' });
    await store.create('bob', 'long-enough-password');
    expect(await refusal(store.create('bob', 'another-password-1'))).toMatchObject({ kind: 'conflict', field: 'name' });
    expect(store.list().map((o) => o.name)).toEqual(['bob']);
    store.close();
  });

  it('stores tokens hashed; they expire and can be revoked', async () => {
    const { store, dir, clock } = openStore();
    await store.create('bob', 'long-enough-password');
    const forever = store.issueToken('bob');
    const hour = store.issueToken('bob', 3_600_000);
    expect(store.authenticate(forever.token)?.operator).toBe('bob');
    expect(store.authenticate(hour.token)?.expiresMs).toBe(clock.now + 3_600_000);
    const raw = fs.readFileSync(path.join(dir, 'operators.db'));
    const wal = fs.existsSync(path.join(dir, 'operators.db-wal')) ? fs.readFileSync(path.join(dir, 'operators.db-wal')) : Buffer.alloc(0);
    expect(Buffer.concat([raw, wal]).includes(Buffer.from(forever.token))).toBe(false);

    clock.now += 3_600_000;
    expect(store.authenticate(hour.token)).toBeUndefined();
    expect(store.tokens('bob').map((t) => t.id)).toEqual([forever.id]);

    store.revokeToken('bob', forever.id);
    expect(store.authenticate(forever.token)).toBeUndefined();
    expect(() => store.revokeToken('bob', forever.id)).toThrow(/no token/);
    expect(store.authenticate('')).toBeUndefined();
    store.close();
  });
});
