import { Command, InvalidArgumentError } from 'commander';
import * as fs from 'fs';
import { ExitCode, FerryError } from '../common/errors';
import { parseDurationMs } from '../common/units';
import { ApiClient, connectPinned, normalizeFingerprint, parseApiUrl } from './api-client';
import { loginFile, readSavedLogin, saveLogin } from './api-config';
import { clientFor } from './api-command';
import { readSecretFile, textFlag } from './options';
import { COMMAND_DESCRIPTIONS } from './command-index';

interface LoginOptions {
  api?: string;
  user: string;
  passwordFile?: string;
  fingerprint?: string;
  ttl?: number;
}

interface IssuedToken {
  token: string;
  id: string;
  operator: string;
  expiresMs: number | null;
}

function ttlOption(value: string): number {
  const ms = parseDurationMs(value);
  if (ms === undefined || ms < 60_000) throw new InvalidArgumentError('expected a duration of at least 1m, such as 12h or 30d');
  return ms;
}

/** The password: --password-file, else the first line of a piped stdin, else asked on the terminal without echo. */
async function readPassword(opts: LoginOptions): Promise<string> {
  if (opts.passwordFile !== undefined) return readSecretFile(opts.passwordFile, '--password-file');
  if (!process.stdin.isTTY) {
    const line = fs.readFileSync(0, 'utf8').split(/\r?\n/)[0];
    if (!line) throw new FerryError('no password: pass --password-file FILE, pipe it on stdin or run on a terminal', ExitCode.usage);
    return line;
  }
  return askHidden(`password for ${opts.user}: `);
}

function askHidden(prompt: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    process.stderr.write(prompt);
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding('utf8');
    let text = '';
    const done = (err?: Error): void => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onData);
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(text);
    };
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003') return done(new FerryError('interrupted', ExitCode.failure));
        if (ch === '\u007f' || ch === '\b') text = text.slice(0, -1);
        else text += ch;
      }
    };
    stdin.on('data', onData);
  });
}

async function login(opts: LoginOptions): Promise<void> {
  const saved = readSavedLogin();
  const apiText = opts.api ?? process.env.FERRY_API ?? saved?.api;
  if (apiText === undefined) throw new FerryError('give the management API: ferry login --api https://HOST:PORT', ExitCode.usage);
  const url = parseApiUrl(apiText);
  const sameApi = saved !== undefined && parseApiUrl(saved.api).origin === url.origin;
  let fingerprint = opts.fingerprint ?? process.env.FERRY_FINGERPRINT ?? (sameApi ? saved.fingerprint : undefined);
  let firstSeen = false;
  if (fingerprint === undefined) {
    // Trust on first use: pin what the API shows now, and say so.
    const probe = await connectPinned(url, undefined, 15_000);
    probe.socket.destroy();
    fingerprint = probe.fingerprint;
    firstSeen = true;
  }
  const password = await readPassword(opts);
  const client = new ApiClient({ url: url.origin, fingerprint });
  const issued = await client.call<IssuedToken>('POST', '/api/v1/tokens', { name: opts.user, password, ...(opts.ttl ? { ttlSeconds: Math.round(opts.ttl / 1000) } : {}) });
  const file = saveLogin({ api: url.origin, fingerprint: normalizeFingerprint(fingerprint), token: issued.token, operator: issued.operator, tokenId: issued.id, savedMs: Date.now() });
  const lines = [`logged in to ${url.origin} as ${issued.operator}; token saved in ${file}`];
  if (issued.expiresMs !== null) lines.push(`the token expires at ${new Date(issued.expiresMs).toISOString()}`);
  if (firstSeen) lines.push(`pinned the API's certificate ${fingerprint}: check that it is the fingerprint the receiver printed at start (or pass --fingerprint next time)`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

async function logout(): Promise<void> {
  const saved = readSavedLogin();
  if (!saved) {
    process.stdout.write('not logged in\n');
    return;
  }
  await clientFor({}).call('DELETE', '/api/v1/tokens/current');
  fs.rmSync(loginFile(), { force: true });
  process.stdout.write(`logged out of ${saved.api}: token revoked\n`);
}

export function loginCommand(): Command {
  return new Command('login')
    .description(COMMAND_DESCRIPTIONS.login)
    .option('--api <url>', 'management API https://HOST:PORT (default: FERRY_API, else the saved login)')
    .addOption(textFlag('--user <name>', 'operator name', 'admin'))
    .option('--password-file <file>', 'file whose first line is the password (default: stdin, or asked on the terminal)')
    .option('--fingerprint <sha256>', "the API certificate's SHA-256 fingerprint, as the receiver printed it (default: the saved one, else trust on first use)")
    .option('--ttl <duration>', 'token lifetime, e.g. 12h or 30d (default: no expiry)', ttlOption)
    .action(async (opts: LoginOptions) => login(opts));
}

export function logoutCommand(): Command {
  return new Command('logout').description(COMMAND_DESCRIPTIONS.logout).action(async () => logout());
}
