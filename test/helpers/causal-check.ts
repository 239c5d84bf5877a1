/**
 * Reads the causal ring's records back from exported images (test/helpers/causal-ring.js) and
 * checks that the set of cuts is causally consistent: role r's record k is present only if role
 * r-1's record k is, and role 0's record k (k > 1) only if the last role's record k-1 is.
 */
const RECORD = 512;
const MAGIC = 0x55414346;

export function ringRecords(image: Buffer, role: number, ringId = 0): Set<number> {
  const found = new Set<number>();
  for (let off = RECORD; off + RECORD <= image.length; off += RECORD) {
    if (image.readUInt32LE(off) !== MAGIC) continue;
    const k = image.readUInt32LE(off + 8);
    const sum = (MAGIC ^ Math.imul(role, 0x9e3779b1) ^ Math.imul(k, 0x85ebca6b) ^ Math.imul(ringId, 0xc2b2ae35)) >>> 0;
    // Where a record sits depends on the volume (a raw device: k * 512; a file in a file system:
    // wherever its blocks are): the record names itself.
    if (image.readUInt32LE(off + 4) === role && image.readUInt32LE(off + 12) === sum && image.readUInt32LE(off + 16) === ringId) found.add(k);
  }
  return found;
}

export interface RingVerdict {
  /** Records of each role in the point. */
  counts: number[];
  /** Each violation: a record present whose cause is missing. */
  violations: string[];
}

/** `images[r]` is role r's volume at one group point; `ringId` picks the ring (FERRY_RING). */
export function checkRing(images: Buffer[], ringId = 0): RingVerdict {
  const sets = images.map((image, role) => ringRecords(image, role, ringId));
  const violations: string[] = [];
  const n = sets.length;
  for (let role = 0; role < n; role++) {
    for (const k of sets[role]) {
      const [causeRole, causeK] = role > 0 ? [role - 1, k] : [n - 1, k - 1];
      if (causeK < 1) continue;
      if (!sets[causeRole].has(causeK)) violations.push(`role ${role} record ${k} is present but role ${causeRole} record ${causeK} is not`);
    }
  }
  return { counts: sets.map((s) => s.size), violations };
}
