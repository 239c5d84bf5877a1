/** Size caps of the wire protocol. A frame that exceeds one is refused with TOO_LARGE. */
export const Limits = {
  /** One WebSocket message (one encoded Frame). */
  maxFrameBytes: 72 * 1024 * 1024,
  /** Uncompressed payload of one ChangeSet. */
  maxPayloadBytes: 64 * 1024 * 1024,
  maxExtents: 65536,
  /** One WRITE extent; DISCARD extents may be larger (they carry no payload). */
  maxWriteLength: 64 * 1024 * 1024,
  maxDiscardLength: 0xffffffff,
  maxIdLength: 64,
  maxNameLength: 128,
  maxMessageLength: 1024,
  maxTagCuts: 256,
  maxProofBytes: 64,
  nonceBytes: 32,
  credentialBytes: 32,
  minBlockSize: 512,
  maxBlockSize: 1024 * 1024,
  /** Blocks per HashRequest (16 bytes of hash each). */
  maxHashBlocks: 16384,
  /** 1 PiB; keeps every offset well inside the exact range of a JS number. */
  maxVolumeBytes: 2 ** 50,
  maxSeq: Number.MAX_SAFE_INTEGER,
  /** Earliest capture or point time accepted: 2000-01-01T00:00:00Z (a clock reading earlier is wrong). */
  minTimeUs: 946_684_800_000_000,
  /** Default for how far ahead of the receiver's clock a time may be (clock skew). */
  maxTimeAheadUs: 24 * 3600 * 1_000_000,
  /** Default for the bytes a peer may send before it has logged in (the handshake needs < 1 KiB). */
  maxPreLoginBytes: 64 * 1024,
} as const;

/** Bounds of the policy values a receiver may send and an agent accepts. */
export const PolicyBounds = {
  minCrashIntervalMs: 100,
  maxCrashIntervalMs: 24 * 3600 * 1000,
  minAppIntervalMs: 10_000,
  maxAppIntervalMs: 7 * 24 * 3600 * 1000,
  minRpoThresholdMs: 1000,
  maxRpoThresholdMs: 7 * 24 * 3600 * 1000,
  /** Longest hold a group round may ask of an agent. */
  maxRoundHoldMs: 5000,
} as const;
