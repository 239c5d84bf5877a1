import * as v8 from 'v8';
import { pinMmapThreshold, pinTrimThreshold } from '../native/addon';

/** glibc's default mmap threshold: blocks from here up get their own mapping. */
const MMAP_THRESHOLD_BYTES = 128 * 1024;

/**
 * Keeps the agent's resident memory close to what is live. It churns multi-megabyte buffers
 * (change-set frames); with glibc's adaptive mmap threshold, every freed one raises the
 * threshold and all smaller buffers then come from a heap that does not shrink (seen here:
 * about 90 MiB of the agent's 275 MiB during a resync).
 */
export function limitHeapRetention(): void {
  pinMmapThreshold(MMAP_THRESHOLD_BYTES);
}

/** The receiver's mmap threshold: above a frame of the agent's default batch (4 MiB and its header). */
const INGEST_MMAP_THRESHOLD_BYTES = 8 * 1024 * 1024;
/** Free heap the receiver keeps for its next frames rather than hand back to the OS and fault in again. */
const INGEST_TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024;

/**
 * How far, in percent of what the last full collection left, V8 lets the old generation grow
 * before it starts the next one. V8 counts the Buffer memory allocated since the last full
 * collection against that limit, and with about 20 MB live and 250 MB/s of frames its own
 * factor started a full collection every 60 ms, a quarter of the receiver's CPU in the pipeline
 * bench. At 300% they come a few per GB streamed.
 */
export const INGEST_HEAP_GROWING_PERCENT = 300;

/**
 * Sets up the memory of a process that ingests change sets (the receiver). Each frame arrives
 * in a fresh multi-megabyte Buffer (the WebSocket layer's reassembly), so:
 * - malloc serves frames from its heap and keeps what they free for the next ones, instead of a
 *   mapping per frame (a page fault per 4 KiB, then an munmap): about 0.2 CPU s per GB streamed
 *   in the pipeline bench, for some 10-30 MiB more resident at the peak;
 * - V8's full collections are spaced out (above). Unlike the heap's sizes, which V8 fixes as the
 *   process starts, this flag is read at every collection, so setting it here takes effect; the
 *   pipeline bench counts the receiver's full collections to show it.
 */
export function tuneMemoryForIngest(): void {
  pinMmapThreshold(INGEST_MMAP_THRESHOLD_BYTES);
  pinTrimThreshold(INGEST_TRIM_THRESHOLD_BYTES);
  v8.setFlagsFromString(`--heap-growing-percent=${INGEST_HEAP_GROWING_PERCENT}`);
}
