/**
 * The header of a client-to-server WebSocket message (RFC 6455: FIN, binary, masked) written
 * into the memory just before its payload, so that header and payload reach the TLS socket as
 * one buffer. Given two (ws's way), node's TLS layer first copies both into a fresh buffer of
 * their size: a multi-megabyte allocation and copy per change-set frame.
 */

/** The longest header: 2 bytes, a 64-bit length, the 4-byte masking key. */
export const WS_HEADER_ROOM = 14;

const FIN_BINARY = 0x82;
const MASKED = 0x80;

/** Bytes of the header for a payload of `length` bytes. */
export function wsHeaderBytes(length: number): number {
  return 2 + (length > 65535 ? 8 : length > 125 ? 2 : 0) + 4;
}

/**
 * Writes the header of a binary message whose payload is `buf[payloadStart, payloadStart +
 * length)` right before it, with an all-zero masking key (inside TLS no intermediary reads
 * the bytes; the receiver accepts any key, and a zero key leaves the payload as it is).
 * Returns where the header starts.
 */
export function writeWsHeader(buf: Buffer, payloadStart: number, length: number): number {
  const start = payloadStart - wsHeaderBytes(length);
  if (start < 0) throw new RangeError(`no room for a WebSocket header before byte ${payloadStart}`);
  buf[start] = FIN_BINARY;
  let at = start + 2;
  if (length > 65535) {
    buf[start + 1] = MASKED | 127;
    buf.writeUInt32BE(Math.floor(length / 2 ** 32), at);
    buf.writeUInt32BE(length >>> 0, at + 4);
    at += 8;
  } else if (length > 125) {
    buf[start + 1] = MASKED | 126;
    buf.writeUInt16BE(length, at);
    at += 2;
  } else buf[start + 1] = MASKED | length;
  buf.fill(0, at, at + 4);
  return start;
}
