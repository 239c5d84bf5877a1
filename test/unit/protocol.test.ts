import * as crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { buildChangeSet } from '../../agent/transport/change-set';
import { computeProof, passphraseKey, proofMatches } from '../../proto/auth';
import { decodeFrame, encodeFrame, ferry } from '../../proto/frames';
import { isSafeId } from '../../proto/ids';
import { packPayload, unpackPayload } from '../../proto/payload';
import { checkChangeSetTimes, checkTagTime, timeWindow, validateChangeSet, validateHeartbeat, validateTag } from '../../proto/validate';
import { usToIso } from '../../common/time';
import { parseDurationMs, parseHostPort, parseSizeBytes } from '../../common/units';
import { vhdChecksum, vhdFixedFooter, vhdGeometry } from '../../receiver/vhd';

describe('payload packing', () => {
  it('compresses what shrinks, stores raw what does not, and round-trips both', () => {
    const text = Buffer.alloc(65536, 'ferry ');
    const random = crypto.randomBytes(65536);
    const a = packPayload(text);
    const b = packPayload(random);
    expect(a.compression).toBe(ferry.Compression.LZ4_BLOCK);
    expect(a.payload.length).toBeLessThan(text.length / 10);
    expect(b.compression).toBe(ferry.Compression.COMPRESSION_NONE);
    expect(unpackPayload(a).equals(text)).toBe(true);
    expect(unpackPayload(b).equals(random)).toBe(true);
  });

  it('names the failure: corrupt lz4, wrong size, wrong CRC', () => {
    const packed = packPayload(Buffer.alloc(4096, 'abc'));
    expect(() => unpackPayload({ ...packed, payload: Buffer.alloc(packed.payload.length, 0xff) })).toThrow(/lz4 payload is corrupt/);
    expect(() => unpackPayload({ ...packed, uncompressedSize: 4000 })).toThrow(/decodes to|corrupt/);
    expect(() => unpackPayload({ ...packed, payloadCrc32: packed.payloadCrc32 ^ 1 })).toThrow(/CRC-32/);
  });
});

describe('frames and validation', () => {
  it('round-trips 64-bit seqs and offsets as plain numbers', () => {
    const cs = buildChangeSet('v', 2 ** 40, [{ kind: 'write', offset: 2 ** 45, length: 512, captureTimeUs: 1.7e15, data: Buffer.alloc(512, 1) }], 'exact');
    const frame = decodeFrame(encodeFrame({ changeSet: cs }));
    const batch = validateChangeSet(frame.changeSet as ferry.IChangeSet, 2 ** 46);
    expect(batch.firstSeq).toBe(2 ** 40);
    expect(batch.extents[0]).toMatchObject({ offset: 2 ** 45, length: 512, kind: 'write', captureTimeUs: 1.7e15 });
  });

  it('rejects extents that do not match the seq range, misaligned ranges and unknown kinds', () => {
    const base = buildChangeSet('v', 1, [{ kind: 'write', offset: 0, length: 512, captureTimeUs: 1, data: Buffer.alloc(512) }], 'exact');
    expect(() => validateChangeSet({ ...base, lastSeq: 2 }, 4096)).toThrow(/need 2 extents/);
    expect(() => validateChangeSet({ ...base, extents: [{ kind: 0, offset: 100, length: 512 }] }, 4096)).toThrow(/not 512-byte aligned/);
    expect(() => validateChangeSet({ ...base, extents: [{ kind: 7, offset: 0, length: 512 }] }, 4096)).toThrow(/unknown kind/);
    expect(() => validateChangeSet({ ...base, accuracy: 0 }, 4096)).toThrow(/accuracy/);
  });

  it('accepts only safe ids', () => {
    for (const ok of ['vol-1', 'A.b_c', 'x'.repeat(64)]) expect(isSafeId(ok)).toBe(true);
    for (const bad of ['', '..', '../x', 'a/b', '.x', '-x', 'x'.repeat(65), 'a..b', 'a\0b']) expect(isSafeId(bad)).toBe(false);
  });
});

describe('bounded times', () => {
  const now = Date.UTC(2030, 5, 1) * 1000;
  const window = timeWindow(now, 24 * 3600e6);
  const batchAt = (captureTimeUs: number, pendingSinceUs = 0): ReturnType<typeof validateChangeSet> => {
    const cs = buildChangeSet('v', 1, [{ kind: 'write', offset: 0, length: 512, captureTimeUs, data: Buffer.alloc(512, 1) }], 'exact');
    return validateChangeSet({ ...cs, pendingSinceUs }, 4096);
  };
  const tagAt = (timeUs: number): ReturnType<typeof validateTag> =>
    validateTag({ kind: ferry.Tag.Kind.CRASH, groupId: 'g', timeUs, cuts: [{ volumeId: 'v', seq: 1, accuracy: ferry.Accuracy.EXACT }] });

  it('accepts 2000-01-01 up to a day past the receiver clock, and 0 where it means "none" or "now"', () => {
    for (const t of [0, Date.UTC(2000, 0, 1) * 1000, now, now + 24 * 3600e6]) {
      expect(() => checkChangeSetTimes(batchAt(t, t), window)).not.toThrow();
      expect(() => checkTagTime(tagAt(t), window)).not.toThrow();
      expect(validateHeartbeat({ timeUs: t, pendingSinceUs: t }, window).pendingSinceUs).toBe(t);
    }
  });

  it('refuses anything else with BAD_TIME, naming the field and the range', () => {
    const u64max = decodeFrame(encodeFrame({ heartbeat: { timeUs: { low: -1, high: -1, unsigned: true } as unknown as number } })).heartbeat?.timeUs as number;
    expect(u64max).toBeGreaterThan(1.8e19);
    for (const t of [1, Date.UTC(1999, 11, 31, 23, 59, 59) * 1000, now + 24 * 3600e6 + 1, u64max]) {
      expect(() => checkChangeSetTimes(batchAt(t), window)).toThrow(expect.objectContaining({ code: ferry.ErrorCode.BAD_TIME }));
      expect(() => checkChangeSetTimes(batchAt(now, t), window)).toThrow(/pending-since time of the change set/);
      expect(() => checkTagTime(tagAt(t), window)).toThrow(/time of tag "g" .* is outside the accepted range 2000-01-01T00:00:00.000Z \.\. 2030-06-02T00:00:00.000Z/);
      expect(() => validateHeartbeat({ timeUs: t }, window)).toThrow(/heartbeat time/);
    }
    expect(() => checkChangeSetTimes(batchAt(u64max), window)).toThrow(/capture time of seq 1 out-of-range time \(18446744073709552000 us\)/);
  });

  it('prints any stored time without throwing', () => {
    expect(usToIso(Date.UTC(2024, 1, 2) * 1000)).toBe('2024-02-02T00:00:00.000Z');
    expect(usToIso(-1)).toBe('1969-12-31T23:59:59.999Z');
    expect(usToIso(18446744073709551615)).toBe('out-of-range time (18446744073709552000 us)');
    expect(usToIso(Number.NaN)).toBe('out-of-range time (NaN us)');
  });
});

describe('HMAC proofs', () => {
  it('match only for the same key, nonce, purpose and name', () => {
    const salt = crypto.randomBytes(16);
    const key = passphraseKey('a passphrase', salt);
    const nonce = crypto.randomBytes(32);
    const proof = computeProof(key, nonce, 'register', 'host');
    expect(proofMatches(proof, computeProof(passphraseKey('a passphrase', salt), nonce, 'register', 'host'))).toBe(true);
    expect(proofMatches(proof, computeProof(passphraseKey('another one', salt), nonce, 'register', 'host'))).toBe(false);
    expect(proofMatches(proof, computeProof(key, crypto.randomBytes(32), 'register', 'host'))).toBe(false);
    expect(proofMatches(proof, computeProof(key, nonce, 'login', 'host'))).toBe(false);
    expect(proofMatches(proof, computeProof(key, nonce, 'register', 'host2'))).toBe(false);
  });
});

describe('VHD footer', () => {
  it('has the fixed-disk fields and a valid checksum', () => {
    const size = 64 * 1024 * 1024;
    const f = vhdFixedFooter(size, new Date(Date.UTC(2000, 0, 1, 0, 1, 40)));
    expect(f.length).toBe(512);
    expect(f.subarray(0, 8).toString()).toBe('conectix');
    expect(f.readUInt32BE(24)).toBe(100);
    expect(f.readUInt32BE(60)).toBe(2);
    expect(Number(f.readBigUInt64BE(40))).toBe(size);
    expect(f.readUInt32BE(64)).toBe(vhdChecksum(f));
    expect(() => vhdFixedFooter(1000)).toThrow(/multiple of 512/);
  });

  it('derives CHS geometry within the size, as the VHD specification does', () => {
    for (const mib of [1, 8, 64, 127, 1024, 40960, 130000]) {
      const size = mib * 1024 * 1024;
      const g = vhdGeometry(size);
      expect(g.cylinders * g.heads * g.sectorsPerTrack).toBeLessThanOrEqual(size / 512);
      expect(g.heads).toBeLessThanOrEqual(16);
      expect(g.cylinders).toBeLessThanOrEqual(65535);
    }
    // 127 MiB: 260096 sectors -> 17 spt gives 15299 cyl*heads -> 15 heads -> 1019 cylinders.
    expect(vhdGeometry(127 * 1024 * 1024)).toEqual({ cylinders: 1019, heads: 15, sectorsPerTrack: 17 });
  });
});

describe('CLI units', () => {
  it('parses durations, sizes and listen addresses, and rejects junk', () => {
    expect(parseDurationMs('24h')).toBe(86_400_000);
    expect(parseDurationMs('90s')).toBe(90_000);
    expect(parseDurationMs('1.5m')).toBe(90_000);
    expect(parseDurationMs('abc')).toBeUndefined();
    expect(parseDurationMs('0s')).toBeUndefined();
    expect(parseSizeBytes('1GiB')).toBe(1024 ** 3);
    expect(parseSizeBytes('256KiB')).toBe(262144);
    expect(parseSizeBytes('12 parsecs')).toBeUndefined();
    expect(parseHostPort('127.0.0.1:7443')).toEqual({ host: '127.0.0.1', port: 7443 });
    expect(parseHostPort('[::1]:80')).toEqual({ host: '::1', port: 80 });
    expect(parseHostPort('host:99999')).toBeUndefined();
    expect(parseHostPort('nohost')).toBeUndefined();
  });
});

describe('tag cuts', () => {
  const tag = (seq: number): ReturnType<typeof validateTag> =>
    validateTag({ kind: ferry.Tag.Kind.CRASH, groupId: 'g', cuts: [{ volumeId: 'v', seq, accuracy: ferry.Accuracy.APPROXIMATE }] });

  it('accepts a cut at seq 0 (before the first record: a volume whose resync had nothing to send)', () => {
    expect(tag(0).cuts).toEqual([{ volumeId: 'v', seq: 0, accuracy: 'approximate' }]);
  });

  it('refuses a cut that is not a sequence number', () => {
    for (const seq of [-1, 1.5, 2 ** 53]) expect(() => tag(seq)).toThrow(/not a sequence number/);
  });
});
