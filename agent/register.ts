import { log } from '../common/log';
import type { AgentConfig } from './config';
import { AgentState } from './state';
import { ConnectionError, ReceiverConnection } from './transport/receiver-connection';
import { connectionFailure } from './transport/failure';

/**
 * Registers this machine with the receiver: proves knowledge of the passphrase (HMAC challenge;
 * the passphrase never crosses the wire) and stores the issued credential 0600.
 */
export async function registerAgent(config: AgentConfig, state: AgentState, passphrase: string): Promise<{ agentId: string; credential: Buffer }> {
  const { receiver } = config;
  let conn: ReceiverConnection | undefined;
  try {
    conn = await ReceiverConnection.connect(receiver.url, { fingerprint: receiver.fingerprint, caFile: receiver.caFile });
    const issued = await conn.register(passphrase, config.name);
    state.saveCredential({ ...issued, receiverUrl: receiver.url });
    log.info('agent registered', { agent: issued.agentId, receiver: receiver.url });
    return issued;
  } catch (err) {
    if (err instanceof ConnectionError) throw connectionFailure(err);
    throw err;
  } finally {
    await conn?.close();
  }
}
