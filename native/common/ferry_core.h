/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The portable capture core: per-device seq and time
 * stamping, the record ring, the payload pool, the dirty bitmap, the mode
 * state machine, the write hold for tags, and the transactional change
 * stream across devices.
 *
 * The core includes only "ferry_platform.h", which each build provides:
 *   u8 u16 u32 u64 s32 s64 bool size_t NULL, true/false
 *   ferry_memcpy(d, s, n), ferry_memset(d, c, n)
 *   void *ferry_zalloc(size_t)  (zeroed, may sleep; init paths only)
 *   void ferry_free(void *)
 *   u64 ferry_now_ns(void)      (wall clock, ns since the Unix epoch)
 *   ferry_lock_t, ferry_irqflags_t, ferry_lock_init(l),
 *   ferry_lock(l, flags), ferry_unlock(l, flags)  (spin lock usable from
 *   any context, interrupts disabled while held)
 *   FERRY_BUG_ON(cond)          (internal consistency check)
 * and must #define FERRY_PLATFORM_H.
 *
 * Concurrency contract:
 *  - ferry_io_begin() and the ferry_capture_*() calls may run concurrently
 *    on any CPU and in atomic context; they take the device lock briefly
 *    and never sleep.  The payload copy (ferry_capture_copy) runs without
 *    the lock.  Under the lock they walk the device's list of writes in
 *    flight (O(writes in flight)); they never allocate: the list entries
 *    (struct ferry_io) are the caller's, one per admitted I/O.
 *  - Everything else ("stream" calls: get/commit/reset, bitmap, tag,
 *    resync, attach/detach, start/freeze/persist) must be serialized by
 *    the caller (one mutex); they never sleep either, except where noted.
 */
#ifndef FERRY_CORE_H
#define FERRY_CORE_H

#include "ferry_platform.h"
#include "ferry_abi.h"
#include "ferry_errno.h"

/* Tunables fixed at build time. */
#define FERRY_RING_MIN		64u	/* smallest ring (records) */
#define FERRY_RING_MAX		(1u << 24)
#define FERRY_RING_RESERVE	16u	/* slots only control records may use */
#define FERRY_POOL_MAX		(1u << 30)
#define FERRY_MAX_BATCHES	16u	/* outstanding (uncommitted) batches */
#define FERRY_GRAN_MIN		4096u
#define FERRY_GRAN_MAX		(1u << 30)
#define FERRY_MAX_RECORD	(1u << 30)	/* largest length in one record */

/* Events returned by capture and control calls (bit mask). */
#define FERRY_EV_READY		0x1u	/* records became deliverable: wake readers */
#define FERRY_EV_LEASE		0x2u	/* seq lease is running low: extend it */
#define FERRY_EV_MODE		0x4u	/* device mode changed */
#define FERRY_EV_DRAINED	0x8u	/* hold set and no write in flight */

/* ferry_capture_write(): the caller must copy the payload. */
#define FERRY_CAP_COPY		0x100u

struct ferry_dev_config {
	u64 dev_size;		/* bytes, > 0 */
	u32 granularity;	/* bitmap bytes per bit: power of two */
	u32 ring_capacity;	/* records */
	u32 pool_size;		/* payload bytes (may be 0: never DATA) */
	u32 pool_low_pct;	/* METADATA -> DATA when pool use <= this % */
	u32 ring_low_pct;	/* BITMAP -> DRAINING when ring use <= this % */
	u64 seq_lease;		/* seqs leased per metadata update (>= 64) */
};

/* A ring slot (not ABI: encoded into struct ferry_rec on the way out). */
struct ferry_slot {
	u64 seq;
	u64 offset;
	u64 time_ns;
	u32 length;
	u32 data_len;	/* payload bytes shipped */
	u32 pool_len;	/* pool bytes held (freed at commit) */
	u32 pool_pos;
	u32 flags;
	u16 kind;
	u8 accuracy;
	u8 mode;
	u8 ready;
	u8 pad[7];
};

/* Where one outstanding batch ends on one device. */
struct ferry_batch_mark {
	u64 batch_id;
	u32 nrec;
	u32 bytes;	/* pool bytes those records hold */
	u64 last_seq;
};

struct ferry_counters {
	u64 writes, write_bytes, dirty_records, discards, flushes;
	u64 tags, resync_marks, mode_changes, bitmap_writes;
	u64 failed_writes, dropped_flushes;
	u64 records_committed, bytes_committed;
	u64 overlaps, overlap_dirty;
};

/*
 * One admitted write-type I/O (write, discard, flush, ...) from
 * ferry_io_begin() to the call that completes it (a ferry_capture_*() call
 * or ferry_io_cancel()).  The caller provides the storage, typically inside
 * its per-I/O data (dm-ferry: the per-bio data; ferryflt: the per-IRP
 * context), and leaves it alone in between; the fields belong to the core.
 * While admitted it is on the device's list of writes in flight.
 */
struct ferry_io {
	struct ferry_io *next, *prev;	/* in flight on dev->io_list */
	u64 start, end;			/* bytes it may change */
	u64 hit_start, hit_end;		/* overlap with writes that completed
					 * while it was in flight (hull);
					 * empty when equal */
};

struct ferry_dev {
	ferry_lock_t lock;
	struct ferry_dev_config cfg;
	u32 gran_shift;
	u32 pool_low;		/* bytes */
	u32 ring_low;		/* records */
	u64 nbits;
	u32 index;		/* stream index, set by ferry_stream_attach */

	/* seqs */
	u64 first_seq;
	u64 next_seq;
	u64 seq_limit;
	u64 committed_seq;
	bool lease_requested;

	/* state */
	u8 mode;		/* enum ferry_mode */
	u8 level;		/* DATA or METADATA: does the pool have room */
	u8 start_state;
	u8 announce_prev;	/* mode before an unannounced change */
	bool mode_unannounced;	/* mode changed while frozen */
	bool started;
	bool frozen;		/* suspended: no new seqs */
	u32 generation;

	/* ring: [head, head+used) uncommitted; first nsent handed out */
	struct ferry_slot *ring;
	u32 head, used, nsent, redeliver;

	/* pool: bytes [pool_head, pool_head+pool_used) in use, mod size */
	u8 *pool;
	u32 pool_head, pool_used;

	/* dirty bitmap: bit i covers [i, i+1) * granularity */
	u64 *bitmap;
	u64 bitmap_words;
	u64 dirty_bits;
	u64 epoch;

	/* outstanding batches touching this device, oldest first */
	struct ferry_batch_mark marks[FERRY_MAX_BATCHES];
	u32 nmarks;

	/* write hold for tags */
	bool hold;
	u32 inflight;		/* admitted, not completed (with or without a ferry_io) */

	/* admitted I/Os with a range, most recent first (see ferry_core.c) */
	struct ferry_io *io_list;
	u32 io_tracked;

	struct ferry_counters ctr;
};

/* Reservation handle for a payload-carrying write. */
struct ferry_cap {
	u32 slot;
	u32 pos;	/* next pool byte to fill */
	u32 left;	/* bytes still to copy */
};

/* ---- device lifetime (caller context may sleep) ---- */

/* Checks a configuration; 0 or -FERRY_EINVAL. */
int ferry_config_check(const struct ferry_dev_config *cfg);
/* Bytes the ring, pool and bitmap of a configuration need. */
u64 ferry_config_memory(const struct ferry_dev_config *cfg);
/* Bitmap size in bytes (a multiple of 8). */
u64 ferry_config_bitmap_bytes(const struct ferry_dev_config *cfg);

/* Allocates a stopped device (ferry_zalloc); NULL on failure. */
struct ferry_dev *ferry_dev_create(const struct ferry_dev_config *cfg);
/* Every admitted I/O must have been completed (the list holds callers' memory). */
void ferry_dev_destroy(struct ferry_dev *dev);

/*
 * The bitmap memory, little-endian u64 words (bit i of the bitmap is bit
 * i % 8 of byte i / 8).  Before ferry_dev_start() with FERRY_START_CLEAN
 * the caller fills it from the saved copy.
 */
u64 *ferry_dev_bitmap(struct ferry_dev *dev);

/*
 * Starts the stream.  NEW and DIRTY set every bitmap bit; CLEAN keeps the
 * bitmap the caller loaded.  Seqs continue at next_seq; records may use
 * seqs below seq_limit.  Emits the START record.  Mode: DRAINING if any
 * bit is set, else DATA.
 */
u32 ferry_dev_start(struct ferry_dev *dev, u8 start_state, u32 generation,
		    u64 next_seq, u64 seq_limit);

/* Suspended: control calls that need a seq fail with -FERRY_EAGAIN. */
void ferry_dev_freeze(struct ferry_dev *dev);
/*
 * Resumes: announces a mode change made while frozen (a MODE record) and
 * climbs back where the pool and ring allow.  Returns the events (READY
 * for the records it made: wake readers; LEASE, MODE).
 */
u32 ferry_dev_thaw(struct ferry_dev *dev);

/*
 * Writes into out (bitmap_words u64, little-endian) the live bitmap plus
 * the ranges of every uncommitted record, and returns the next seq: what a
 * clean teardown saves.  Call while frozen.
 */
u64 ferry_dev_persist(struct ferry_dev *dev, u64 *out);

/* New lease: seqs below limit may be used. */
u32 ferry_dev_set_seq_limit(struct ferry_dev *dev, u64 limit);

/* ---- I/O path (any context) ---- */

/*
 * A write-type I/O arrives that may change [offset, offset + length) of the
 * device (length 0 for a flush).  Returns 0: admitted (counted in flight,
 * io on the list of writes in flight if length > 0), or 1: a tag holds
 * writes, io is untouched; queue the I/O and call ferry_io_begin() again
 * on release.
 *
 * Every admitted I/O is completed by exactly one of ferry_capture_write(),
 * ferry_capture_discard(), ferry_capture_failed(), ferry_capture_flush() or
 * ferry_io_cancel(), given the same io.  The admitted range is what other
 * writes in flight are checked against, so it must cover every byte the
 * I/O may change; the range given at completion is what is recorded (it
 * may be clipped to the device).  io may be NULL when the caller has
 * no storage for it: the I/O is then not tracked, and its completion records
 * it as if it had overlapped another write over its whole range (a write
 * becomes a DIRTY record, a discard is followed by one).
 *
 * Overlapping writes in flight: the disk may apply two overlapping writes
 * in the other order than they complete, and records are in completion
 * order.  So a completion marks every write still in flight that overlaps
 * it, and a marked write, when it completes, gets a DIRTY record over the
 * overlap after its own record (or is itself recorded as DIRTY when the
 * overlap covers it whole): the agent reads back what the disk holds once
 * both are done.  ferry_core.c has the proof.
 */
int ferry_io_begin(struct ferry_dev *dev, struct ferry_io *io, u64 offset,
		   u64 length);

/*
 * A write admitted by ferry_io_begin() completed successfully.  If the
 * result has FERRY_CAP_COPY, copy exactly `length` payload bytes with
 * ferry_capture_copy() and then call ferry_capture_end(); otherwise the
 * write is fully accounted (DIRTY record or bitmap).  Either way io is off
 * the list when this returns: the caller may reuse it.
 */
u32 ferry_capture_write(struct ferry_dev *dev, struct ferry_io *io,
			u64 offset, u32 length, u32 flags,
			struct ferry_cap *cap);
void ferry_capture_copy(struct ferry_dev *dev, struct ferry_cap *cap,
			const void *src, u32 len);
u32 ferry_capture_end(struct ferry_dev *dev, struct ferry_cap *cap);

/* A discard (any length; split into records of <= FERRY_MAX_RECORD). */
u32 ferry_capture_discard(struct ferry_dev *dev, struct ferry_io *io,
			  u64 offset, u64 length);
/* A completed cache flush. */
u32 ferry_capture_flush(struct ferry_dev *dev, struct ferry_io *io);
/* A write that failed: its range is unknown now (DIRTY + IO_ERROR). */
u32 ferry_capture_failed(struct ferry_dev *dev, struct ferry_io *io,
			 u64 offset, u64 length);
/*
 * An admitted I/O that needs no record because it changed nothing on the
 * device (it was requeued, or it lay outside the protected range).
 */
u32 ferry_io_cancel(struct ferry_dev *dev, struct ferry_io *io);

/* ---- control (serialized by the caller) ---- */

void ferry_dev_hold(struct ferry_dev *dev, bool on);
/* Admitted I/Os not completed yet. */
u32 ferry_dev_inflight(struct ferry_dev *dev);

/* 0 if a TAG can be inserted now, else -FERRY_ENOSPC / -FERRY_EAGAIN. */
int ferry_dev_tag_check(struct ferry_dev *dev);
/*
 * Inserts a TAG record into every device at once.  All devices must be
 * held with no write in flight (else -FERRY_EBUSY); nothing is inserted
 * unless every device accepts it.
 */
int ferry_tag_cut(struct ferry_dev **devs, u32 n, u64 tag_id, u64 *seqs,
		  u32 *events);

int ferry_dev_resync_mark(struct ferry_dev *dev, u64 offset, u32 length,
			  u64 *seq, u32 *events);

/*
 * Emits a RESYNC_MARK/BITMAP_CUT record (its seq is where data drained from
 * the bitmap belongs) and returns the bitmap epoch; -FERRY_EBUSY in BITMAP
 * mode.
 */
int ferry_dev_bitmap_cut(struct ferry_dev *dev, u64 *seq, u64 *epoch,
			 u32 *events);
/* Copies bitmap bytes [start, start + len) clipped to the bitmap. */
int ferry_dev_bitmap_read(struct ferry_dev *dev, u64 start, void *dst,
			  u32 len, u32 *copied, u64 *epoch);
int ferry_dev_bitmap_clear(struct ferry_dev *dev, u64 epoch, u64 start_bit,
			   u64 nbits, u32 *events);

/* Fills the fields of info the core knows (not name, numbers, flags). */
void ferry_dev_info(struct ferry_dev *dev, struct ferry_dev_info *info);

/* ---- the change stream across devices (serialized by the caller) ---- */

struct ferry_stream {
	struct ferry_dev *devs[FERRY_MAX_DEVICES];
	u32 ndevs;
	u32 rr;			/* device the next batch starts with */
	u64 next_batch;		/* id the next batch gets */
	u64 committed;		/* every id <= committed is settled */
	u64 stale_lo, stale_hi;	/* ids voided by the last reset */
	u64 gets, commits, resets;
};

/* Copies len bytes to the caller's buffer at dst_off; 0 or -errno. */
typedef int (*ferry_copy_out_fn)(void *ctx, u64 dst_off, const void *src,
				 u32 len);

struct ferry_get_result {
	u64 batch_id;
	u64 bytes;
	u64 needed;
	u32 nrecords;
	u32 flags;
};

void ferry_stream_init(struct ferry_stream *s);
/* Puts dev (or NULL to remove) at index; -FERRY_EINVAL / -FERRY_EBUSY. */
int ferry_stream_set(struct ferry_stream *s, u32 index, struct ferry_dev *dev);
/* Lowest free index, or -FERRY_ENOSPC. */
int ferry_stream_free_index(const struct ferry_stream *s);
u32 ferry_stream_inflight(const struct ferry_stream *s);
/* True if some device has records not handed out yet. */
bool ferry_stream_pending(struct ferry_stream *s);

/*
 * Copies the oldest records not yet handed out (over all devices) into
 * the caller's buffer as one batch.  No records: 0 with batch_id 0 and a
 * header with nrecords 0.  Errors: -FERRY_EMSGSIZE (buffer cannot hold
 * the header or the next record: res->needed says how much),
 * -FERRY_ENOBUFS (FERRY_MAX_BATCHES outstanding), or the copy's error.
 */
int ferry_stream_get(struct ferry_stream *s, u64 buf_len,
		     ferry_copy_out_fn copy, void *ctx,
		     struct ferry_get_result *res);
/*
 * Frees every record of batches <= batch_id.  0 also when they were
 * already committed; -FERRY_EINVAL for an id never handed out;
 * -FERRY_ESTALE for an id voided by a reset.
 */
int ferry_stream_commit(struct ferry_stream *s, u64 batch_id, u32 *events);
/* The consumer went away: uncommitted batches are handed out again. */
void ferry_stream_reset(struct ferry_stream *s);

/* ---- internal: shared by ferry_core.c and ferry_stream.c ---- */

const struct ferry_slot *ferry_dev_slot(const struct ferry_dev *dev, u32 rel);
/* Frees the records of one batch mark; dev->lock held. */
void ferry_dev_release(struct ferry_dev *dev, const struct ferry_batch_mark *m,
		       u32 *events);

#endif /* FERRY_CORE_H */
