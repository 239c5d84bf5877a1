import { buildChangeSet, ChangeRecord } from '../../agent/transport/change-set';
import { ReceiverConnection } from '../../agent/transport/receiver-connection';
import type { AccuracyName } from '../../proto/types';
import type { ReceiverProcess } from './receiver-process';

export async function registeredConnection(rx: ReceiverProcess, passphrase: string, name = 'test-agent'): Promise<{ conn: ReceiverConnection; agentId: string; credential: Buffer }> {
  const conn = await ReceiverConnection.connect(rx.url, { fingerprint: rx.fingerprint });
  const { agentId, credential } = await conn.register(passphrase, name);
  return { conn, agentId, credential };
}

export async function loggedInConnection(rx: ReceiverProcess, agentId: string, credential: Buffer): Promise<ReceiverConnection> {
  const conn = await ReceiverConnection.connect(rx.url, { fingerprint: rx.fingerprint });
  await conn.login(agentId, credential);
  return conn;
}

/** Sends records as one change set starting at `firstSeq`; returns the last seq. */
export function sendRecords(conn: ReceiverConnection, volumeId: string, firstSeq: number, records: ChangeRecord[], accuracy: AccuracyName = 'exact'): number {
  conn.send({ changeSet: buildChangeSet(volumeId, firstSeq, records, accuracy) });
  return firstSeq + records.length - 1;
}
