import { ferry } from './generated/ferry';
import { ErrorCode, ProtocolError } from './errors';
import { Limits } from './limits';

export { ferry };
export const PROTOCOL_VERSION = 1;

export type FrameBodyName = NonNullable<ferry.Frame['body']>;
/** A frame to send: exactly one body field set. */
export type OutgoingFrame = Omit<ferry.Frame.$Properties, 'version'>;
export type DecodedFrame = ferry.Frame & ferry.Frame.$Shape;

export function encodeFrame(frame: OutgoingFrame): Buffer {
  const bytes = ferry.Frame.encode({ version: PROTOCOL_VERSION, ...frame }).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Decodes one WebSocket message; throws ProtocolError for anything that is not a v1 frame with a body. */
export function decodeFrame(data: Buffer): DecodedFrame {
  if (data.length > Limits.maxFrameBytes) {
    throw new ProtocolError(ErrorCode.TOO_LARGE, `frame of ${data.length} bytes exceeds the ${Limits.maxFrameBytes}-byte cap`);
  }
  let frame: DecodedFrame;
  try {
    frame = ferry.Frame.decode(data);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new ProtocolError(ErrorCode.BAD_FRAME, `undecodable frame (${data.length} bytes): ${why}`);
  }
  if (frame.version !== PROTOCOL_VERSION) {
    throw new ProtocolError(
      ErrorCode.UNSUPPORTED_VERSION,
      `protocol version ${frame.version} is not supported (this side speaks ${PROTOCOL_VERSION})`,
    );
  }
  if (!frame.body) {
    throw new ProtocolError(ErrorCode.BAD_FRAME, 'frame has no body');
  }
  return frame;
}

export function errorFrame(code: ErrorCode, message: string): Buffer {
  return encodeFrame({ error: { code, message: message.slice(0, Limits.maxMessageLength) } });
}
