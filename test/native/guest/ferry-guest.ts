/**
 * Runs inside the VM lab guest (as root) against dm-ferry through the addon's TypeScript API.
 * test/native/dm-ferry.test.ts transpiles this file and native/addon/*.ts into a temp dir and
 * runs `node ferry-guest.js <scenario> [args]` between its dmsetup steps.
 *
 * Each scenario checks what it can see from inside the guest and prints one line
 *   FERRY-RESULT {"failures": [...], "facts": {...}}
 * which the host test asserts on. A thrown error exits non-zero.
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import {
  FerryControl,
  HoldEndedError,
  RecordFlag,
  dirtyRanges,
  isFerryNativeError,
  loadNative,
  readDirect,
  type KernelRecord,
  type DeviceInfo,
} from '../../../native/addon';

const KiB = 1024;
const MiB = 1024 * KiB;

const failures: string[] = [];
const facts: Record<string, unknown> = {};

function fmt(v: unknown): string {
  return typeof v === 'bigint' ? `${v}n` : JSON.stringify(v);
}

function check(cond: boolean, message: string): void {
  if (!cond) failures.push(message);
}

function eq(actual: unknown, expected: unknown, what: string): void {
  if (actual !== expected) failures.push(`${what}: got ${fmt(actual)}, want ${fmt(expected)}`);
}

/** Awaits p and checks it rejects with `code`; returns the error. */
async function expectCode(p: Promise<unknown>, code: string, what: string): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    const got = isFerryNativeError(err) ? err.code : String(err);
    if (got !== code) failures.push(`${what}: rejected with ${got} (${(err as Error).message}), want ${code}`);
    return err;
  }
  failures.push(`${what}: resolved, want ${code}`);
  return undefined;
}

function sh(cmd: string): string {
  return execFileSync('bash', ['-c', cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Deterministic bytes for (seed, length): xorshift32. */
function pattern(seed: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let x = (seed * 2654435761 + 1) >>> 0 || 1;
  for (let off = 0; off + 4 <= length; off += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    buf.writeUInt32LE(x, off);
  }
  return buf;
}

let ddSerial = 0;

/** One O_DIRECT write through dd (dd allocates aligned buffers; node cannot). */
function ddWrite(dev: string, offset: number, data: Buffer, oflags = 'direct'): void {
  const src = `/tmp/ferry-dd-${process.pid}-${ddSerial++}.bin`;
  fs.writeFileSync(src, data);
  sh(`dd if=${src} of=${dev} bs=${data.length} count=1 seek=${offset} oflag=seek_bytes,${oflags} conv=notrunc status=none`);
  fs.unlinkSync(src);
}

/** The same, without waiting (the event loop keeps running). */
function ddWriteAsync(dev: string, offset: number, data: Buffer): Promise<void> {
  const src = `/tmp/ferry-dd-${process.pid}-${ddSerial++}.bin`;
  fs.writeFileSync(src, data);
  return new Promise((resolve, reject) => {
    const child = spawn('dd', [`if=${src}`, `of=${dev}`, `bs=${data.length}`, 'count=1', `seek=${offset}`, 'oflag=seek_bytes,direct', 'conv=notrunc', 'status=none']);
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`dd exited ${code}`))));
  });
}

/** A dd write in the background, with its process to watch. */
function ddWriteChild(dev: string, offset: number, data: Buffer): { pid: number; done: Promise<number> } {
  const src = `/tmp/ferry-dd-${process.pid}-${ddSerial++}.bin`;
  fs.writeFileSync(src, data);
  const child = spawn('dd', [`if=${src}`, `of=${dev}`, `bs=${data.length}`, 'count=1', `seek=${offset}`, 'oflag=seek_bytes,direct', 'conv=notrunc', 'status=none']);
  const done = new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(Date.now()) : reject(new Error(`dd exited ${code}`))));
  });
  return { pid: child.pid ?? -1, done };
}

/**
 * True once process pid sleeps uninterruptibly inside write()/pwrite64(): dm maps a bio in the
 * submitter's context, so by then its write reached dm-ferry (and waits there if held).
 */
function blockedInWrite(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    const nr = fs.readFileSync(`/proc/${pid}/syscall`, 'utf8').split(' ')[0];
    return state === 'D' && (nr === '1' || nr === '18');
  } catch {
    return false;
  }
}

/** Waits (polling, up to ms) until cond() holds; false if it never did. */
async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return true;
}

interface Rec extends KernelRecord {
  batchId: number;
}

/** Every record waiting, with payloads copied out; commits as it goes unless told not to. */
async function drain(ctl: FerryControl, commit = true): Promise<Rec[]> {
  const out: Rec[] = [];
  for (;;) {
    const batch = await ctl.getChanges();
    if (batch.batchId === 0) return out;
    for (const r of batch.records) out.push({ ...r, data: Buffer.from(r.data), batchId: batch.batchId });
    if (commit) await ctl.commit(batch.batchId);
  }
}

function kinds(records: KernelRecord[]): string {
  return records.map((r) => (r.kind === 'mode' ? `mode:${r.mode}` : r.kind)).join(',');
}

/** Seqs per device are contiguous, starting at `first` when given. */
function checkSeqs(records: KernelRecord[], what: string, first?: Map<number, number>): Map<number, number> {
  const next = new Map(first ?? []);
  for (const r of records) {
    const want = next.get(r.devIndex);
    if (want !== undefined && r.seq !== want) failures.push(`${what}: device ${r.devIndex} seq ${r.seq} follows ${want - 1}`);
    next.set(r.devIndex, r.seq + 1);
  }
  return next;
}

/** The WRITE records of device `dev` cover exactly [offset, offset + data.length) with data. */
function checkCovered(records: KernelRecord[], dev: number, offset: number, data: Buffer, what: string): KernelRecord[] {
  const end = offset + data.length;
  const mine = records
    .filter((r) => r.devIndex === dev && r.kind === 'write' && r.offset < end && r.offset + r.length > offset)
    .sort((a, b) => a.seq - b.seq);
  let at = offset;
  for (const r of mine) {
    if (r.offset !== at) failures.push(`${what}: record seq ${r.seq} at ${r.offset}, expected ${at}`);
    if (r.data.length !== r.length) failures.push(`${what}: record seq ${r.seq} carries ${r.data.length} of ${r.length} bytes`);
    else if (!r.data.equals(data.subarray(r.offset - offset, r.offset - offset + r.length))) failures.push(`${what}: payload of seq ${r.seq} differs from what was written`);
    at = r.offset + r.length;
  }
  if (at !== end) failures.push(`${what}: records cover [${offset}, ${at}) of [${offset}, ${end})`);
  return mine;
}

async function device(ctl: FerryControl, name: string): Promise<DeviceInfo> {
  const d = (await ctl.list()).find((x) => x.name === name);
  if (d === undefined) throw new Error(`device ${name} is not tracked`);
  return d;
}

/** Initial sync of a NEW/DIRTY device: cut, clear every bit; the device returns to DATA. */
async function drainWholeBitmap(ctl: FerryControl, dev: DeviceInfo): Promise<{ cutSeq: number; bitmap: Buffer }> {
  const bm = await ctl.readBitmap(dev.index, { cut: true });
  const left = await ctl.clearBitmap(dev.index, bm.epoch, 0, bm.nbits);
  eq(left, 0, `${dev.name}: bits left after clearing all`);
  return { cutSeq: bm.cutSeq, bitmap: bm.data };
}

/** Device content = zeros + every record applied in seq order (read-back kinds from `readBack`). */
async function replay(size: number, records: KernelRecord[], readBack: (off: number, len: number) => Promise<Buffer>): Promise<{ image: Buffer; skip: Array<[number, number]> }> {
  const image = Buffer.alloc(size);
  const skip: Array<[number, number]> = [];
  for (const r of [...records].sort((a, b) => a.seq - b.seq)) {
    if (r.kind === 'write') r.data.copy(image, r.offset);
    else if (r.kind === 'dirty' || (r.kind === 'resync-mark' && r.length > 0)) (await readBack(r.offset, r.length)).copy(image, r.offset);
    else if (r.kind === 'discard') {
      image.fill(0, r.offset, r.offset + r.length);
      skip.push([r.offset, r.offset + r.length]); // what a discarded range reads back is the device's choice
    }
  }
  return { image, skip };
}

function compareImages(got: Buffer, want: Buffer, skip: Array<[number, number]>, what: string): number {
  let bad = 0;
  for (let off = 0; off < want.length; off += 4096) {
    const end = Math.min(off + 4096, want.length);
    if (skip.some(([s, e]) => off < e && end > s)) continue;
    if (!got.subarray(off, end).equals(want.subarray(off, end))) {
      if (bad < 5) failures.push(`${what}: block at ${off} differs from the replayed stream`);
      bad++;
    }
  }
  return bad;
}

async function readRange(dev: string, off: number, len: number): Promise<Buffer> {
  const a = Math.floor(off / 512) * 512;
  const b = Math.ceil((off + len) / 512) * 512;
  const buf = await readDirect(dev, a, b - a);
  return buf.subarray(off - a, off - a + len);
}

// ---------------------------------------------------------------------------------------------

/** Capture of writes, flushes, discards; wait(); payload and seq checks; a replayed burst. */
async function scenarioCapture(): Promise<void> {
  const path = '/dev/mapper/f0';
  const ctl = await FerryControl.open();
  const version = await ctl.version();
  eq(version.abiVersion, 2, 'ABI version');
  eq(version.recordHeaderSize, 48, 'record header size');
  const list = await ctl.list();
  eq(list.length, 1, 'tracked devices');
  let d = list[0];
  eq(d.name, 'f0', 'device name');
  eq(d.startStateName, 'new', 'fresh metadata starts NEW');
  eq(d.modeName, 'draining', 'NEW starts draining');
  eq(d.dirtyBits, d.bitmapBits, 'NEW: every bitmap bit set');
  eq(d.generation, 1, 'generation');
  const size = d.sizeBytes;
  facts.sizeBytes = size;

  const all: Rec[] = [];
  let recs = await drain(ctl);
  all.push(...recs);
  eq(kinds(recs), 'start', 'first record');
  eq(recs[0]?.seq, d.firstSeq, 'START seq = firstSeq');
  eq(recs[0]?.length, 1, 'START says NEW');
  eq(recs[0]?.accuracy, 'none', 'START accuracy while the bitmap is full');

  const { cutSeq, bitmap } = await drainWholeBitmap(ctl, d);
  check(bitmap.subarray(0, Math.floor(d.bitmapBits / 8)).every((b) => b === 0xff), 'NEW bitmap: all ones');
  d = await device(ctl, 'f0');
  eq(d.modeName, 'data', 'mode after the initial drain');
  recs = await drain(ctl);
  all.push(...recs);
  eq(kinds(recs), 'resync-mark,mode:data', 'records of the bitmap drain');
  eq(recs[0]?.seq, cutSeq, 'cut record seq');
  eq(recs[0]?.flags, RecordFlag.BITMAP_CUT, 'cut record flag');
  eq(recs[1]?.length, 3, 'MODE record names the previous mode (draining)');

  // wait(): times out with nothing pending, wakes when a write completes
  let t0 = Date.now();
  eq(await ctl.wait(300), false, 'wait() with nothing pending');
  check(Date.now() - t0 >= 250, `wait(300) returned after ${Date.now() - t0} ms`);
  const first = pattern(1, 4096);
  t0 = Date.now();
  const waiting = ctl.wait(20_000);
  const writing = ddWriteAsync(path, 0, first);
  eq(await waiting, true, 'wait() wakes on a write');
  facts.waitWakeMs = Date.now() - t0;
  check(Date.now() - t0 < 15_000, 'wait() woke long before its timeout');
  await writing;

  // O_DIRECT writes of various sizes; one with O_DSYNC (FUA)
  const writes = [
    { off: MiB, data: pattern(2, 64 * KiB), flags: 'direct' },
    { off: 3 * MiB + 512, data: pattern(3, 1536), flags: 'direct' },
    { off: 5 * MiB, data: pattern(4, MiB), flags: 'direct' },
    { off: 7 * MiB, data: pattern(5, 8 * KiB), flags: 'direct,dsync' },
  ];
  const tStart = BigInt(Date.now() - 1000) * 1_000_000n;
  for (const w of writes) ddWrite(path, w.off, w.data, w.flags);
  const tEnd = BigInt(Date.now() + 1000) * 1_000_000n;
  recs = await drain(ctl, false);
  all.push(...recs);
  checkCovered(recs, d.index, 0, first, 'write at 0');
  for (const w of writes) {
    const mine = checkCovered(recs, d.index, w.off, w.data, `write at ${w.off}`);
    if (w.flags.includes('dsync')) {
      facts.fuaFlags = mine.map((r) => r.flags);
      check(mine.some((r) => (r.flags & RecordFlag.FUA) !== 0), 'O_DSYNC write carries the FUA flag');
    }
  }
  for (const r of recs) {
    if (r.kind === 'flush') continue; // dsync may add a flush
    eq(r.kind, 'write', `record ${r.seq} kind`);
    eq(r.accuracy, 'exact', `record ${r.seq} accuracy`);
    eq(r.mode, 'data', `record ${r.seq} mode`);
    check(r.timeNs >= tStart - 60_000_000_000n && r.timeNs <= tEnd, `record ${r.seq} time ${r.timeNs} outside the write window`);
  }
  for (let i = 1; i < recs.length; i++) check(recs[i].timeNs >= recs[i - 1].timeNs, `time goes back at seq ${recs[i].seq}`);
  d = await device(ctl, 'f0');
  eq(d.ringUsed, recs.length, 'ring holds the uncommitted records');
  eq(d.ringHandedOut, recs.length, 'all of them handed out');
  eq(d.poolUsed, recs.reduce((n, r) => n + r.data.length, 0), 'pool holds their payload');
  for (const id of new Set(recs.map((r) => r.batchId))) await ctl.commit(id);
  d = await device(ctl, 'f0');
  eq(d.ringUsed, 0, 'ring empty after commit');
  eq(d.poolUsed, 0, 'pool empty after commit');
  eq(d.committedSeq, recs[recs.length - 1]?.seq, 'committedSeq');

  // buffered write + fsync: the writes, then a FLUSH after them
  const fd = fs.openSync(path, 'r+');
  const buffered = pattern(6, 3 * 4096);
  fs.writeSync(fd, buffered, 0, buffered.length, 9 * MiB);
  fs.fsyncSync(fd);
  recs = await drain(ctl);
  all.push(...recs);
  const bw = checkCovered(recs, d.index, 9 * MiB, buffered, 'buffered write');
  const flush = recs.find((r) => r.kind === 'flush');
  check(flush !== undefined, `fsync produced a FLUSH record (got ${kinds(recs)})`);
  if (flush) check(bw.every((r) => r.seq < flush.seq), 'FLUSH comes after the writes it covers');

  // discard
  sh(`blkdiscard -o ${10 * MiB} -l ${MiB} ${path}`);
  recs = await drain(ctl);
  all.push(...recs);
  const disc = recs.filter((r) => r.kind === 'discard');
  eq(disc.reduce((n, r) => n + r.length, 0), MiB, 'discarded bytes recorded');
  eq(Math.min(...disc.map((r) => r.offset)), 10 * MiB, 'discard offset');

  // a burst of direct and buffered writes, then: stream replayed == device
  let rnd = 12345;
  const next = (n: number): number => {
    rnd = (rnd * 1103515245 + 12345) >>> 0;
    return rnd % n;
  };
  for (let i = 0; i < 120; i++) {
    const off = next((12 * MiB) / 512) * 512;
    const len = (1 + next(64)) * 512;
    const data = pattern(1000 + i, Math.min(len, 12 * MiB - off));
    if (i % 2 === 0) ddWrite(path, off, data);
    else fs.writeSync(fd, data, 0, data.length, off);
  }
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  recs = await drain(ctl);
  all.push(...recs);
  checkSeqs(all, 'whole stream');
  const { image, skip } = await replay(size, all, (o, l) => readRange(path, o, l));
  const device0 = await readDirect(path, 0, size);
  facts.replayMismatches = compareImages(device0, image, skip, 'replay');
  facts.records = all.length;
  facts.kinds = [...new Set(all.map((r) => r.kind))];
  d = await device(ctl, 'f0');
  facts.counters = d.counters;
  eq(d.counters.dirtyRecords, 0, 'no DIRTY records with a big pool');
  eq(d.counters.bitmapWrites, 0, 'no bitmap-only writes with a big ring');
  await ctl.close();
}

/** Tiny pool and ring: DATA -> METADATA -> BITMAP -> DRAINING -> DATA, and the replay still matches. */
async function scenarioDegrade(): Promise<void> {
  const path = '/dev/mapper/f0';
  const ctl = await FerryControl.open();
  let d = await device(ctl, 'f0');
  eq(d.poolSize, 64 * KiB, 'pool from pool_kb=64');
  eq(d.ringCapacity, 64, 'ring from ring_records=64');
  eq(d.granularity, 4096, 'granularity from granularity_kb=4');
  await drain(ctl);
  await drainWholeBitmap(ctl, d);
  const all: Rec[] = await drain(ctl); // the cut record and MODE(data)
  const region = (i: number): number => i * 4096;
  const written = new Map<number, Buffer>();
  const put = (i: number): void => {
    const data = pattern(5000 + i, 4096);
    written.set(i, data);
    ddWrite(path, region(i), data);
  };

  // DATA until the 64 KiB pool is full
  for (let i = 0; i < 16; i++) put(i);
  d = await device(ctl, 'f0');
  eq(d.modeName, 'data', 'mode with a full pool');
  eq(d.poolUsed, 64 * KiB, 'pool full');
  // the next write has no pool room: METADATA (DIRTY records), until the ring's I/O limit
  put(16);
  d = await device(ctl, 'f0');
  eq(d.modeName, 'metadata', 'mode after the pool ran out');
  let i = 17;
  for (; i < 200 && d.modeName !== 'bitmap'; i++) {
    put(i);
    d = await device(ctl, 'f0');
  }
  facts.firstBitmapRegion = i - 1;
  eq(d.modeName, 'bitmap', 'mode after the ring filled');
  eq(d.ringUsed, 64 - 16 + 1, 'ring: the I/O limit plus the MODE(BITMAP) record');
  const firstBitmap = i - 1;
  for (let j = 0; j < 12; j++) put(i + j);
  const lastBitmap = i + 11;
  const fd = fs.openSync(path, 'r+');
  fs.fsyncSync(fd); // a flush in BITMAP mode has nothing to order: dropped
  fs.closeSync(fd);
  d = await device(ctl, 'f0');
  eq(d.dirtyBits, lastBitmap - firstBitmap + 1, 'bitmap bits = writes since the overflow');
  eq(d.counters.bitmapWrites, lastBitmap - firstBitmap + 1, 'bitmap-only writes');
  check(d.counters.droppedFlushes >= 1, 'flush dropped in BITMAP mode');
  await expectCode(ctl.getBitmap(d.index), 'EBUSY', 'GET_BITMAP in BITMAP mode');
  await expectCode(ctl.tag([d.index], { holdMs: 100 }), 'ENOSPC', 'TAG in BITMAP mode');

  // drain the ring: DRAINING
  let recs = await drain(ctl);
  all.push(...recs);
  const modes = (rs: KernelRecord[]): string[] => rs.filter((r) => r.kind === 'mode').map((r) => r.mode);
  facts.kindsUntilDraining = kinds(recs);
  const writesData = recs.filter((r) => r.kind === 'write');
  eq(writesData.length, 16, 'WRITE records with payload');
  for (const r of writesData) {
    const idx = r.offset / 4096;
    check(written.get(idx)?.equals(r.data) ?? false, `payload of region ${idx}`);
    eq(r.accuracy, 'exact', `accuracy of DATA write ${idx}`);
  }
  const dirty = recs.filter((r) => r.kind === 'dirty');
  eq(dirty.length, firstBitmap - 16, 'DIRTY records (METADATA mode)');
  check(dirty.every((r) => r.accuracy === 'approximate' && r.data.length === 0 && r.length === 4096), 'DIRTY records: approximate, no payload');
  d = await device(ctl, 'f0');
  eq(d.modeName, 'draining', 'mode after the ring drained');
  // records flow again (with payload: the pool is free) but points are not usable yet
  put(300);
  recs = await drain(ctl);
  all.push(...recs);
  const w300 = recs.find((r) => r.kind === 'write' && r.offset === region(300));
  eq(w300?.accuracy, 'none', 'write while draining: accuracy none');
  eq(w300?.mode, 'draining', 'write while draining: mode');
  check(w300?.data.equals(written.get(300) ?? Buffer.alloc(0)) ?? false, 'write while draining carries its payload');

  // drain the bitmap: exactly the regions written in BITMAP mode
  const bm = await ctl.readBitmap(d.index, { cut: true });
  const ranges = dirtyRanges(bm.data, bm.nbits, bm.granularity, d.sizeBytes);
  eq(JSON.stringify(ranges), JSON.stringify([{ offset: region(firstBitmap), length: (lastBitmap - firstBitmap + 1) * 4096 }]), 'dirty ranges');
  for (let j = firstBitmap; j <= lastBitmap; j++) {
    const back = await readRange(path, region(j), 4096);
    check(back.equals(written.get(j) ?? Buffer.alloc(0)), `region ${j} reads back what was written`);
  }
  eq(await ctl.clearBitmap(d.index, bm.epoch, 0, bm.nbits), 0, 'bits left');
  d = await device(ctl, 'f0');
  eq(d.modeName, 'data', 'mode after the bitmap drained');
  put(301);
  recs = await drain(ctl);
  all.push(...recs);
  const w301 = recs.find((r) => r.kind === 'write' && r.offset === region(301));
  eq(w301?.accuracy, 'exact', 'write after the drain: exact again');
  eq(JSON.stringify(modes(all)), JSON.stringify(['data', 'metadata', 'bitmap', 'draining', 'data']), 'mode records');
  checkSeqs(all, 'degrade stream');

  // replay: payloads, DIRTY ranges and the bitmap regions read back => the device
  const readBack = (o: number, l: number): Promise<Buffer> => readRange(path, o, l);
  const { image } = await replay(d.sizeBytes, all, readBack);
  for (const r of ranges) (await readBack(r.offset, r.length)).copy(image, r.offset);
  facts.replayMismatches = compareImages(await readDirect(path, 0, d.sizeBytes), image, [], 'degrade replay');
  d = await device(ctl, 'f0');
  facts.counters = d.counters;
  facts.seqLimit = d.seqLimit;
  facts.nextSeq = d.nextSeq;
  await ctl.close();
}

/**
 * A mini agent drains while writers run: DIRTY ranges are read back when their record is
 * processed, bitmap regions are read right after the cut and applied at the cut's seq. At the
 * end the replica built that way must equal the device (invariants 3 and 4).
 */
async function scenarioStress(): Promise<void> {
  const path = '/dev/mapper/f0';
  const ctl = await FerryControl.open();
  let d = await device(ctl, 'f0');
  const size = d.sizeBytes;
  const replica = Buffer.alloc(size);
  const atCut = new Map<number, Array<{ offset: number; data: Buffer }>>();
  const stats = { batches: 0, records: 0, dirtyReads: 0, bitmapDrains: 0, staleClears: 0, busyReads: 0, modes: [] as string[] };

  const drainBitmapNow = async (): Promise<void> => {
    let bm;
    try {
      bm = await ctl.readBitmap(d.index, { cut: true });
    } catch (err) {
      // Back in BITMAP mode since the device was read (the ring overflowed again): drain later,
      // as the agent does (bitmapReadRetryable).
      if (!isFerryNativeError(err) || err.code !== 'EBUSY') throw err;
      stats.busyReads++;
      return;
    }
    const reads: Array<{ offset: number; data: Buffer }> = [];
    for (const r of dirtyRanges(bm.data, bm.nbits, bm.granularity, size)) reads.push({ offset: r.offset, data: Buffer.from(await readRange(path, r.offset, r.length)) });
    atCut.set(bm.cutSeq, reads);
    stats.bitmapDrains++;
    try {
      await ctl.clearBitmap(d.index, bm.epoch, 0, bm.nbits);
    } catch (err) {
      if (!isFerryNativeError(err) || err.code !== 'ESTALE') throw err;
      stats.staleClears++; // overflowed again: the bits stay, drained again later
    }
  };
  const apply = async (r: KernelRecord): Promise<void> => {
    if (r.kind === 'write') r.data.copy(replica, r.offset);
    else if (r.kind === 'dirty') {
      (await readRange(path, r.offset, r.length)).copy(replica, r.offset);
      stats.dirtyReads++;
    } else if (r.kind === 'resync-mark' && (r.flags & RecordFlag.BITMAP_CUT) !== 0) {
      const reads = atCut.get(r.seq);
      if (reads === undefined) failures.push(`no bitmap data for cut ${r.seq}`);
      for (const x of reads ?? []) x.data.copy(replica, x.offset);
      atCut.delete(r.seq);
    } else if (r.kind === 'mode') stats.modes.push(r.mode);
  };

  // writers: 4 O_DIRECT dd streams on disjoint 4 MiB regions, 3 passes each; 1 buffered + fsync
  const run = (cmd: string): Promise<number | null> => new Promise((resolve) => spawn('bash', ['-c', cmd], { stdio: 'inherit' }).once('exit', resolve));
  const writers = [0, 1, 2, 3].map((w) => run(`for p in 1 2 3; do dd if=/dev/urandom of=${path} bs=4k count=1024 seek=${w * 1024} oflag=direct conv=notrunc status=none; done`));
  writers.push(run(`for p in 1 2 3; do dd if=/dev/urandom of=${path} bs=64k count=64 seek=${(16 * MiB) / (64 * KiB)} conv=notrunc,fsync status=none; done`));
  let running = writers.length;
  const done = Promise.all(writers.map((w) => w.then((code) => { running--; eq(code, 0, 'writer exit'); })));

  let next: number | undefined;
  for (;;) {
    const batch = await ctl.getChanges();
    if (batch.batchId !== 0) {
      stats.batches++;
      for (const r of batch.records) {
        if (next !== undefined && r.seq !== next) failures.push(`seq ${r.seq} follows ${next - 1}`);
        next = r.seq + 1;
        stats.records++;
        await apply(r);
      }
      await ctl.commit(batch.batchId);
    }
    d = await device(ctl, 'f0');
    if (d.modeName === 'draining' && d.dirtyBits > 0) await drainBitmapNow();
    if (batch.batchId === 0) {
      if (running === 0 && d.dirtyBits === 0 && d.modeName !== 'bitmap' && atCut.size === 0) break;
      await ctl.wait(200);
    }
  }
  await done;
  const back = await readDirect(path, 0, size);
  facts.replayMismatches = compareImages(back, replica, [], 'stress replica');
  facts.stats = stats;
  facts.counters = d.counters;
  check(stats.modes.includes('metadata') || stats.modes.includes('bitmap'), `the load degraded the device (modes ${stats.modes.join(',')})`);
  await ctl.close();
}

/** Multi-device tag: one cut, bounded hold, timeout revokes, suspended device refused. */
async function scenarioTag(): Promise<void> {
  const ctl = await FerryControl.open();
  const f0 = await device(ctl, 'f0');
  const f1 = await device(ctl, 'f1');
  const f2 = await device(ctl, 'f2'); // over dm-delay: writes take 1.5 s
  await drain(ctl);
  for (const dev of [f0, f1, f2]) await drainWholeBitmap(ctl, dev);
  await drain(ctl);

  // A writer process alternates writes between f0 and f1, each finished (fdatasync) before the
  // next starts; every write carries its global counter in its first 8 bytes.
  const writer = spawn(process.execPath, [__filename, 'writer', '240'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let progress = 0;
  let tagResult: { seqs: number[]; holdNs: number } | undefined;
  let tagError: unknown;
  let tagDone: Promise<void> | undefined;
  const writerExit = new Promise<number | null>((resolve) => writer.once('exit', resolve));
  writer.stdout.setEncoding('utf8');
  writer.stdout.on('data', (chunk: string) => {
    for (const line of chunk.split('\n')) if (line.startsWith('wrote ')) progress = Number(line.slice(6));
    if (progress >= 60 && tagDone === undefined) {
      tagDone = ctl.tag([f0.index, f1.index], { holdMs: 300, tagId: 4242 }).then(
        (r) => void (tagResult = r),
        (e) => void (tagError = e),
      );
    }
  });
  eq(await writerExit, 0, 'writer exit code');
  await tagDone;
  check(tagError === undefined, `tag failed: ${String(tagError)}`);
  facts.tag = tagResult;
  const recs = await drain(ctl);
  const counters = new Map<number, { dev: number; seq: number }>();
  for (const r of recs) {
    if (r.kind === 'write' && r.length === 4096 && r.data.length === 4096 && (r.devIndex === f0.index || r.devIndex === f1.index)) {
      counters.set(Number(r.data.readBigUInt64LE(0)), { dev: r.devIndex, seq: r.seq });
    }
  }
  eq(counters.size, 240, 'every writer write captured once');
  if (tagResult) {
    const tagSeq = new Map([
      [f0.index, tagResult.seqs[0]],
      [f1.index, tagResult.seqs[1]],
    ]);
    const tags = recs.filter((r) => r.kind === 'tag');
    eq(tags.length, 2, 'one TAG record per device');
    for (const t of tags) {
      eq(t.offset, 4242, 'TAG carries the tag id');
      eq(t.seq, tagSeq.get(t.devIndex), `TAG seq on device ${t.devIndex}`);
    }
    let maxBefore = -1;
    let minAfter = Infinity;
    for (const [n, at] of counters) {
      if (at.seq < (tagSeq.get(at.dev) ?? 0)) maxBefore = Math.max(maxBefore, n);
      else minAfter = Math.min(minAfter, n);
    }
    facts.cut = { maxBefore, minAfter };
    check(maxBefore >= 0 && minAfter < Infinity, 'writes on both sides of the tag');
    check(maxBefore < minAfter, `one cut: write ${maxBefore} is before the tag but ${minAfter} after`);
    check(tagResult.holdNs <= 300e6 + 50e6, `hold ${tagResult.holdNs} ns exceeds the 300 ms bound`);
  }
  checkSeqs(recs, 'tag stream');

  // Timeout: a write to f2 is in flight for 1.5 s; a 200 ms hold cannot be achieved.
  const slow = ddWriteAsync('/dev/mapper/f2', 0, pattern(77, 4096));
  for (let n = 0; n < 100000 && (await device(ctl, 'f2')).inflight === 0; n++);
  eq((await device(ctl, 'f2')).inflight, 1, 'slow write in flight');
  const t0 = Date.now();
  const err = (await expectCode(ctl.tag([f0.index, f2.index], { holdMs: 200, tagId: 99 }), 'ETIMEDOUT', 'tag with a write stuck in flight')) as { holdNs?: number } | undefined;
  const holdNs = err?.holdNs ?? 0;
  facts.timeoutHoldNs = holdNs;
  check(holdNs >= 190e6 && holdNs <= 200e6 + 80e6, `timed-out hold lasted ${holdNs} ns (bound 200 ms)`);
  check(Date.now() - t0 < 1200, 'the failed tag returned before the slow write finished');
  // writes are released: f0 takes a write right away
  const t1 = Date.now();
  ddWrite('/dev/mapper/f0', 8 * MiB, pattern(78, 4096));
  facts.writeAfterRevokeMs = Date.now() - t1;
  await slow;
  const after = await drain(ctl);
  eq(after.filter((r) => r.kind === 'tag').length, 0, 'no TAG record from the failed tag');
  const stats = await ctl.stats();
  eq(stats.tagsTimedOut, 1, 'stats: tags timed out');
  eq(stats.tagsOk, 1, 'stats: tags ok');
  facts.tagHoldMaxNs = stats.tagHoldMaxNs;
  // with nothing in flight the same tag succeeds
  const ok = await ctl.tag([f0.index, f2.index], { holdMs: 200, tagId: 100 });
  eq(ok.seqs.length, 2, 'tag over f0 and the dm-delay device');
  // a suspended device cannot take a tag
  sh('dmsetup suspend f1');
  await expectCode(ctl.tag([f0.index, f1.index], { holdMs: 100 }), 'EAGAIN', 'tag with a suspended device');
  await expectCode(ctl.resyncMark(f1.index, 0, 4096), 'EAGAIN', 'resync mark on a suspended device');
  sh('dmsetup resume f1');
  eq((await ctl.tag([f0.index, f1.index], { holdMs: 100 })).seqs.length, 2, 'tag after resume');
  await expectCode(ctl.tag([f0.index, 63]), 'ENODEV', 'tag with an unknown device');
  await drain(ctl);
  await ctl.close();
}

/**
 * hold (runs after `tag` in the same boot): the two phases of a group round. A write issued
 * during a hold waits until the commit and completes right after; the TAG records are one cut
 * (writes before the hold at or below it, the held write after). Without a commit the bound
 * releases the hold by itself and a late commit gets ESTALE with no TAG; a drain that cannot
 * finish releases at once; the owner's close releases.
 */
async function scenarioHold(): Promise<void> {
  const ctl = await FerryControl.open();
  const f0 = await device(ctl, 'f0');
  const f1 = await device(ctl, 'f1');
  const f2 = await device(ctl, 'f2'); // over dm-delay: writes take 1.5 s
  for (const dev of [f0, f1, f2]) if (dev.modeName !== 'data') await drainWholeBitmap(ctl, dev);
  await drain(ctl);
  const before = (await ctl.stats()).holds;

  // -- commit: writes before the hold, one during it
  ddWrite('/dev/mapper/f0', 16 * MiB, pattern(201, 4096));
  ddWrite('/dev/mapper/f1', 16 * MiB, pattern(202, 4096));
  let t0 = Date.now();
  const h = await ctl.hold([f0.index, f1.index], 3000);
  const heldAt = Date.now();
  facts.holdCallMs = heldAt - t0;
  facts.holdDrainNs = h.drainNs;
  check(h.holdId > 0, 'hold id');
  for (const d of [await device(ctl, 'f0'), await device(ctl, 'f1')]) check((d.flags & 2) !== 0, `${d.name} reports the hold flag`);
  const held = ddWriteChild('/dev/mapper/f1', 16 * MiB + 4096, pattern(203, 4096));
  let heldDone = 0;
  void held.done.then((at) => (heldDone = at));
  check(await until(() => blockedInWrite(held.pid), 2000), 'the write during the hold reached dm-ferry and waits');
  await expectCode(ctl.hold([f0.index], 1000), 'EBUSY', 'a second hold while one is in place');
  await expectCode(ctl.tag([f1.index], { holdMs: 100 }), 'EBUSY', 'a tag of its own while a hold is in place');
  // the network round of a group commit takes a while; the write must still wait
  await new Promise((resolve) => setTimeout(resolve, 300));
  eq(heldDone, 0, 'the held write had not completed before the commit');
  const commitAt = Date.now();
  const cut = await ctl.tagHold(h.holdId, { tagId: 5151 });
  const committedAt = Date.now();
  const doneAt = await held.done;
  facts.commitCallMs = committedAt - commitAt;
  facts.heldWriteDoneAfterCommitMs = doneAt - committedAt;
  facts.holdNs = cut.holdNs;
  facts.holdWallMs = committedAt - heldAt;
  check(doneAt >= commitAt, 'the held write completed only after the commit was issued');
  check(doneAt - committedAt < 3000, `the held write completed right after the commit (${doneAt - committedAt} ms)`);
  eq(JSON.stringify(cut.devices), JSON.stringify([f0.index, f1.index]), 'the cut covers exactly the held devices, in order');
  check(cut.holdNs >= 300e6 && cut.holdNs < 3000e6, `hold lasted ${cut.holdNs} ns (from the hold to the commit)`);
  let recs = await drain(ctl);
  const tags = recs.filter((r) => r.kind === 'tag');
  eq(tags.length, 2, 'one TAG record per held device');
  const tagSeq = new Map(cut.devices.map((d, i) => [d, cut.seqs[i]]));
  for (const t of tags) {
    eq(t.offset, 5151, 'TAG carries the tag id');
    eq(t.seq, tagSeq.get(t.devIndex), `TAG seq on device ${t.devIndex}`);
  }
  const at = (dev: number, off: number): Rec | undefined => recs.find((r) => r.kind === 'write' && r.devIndex === dev && r.offset === off);
  const w0 = at(f0.index, 16 * MiB);
  const w1 = at(f1.index, 16 * MiB);
  const w2 = at(f1.index, 16 * MiB + 4096);
  check(w0 !== undefined && w0.seq < (tagSeq.get(f0.index) ?? 0), 'f0: the write before the hold is below the cut');
  check(w1 !== undefined && w1.seq < (tagSeq.get(f1.index) ?? 0), 'f1: the write before the hold is below the cut');
  check(w2 !== undefined && w2.seq > (tagSeq.get(f1.index) ?? Infinity), 'f1: the write held during the hold is after the cut');
  facts.cut = { f0Tag: tagSeq.get(f0.index), f1Tag: tagSeq.get(f1.index), before: [w0?.seq, w1?.seq], held: w2?.seq };
  await expectCode(ctl.releaseHold(h.holdId), 'ESTALE', 'release of a committed hold');
  checkSeqs(recs, 'hold stream');

  // -- nobody commits: the bound releases by itself
  const bound = 1500;
  t0 = Date.now();
  const h2 = await ctl.hold([f0.index, f1.index], bound);
  const held2 = ddWriteChild('/dev/mapper/f0', 16 * MiB + 8192, pattern(204, 4096));
  check(await until(() => blockedInWrite(held2.pid), 1200), 'the write during the second hold waits');
  const done2 = await held2.done;
  facts.expiredWriteDoneMs = done2 - t0;
  facts.expiryBoundMs = bound;
  check(done2 - t0 >= bound - 50, `the write waited for the bound (${done2 - t0} ms of ${bound})`);
  check(done2 - t0 < bound + 1500, `the bound released the write in time (${done2 - t0} ms of ${bound})`);
  const late = await expectCode(ctl.tagHold(h2.holdId, { tagId: 5252 }), 'ESTALE', 'commit after the bound');
  check(late instanceof HoldEndedError, 'a late commit rejects with HoldEndedError');
  await expectCode(ctl.releaseHold(h2.holdId), 'ESTALE', 'release after the bound');
  recs = await drain(ctl);
  eq(recs.filter((r) => r.kind === 'tag').length, 0, 'no TAG record from the expired hold');
  check(recs.some((r) => r.kind === 'write' && r.devIndex === f0.index && r.offset === 16 * MiB + 8192), 'the write released by the bound was captured');

  // -- a write in flight that cannot drain: ETIMEDOUT at once, nothing stays held
  const slow = ddWriteAsync('/dev/mapper/f2', 0, pattern(205, 4096));
  for (let n = 0; n < 100000 && (await device(ctl, 'f2')).inflight === 0; n++);
  t0 = Date.now();
  const err = (await expectCode(ctl.hold([f0.index, f2.index], 200), 'ETIMEDOUT', 'hold with a write stuck in flight')) as { drainNs?: number } | undefined;
  facts.timeoutDrainNs = err?.drainNs;
  check((err?.drainNs ?? 0) >= 190e6 && (err?.drainNs ?? 0) < 200e6 + 80e6, `drain timeout after ${err?.drainNs} ns (bound 200 ms)`);
  check(((await device(ctl, 'f0')).flags & 2) === 0, 'f0 released after the drain timeout');
  const t1 = Date.now();
  ddWrite('/dev/mapper/f0', 16 * MiB + 12288, pattern(206, 4096));
  facts.writeAfterDrainTimeoutMs = Date.now() - t1;
  await slow;

  // -- the close of the fd that asked for a hold releases it
  const other = await FerryControl.open();
  await other.hold([f1.index], 5000);
  check(((await device(ctl, 'f1')).flags & 2) !== 0, 'f1 held by the other fd');
  await other.close();
  check(((await device(ctl, 'f1')).flags & 2) === 0, 'closing the owner released the hold');
  await drain(ctl);

  const stats = (await ctl.stats()).holds;
  facts.holds = stats;
  eq(stats.ok - before.ok, 1, 'stats: holds committed');
  eq(stats.expired - before.expired, 1, 'stats: holds expired');
  eq(stats.aborted - before.aborted, 2, 'stats: holds aborted (drain timeout, close)');
  check(stats.maxNs >= cut.holdNs, 'stats: longest hold');
  await ctl.close();
}

/** Writer child for scenarioTag: n sequential writes alternating between f0 and f1. */
function writer(n: number): void {
  const fds = [fs.openSync('/dev/mapper/f0', 'r+'), fs.openSync('/dev/mapper/f1', 'r+')];
  const buf = Buffer.alloc(4096);
  for (let i = 0; i < n; i++) {
    buf.fill(i & 0xff);
    buf.writeBigUInt64LE(BigInt(i), 0);
    const fd = fds[i % 2];
    fs.writeSync(fd, buf, 0, 4096, (i % 512) * 4096);
    fs.fdatasyncSync(fd);
    process.stdout.write(`wrote ${i + 1}\n`);
  }
  for (const fd of fds) fs.closeSync(fd);
}

/** Redelivery, ownership, buffer limits and every documented errno of the control device. */
async function scenarioErrnos(): Promise<void> {
  const path = '/dev/mapper/f0';
  const native = loadNative();
  const C = native.ctlConstants;
  const a = await FerryControl.open();
  const b = await FerryControl.open();
  let d = await device(a, 'f0');
  await drain(a);
  await drainWholeBitmap(a, d);
  await drain(a);

  // get without commit, then the consumer goes away: everything comes back, flagged
  for (let i = 0; i < 3; i++) ddWrite(path, i * 4096, pattern(i, 4096));
  const first = await a.getChanges(Buffer.alloc(MiB));
  eq(first.records.length, 3, 'records in the first batch');
  await expectCode(b.getChanges(Buffer.alloc(MiB)), 'EBUSY', 'a second consumer');
  await expectCode(b.commit(first.batchId), 'EBUSY', 'commit from a non-owner');
  await a.close();
  const again = await b.getChanges(Buffer.alloc(MiB));
  eq(JSON.stringify(again.records.map((r) => r.seq)), JSON.stringify(first.records.map((r) => r.seq)), 'redelivered seqs');
  check(again.redelivery, 'batch flagged as redelivery');
  check(again.records.every((r) => (r.flags & RecordFlag.REDELIVERED) !== 0), 'records flagged REDELIVERED');
  check(again.records.every((r, i) => r.data.equals(pattern(i, 4096))), 'redelivered payloads');
  check(again.batchId > first.batchId, 'a new batch id');
  await expectCode(b.commit(first.batchId), 'ESTALE', 'commit of a batch voided by the reset');
  await b.commit(again.batchId);
  await b.commit(again.batchId); // idempotent
  await expectCode(b.commit(again.batchId + 1), 'EINVAL', 'commit of a batch never handed out');

  // an agent killed with SIGKILL: the kernel closes its fd, its batch is redelivered
  ddWrite(path, 8 * 4096, pattern(8, 4096));
  await b.close();
  const child = spawn(process.execPath, [__filename, 'grab-and-die'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let grabbed = '';
  child.stdout.on('data', (c: Buffer) => (grabbed += c.toString()));
  await new Promise((resolve) => child.once('exit', resolve));
  eq(child.signalCode, 'SIGKILL', 'the grabbing agent died by SIGKILL');
  const c = await FerryControl.open();
  const redo = await c.getChanges(Buffer.alloc(MiB));
  eq(JSON.stringify(redo.records.map((r) => r.seq)), grabbed.trim(), 'batch of the killed agent redelivered');
  check(redo.redelivery, 'killed agent: redelivery flag');
  await c.commit(redo.batchId);

  // buffer limits and the outstanding-batch bound
  ddWrite(path, 0, pattern(9, 4096));
  const small = (await expectCode(c.getChanges(Buffer.alloc(100)), 'EMSGSIZE', 'buffer too small')) as { needed?: number } | undefined;
  eq(small?.needed, 48 + 48 + 4096, 'EMSGSIZE reports the bytes needed');
  await drain(c);
  for (let i = 0; i < 17; i++) ddWrite(path, i * 512, pattern(100 + i, 512));
  const ids: number[] = [];
  for (let i = 0; i < 16; i++) ids.push((await c.getChanges(Buffer.alloc(48 + 48 + 512))).batchId);
  await expectCode(c.getChanges(Buffer.alloc(MiB)), 'ENOBUFS', '17th uncommitted batch');
  await c.commit(ids[15]);
  await drain(c);

  // raw ioctls with malformed arguments
  const fd = c.fd;
  const raw = async (req: number, buf: Buffer, code: string, what: string): Promise<Buffer> => {
    await expectCode(native.ctlIoctlRaw(fd, req, buf), code, what);
    return buf;
  };
  const arg = (size: number, fill: (b: Buffer) => void = () => {}, version = C.FERRY_ABI_VERSION): Buffer => {
    const buf = Buffer.alloc(size);
    buf.writeUInt32LE(size, 0);
    buf.writeUInt32LE(version, 4);
    fill(buf);
    return buf;
  };
  const ok = async (req: number, buf: Buffer, what: string): Promise<void> => {
    try {
      await native.ctlIoctlRaw(fd, req, buf);
    } catch (err) {
      failures.push(`${what}: ${(err as Error).message}`);
    }
  };
  const wrongSize = arg(64);
  wrongSize.writeUInt32LE(60, 0);
  await raw(C.FERRY_IOC_VERSION, wrongSize, 'EINVAL', 'VERSION with a wrong size field');
  await ok(C.FERRY_IOC_VERSION, arg(64, () => {}, 77), 'VERSION accepts any version');
  await raw(C.FERRY_IOC_LIST, arg(32, () => {}, C.FERRY_ABI_VERSION + 1), 'EPROTO', 'LIST with the next ABI version');
  await raw(C.FERRY_IOC_LIST, arg(32, (x) => x.writeUInt32LE(65, 16)), 'EINVAL', 'LIST capacity 65');
  await raw(C.FERRY_IOC_LIST, arg(32, (x) => x.writeUInt32LE(1, 28)), 'EINVAL', 'LIST reserved field');
  await raw(C.FERRY_IOC_LIST, arg(32, (x) => x.writeUInt32LE(1, 16)), 'EFAULT', 'LIST with a null entries pointer');
  await raw(C.FERRY_IOC_GET_CHANGES, arg(56, (x) => x.writeBigUInt64LE(1024n, 16)), 'EFAULT', 'GET with a null buffer');
  await raw(C.FERRY_IOC_GET_CHANGES, arg(56, (x) => { x.writeBigUInt64LE(1n << 46n, 8); x.writeBigUInt64LE(1n << 20n, 16); }), 'EFAULT', 'GET with a bad buffer pointer');
  await raw(C.FERRY_IOC_COMMIT, arg(16), 'EINVAL', 'COMMIT batch 0');
  const tagArg = (ndevs: number, holdMs: number, devs: number[], reserved = 0): Buffer =>
    arg(808, (x) => {
      x.writeUInt32LE(holdMs, 16);
      x.writeUInt32LE(ndevs, 20);
      devs.forEach((v, i) => x.writeUInt32LE(v, 24 + 4 * i));
      x.writeBigUInt64LE(BigInt(reserved), 800);
    });
  await raw(C.FERRY_IOC_TAG, tagArg(0, 100, []), 'EINVAL', 'TAG with no device');
  await raw(C.FERRY_IOC_TAG, tagArg(65, 100, [0]), 'EINVAL', 'TAG with 65 devices');
  await raw(C.FERRY_IOC_TAG, tagArg(1, 5001, [0]), 'EINVAL', 'TAG hold over 5 s');
  await raw(C.FERRY_IOC_TAG, tagArg(2, 100, [0, 0]), 'EINVAL', 'TAG with a device twice');
  await raw(C.FERRY_IOC_TAG, tagArg(1, 100, [7]), 'ENODEV', 'TAG with an untracked index');
  await raw(C.FERRY_IOC_TAG, tagArg(1, 100, [64]), 'ENODEV', 'TAG with index 64');
  await raw(C.FERRY_IOC_TAG, tagArg(1, 100, [0], 1), 'EINVAL', 'TAG reserved field');
  await raw(C.FERRY_IOC_STATS, arg(520, (x) => x.writeUInt32LE(9, 8)), 'ENODEV', 'STATS of an untracked index');
  await raw(C.FERRY_IOC_STATS, arg(520, (x) => { x.writeUInt32LE(0xffffffff, 8); x.writeUInt32LE(1, 12); }), 'EINVAL', 'STATS reserved field');
  await raw(C.FERRY_IOC_STATS_V0, arg(488, (x) => x.writeUInt32LE(9, 8)), 'ENODEV', 'STATS (size before holds) of an untracked index');
  await ok(C.FERRY_IOC_STATS_V0, arg(488, (x) => x.writeUInt32LE(0xffffffff, 8)), 'STATS with the size before holds');
  await raw(C.FERRY_IOC_STATS_V0, arg(520, (x) => x.writeUInt32LE(0xffffffff, 8)), 'EINVAL', 'STATS (size before holds) with the full size field');
  const holdArg = (ndevs: number, holdMs: number, devs: number[], reserved = 0): Buffer =>
    arg(296, (x) => {
      x.writeUInt32LE(holdMs, 8);
      x.writeUInt32LE(ndevs, 12);
      devs.forEach((v, i) => x.writeUInt32LE(v, 16 + 4 * i));
      x.writeBigUInt64LE(BigInt(reserved), 288);
    });
  await raw(C.FERRY_IOC_HOLD, holdArg(0, 100, []), 'EINVAL', 'HOLD with no device');
  await raw(C.FERRY_IOC_HOLD, holdArg(1, 0, [0]), 'EINVAL', 'HOLD without a bound');
  await raw(C.FERRY_IOC_HOLD, holdArg(1, 5001, [0]), 'EINVAL', 'HOLD over 5 s');
  await raw(C.FERRY_IOC_HOLD, holdArg(2, 100, [0, 0]), 'EINVAL', 'HOLD with a device twice');
  await raw(C.FERRY_IOC_HOLD, holdArg(1, 100, [0], 1), 'EINVAL', 'HOLD reserved field');
  await raw(C.FERRY_IOC_HOLD, holdArg(1, 100, [7]), 'ENODEV', 'HOLD with an untracked index');
  await raw(C.FERRY_IOC_RELEASE, arg(32), 'EINVAL', 'RELEASE of hold 0');
  await raw(C.FERRY_IOC_RELEASE, arg(32, (x) => x.writeBigUInt64LE(1n << 40n, 8)), 'EINVAL', 'RELEASE of a hold never given out');
  const bmArg = (dev: number, flags: number, ptr: bigint, startByte: bigint, len: number): Buffer =>
    arg(80, (x) => {
      x.writeUInt32LE(dev, 8);
      x.writeUInt32LE(flags, 12);
      x.writeBigUInt64LE(ptr, 16);
      x.writeBigUInt64LE(startByte, 24);
      x.writeUInt32LE(len, 32);
    });
  await raw(C.FERRY_IOC_GET_BITMAP, bmArg(0, 0, 1n << 46n, 0n, 0), 'EINVAL', 'GET_BITMAP of 0 bytes');
  await raw(C.FERRY_IOC_GET_BITMAP, bmArg(0, 2, 1n << 46n, 0n, 8), 'EINVAL', 'GET_BITMAP unknown flag');
  await raw(C.FERRY_IOC_GET_BITMAP, bmArg(0, 0, 0n, 0n, 8), 'EFAULT', 'GET_BITMAP null buffer');
  await raw(C.FERRY_IOC_GET_BITMAP, bmArg(3, 0, 1n << 46n, 0n, 8), 'ENODEV', 'GET_BITMAP untracked index');
  await expectCode(c.getBitmap(d.index, { startByte: 1 << 30 }), 'ERANGE', 'GET_BITMAP past the end');
  d = await device(c, 'f0');
  await expectCode(c.clearBitmap(d.index, d.bitmapEpoch, 0, 0), 'EINVAL', 'CLEAR_BITMAP of 0 bits');
  await expectCode(c.clearBitmap(d.index, d.bitmapEpoch, d.bitmapBits, 1), 'ERANGE', 'CLEAR_BITMAP past the end');
  await expectCode(c.clearBitmap(d.index, d.bitmapEpoch + 5, 0, 1), 'ESTALE', 'CLEAR_BITMAP with a stale epoch');
  await expectCode(c.clearBitmap(9, 0, 0, 1), 'ENODEV', 'CLEAR_BITMAP untracked index');
  await expectCode(c.resyncMark(d.index, 0, 0), 'EINVAL', 'RESYNC_MARK of 0 bytes');
  await expectCode(c.resyncMark(d.index, d.sizeBytes, 512), 'ERANGE', 'RESYNC_MARK at the end');
  await expectCode(c.resyncMark(d.index, d.sizeBytes - 512, 1024), 'ERANGE', 'RESYNC_MARK across the end');
  await expectCode(c.resyncMark(5, 0, 512), 'ENODEV', 'RESYNC_MARK untracked index');
  await expectCode(c.stats(9), 'ENODEV', 'stats() of an untracked index');
  // an ioctl number the driver does not know, and a known one with the wrong encoded size
  const nr = (n: number, size: number): number => ((3 << 30) | (size << 16) | (0xf7 << 8) | n) >>> 0;
  await raw(nr(0x20, 8), Buffer.alloc(8), 'ENOTTY', 'unknown ioctl number');
  await raw(nr(0x00, 60), arg(64), 'ENOTTY', 'VERSION encoded with a wrong size');

  // resync mark: a marker record with the returned seq, range as asked
  const seq = await c.resyncMark(d.index, 4096, 8192);
  const marks = (await drain(c)).filter((r) => r.kind === 'resync-mark');
  eq(marks.length, 1, 'one RESYNC_MARK record');
  eq(marks[0]?.seq, seq, 'RESYNC_MARK seq');
  eq(marks[0]?.offset, 4096, 'RESYNC_MARK offset');
  eq(marks[0]?.length, 8192, 'RESYNC_MARK length');

  // unprivileged users cannot open the control device
  let denied = '';
  try {
    sh(`setpriv --reuid=65534 --regid=65534 --clear-groups ${process.execPath} -e "require('fs').openSync('/dev/ferry-ctl','r+')"`);
  } catch (err) {
    denied = String((err as { stderr?: string }).stderr ?? err);
  }
  check(/EACCES|EPERM/.test(denied), `unprivileged open refused (got: ${denied.slice(0, 200)})`);
  facts.stats = await c.stats(d.index);
  await c.close();
}

/** Child for scenarioErrnos: take a batch, print its seqs, die by SIGKILL without committing. */
async function grabAndDie(): Promise<void> {
  const ctl = await FerryControl.open();
  const batch = await ctl.getChanges(Buffer.alloc(MiB));
  process.stdout.write(`${JSON.stringify(batch.records.map((r) => r.seq))}\n`, () => process.kill(process.pid, 'SIGKILL'));
}

/** persist-1: after the initial drain, commit some writes, leave others uncommitted. */
async function persistFirst(): Promise<void> {
  const path = '/dev/mapper/f0';
  const ctl = await FerryControl.open();
  let d = await device(ctl, 'f0');
  eq(d.startStateName, 'new', 'first load: new');
  await drain(ctl);
  await drainWholeBitmap(ctl, d);
  await drain(ctl);
  // committed
  for (const off of [0, MiB, 2 * MiB + 64 * KiB]) ddWrite(path, off, pattern(off, 4096));
  await drain(ctl);
  // handed out, not committed; and not even handed out
  ddWrite(path, 5 * MiB, pattern(1, 4096));
  ddWrite(path, 7 * MiB + 128 * KiB, pattern(2, 64 * KiB));
  ddWrite(path, 9 * MiB + 200 * KiB, pattern(3, 64 * KiB)); // spans two 64 KiB regions
  await ctl.getChanges(Buffer.alloc(MiB));
  ddWrite(path, 11 * MiB, pattern(4, 512));
  d = await device(ctl, 'f0');
  facts.nextSeq = d.nextSeq;
  facts.expectedRanges = [
    { offset: 5 * MiB, length: 64 * KiB },
    { offset: 7 * MiB + 128 * KiB, length: 64 * KiB },
    { offset: 9 * MiB + 192 * KiB, length: 128 * KiB },
    { offset: 11 * MiB, length: 64 * KiB },
  ];
  await ctl.close();
}

/** persist-2: after a clean remove + create: CLEAN, the saved bitmap, seqs continue. Then a
 * suspend/resume (same table keeps its records) and a table reload (records -> bitmap). */
async function persistSecond(expectedJson: string, nextSeq: number): Promise<void> {
  const path = '/dev/mapper/f0';
  const ctl = await FerryControl.open();
  let d = await device(ctl, 'f0');
  eq(d.startStateName, 'clean', 'after a clean teardown: clean');
  eq(d.generation, 2, 'generation after one reload');
  eq(d.firstSeq, nextSeq, 'seqs continue where the last load stopped');
  eq(d.modeName, 'draining', 'saved bitmap to drain');
  let recs = await drain(ctl);
  eq(kinds(recs), 'start', 'first record after the reload');
  eq(recs[0]?.seq, nextSeq, 'START seq');
  eq(recs[0]?.length, 2, 'START says CLEAN');
  eq(recs[0]?.offset, 2, 'START carries the generation');
  let bm = await ctl.readBitmap(d.index, { cut: true });
  eq(JSON.stringify(dirtyRanges(bm.data, bm.nbits, bm.granularity, d.sizeBytes)), expectedJson, 'saved bitmap = the uncommitted writes');
  await ctl.clearBitmap(d.index, bm.epoch, 0, bm.nbits);
  await drain(ctl);

  // suspend + resume of the same table: the uncommitted records survive in memory
  ddWrite(path, 20 * MiB, pattern(20, 4096));
  sh('dmsetup suspend f0 && dmsetup resume f0');
  d = await device(ctl, 'f0');
  eq(d.dirtyBits, 0, 'suspend/resume adds no bitmap bits');
  eq(d.modeName, 'data', 'suspend/resume keeps DATA');
  recs = await drain(ctl);
  check(recs.some((r) => r.kind === 'write' && r.offset === 20 * MiB && r.data.equals(pattern(20, 4096))), 'record from before the suspend still delivered');

  // a table reload: a new instance takes over the index; uncommitted records become bitmap bits
  const before = await device(ctl, 'f0');
  ddWrite(path, 30 * MiB, pattern(30, 4096));
  const next = (await device(ctl, 'f0')).nextSeq;
  sh('dmsetup reload f0 --table "$(dmsetup table f0)" && dmsetup resume f0');
  d = await device(ctl, 'f0');
  eq(d.index, before.index, 'reload keeps the device index');
  eq(d.generation, 3, 'generation after the table reload');
  eq(d.startStateName, 'clean', 'reload: clean');
  eq(d.firstSeq, next, 'reload: seqs continue');
  bm = await ctl.readBitmap(d.index, { cut: true });
  eq(JSON.stringify(dirtyRanges(bm.data, bm.nbits, bm.granularity, d.sizeBytes)), JSON.stringify([{ offset: 30 * MiB, length: 64 * KiB }]), 'reload: bitmap of the uncommitted write');
  await ctl.clearBitmap(d.index, bm.epoch, 0, bm.nbits);
  await drain(ctl);

  // leave uncommitted writes and report the seq lease: the test powers off without teardown
  ddWrite(path, 40 * MiB, pattern(40, 4096));
  d = await device(ctl, 'f0');
  facts.seqLimit = d.seqLimit;
  facts.nextSeq = d.nextSeq;
  await ctl.close();
}

/** persist-3: boot after `poweroff -f`: DIRTY, everything to hash-compare, seqs above the lease. */
async function persistThird(seqLimit: number, lastNext: number): Promise<void> {
  const ctl = await FerryControl.open();
  const d = await device(ctl, 'f0');
  eq(d.startStateName, 'dirty', 'after a crash: dirty');
  eq(d.dirtyBits, d.bitmapBits, 'after a crash: every region to compare');
  eq(d.generation, 4, 'generation after the crash');
  eq(d.firstSeq, seqLimit, 'seqs restart at the durable lease');
  check(d.firstSeq >= lastNext, 'no seq reused after the crash');
  const recs = await drain(ctl);
  eq(recs[0]?.kind, 'start', 'START after the crash');
  eq(recs[0]?.length, 3, 'START says DIRTY');
  facts.firstSeq = d.firstSeq;
  await ctl.close();
}

/** live: the ferry table wraps a live linear device; report what was captured. */
async function liveWrapped(): Promise<void> {
  const ctl = await FerryControl.open();
  const list = await ctl.list();
  eq(list.length, 1, 'one tracked device while wrapped');
  const d = list[0];
  eq(d.name, 'lv', 'the wrapped device keeps its name');
  const inner = sh('stat -L -c "%t:%T" /dev/mapper/lv-ferry-inner').trim();
  eq(`${d.dataMajor.toString(16)}:${d.dataMinor.toString(16)}`, inner, 'data device is the inner dm device');
  const recs = await drain(ctl);
  facts.kinds = [...new Set(recs.map((r) => r.kind))];
  facts.records = recs.length;
  check(recs.some((r) => r.kind === 'write'), 'writes to the mounted filesystem captured');
  check(recs.some((r) => r.kind === 'flush'), 'filesystem flushes captured');
  checkSeqs(recs, 'live stream');
  await ctl.close();
}

async function liveUnwrapped(): Promise<void> {
  const ctl = await FerryControl.open();
  eq((await ctl.list()).length, 0, 'no tracked device after unwrapping');
  await ctl.close();
}

async function main(): Promise<void> {
  const [scenario, ...args] = process.argv.slice(2);
  switch (scenario) {
    case 'capture':
      await scenarioCapture();
      break;
    case 'degrade':
      await scenarioDegrade();
      break;
    case 'tag':
      await scenarioTag();
      break;
    case 'hold':
      await scenarioHold();
      break;
    case 'stress':
      await scenarioStress();
      break;
    case 'writer':
      writer(Number(args[0]));
      return;
    case 'errnos':
      await scenarioErrnos();
      break;
    case 'grab-and-die':
      await grabAndDie();
      return;
    case 'persist-1':
      await persistFirst();
      break;
    case 'persist-2':
      await persistSecond(args[0], Number(args[1]));
      break;
    case 'persist-3':
      await persistThird(Number(args[0]), Number(args[1]));
      break;
    case 'live-wrapped':
      await liveWrapped();
      break;
    case 'live-unwrapped':
      await liveUnwrapped();
      break;
    default:
      throw new Error(`unknown scenario ${scenario}`);
  }
  process.stdout.write(`FERRY-RESULT ${JSON.stringify({ scenario, failures, facts })}\n`);
}

main().catch((err: unknown) => {
  process.stdout.write(`FERRY-ERROR ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
