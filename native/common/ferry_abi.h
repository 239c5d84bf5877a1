/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR Apache-2.0 */
/*
 * The change-record format and control-call arguments shared
 * by the Ferry capture drivers (Linux dm-ferry, Windows ferryflt) and user
 * space (the N-API addon).
 *
 * Everything here is little-endian, naturally aligned, with explicit
 * padding; the sizes are checked at compile time below.  Reserved fields
 * must be zero on input and are zero on output.
 *
 * Versioning: FERRY_ABI_VERSION changes whenever a layout or a meaning
 * changes.  Every control argument starts with { size, version }: the
 * driver refuses a size other than sizeof(the struct) with EINVAL and a
 * version other than FERRY_ABI_VERSION with EPROTO (FERRY_IOC_VERSION
 * accepts any version, so a caller can always ask which one is spoken).
 *
 * This header includes no OS header.  Fixed-width types come from the
 * platform shim (ferry_platform.h, which defines FERRY_PLATFORM_H), from
 * <linux/types.h> in a Linux kernel build, or from <stdint.h> otherwise.
 */
#ifndef FERRY_ABI_H
#define FERRY_ABI_H

#if !defined(FERRY_PLATFORM_H) && !defined(__KERNEL__)
#include <stdint.h>
#endif

#if defined(__cplusplus)
#define FERRY_ABI_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define FERRY_ABI_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

#define FERRY_ABI_VERSION	2u
#define FERRY_BATCH_MAGIC	0x42595246u	/* "FRYB" as little-endian bytes */
#define FERRY_MAX_DEVICES	64u
#define FERRY_DEV_NAME_LEN	128u
#define FERRY_DEV_NONE		0xffffffffu	/* "no device" in STATS */

/* ---------------------------------------------------------------------
 * Device modes (struct ferry_rec.mode, struct ferry_dev_info.mode).
 * See native/common/README.md for the exact transition rules.
 */
enum ferry_mode {
	FERRY_MODE_DATA = 0,		/* writes carry their payload */
	FERRY_MODE_METADATA = 1,	/* pool full: writes are DIRTY ranges */
	FERRY_MODE_BITMAP = 2,		/* ring full: writes only mark bitmap */
	FERRY_MODE_DRAINING = 3,	/* records flow, bitmap not yet drained */
};

/*
 * Accuracy of the stream at a record: what a recovery point taken right
 * after the record can be, as far as the driver knows.
 */
enum ferry_accuracy {
	FERRY_ACC_EXACT = 0,	/* DATA mode, empty bitmap */
	FERRY_ACC_APPROX = 1,	/* METADATA mode: ranges must be read back */
	FERRY_ACC_NONE = 2,	/* bitmap not drained: point not usable */
};

/* How a device's stream started (START record, ferry_dev_info). */
enum ferry_start_state {
	FERRY_START_NEW = 1,	/* no metadata: full initial sync needed */
	FERRY_START_CLEAN = 2,	/* clean teardown: drain the saved bitmap */
	FERRY_START_DIRTY = 3,	/* crash: hash-compare resync of everything */
};

/* ---------------------------------------------------------------------
 * Change records.
 *
 * GET_CHANGES fills the caller's buffer with one batch:
 *   struct ferry_batch_hdr
 *   nrecords x { struct ferry_rec, data_len payload bytes, zero padding
 *                up to rec_size (a multiple of 8) }
 */
enum ferry_rec_kind {
	/* offset/length: bytes written; data_len == length bytes follow */
	FERRY_REC_WRITE = 1,
	/* offset/length: bytes discarded; no payload */
	FERRY_REC_DISCARD = 2,
	/* cache flush completed: every earlier record is durable */
	FERRY_REC_FLUSH = 3,
	/* consistency tag: offset = caller's tag id; same cut on each device */
	FERRY_REC_TAG = 4,
	/*
	 * offset/length: read this range back from the volume and apply the
	 * data at this seq.  With FERRY_REC_F_BITMAP_CUT (offset = length = 0)
	 * it marks the cut for data drained from the dirty bitmap.
	 */
	FERRY_REC_RESYNC_MARK = 5,
	/*
	 * range changed, data must be read back: a METADATA mode write, a
	 * failed write (F_IO_ERROR), a short payload copy, or an overlap of
	 * writes in flight together (F_OVERLAP)
	 */
	FERRY_REC_DIRTY = 6,
	/* mode change: .mode = new mode, length = previous mode */
	FERRY_REC_MODE = 7,
	/* stream (re)start: offset = load generation, length = start state */
	FERRY_REC_START = 8,
};

#define FERRY_REC_F_FUA		0x1u	/* the write was FUA */
#define FERRY_REC_F_IO_ERROR	0x2u	/* DIRTY: the write failed, range unknown */
#define FERRY_REC_F_BITMAP_CUT	0x4u	/* RESYNC_MARK made by GET_BITMAP */
#define FERRY_REC_F_REDELIVERED	0x8u	/* handed out before a consumer reset */
/*
 * DIRTY: another write overlapping this range was in flight at the same
 * time, so the disk may hold either's data there: read it back.  Either
 * the write itself (overlapped whole) or a record right after its own.
 */
#define FERRY_REC_F_OVERLAP	0x10u

struct ferry_batch_hdr {
	uint32_t magic;		/* FERRY_BATCH_MAGIC */
	uint16_t version;	/* FERRY_ABI_VERSION */
	uint16_t hdr_size;	/* sizeof(struct ferry_batch_hdr) */
	uint32_t rec_hdr_size;	/* sizeof(struct ferry_rec) */
	uint32_t nrecords;
	uint64_t batch_id;	/* 0 when nrecords == 0 */
	uint64_t total_bytes;	/* header + all records */
	uint32_t flags;		/* FERRY_BATCH_F_* */
	uint8_t accuracy;	/* worst enum ferry_accuracy in the batch */
	uint8_t reserved0[3];
	uint64_t reserved1;
};

#define FERRY_BATCH_F_REDELIVERY 0x1u	/* holds redelivered records */

struct ferry_rec {
	uint64_t seq;		/* per device, +1 per record, no gaps */
	uint64_t offset;	/* byte offset on the device (see kinds) */
	uint64_t time_ns;	/* capture time, ns since the Unix epoch */
	uint32_t dev_index;	/* ferry_dev_info.index */
	uint32_t length;	/* bytes covered on the device (see kinds) */
	uint32_t data_len;	/* payload bytes after this header */
	uint32_t rec_size;	/* header + payload + padding; multiple of 8 */
	uint16_t kind;		/* enum ferry_rec_kind */
	uint8_t accuracy;	/* enum ferry_accuracy */
	uint8_t mode;		/* enum ferry_mode at capture */
	uint32_t flags;		/* FERRY_REC_F_* */
};

FERRY_ABI_ASSERT(sizeof(struct ferry_batch_hdr) == 48, "batch header size");
FERRY_ABI_ASSERT(sizeof(struct ferry_rec) == 48, "record header size");

/* Bytes one record occupies in a batch. */
#define FERRY_REC_SIZE(data_len) \
	((uint32_t)sizeof(struct ferry_rec) + \
	 (((uint32_t)(data_len) + 7u) & ~7u))

/* ---------------------------------------------------------------------
 * Control-call arguments.  The Linux ioctl numbers are in
 * native/linux/ferry_ioctl.h; Windows uses the same structs as
 * DeviceIoControl buffers.
 */

/* Device flags (ferry_dev_info.flags). */
#define FERRY_DEV_F_SUSPENDED	0x1u	/* table suspended: no new seqs */
#define FERRY_DEV_F_HOLD	0x2u	/* writes held for a tag right now */
#define FERRY_DEV_F_POOL_LOW	0x4u	/* DRAINING without pool space */

struct ferry_dev_info {
	char name[FERRY_DEV_NAME_LEN];	/* dm name, NUL terminated */
	uint32_t index;			/* dev_index in records */
	uint32_t mode;			/* enum ferry_mode */
	uint32_t dev_major, dev_minor;	/* the protected (dm) device */
	uint32_t data_major, data_minor;
	uint32_t meta_major, meta_minor;
	uint64_t size_bytes;
	uint32_t granularity;		/* bitmap bytes per bit */
	uint32_t start_state;		/* enum ferry_start_state */
	uint32_t generation;		/* loads of this metadata */
	uint32_t flags;			/* FERRY_DEV_F_* */
	uint64_t first_seq;		/* START record's seq */
	uint64_t next_seq;		/* seq the next record gets */
	uint64_t committed_seq;		/* newest committed seq, 0 if none */
	uint64_t seq_limit;		/* seqs below this are leased */
	uint64_t bitmap_bits;
	uint64_t dirty_bits;
	uint64_t bitmap_epoch;
	uint32_t ring_capacity;		/* records */
	uint32_t ring_used;		/* uncommitted records */
	uint32_t ring_handed_out;	/* of which handed out */
	uint32_t pool_size;		/* payload bytes */
	uint32_t pool_used;
	uint32_t inflight;		/* writes submitted, not completed */
	/* counters since load */
	uint64_t writes, write_bytes;	/* WRITE records and payload */
	uint64_t dirty_records, discards, flushes;
	uint64_t tags, resync_marks, mode_changes;
	uint64_t bitmap_writes;		/* writes recorded only in the bitmap */
	uint64_t failed_writes, dropped_flushes;
	uint64_t records_committed, bytes_committed;
	uint64_t overlaps;		/* overlapping writes in flight together (pairs) */
	uint64_t overlap_dirty;		/* DIRTY records added after a write for them */
};

FERRY_ABI_ASSERT(sizeof(struct ferry_dev_info) == 384, "dev info size");

struct ferry_ioc_version {
	uint32_t size;
	uint32_t version;		/* any value accepted */
	uint32_t abi_version;		/* out: FERRY_ABI_VERSION */
	uint32_t max_devices;		/* out */
	uint32_t batch_hdr_size;	/* out */
	uint32_t rec_hdr_size;		/* out */
	uint32_t dev_info_size;		/* out */
	uint32_t max_tag_hold_ms;	/* out */
	char module_version[32];	/* out */
};

FERRY_ABI_ASSERT(sizeof(struct ferry_ioc_version) == 64, "version size");

struct ferry_ioc_list {
	uint32_t size;
	uint32_t version;
	uint64_t entries;		/* user pointer: ferry_dev_info[capacity] */
	uint32_t capacity;		/* in: entries available */
	uint32_t count;			/* out: devices tracked */
	uint32_t returned;		/* out: entries written */
	uint32_t reserved;
};

FERRY_ABI_ASSERT(sizeof(struct ferry_ioc_list) == 32, "list size");

struct ferry_ioc_get {
	uint32_t size;
	uint32_t version;
	uint64_t buf;			/* user pointer */
	uint64_t buf_len;
	uint64_t batch_id;		/* out; 0 if no records */
	uint64_t bytes;			/* out: bytes written */
	uint64_t needed;		/* out (EMSGSIZE): bytes the next record needs */
	uint32_t nrecords;		/* out */
	uint32_t batch_flags;		/* out: FERRY_BATCH_F_* */
};

FERRY_ABI_ASSERT(sizeof(struct ferry_ioc_get) == 56, "get size");

struct ferry_ioc_commit {
	uint32_t size;
	uint32_t version;
	uint64_t batch_id;		/* commits every batch <= batch_id */
};

FERRY_ABI_ASSERT(sizeof(struct ferry_ioc_commit) == 16, "commit size");

struct ferry_ioc_tag {
	uint32_t size;
	uint32_t version;
	uint64_t tag_id;		/* in: becomes the TAG record's offset */
	uint32_t hold_ms;		/* in: 0 = module default; max see VERSION */
	uint32_t ndevs;			/* in: 1..FERRY_MAX_DEVICES */
	uint32_t devs[FERRY_MAX_DEVICES];	/* in: device indexes */
	uint64_t seqs[FERRY_MAX_DEVICES];	/* out: TAG seq per device */
	uint64_t hold_ns;		/* out: how long writes were held */
	/*
	 * in: 0 = hold, cut and release here (hold_ms, ndevs, devs as above);
	 * else the id of a hold in place (HOLD): cut at that hold's moment on
	 * exactly its devices, then release it.  hold_ms and ndevs must be 0;
	 * ndevs and devs come back as the held devices, in the hold's order.
	 * Was a must-be-zero reserved field before the HOLD call existed.
	 */
	uint64_t hold_id;
};

FERRY_ABI_ASSERT(sizeof(struct ferry_ioc_tag) == 808, "tag size");

/*
 * HOLD: the first phase of a tag that spans more than one call (a group
 * round across machines).  Holds new writes on the listed devices, waits
 * for the ones in flight, and leaves the writes held until TAG with
 * .hold_id (the cut at this moment), RELEASE, the close of the file that
 * asked for it, or hold_ms after the hold began, whichever comes first.
 * One hold at a time.
 */
struct ferry_ioc_hold {
	uint32_t size;
	uint32_t version;
	uint32_t hold_ms;		/* in: 1..max_tag_hold_ms (VERSION): the bound */
	uint32_t ndevs;			/* in: 1..FERRY_MAX_DEVICES */
	uint32_t devs[FERRY_MAX_DEVICES];	/* in: device indexes */
	uint64_t hold_id;		/* out: pass to TAG or RELEASE */
	uint64_t drain_ns;		/* out: hold start to nothing in flight */
	uint64_t reserved;
};

FERRY_ABI_ASSERT(sizeof(struct ferry_ioc_hold) == 296, "hold size");

/* RELEASE: ends a hold without a cut. */
struct ferry_ioc_release {
	uint32_t size;
	uint32_t version;
	uint64_t hold_id;		/* in */
	uint64_t held_ns;		/* out: how long writes were held */
	uint64_t reserved;
};

FERRY_ABI_ASSERT(sizeof(struct ferry_ioc_release) == 32, "release size");

struct ferry_global_stats {
	uint32_t ndevices;
	uint32_t batches_inflight;
	uint32_t consumer_attached;	/* an fd owns the change stream */
	uint32_t reserved;
	uint64_t next_batch_id;
	uint64_t committed_batch_id;
	uint64_t gets, commits, resets;
	uint64_t tags_ok, tags_timed_out;
	uint64_t tag_hold_last_ns, tag_hold_max_ns;
};

FERRY_ABI_ASSERT(sizeof(struct ferry_global_stats) == 88, "global stats size");

/* What became of the holds (HOLD) since load. */
struct ferry_hold_stats {
	uint64_t holds_ok;		/* ended by a TAG at their cut */
	uint64_t holds_expired;		/* released by their bound */
	/* ended otherwise: RELEASE, close, drain timeout, failed cut, detach */
	uint64_t holds_aborted;
	uint64_t hold_max_ns;		/* longest hold (start to release) */
};

FERRY_ABI_ASSERT(sizeof(struct ferry_hold_stats) == 32, "hold stats size");

/*
 * STATS accepts two sizes: FERRY_IOC_STATS_SIZE_V0 (the layout before
 * holds: no .holds) and sizeof(struct ferry_ioc_stats).
 */
struct ferry_ioc_stats {
	uint32_t size;
	uint32_t version;
	uint32_t dev_index;		/* in: a device, or FERRY_DEV_NONE */
	uint32_t reserved;
	struct ferry_global_stats global;	/* out */
	struct ferry_dev_info dev;	/* out (if dev_index given) */
	struct ferry_hold_stats holds;	/* out (full size only) */
};

#define FERRY_IOC_STATS_SIZE_V0	488u

FERRY_ABI_ASSERT(sizeof(struct ferry_ioc_stats) == 520, "stats size");

#define FERRY_BITMAP_F_CUT	0x1u	/* emit the BITMAP_CUT record */

struct ferry_ioc_bitmap {
	uint32_t size;
	uint32_t version;
	uint32_t dev_index;
	uint32_t flags;			/* FERRY_BITMAP_F_* */
	uint64_t buf;			/* user pointer */
	uint64_t start_byte;		/* in: first bitmap byte to copy */
	uint32_t buf_len;		/* in: bytes to copy (> 0) */
	uint32_t returned;		/* out: bytes copied */
	uint32_t granularity;		/* out: bytes per bit */
	uint32_t reserved;
	uint64_t nbits;			/* out */
	uint64_t dirty_bits;		/* out */
	uint64_t epoch;			/* out: pass to CLEAR_BITMAP */
	uint64_t cut_seq;		/* out: seq of the cut record (F_CUT) */
};

FERRY_ABI_ASSERT(sizeof(struct ferry_ioc_bitmap) == 80, "bitmap size");

struct ferry_ioc_clear_bitmap {
	uint32_t size;
	uint32_t version;
	uint32_t dev_index;
	uint32_t reserved;
	uint64_t epoch;			/* from GET_BITMAP */
	uint64_t start_bit;
	uint64_t nbits;
	uint64_t dirty_bits;		/* out: bits still set */
};

FERRY_ABI_ASSERT(sizeof(struct ferry_ioc_clear_bitmap) == 48, "clear size");

struct ferry_ioc_resync {
	uint32_t size;
	uint32_t version;
	uint32_t dev_index;
	uint32_t length;		/* bytes, > 0 */
	uint64_t offset;		/* bytes; offset + length <= device size */
	uint64_t seq;			/* out */
};

FERRY_ABI_ASSERT(sizeof(struct ferry_ioc_resync) == 32, "resync size");

#endif /* FERRY_ABI_H */
