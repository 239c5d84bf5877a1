// SPDX-License-Identifier: GPL-2.0
/*
 * Ferry's write tracker: reports every completed write, discard, write-zeroes,
 * secure-erase and flush on a tracked disk into a ring buffer; when the ring
 * is full, sets the range's bits in the disk's dirty bitmap instead.
 *
 * CO-RE without vmlinux.h: the few kernel fields read here are declared below
 * with preserve_access_index, and libbpf relocates them against the running
 * kernel's BTF (/sys/kernel/btf/vmlinux) at load time. That keeps the build to
 * clang and libbpf-dev (no bpftool, no kernel BTF on the build machine).
 *
 * Needs Linux 5.12+ (BPF atomic OR; -mcpu=v3), BTF, tp_btf and ring buffers.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "ferry_trace.h"

#define REQ_OP_MASK 0xffu
/* Bios of a multi-range discard walked per request; a longer chain marks the slot dirty. */
#define MAX_DISCARD_BIOS 32

typedef __u64 sector_t;

struct gendisk {
	int major;
	int first_minor;
} __attribute__((preserve_access_index));

struct request_queue {
	struct gendisk *disk;
} __attribute__((preserve_access_index));

struct bvec_iter {
	sector_t bi_sector;
	unsigned int bi_size;
} __attribute__((preserve_access_index));

struct bio {
	struct bio *bi_next;
	struct bvec_iter bi_iter;
} __attribute__((preserve_access_index));

struct request {
	struct request_queue *q;
	unsigned int cmd_flags;
	unsigned int __data_len;
	sector_t __sector;
	struct bio *bio;
} __attribute__((preserve_access_index));

/* Older kernels kept the disk in the request itself (rq_disk). */
struct request___with_rq_disk {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

/* Values of Linux 6.1; relocated against the running kernel's enum. */
enum req_flag_bits {
	__REQ_FUA = 17,
	__REQ_PREFLUSH = 18,
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* the loader sets the real size */
} ferry_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FERRY_TRACE_MAX_SLOTS);
	__type(key, __u32); /* MKDEV(major, first_minor) of the whole disk */
	__type(value, struct ferry_trace_disk);
} ferry_disks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, FERRY_TRACE_BITMAP_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} ferry_bitmap SEC(".maps");

/* Per slot: nonzero when a range too large for the loop went unrecorded: all bits dirty. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, FERRY_TRACE_MAX_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} ferry_full SEC(".maps");

/* Per CPU, so that counting costs no shared cache line on every completion. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FERRY_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} ferry_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ferry_trace_meta);
} ferry_meta SEC(".maps");

char LICENSE[] SEC("license") = "GPL";

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&ferry_counters, &which);

	if (c)
		*c += 1;
}

static __always_inline void mark_all(__u32 slot)
{
	__u64 *full = bpf_map_lookup_elem(&ferry_full, &slot);

	if (full)
		__sync_fetch_and_or(full, 1);
	else
		count(FERRY_CNT_LOST);
}

/*
 * Sets the bits covering [sector * 512, + bytes) in the slot's bitmap.
 * mark_dirty() and report() are global functions: the verifier checks each
 * once, not once per call site (the discard walk calls report() in a loop).
 */
__noinline int mark_dirty(const struct ferry_trace_disk *td, __u64 sector,
			  __u32 bytes)
{
	__u32 shift;
	__u64 first, last, wfirst, wlast;
	__u32 i;

	if (!td)
		return 0;
	shift = td->chunk_shift & 63;
	if (bytes == 0 || td->nbits == 0)
		return 0;
	first = (sector << 9) >> shift;
	last = ((sector << 9) + bytes - 1) >> shift;
	if (first >= td->nbits) {
		/* Past the size it was tracked with (it grew?): all of it is suspect. */
		mark_all(td->slot);
		return 0;
	}
	if (last >= td->nbits)
		last = td->nbits - 1;
	wfirst = first >> 6;
	wlast = last >> 6;
	if (wlast - wfirst >= FERRY_TRACE_MAX_RANGE_WORDS) {
		mark_all(td->slot);
		return 0;
	}
	for (i = 0; i < FERRY_TRACE_MAX_RANGE_WORDS; i++) {
		__u64 w = wfirst + i;
		__u64 mask = ~0ULL;
		__u32 idx;
		__u64 *word;

		if (w > wlast)
			break;
		if (w == wfirst)
			mask &= ~0ULL << (first & 63);
		if (w == wlast)
			mask &= ~0ULL >> (63 - (last & 63));
		idx = td->word_base + (__u32)w;
		word = bpf_map_lookup_elem(&ferry_bitmap, &idx);
		if (!word) {
			mark_all(td->slot);
			return 0;
		}
		__sync_fetch_and_or(word, mask);
	}
	return 0;
}

/* op_flags: op << 16 | flags. */
__noinline int report(const struct ferry_trace_disk *td, __u64 now,
		      __u64 sector, __u32 bytes, __u32 op_flags)
{
	struct ferry_trace_event *ev;

	if (!td)
		return 0;
	ev = bpf_ringbuf_reserve(&ferry_ring, sizeof(*ev), 0);
	if (!ev) {
		count(FERRY_CNT_OVERFLOWED);
		mark_dirty(td, sector, bytes);
		return 0;
	}
	ev->time_ns = now;
	ev->sector = sector;
	ev->bytes = bytes;
	ev->slot = td->slot;
	ev->op = op_flags >> 16;
	ev->flags = op_flags & 0xffff;
	ev->reserved = 0;
	/* The reader polls (ring_buffer__consume): no wakeup, no irq_work per event. */
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
	count(FERRY_CNT_EVENTS);
	return 0;
}

static __always_inline struct gendisk *request_disk(struct request *rq)
{
	struct request___with_rq_disk *old = (void *)rq;

	if (bpf_core_field_exists(old->rq_disk))
		return old->rq_disk;
	return rq->q->disk;
}

static __always_inline int op_tracked(__u32 op)
{
	return op == FERRY_OP_WRITE || op == FERRY_OP_FLUSH ||
	       op == FERRY_OP_DISCARD || op == FERRY_OP_SECURE_ERASE ||
	       op == FERRY_OP_WRITE_ZEROES;
}

static __always_inline __u16 event_flags(__u32 cmd, __u8 error)
{
	__u32 fua_bit = 17, preflush_bit = 18;
	__u16 flags = 0;

	if (bpf_core_enum_value_exists(enum req_flag_bits, __REQ_FUA))
		fua_bit = bpf_core_enum_value(enum req_flag_bits, __REQ_FUA);
	if (bpf_core_enum_value_exists(enum req_flag_bits, __REQ_PREFLUSH))
		preflush_bit = bpf_core_enum_value(enum req_flag_bits, __REQ_PREFLUSH);
	if (cmd & (1u << (fua_bit & 31)))
		flags |= FERRY_EVF_FUA;
	if (cmd & (1u << (preflush_bit & 31)))
		flags |= FERRY_EVF_PREFLUSH;
	if (error)
		flags |= FERRY_EVF_ERROR;
	return flags;
}

/*
 * A multi-range discard (NVMe, virtio with max_discard_seg > 1) merges bios
 * that need not be adjacent: report each bio's own range.
 */
static __always_inline void report_bios(const struct ferry_trace_disk *td,
					__u64 now, struct bio *bio,
					__u32 op_flags)
{
	__u32 i;

	for (i = 0; i < MAX_DISCARD_BIOS; i++) {
		if (!bio)
			return;
		report(td, now, bio->bi_iter.bi_sector, bio->bi_iter.bi_size,
		       op_flags);
		bio = bio->bi_next;
	}
	if (bio)
		mark_all(td->slot);
}

/*
 * Runs for every request completion (partial ones included: nr_bytes is what
 * completed in this call, from blk_rq_pos() on), before the request advances.
 */
SEC("tp_btf/block_rq_complete")
int BPF_PROG(ferry_rq_complete, struct request *rq, int error,
	     unsigned int nr_bytes)
{
	const struct ferry_trace_disk *td;
	struct gendisk *disk;
	__u32 cmd, op, dev;
	__u32 op_flags;
	__u64 now;
	struct bio *bio;

	cmd = rq->cmd_flags;
	op = cmd & REQ_OP_MASK;
	if (!op_tracked(op))
		return 0;
	disk = request_disk(rq);
	if (!disk)
		return 0;
	dev = ((__u32)disk->major << 20) | (__u32)disk->first_minor;
	td = bpf_map_lookup_elem(&ferry_disks, &dev);
	if (!td)
		return 0;

	now = bpf_ktime_get_ns();
	/*
	 * An empty write is the carrier of a flush (blkdev_issue_flush): once
	 * it completes, the flush it asked for is done. Report it as one.
	 */
	if (op == FERRY_OP_WRITE && nr_bytes == 0)
		op = FERRY_OP_FLUSH;
	op_flags = op << 16 | event_flags(cmd, (__u8)error);
	if (op == FERRY_OP_FLUSH) {
		report(td, now, 0, 0, op_flags);
		return 0;
	}
	bio = rq->bio;
	if ((op == FERRY_OP_DISCARD || op == FERRY_OP_SECURE_ERASE) && bio &&
	    bio->bi_next) {
		report_bios(td, now, bio, op_flags);
		return 0;
	}
	report(td, now, rq->__sector, nr_bytes, op_flags);
	return 0;
}
