// The redo replica's position: `baseSeq` (the replica is the image of that point) and, while an
// advance runs, the seq it advances to. Replaced atomically (write, fsync, rename, fsync the
// directory); a CRC makes damage a clear error instead of a wrong base.

import * as fs from 'fs';
import { crc32 } from 'zlib';
import { writeFileAtomic } from '../../common/fsutil';

export interface BaseState {
  baseSeq: number;
  /** Set while an advance runs: the replica may hold any version up to it. */
  advancingTo?: number;
}

/** The base file cannot be read: which file and why. */
export class BaseFileError extends Error {
  constructor(
    readonly file: string,
    why: string,
  ) {
    super(`${file}: ${why}`);
    this.name = 'BaseFileError';
  }
}

export function encodeBase(state: BaseState): string {
  const body = JSON.stringify(state.advancingTo === undefined ? { baseSeq: state.baseSeq } : { baseSeq: state.baseSeq, advancingTo: state.advancingTo });
  return `${body}\n${crc32(Buffer.from(body)).toString(16)}\n`;
}

/** Parses a base file's text; throws BaseFileError (never guesses) when it is not intact. */
export function decodeBase(file: string, text: string): BaseState {
  const [body, crc, rest] = text.split('\n');
  if (body === undefined || crc === undefined || (rest !== undefined && rest !== '')) throw new BaseFileError(file, 'not a base file');
  if (crc32(Buffer.from(body)).toString(16) !== crc) throw new BaseFileError(file, 'fails its CRC');
  const parsed = JSON.parse(body) as Partial<BaseState>;
  const okSeq = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  if (!okSeq(parsed.baseSeq)) throw new BaseFileError(file, 'holds no valid baseSeq');
  if (parsed.advancingTo !== undefined && (!okSeq(parsed.advancingTo) || parsed.advancingTo < parsed.baseSeq)) throw new BaseFileError(file, 'holds no valid advancingTo');
  return parsed.advancingTo === undefined ? { baseSeq: parsed.baseSeq } : { baseSeq: parsed.baseSeq, advancingTo: parsed.advancingTo };
}

/** The base file of one volume; the only writer of it. */
export class BaseFile {
  private constructor(
    readonly file: string,
    private current: BaseState,
  ) {}

  /** Reads the file, or starts at `initialSeq` (written at once) when there is none. */
  static open(file: string, initialSeq: number): BaseFile {
    if (!fs.existsSync(file)) {
      const base = new BaseFile(file, { baseSeq: initialSeq });
      base.save({ baseSeq: initialSeq });
      return base;
    }
    return new BaseFile(file, decodeBase(file, fs.readFileSync(file, 'utf8')));
  }

  /** Reads the file (an export from another process); it must exist. */
  static read(file: string): BaseFile {
    return new BaseFile(file, decodeBase(file, fs.readFileSync(file, 'utf8')));
  }

  get state(): Readonly<BaseState> {
    return this.current;
  }

  /** Step 2 of an advance: durable before the replica is written. */
  beginAdvance(toSeq: number): void {
    if (toSeq < this.current.baseSeq) throw new Error(`cannot advance the replica back from seq ${this.current.baseSeq} to ${toSeq}`);
    // An unfinished advance may only be taken further: the replica may hold versions up to it.
    if (this.current.advancingTo !== undefined && toSeq < this.current.advancingTo) {
      throw new Error(`an advance to seq ${this.current.advancingTo} is unfinished; it cannot be taken back to ${toSeq}`);
    }
    this.save({ baseSeq: this.current.baseSeq, advancingTo: toSeq });
  }

  /** Step 4: the replica (fdatasync'd) holds the image of `advancingTo`. */
  finishAdvance(): number {
    const to = this.current.advancingTo;
    if (to === undefined) throw new Error('no advance is under way');
    this.save({ baseSeq: to });
    return to;
  }

  private save(state: BaseState): void {
    writeFileAtomic(this.file, encodeBase(state));
    this.current = state;
  }
}
