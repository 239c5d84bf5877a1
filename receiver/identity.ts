import { X509Certificate, randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as selfsigned from 'selfsigned';
import { FerryError, ExitCode } from '../common/errors';
import { ensureDir, writeFileAtomic } from '../common/fsutil';
import { generatePassphrase, passphraseKey } from '../proto/auth';
import { DataLayout } from './layout';

interface StoredConfig {
  version: 1;
  passphraseSalt: string;
  passphraseKey: string;
  createdUs: number;
}

export interface ReceiverIdentity {
  cert: string;
  key: string;
  fingerprint: string;
  passphraseSalt: Buffer;
  passphraseKey: Buffer;
  /** Set only on the run that generated the passphrase: show it once. */
  newPassphrase?: string;
  newCertificate: boolean;
}

export interface IdentityOptions {
  tlsCertFile?: string;
  tlsKeyFile?: string;
  passphraseFile?: string;
}

/** SHA-256 fingerprint of a PEM certificate, as `AB:CD:...` (what agents pin). */
export function certificateFingerprint(certPem: string): string {
  return new X509Certificate(certPem).fingerprint256;
}

function readTextFile(file: string, what: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new FerryError(`cannot read ${what} ${file}: ${(err as Error).message}`, ExitCode.usage);
  }
}

export function readPassphraseFile(file: string): string {
  const passphrase = readTextFile(file, 'passphrase file').trim();
  if (passphrase.length < 12) throw new FerryError(`passphrase in ${file} is too short: use at least 12 characters`, ExitCode.usage);
  return passphrase;
}

async function ensureCertificate(layout: DataLayout): Promise<boolean> {
  if (fs.existsSync(layout.certFile) && fs.existsSync(layout.keyFile)) return false;
  ensureDir(layout.tlsDir);
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(notBefore.getTime() + 10 * 365 * 24 * 3600 * 1000);
  const pems = await selfsigned.generate([{ name: 'commonName', value: `ferry-receiver ${os.hostname()}` }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: notBefore,
    notAfterDate: notAfter,
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 2, value: os.hostname() }, { type: 7, ip: '127.0.0.1' }] },
    ],
  });
  writeFileAtomic(layout.keyFile, pems.private, 0o600);
  writeFileAtomic(layout.certFile, pems.cert, 0o644);
  return true;
}

/**
 * Creates the data directory on first run: a self-signed certificate (unless one is
 * supplied) and a passphrase key. The passphrase itself is never stored.
 */
export async function loadOrCreateIdentity(layout: DataLayout, options: IdentityOptions): Promise<ReceiverIdentity> {
  ensureDir(layout.root);
  let newCertificate = false;
  let cert: string;
  let key: string;
  if (options.tlsCertFile || options.tlsKeyFile) {
    if (!options.tlsCertFile || !options.tlsKeyFile) throw new FerryError('--tls-cert and --tls-key go together', ExitCode.usage);
    cert = readTextFile(options.tlsCertFile, 'TLS certificate');
    key = readTextFile(options.tlsKeyFile, 'TLS key');
  } else {
    newCertificate = await ensureCertificate(layout);
    cert = fs.readFileSync(layout.certFile, 'utf8');
    key = fs.readFileSync(layout.keyFile, 'utf8');
  }
  let fingerprint: string;
  try {
    fingerprint = certificateFingerprint(cert);
  } catch (err) {
    throw new FerryError(`TLS certificate is not a valid PEM certificate: ${(err as Error).message}`, ExitCode.usage);
  }

  let stored: StoredConfig | undefined;
  if (fs.existsSync(layout.configFile)) {
    stored = JSON.parse(fs.readFileSync(layout.configFile, 'utf8')) as StoredConfig;
  }
  let newPassphrase: string | undefined;
  if (options.passphraseFile) {
    const passphrase = readPassphraseFile(options.passphraseFile);
    const salt = stored ? Buffer.from(stored.passphraseSalt, 'hex') : randomBytes(16);
    const derived = passphraseKey(passphrase, salt);
    if (!stored || stored.passphraseKey !== derived.toString('hex')) {
      stored = { version: 1, passphraseSalt: salt.toString('hex'), passphraseKey: derived.toString('hex'), createdUs: Date.now() * 1000 };
      writeFileAtomic(layout.configFile, JSON.stringify(stored, null, 2));
    }
  } else if (!stored) {
    newPassphrase = generatePassphrase();
    const salt = randomBytes(16);
    stored = {
      version: 1,
      passphraseSalt: salt.toString('hex'),
      passphraseKey: passphraseKey(newPassphrase, salt).toString('hex'),
      createdUs: Date.now() * 1000,
    };
    writeFileAtomic(layout.configFile, JSON.stringify(stored, null, 2));
  }
  return {
    cert,
    key,
    fingerprint,
    passphraseSalt: Buffer.from(stored.passphraseSalt, 'hex'),
    passphraseKey: Buffer.from(stored.passphraseKey, 'hex'),
    newPassphrase,
    newCertificate,
  };
}
