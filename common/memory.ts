import { pinMmapThreshold } from '../native/addon';

/** glibc's default mmap threshold: blocks from here up get their own mapping. */
const MMAP_THRESHOLD_BYTES = 128 * 1024;

/**
 * Keeps a long-running process's resident memory close to what is live. The agent and the
 * receiver churn multi-megabyte buffers (change-set frames); with glibc's adaptive mmap
 * threshold, every freed one raises the threshold and all smaller buffers then come from a heap
 * that does not shrink (seen here: about 90 MiB of the agent's 275 MiB during a resync).
 */
export function limitHeapRetention(): void {
  pinMmapThreshold(MMAP_THRESHOLD_BYTES);
}
