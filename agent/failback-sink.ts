import * as fs from 'fs';
import { blockHashes } from '../common/block-hash';
import { ErrorCode, ProtocolError } from '../proto/errors';
import type { ferry } from '../proto/frames';
import { ScratchBuffer } from '../proto/payload';
import { validateChangeSet, validateHashRequest } from '../proto/validate';

/** The original disk of one volume being failed back onto: opened read-write by the caller. */
export interface SinkDisk {
  volumeId: string;
  fd: number;
  sizeBytes: number;
}

/** A write to the disk failed: nothing of that change set is acked. */
export class DiskWriteError extends Error {}

/**
 * One volume's disk in a failback session: answers the receiver's hash requests with the
 * disk's block hashes, and writes the receiver's change sets. A change set is checked with the
 * receiver's own ingest validation (validateChangeSet: sizes, CRC, decompression, every extent
 * inside the volume) and its seq must follow the last one, before a byte is written; it is
 * acked only once written and fsync'd.
 */
export class FailbackSink {
  private durableSeq = 0;
  private writtenBytes = 0;
  private readonly scratch = new ScratchBuffer();

  constructor(private readonly disk: SinkDisk) {}

  get volumeId(): string {
    return this.disk.volumeId;
  }

  /** Block data written and fsync'd so far. */
  get bytesWritten(): number {
    return this.writtenBytes;
  }

  get lastDurableSeq(): number {
    return this.durableSeq;
  }

  /** The hashes of the blocks the request names, as the disk holds them now. */
  hashes(request: ferry.IHashRequest): ferry.IBlockHashes {
    const req = validateHashRequest(request, this.disk.sizeBytes);
    const end = Math.min(this.disk.sizeBytes, req.offset + req.count * req.blockSize);
    const data = Buffer.alloc(end - req.offset);
    const got = this.readFully(data, req.offset);
    if (got < data.length) throw new DiskWriteError(`volume ${this.disk.volumeId}: the disk ends at ${req.offset + got}, before ${end}`);
    return { volumeId: req.volumeId, offset: req.offset, blockSize: req.blockSize, hashes: blockHashes(data, req.blockSize), requestId: req.requestId };
  }

  /** Validates, writes and fsyncs one change set; returns the seq now durable (to ack). */
  apply(changeSet: ferry.IChangeSet): number {
    const batch = validateChangeSet(changeSet, this.disk.sizeBytes, true, (size) => this.scratch.get(size));
    if (batch.volumeId !== this.disk.volumeId) throw new ProtocolError(ErrorCode.UNKNOWN_VOLUME, `change set for ${batch.volumeId} arrived at the sink of ${this.disk.volumeId}`);
    if (batch.firstSeq !== this.durableSeq + 1) {
      throw new ProtocolError(ErrorCode.SEQ_GAP, `change set of ${batch.volumeId} starts at seq ${batch.firstSeq}, expected ${this.durableSeq + 1}`);
    }
    for (const ext of batch.extents) {
      if (ext.kind === 'discard') throw new ProtocolError(ErrorCode.BAD_EXTENTS, `a failback change set carries a discard (seq ${ext.seq}): only block data is expected`);
    }
    let bytes = 0;
    for (const ext of batch.extents) {
      if (ext.kind !== 'write') continue;
      this.writeFully(batch.data.subarray(ext.dataOffset, ext.dataOffset + ext.length), ext.offset);
      bytes += ext.length;
    }
    try {
      fs.fsyncSync(this.disk.fd);
    } catch (err) {
      throw new DiskWriteError(`volume ${this.disk.volumeId}: fsync failed: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    this.durableSeq = batch.lastSeq;
    this.writtenBytes += bytes;
    return this.durableSeq;
  }

  private readFully(buf: Buffer, offset: number): number {
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        n = fs.readSync(this.disk.fd, buf, done, buf.length - done, offset + done);
      } catch (err) {
        throw new DiskWriteError(`volume ${this.disk.volumeId}: cannot read the disk at ${offset + done}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
      if (n === 0) break;
      done += n;
    }
    return done;
  }

  private writeFully(data: Buffer, offset: number): void {
    let done = 0;
    while (done < data.length) {
      try {
        done += fs.writeSync(this.disk.fd, data, done, data.length - done, offset + done);
      } catch (err) {
        throw new DiskWriteError(`volume ${this.disk.volumeId}: cannot write the disk at ${offset + done}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
  }
}
