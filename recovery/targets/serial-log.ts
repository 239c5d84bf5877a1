/**
 * Follows a serial console log file as qemu appends to it, and waits for a pattern: fs.watch
 * wakes it early, a short poll covers filesystems where watch events do not come.
 */
import * as fs from 'node:fs';

const POLL_MS = 200;

export class SerialLog {
  private text = '';
  private offset = 0;

  constructor(readonly path: string) {}

  /** The whole log so far (reads what was appended since the last call). */
  read(): string {
    let fd: number;
    try {
      fd = fs.openSync(this.path, 'r');
    } catch {
      return this.text;
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size < this.offset) {
        // Truncated (a new boot of the same file): start over.
        this.offset = 0;
        this.text = '';
      }
      if (size > this.offset) {
        const buf = Buffer.alloc(size - this.offset);
        const n = fs.readSync(fd, buf, 0, buf.length, this.offset);
        this.offset += n;
        this.text += buf.subarray(0, n).toString('utf8');
      }
    } finally {
      fs.closeSync(fd);
    }
    return this.text;
  }

  /**
   * Calls `onChange` whenever the log may have grown, until the returned function is called.
   */
  follow(onChange: () => void): () => void {
    let watcher: fs.FSWatcher | null = null;
    try {
      watcher = fs.watch(this.path, () => onChange());
      watcher.on('error', () => undefined);
    } catch {
      watcher = null;
    }
    const timer = setInterval(onChange, POLL_MS);
    return () => {
      clearInterval(timer);
      watcher?.close();
    };
  }
}
