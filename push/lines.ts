// Splits a byte stream into text lines for prefixed, interleaving-safe output.

export class LineSplitter {
  private pending = '';

  constructor(private readonly onLine: (line: string) => void) {}

  push(chunk: Buffer | string): void {
    this.pending += chunk.toString();
    let nl = this.pending.indexOf('\n');
    while (nl >= 0) {
      this.onLine(this.pending.slice(0, nl).replace(/\r$/, ''));
      this.pending = this.pending.slice(nl + 1);
      nl = this.pending.indexOf('\n');
    }
  }

  /** Text received since the last newline (e.g. a prompt without one). */
  get partial(): string {
    return this.pending;
  }

  /** Drops the partial line (after it has been handled as a prompt). */
  clearPartial(): void {
    this.pending = '';
  }

  flush(): void {
    if (this.pending !== '') this.onLine(this.pending);
    this.pending = '';
  }
}

/** Quotes one word for a POSIX shell on the remote side. */
export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}
