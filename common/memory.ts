import * as v8 from 'v8';
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

/**
 * How far, in percent of what the last full collection left, V8 lets the old generation grow
 * before it starts the next one. V8 counts the Buffer memory allocated since the last full
 * collection against that limit, and the receiver takes every change set into a fresh Buffer
 * (the WebSocket layer's reassembly): with about 20 MB live and 250 MB/s of frames, V8's own
 * factor started a full collection every 60 ms, a quarter of the receiver's CPU in the pipeline
 * bench. At 300% they come a few per GB streamed, for some 30 MiB more resident at most.
 */
export const INGEST_HEAP_GROWING_PERCENT = 300;

/**
 * Spaces out full collections in a process that ingests change sets (the receiver). Unlike the
 * heap's sizes, which V8 fixes as the process starts, this flag is read at every collection, so
 * it takes effect here; the pipeline bench counts the receiver's full collections to show it.
 */
export function spaceOutFullCollections(): void {
  v8.setFlagsFromString(`--heap-growing-percent=${INGEST_HEAP_GROWING_PERCENT}`);
}
