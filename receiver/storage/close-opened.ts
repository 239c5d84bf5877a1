/** Closes what an open that failed part-way had opened, newest first; the open's own error is what matters. */
export function closeOpened(opened: ReadonlyArray<{ close(): void }>): void {
  for (const f of [...opened].reverse()) {
    try {
      f.close();
    } catch {
      // the open failure is what matters
    }
  }
}
