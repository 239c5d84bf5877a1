/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * What the write tracker's BPF program (ferry_trace.bpf.c) and its loader
 * (the ferry_bpf addon) share: map value layouts, the event record and the
 * limits. Included by both, so only fixed-width types.
 */
#ifndef FERRY_TRACE_H
#define FERRY_TRACE_H

#include <linux/types.h>

/* Bump when a map or record layout changes: a pinned older program is replaced. */
#define FERRY_TRACE_ABI 1

#define FERRY_TRACE_MAX_SLOTS 16

/* Bitmap pool: 2^19 u64 words (4 MiB, 32 Mi bits) shared by every slot. */
#define FERRY_TRACE_BITMAP_WORDS (1u << 19)

/*
 * A range that would touch more bitmap words than this in one go marks the
 * whole slot dirty instead (keeps the program's loop short).
 */
#define FERRY_TRACE_MAX_RANGE_WORDS 64

/* REQ_OP_* values (stable since Linux 4.10). */
#define FERRY_OP_WRITE 1
#define FERRY_OP_FLUSH 2
#define FERRY_OP_DISCARD 3
#define FERRY_OP_SECURE_ERASE 5
#define FERRY_OP_WRITE_ZEROES 9

#define FERRY_EVF_FUA 1
#define FERRY_EVF_PREFLUSH 2
#define FERRY_EVF_ERROR 4

/* One completed request, 32 bytes, as in agent/capture/ebpf/tracker.ts. */
struct ferry_trace_event {
	__u64 time_ns;
	__u64 sector;
	__u32 bytes;
	__u32 slot;
	__u16 op;
	__u16 flags;
	__u32 reserved;
};

/* Value of the tracked-disk map, keyed by the whole disk's dev_t (MKDEV). */
struct ferry_trace_disk {
	__u32 slot;
	__u32 chunk_shift;
	__u64 nbits;
	/* The slot's first word in the bitmap pool. */
	__u32 word_base;
	__u32 nwords;
	__u64 size_bytes;
};

/* The one entry of the meta map, written by the loader before attaching. */
struct ferry_trace_meta {
	__u32 abi;
	__u32 ring_bytes;
	__u64 instance_id;
};

enum ferry_trace_counter {
	FERRY_CNT_EVENTS,
	FERRY_CNT_OVERFLOWED,
	FERRY_CNT_LOST,
	FERRY_CNT_MAX,
};

#endif /* FERRY_TRACE_H */
