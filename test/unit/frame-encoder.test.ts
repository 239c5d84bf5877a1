import { describe, expect, it } from 'vitest';
import { decodeFrame, encodeFrame, FrameEncoder, OutgoingFrame } from '../../proto/frames';

const changeSet = (bytes: number, firstSeq: number): OutgoingFrame => ({
  changeSet: { volumeId: 'v', firstSeq, lastSeq: firstSeq, extents: [{ kind: 1, offset: 0, length: bytes, captureTimeUs: 1 }], payload: Buffer.alloc(bytes, firstSeq), uncompressedSize: bytes, payloadCrc32: 7 },
});

describe('FrameEncoder (one writer kept between frames)', () => {
  it('encodes exactly as encodeFrame, frames growing and shrinking, each into its own buffer', () => {
    const encoder = new FrameEncoder();
    const frames = [changeSet(10, 1), changeSet(3 * 1024 * 1024, 2), changeSet(100, 3), changeSet(5 * 1024 * 1024 + 3, 4), { heartbeat: { timeUs: 5 } }];
    const encoded = frames.map((f) => encoder.encode(f));
    encoded.forEach((bytes, i) => expect(bytes.equals(encodeFrame(frames[i]))).toBe(true));
    // Earlier frames are not overwritten by later ones (the pipeline keeps them until acked).
    expect(decodeFrame(encoded[1]).changeSet?.payload?.[0]).toBe(2);
    expect(decodeFrame(encoded[2]).changeSet?.lastSeq).toBe(3);
  });

  it('starts over with a new writer after a frame fails to encode', () => {
    const encoder = new FrameEncoder();
    const bad = { changeSet: { volumeId: 'v', extents: [null] } } as unknown as OutgoingFrame;
    expect(() => encoder.encode(bad)).toThrow();
    const good = changeSet(1000, 9);
    expect(encoder.encode(good).equals(encodeFrame(good))).toBe(true);
  });
});
