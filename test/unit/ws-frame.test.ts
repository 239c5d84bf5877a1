import { randomBytes } from 'crypto';
import { describe, expect, it } from 'vitest';
import { Receiver } from 'ws';
import { WS_HEADER_ROOM, wsHeaderBytes, writeWsHeader } from '../../agent/transport/ws-frame';

/** What a ws server makes of `bytes` as they come off the socket. */
function serverReads(bytes: Buffer): Promise<Buffer> {
  const receiver = new Receiver({ isServer: true, maxPayload: 64 * 1024 * 1024 });
  return new Promise((resolve, reject) => {
    receiver.on('message', (data: Buffer, isBinary: boolean) => (isBinary ? resolve(data) : reject(new Error('not binary'))));
    receiver.on('error', reject);
    receiver.write(bytes);
  });
}

describe('writeWsHeader (a client message header written before its payload)', () => {
  it.each([0, 1, 125, 126, 65535, 65536, 5 * 1024 * 1024 + 7])('a ws server reads a %i-byte payload back unchanged', async (length) => {
    const memory = Buffer.alloc(WS_HEADER_ROOM + length, 0xaa);
    const payload = randomBytes(length);
    payload.copy(memory, WS_HEADER_ROOM);
    const start = writeWsHeader(memory, WS_HEADER_ROOM, length);
    expect(start).toBe(WS_HEADER_ROOM - wsHeaderBytes(length));
    expect((await serverReads(memory.subarray(start))).equals(payload)).toBe(true);
  });

  it('refuses when the header does not fit before the payload', () => {
    expect(() => writeWsHeader(Buffer.alloc(100), 5, 70000)).toThrow(RangeError);
  });
});
