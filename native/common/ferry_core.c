// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Per-device capture state: seqs, ring, pool, bitmap, modes,
 * write hold and control records.  See ferry_core.h for the contract and
 * README.md for the state machine.
 */
#include "ferry_core.h"

/* Record classes: how much of the ring (and of the seq lease) each may use. */
enum ferry_class {
	FERRY_CLS_IO,	/* WRITE DIRTY DISCARD FLUSH: up to cap - RESERVE */
	FERRY_CLS_CTL,	/* TAG RESYNC_MARK MODE START: up to cap - 1 */
	FERRY_CLS_LAST,	/* MODE(BITMAP): the very last slot */
};

static u32 ferry_popcount64(u64 x)
{
	x = x - ((x >> 1) & 0x5555555555555555ULL);
	x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (u32)((x * 0x0101010101010101ULL) >> 56);
}

static u32 ferry_pct(u32 value, u32 pct)
{
	/* value * pct / 100 without 64-bit division */
	return (value / 100u) * pct + (value % 100u) * pct / 100u;
}

static bool ferry_is_pow2(u32 v)
{
	return v && !(v & (v - 1));
}

static u32 ferry_log2(u32 v)
{
	u32 s = 0;

	while ((1u << s) < v)
		s++;
	return s;
}

#define FERRY_BITMAP_MAX_BYTES (256ULL << 20)

static u64 ferry_nbits(const struct ferry_dev_config *cfg)
{
	u32 shift = ferry_log2(cfg->granularity);

	return (cfg->dev_size >> shift) +
	       ((cfg->dev_size & (cfg->granularity - 1)) ? 1 : 0);
}

u64 ferry_config_bitmap_bytes(const struct ferry_dev_config *cfg)
{
	return ((ferry_nbits(cfg) + 63) >> 6) << 3;
}

int ferry_config_check(const struct ferry_dev_config *cfg)
{
	if (!cfg->dev_size || cfg->dev_size >= (1ULL << 62))
		return -FERRY_EINVAL;
	if (!ferry_is_pow2(cfg->granularity) ||
	    cfg->granularity < FERRY_GRAN_MIN ||
	    cfg->granularity > FERRY_GRAN_MAX)
		return -FERRY_EINVAL;
	if (cfg->ring_capacity < FERRY_RING_MIN ||
	    cfg->ring_capacity > FERRY_RING_MAX)
		return -FERRY_EINVAL;
	if (cfg->pool_size > FERRY_POOL_MAX)
		return -FERRY_EINVAL;
	if (cfg->pool_low_pct > 100 || cfg->ring_low_pct > 90)
		return -FERRY_EINVAL;
	if (cfg->seq_lease < 64 || cfg->seq_lease > (1ULL << 62))
		return -FERRY_EINVAL;
	if (ferry_config_bitmap_bytes(cfg) > FERRY_BITMAP_MAX_BYTES)
		return -FERRY_EINVAL;
	return 0;
}

u64 ferry_config_memory(const struct ferry_dev_config *cfg)
{
	return (u64)cfg->ring_capacity * sizeof(struct ferry_slot) +
	       cfg->pool_size + ferry_config_bitmap_bytes(cfg) +
	       sizeof(struct ferry_dev);
}

struct ferry_dev *ferry_dev_create(const struct ferry_dev_config *cfg)
{
	struct ferry_dev *dev;

	if (ferry_config_check(cfg))
		return NULL;
	dev = ferry_zalloc(sizeof(*dev));
	if (!dev)
		return NULL;
	dev->cfg = *cfg;
	dev->gran_shift = ferry_log2(cfg->granularity);
	dev->nbits = ferry_nbits(cfg);
	dev->bitmap_words = (dev->nbits + 63) >> 6;
	dev->pool_low = ferry_pct(cfg->pool_size, cfg->pool_low_pct);
	dev->ring_low = ferry_pct(cfg->ring_capacity, cfg->ring_low_pct);
	dev->ring = ferry_zalloc((size_t)cfg->ring_capacity *
				 sizeof(struct ferry_slot));
	dev->bitmap = ferry_zalloc((size_t)dev->bitmap_words * 8);
	if (cfg->pool_size)
		dev->pool = ferry_zalloc(cfg->pool_size);
	if (!dev->ring || !dev->bitmap || (cfg->pool_size && !dev->pool)) {
		ferry_dev_destroy(dev);
		return NULL;
	}
	dev->level = cfg->pool_size ? FERRY_MODE_DATA : FERRY_MODE_METADATA;
	dev->mode = dev->level;
	ferry_lock_init(&dev->lock);
	return dev;
}

void ferry_dev_destroy(struct ferry_dev *dev)
{
	if (!dev)
		return;
	/* every admitted I/O was completed: the list points into callers' memory */
	FERRY_BUG_ON(dev->io_list || dev->io_tracked || dev->inflight);
	ferry_free(dev->ring);
	ferry_free(dev->bitmap);
	ferry_free(dev->pool);
	ferry_free(dev);
}

u64 *ferry_dev_bitmap(struct ferry_dev *dev)
{
	return dev->bitmap;
}

/* ---- helpers; callers hold dev->lock unless noted ---- */

static u32 ferry_ring_idx(const struct ferry_dev *dev, u32 rel)
{
	u32 i = dev->head + rel;

	return i >= dev->cfg.ring_capacity ? i - dev->cfg.ring_capacity : i;
}

static u8 ferry_accuracy_of(const struct ferry_dev *dev)
{
	switch (dev->mode) {
	case FERRY_MODE_DATA:
		return FERRY_ACC_EXACT;
	case FERRY_MODE_METADATA:
		return FERRY_ACC_APPROX;
	default:
		return FERRY_ACC_NONE;
	}
}

static bool ferry_has_room(const struct ferry_dev *dev, enum ferry_class cls)
{
	u32 ring_lim;
	u64 seq_margin;

	switch (cls) {
	case FERRY_CLS_IO:
		ring_lim = dev->cfg.ring_capacity - FERRY_RING_RESERVE;
		seq_margin = FERRY_RING_RESERVE;
		break;
	case FERRY_CLS_CTL:
		ring_lim = dev->cfg.ring_capacity - 1;
		seq_margin = 1;
		break;
	default:
		ring_lim = dev->cfg.ring_capacity;
		seq_margin = 0;
		break;
	}
	if (dev->used >= ring_lim)
		return false;
	return dev->seq_limit > dev->next_seq &&
	       dev->seq_limit - dev->next_seq > seq_margin;
}

static u32 ferry_check_lease(struct ferry_dev *dev)
{
	if (dev->lease_requested)
		return 0;
	if (dev->seq_limit > dev->next_seq &&
	    dev->seq_limit - dev->next_seq > dev->cfg.seq_lease / 2)
		return 0;
	dev->lease_requested = true;
	return FERRY_EV_LEASE;
}

static struct ferry_slot *ferry_push(struct ferry_dev *dev, u16 kind,
				     u64 offset, u32 length, u32 flags,
				     u32 *events)
{
	struct ferry_slot *s;

	FERRY_BUG_ON(dev->used >= dev->cfg.ring_capacity);
	FERRY_BUG_ON(dev->next_seq >= dev->seq_limit);
	s = &dev->ring[ferry_ring_idx(dev, dev->used)];
	s->seq = dev->next_seq++;
	s->offset = offset;
	s->time_ns = ferry_now_ns();
	s->length = length;
	s->data_len = 0;
	s->pool_len = 0;
	s->pool_pos = 0;
	s->flags = flags;
	s->kind = kind;
	s->accuracy = ferry_accuracy_of(dev);
	s->mode = dev->mode;
	s->ready = 1;
	dev->used++;
	*events |= FERRY_EV_READY | ferry_check_lease(dev);
	return s;
}

static void ferry_set_mode(struct ferry_dev *dev, u8 mode, u32 *events)
{
	u8 prev = dev->mode;
	enum ferry_class cls;

	if (prev == mode)
		return;
	dev->mode = mode;
	dev->ctr.mode_changes++;
	*events |= FERRY_EV_MODE;
	if (mode == FERRY_MODE_BITMAP)
		dev->epoch++;
	if (dev->frozen) {
		/* no seqs while suspended: announce it when thawed */
		if (!dev->mode_unannounced)
			dev->announce_prev = prev;
		dev->mode_unannounced = true;
		return;
	}
	cls = mode == FERRY_MODE_BITMAP ? FERRY_CLS_LAST : FERRY_CLS_CTL;
	FERRY_BUG_ON(!ferry_has_room(dev, cls));
	ferry_push(dev, FERRY_REC_MODE, 0, prev, 0, events);
}

/* The capture level (DATA or METADATA) changed. */
static void ferry_set_level(struct ferry_dev *dev, u8 level, u32 *events)
{
	dev->level = level;
	if (dev->mode == FERRY_MODE_DATA || dev->mode == FERRY_MODE_METADATA)
		ferry_set_mode(dev, level, events);
}

static void ferry_bits_set(u64 *map, u64 start, u64 n, u64 *count)
{
	while (n) {
		u64 w = start >> 6;
		u32 b = (u32)(start & 63);
		u64 take = 64 - b < n ? 64 - b : n;
		u64 mask = take == 64 ? ~0ULL : ((1ULL << take) - 1) << b;

		if (count)
			*count += ferry_popcount64(mask & ~map[w]);
		map[w] |= mask;
		start += take;
		n -= take;
	}
}

static void ferry_bits_clear(u64 *map, u64 start, u64 n, u64 *count)
{
	while (n) {
		u64 w = start >> 6;
		u32 b = (u32)(start & 63);
		u64 take = 64 - b < n ? 64 - b : n;
		u64 mask = take == 64 ? ~0ULL : ((1ULL << take) - 1) << b;

		*count -= ferry_popcount64(mask & map[w]);
		map[w] &= ~mask;
		start += take;
		n -= take;
	}
}

/* Marks the regions [offset, offset + length) touches, clipped to the device. */
static void ferry_mark_range(const struct ferry_dev *dev, u64 *map,
			     u64 offset, u64 length, u64 *count)
{
	u64 end, first, last;

	if (!length || offset >= dev->cfg.dev_size)
		return;
	end = offset + length;
	if (end > dev->cfg.dev_size || end < offset)
		end = dev->cfg.dev_size;
	first = offset >> dev->gran_shift;
	last = (end - 1) >> dev->gran_shift;
	ferry_bits_set(map, first, last - first + 1, count);
}

/* A write-type change that gets no record: remember it in the bitmap. */
static void ferry_to_bitmap(struct ferry_dev *dev, u64 offset, u64 length,
			    u32 *events)
{
	if (!dev->started) {
		/* before the stream starts: ferry_dev_start() counts it */
	} else if (dev->mode != FERRY_MODE_BITMAP) {
		if (dev->frozen) {
			/* cannot happen with dm (no I/O while suspended) */
			if (dev->mode != FERRY_MODE_DRAINING)
				ferry_set_mode(dev, FERRY_MODE_DRAINING, events);
			dev->epoch++;
		} else {
			ferry_set_mode(dev, FERRY_MODE_BITMAP, events);
		}
	}
	ferry_mark_range(dev, dev->bitmap, offset, length, &dev->dirty_bits);
}

static bool ferry_can_record(const struct ferry_dev *dev)
{
	return dev->started && !dev->frozen && dev->mode != FERRY_MODE_BITMAP &&
	       ferry_has_room(dev, FERRY_CLS_IO);
}

static void ferry_io_done(struct ferry_dev *dev, u32 *events)
{
	FERRY_BUG_ON(!dev->inflight);
	dev->inflight--;
	if (dev->hold && !dev->inflight)
		*events |= FERRY_EV_DRAINED;
}

static void ferry_try_exit_draining(struct ferry_dev *dev, u32 *events)
{
	if (dev->mode != FERRY_MODE_DRAINING || dev->dirty_bits || dev->frozen)
		return;
	if (!ferry_has_room(dev, FERRY_CLS_CTL))
		return;
	ferry_set_mode(dev, dev->level, events);
}

/* Resources came back (commit, new lease): climb back up. */
static void ferry_recover(struct ferry_dev *dev, u32 *events)
{
	if (dev->frozen || !dev->started)
		return;
	if (dev->level == FERRY_MODE_METADATA && dev->cfg.pool_size &&
	    dev->pool_used <= dev->pool_low &&
	    ferry_has_room(dev, FERRY_CLS_CTL))
		ferry_set_level(dev, FERRY_MODE_DATA, events);
	if (dev->mode == FERRY_MODE_BITMAP && dev->used <= dev->ring_low &&
	    ferry_has_room(dev, FERRY_CLS_IO))
		ferry_set_mode(dev, FERRY_MODE_DRAINING, events);
	ferry_try_exit_draining(dev, events);
}

/* ---- lifetime ---- */

u32 ferry_dev_start(struct ferry_dev *dev, u8 start_state, u32 generation,
		    u64 next_seq, u64 seq_limit)
{
	ferry_irqflags_t flags;
	u32 events = 0;
	u64 i, tail_bits;

	ferry_lock(&dev->lock, flags);
	dev->start_state = start_state;
	dev->generation = generation;
	dev->first_seq = next_seq;
	dev->next_seq = next_seq;
	dev->seq_limit = seq_limit;
	dev->dirty_bits = 0;
	if (start_state != FERRY_START_CLEAN) {
		ferry_memset(dev->bitmap, 0, (size_t)dev->bitmap_words * 8);
		ferry_bits_set(dev->bitmap, 0, dev->nbits, &dev->dirty_bits);
	} else {
		/* bits past the end of the device never count */
		tail_bits = dev->nbits & 63;
		if (tail_bits)
			dev->bitmap[dev->bitmap_words - 1] &=
				(1ULL << tail_bits) - 1;
		for (i = 0; i < dev->bitmap_words; i++)
			dev->dirty_bits += ferry_popcount64(dev->bitmap[i]);
	}
	dev->epoch++;
	dev->mode = dev->dirty_bits ? FERRY_MODE_DRAINING : dev->level;
	dev->started = true;
	dev->frozen = false;
	if (ferry_has_room(dev, FERRY_CLS_CTL))
		ferry_push(dev, FERRY_REC_START, generation, start_state, 0,
			   &events);
	else
		events |= ferry_check_lease(dev);
	ferry_unlock(&dev->lock, flags);
	return events;
}

void ferry_dev_freeze(struct ferry_dev *dev)
{
	ferry_irqflags_t flags;

	ferry_lock(&dev->lock, flags);
	dev->frozen = true;
	ferry_unlock(&dev->lock, flags);
}

u32 ferry_dev_thaw(struct ferry_dev *dev)
{
	ferry_irqflags_t flags;
	u32 events = 0;

	ferry_lock(&dev->lock, flags);
	dev->frozen = false;
	if (dev->mode_unannounced && ferry_has_room(dev, FERRY_CLS_CTL))
		ferry_push(dev, FERRY_REC_MODE, 0, dev->announce_prev, 0,
			   &events);
	dev->mode_unannounced = false;
	ferry_recover(dev, &events);
	ferry_unlock(&dev->lock, flags);
	return events;
}

u64 ferry_dev_persist(struct ferry_dev *dev, u64 *out)
{
	u32 r;

	/* frozen, no I/O in flight, control serialized: no lock needed */
	ferry_memcpy(out, dev->bitmap, (size_t)dev->bitmap_words * 8);
	for (r = 0; r < dev->used; r++) {
		const struct ferry_slot *s = &dev->ring[ferry_ring_idx(dev, r)];

		switch (s->kind) {
		case FERRY_REC_WRITE:
		case FERRY_REC_DIRTY:
		case FERRY_REC_DISCARD:
		case FERRY_REC_RESYNC_MARK:
			ferry_mark_range(dev, out, s->offset, s->length, NULL);
			break;
		default:
			break;
		}
	}
	return dev->next_seq;
}

u32 ferry_dev_set_seq_limit(struct ferry_dev *dev, u64 limit)
{
	ferry_irqflags_t flags;
	u32 events = 0;

	ferry_lock(&dev->lock, flags);
	if (limit > dev->seq_limit)
		dev->seq_limit = limit;
	dev->lease_requested = false;
	events |= ferry_check_lease(dev);
	ferry_recover(dev, &events);
	ferry_unlock(&dev->lock, flags);
	return events;
}

/* ---- I/O path ---- */

/*
 * Overlapping writes in flight.
 *
 * A record gets its seq when its I/O completes (under the lock, in a
 * ferry_capture_*() call) and the replica applies records in seq order.
 * Two writes to the same bytes in flight together may reach the disk in
 * either order, so completion order alone could leave the replica with the
 * other write's bytes.  Each admitted I/O with a range is on dev->io_list
 * from ferry_io_begin() (before the platform sends it down) until its
 * completion call (after the disk completed it).  That call
 *
 *   (1) takes it off the list, then widens the hit range of every I/O still
 *       on the list that overlaps it by the overlap (ferry_io_complete);
 *   (2) records it as usual and, if its own hit range is not empty, makes
 *       sure a read-back of (hit range) & (its range) comes after its record:
 *       a DIRTY record right after it (or the write recorded as DIRTY in the
 *       first place when the hit covers it whole), or bitmap bits when no
 *       record can be made (the bitmap's drain cut comes later still).
 *
 * Claim: once nothing is in flight, every byte b of the replica (all
 * records applied, read-backs included) equals the disk.  Let R be the
 * last record in seq order whose range touches b (a bitmap cut touches
 * every bit set when it is made).
 *  - R reads back (DIRTY, RESYNC_MARK, bitmap cut): the agent reads b after
 *    R was made.  A write that changes b on disk after that read completes
 *    after R was made, so its own record touching b comes after R, which
 *    is the last.  So the read saw b's final content.
 *  - R carries a write W's data (WRITE, DISCARD), and suppose the disk's
 *    final b came from another write D.  D's record is before R, so D
 *    completed before W.  The disk applied D to b after W, and D completed
 *    after that, so W had been sent down, hence was on the list, before D
 *    completed, and was still on it then.  (1) at D's completion put b into
 *    W's hit range, and (2) at W's completion put a read-back of b after R:
 *    R is not the last.  So the disk's final b is W's.
 * In words: each overlap of two writes in flight together is read back
 * after the later of the two completed.  In a chain (A overlaps B overlaps
 * C) each overlap gets its own read-back after its own pair; a byte where
 * several writes met is read back after the last of them, since that one
 * was in flight when each other one completed (they were all in flight
 * together); nothing more is needed as the claim is per byte.
 *
 * An untracked I/O (io NULL) is never marked, so its completion treats it
 * as marked over its whole range.  A cancelled I/O changed nothing and
 * marks nothing.  The cost is one walk over the list per completion under
 * the lock the completion takes anyway: O(writes in flight).
 */

/* Puts io on the list of I/Os in flight; dev->lock held. */
static void ferry_io_track(struct ferry_dev *dev, struct ferry_io *io,
			   u64 offset, u64 length)
{
	u64 end = offset + length;

	if (end < offset)
		end = ~0ULL;
	io->start = offset;
	io->end = end;
	io->hit_start = 0;
	io->hit_end = 0;
	io->prev = NULL;
	io->next = NULL;
	if (!length)
		return;		/* a flush: nothing to overlap */
	io->next = dev->io_list;
	if (io->next)
		io->next->prev = io;
	dev->io_list = io;
	dev->io_tracked++;
}

/* Takes io off the list if it is on it; dev->lock held. */
static void ferry_io_untrack(struct ferry_dev *dev, struct ferry_io *io)
{
	if (!io || io->start == io->end)
		return;
	FERRY_BUG_ON(!dev->io_tracked);
	if (io->prev)
		io->prev->next = io->next;
	else
		dev->io_list = io->next;
	if (io->next)
		io->next->prev = io->prev;
	io->next = NULL;
	io->prev = NULL;
	io->start = io->end = 0;
	dev->io_tracked--;
}

/*
 * An I/O that may have changed [offset, offset + length) completed: step
 * (1) above.  Returns in [*lo, *hi) the part of that range which must be
 * read back after its record (empty: lo == hi); dev->lock held.
 */
static void ferry_io_complete(struct ferry_dev *dev, struct ferry_io *io,
			      u64 offset, u64 length, u64 *lo, u64 *hi)
{
	u64 start = offset, end = offset + length;
	struct ferry_io *o;

	if (end < offset)
		end = ~0ULL;
	*lo = *hi = 0;
	if (io) {
		if (io->hit_start < io->hit_end) {
			*lo = io->hit_start > start ? io->hit_start : start;
			*hi = io->hit_end < end ? io->hit_end : end;
			if (*lo >= *hi)
				*lo = *hi = 0;
		}
		/* what it was admitted for is what it may have changed */
		if (io->start < io->end) {
			start = io->start;
			end = io->end;
		}
		ferry_io_untrack(dev, io);
	} else if (start < end) {
		/* untracked: it may have overlapped anything in flight */
		*lo = start;
		*hi = end;
	}
	if (start >= end)
		return;
	for (o = dev->io_list; o; o = o->next) {
		u64 a, b;

		if (o->end <= start || end <= o->start)
			continue;
		a = o->start > start ? o->start : start;
		b = o->end < end ? o->end : end;
		if (o->hit_start == o->hit_end) {
			o->hit_start = a;
			o->hit_end = b;
		} else {
			if (a < o->hit_start)
				o->hit_start = a;
			if (b > o->hit_end)
				o->hit_end = b;
		}
		dev->ctr.overlaps++;
	}
}

int ferry_io_begin(struct ferry_dev *dev, struct ferry_io *io, u64 offset,
		   u64 length)
{
	ferry_irqflags_t flags;
	int held;

	ferry_lock(&dev->lock, flags);
	held = dev->hold;
	if (!held) {
		dev->inflight++;
		if (io)
			ferry_io_track(dev, io, offset, length);
	}
	ferry_unlock(&dev->lock, flags);
	return held;
}

u32 ferry_io_cancel(struct ferry_dev *dev, struct ferry_io *io)
{
	ferry_irqflags_t flags;
	u32 events = 0;

	ferry_lock(&dev->lock, flags);
	ferry_io_untrack(dev, io);
	ferry_io_done(dev, &events);
	ferry_unlock(&dev->lock, flags);
	return events;
}

/*
 * Step (2) for [lo, hi): the read-back of an overlap after the record just
 * made.  DIRTY records (split like any range), or bitmap bits.
 */
static void ferry_overlap_dirty(struct ferry_dev *dev, u64 lo, u64 hi,
				u32 *events)
{
	while (lo < hi) {
		u64 n = hi - lo;
		u32 chunk = n > FERRY_MAX_RECORD ? FERRY_MAX_RECORD : (u32)n;

		if (!ferry_can_record(dev)) {
			ferry_to_bitmap(dev, lo, hi - lo, events);
			return;
		}
		ferry_push(dev, FERRY_REC_DIRTY, lo, chunk, FERRY_REC_F_OVERLAP,
			   events);
		dev->ctr.overlap_dirty++;
		lo += chunk;
	}
}

u32 ferry_capture_write(struct ferry_dev *dev, struct ferry_io *io,
			u64 offset, u32 length, u32 rflags, struct ferry_cap *cap)
{
	ferry_irqflags_t flags;
	struct ferry_slot *s;
	u32 events = 0;
	u64 lo, hi;
	bool payload;

	ferry_lock(&dev->lock, flags);
	ferry_io_complete(dev, io, offset, length, &lo, &hi);
	if (!ferry_can_record(dev)) {
		/* the bits cover the overlap too: the drain reads it later */
		ferry_to_bitmap(dev, offset, length, &events);
		dev->ctr.bitmap_writes++;
		goto done;
	}
	payload = length && dev->level == FERRY_MODE_DATA;
	if (lo == offset && hi == offset + length && length) {
		/* overlapped whole: its payload may not be what the disk holds */
		rflags |= FERRY_REC_F_OVERLAP;
		payload = false;
	} else if (payload && length > dev->cfg.pool_size - dev->pool_used) {
		/* pool exhausted: DATA -> METADATA (or silently in DRAINING) */
		ferry_set_level(dev, FERRY_MODE_METADATA, &events);
		payload = false;
	}
	if (payload) {
		u32 pos = dev->pool_head + dev->pool_used;

		if (pos >= dev->cfg.pool_size)
			pos -= dev->cfg.pool_size;
		s = ferry_push(dev, FERRY_REC_WRITE, offset, length, rflags,
			       &events);
		s->ready = 0;
		s->data_len = length;
		s->pool_len = length;
		s->pool_pos = pos;
		dev->pool_used += length;
		dev->ctr.writes++;
		dev->ctr.write_bytes += length;
		cap->slot = (u32)(s - dev->ring);
		cap->pos = pos;
		cap->left = length;
		/* the overlap's DIRTY goes right after (GET waits for the WRITE) */
		ferry_overlap_dirty(dev, lo, hi, &events);
		/* not deliverable until ferry_capture_end() */
		events &= ~FERRY_EV_READY;
		ferry_unlock(&dev->lock, flags);
		return events | FERRY_CAP_COPY;
	}
	if (length) {
		/* a DIRTY record over the whole write covers any overlap too */
		ferry_push(dev, FERRY_REC_DIRTY, offset, length, rflags,
			   &events);
		dev->ctr.dirty_records++;
	} else {
		/* an empty write that is not a flush: keep the seq honest */
		ferry_push(dev, FERRY_REC_WRITE, offset, 0, rflags, &events);
		dev->ctr.writes++;
	}
done:
	ferry_io_done(dev, &events);
	ferry_unlock(&dev->lock, flags);
	return events;
}

void ferry_capture_copy(struct ferry_dev *dev, struct ferry_cap *cap,
			const void *src, u32 len)
{
	const u8 *p = src;

	if (len > cap->left)
		len = cap->left;	/* never write past the reservation */
	while (len) {
		u32 chunk = dev->cfg.pool_size - cap->pos;

		if (chunk > len)
			chunk = len;
		ferry_memcpy(dev->pool + cap->pos, p, chunk);
		cap->pos += chunk;
		if (cap->pos == dev->cfg.pool_size)
			cap->pos = 0;
		p += chunk;
		len -= chunk;
		cap->left -= chunk;
	}
}

u32 ferry_capture_end(struct ferry_dev *dev, struct ferry_cap *cap)
{
	ferry_irqflags_t flags;
	struct ferry_slot *s = &dev->ring[cap->slot];
	u32 events = FERRY_EV_READY;

	ferry_lock(&dev->lock, flags);
	if (cap->left) {
		/* short payload: do not ship garbage, say "read it back" */
		s->kind = FERRY_REC_DIRTY;
		s->data_len = 0;
		dev->ctr.writes--;
		dev->ctr.write_bytes -= s->length;
		dev->ctr.dirty_records++;
	}
	s->ready = 1;
	ferry_io_done(dev, &events);
	ferry_unlock(&dev->lock, flags);
	return events;
}

static void ferry_capture_range(struct ferry_dev *dev, u16 kind, u64 offset,
				u64 length, u32 rflags, u32 *events)
{
	while (length) {
		u32 chunk = length > FERRY_MAX_RECORD ? FERRY_MAX_RECORD :
							(u32)length;

		if (!ferry_can_record(dev)) {
			ferry_to_bitmap(dev, offset, length, events);
			dev->ctr.bitmap_writes++;
			return;
		}
		ferry_push(dev, kind, offset, chunk, rflags, events);
		offset += chunk;
		length -= chunk;
	}
}

u32 ferry_capture_discard(struct ferry_dev *dev, struct ferry_io *io,
			  u64 offset, u64 length)
{
	ferry_irqflags_t flags;
	u32 events = 0;
	u64 lo, hi;

	ferry_lock(&dev->lock, flags);
	ferry_io_complete(dev, io, offset, length, &lo, &hi);
	dev->ctr.discards++;
	ferry_capture_range(dev, FERRY_REC_DISCARD, offset, length, 0, &events);
	ferry_overlap_dirty(dev, lo, hi, &events);
	ferry_io_done(dev, &events);
	ferry_unlock(&dev->lock, flags);
	return events;
}

u32 ferry_capture_failed(struct ferry_dev *dev, struct ferry_io *io,
			 u64 offset, u64 length)
{
	ferry_irqflags_t flags;
	u32 events = 0;
	u64 lo, hi;

	ferry_lock(&dev->lock, flags);
	/* its DIRTY records cover any overlap: [lo, hi) is inside them */
	ferry_io_complete(dev, io, offset, length, &lo, &hi);
	dev->ctr.failed_writes++;
	ferry_capture_range(dev, FERRY_REC_DIRTY, offset, length,
			    FERRY_REC_F_IO_ERROR, &events);
	ferry_io_done(dev, &events);
	ferry_unlock(&dev->lock, flags);
	return events;
}

u32 ferry_capture_flush(struct ferry_dev *dev, struct ferry_io *io)
{
	ferry_irqflags_t flags;
	u32 events = 0;

	ferry_lock(&dev->lock, flags);
	ferry_io_untrack(dev, io);
	if (ferry_can_record(dev)) {
		ferry_push(dev, FERRY_REC_FLUSH, 0, 0, 0, &events);
		dev->ctr.flushes++;
	} else {
		/* nothing to order in bitmap mode */
		if (dev->started && !dev->frozen &&
		    dev->mode != FERRY_MODE_BITMAP)
			ferry_set_mode(dev, FERRY_MODE_BITMAP, &events);
		dev->ctr.dropped_flushes++;
	}
	ferry_io_done(dev, &events);
	ferry_unlock(&dev->lock, flags);
	return events;
}

/* ---- control ---- */

void ferry_dev_hold(struct ferry_dev *dev, bool on)
{
	ferry_irqflags_t flags;

	ferry_lock(&dev->lock, flags);
	dev->hold = on;
	ferry_unlock(&dev->lock, flags);
}

u32 ferry_dev_inflight(struct ferry_dev *dev)
{
	ferry_irqflags_t flags;
	u32 n;

	ferry_lock(&dev->lock, flags);
	n = dev->inflight;
	ferry_unlock(&dev->lock, flags);
	return n;
}

static int ferry_tag_check_locked(struct ferry_dev *dev)
{
	if (!dev->started || dev->frozen)
		return -FERRY_EAGAIN;
	if (dev->mode == FERRY_MODE_BITMAP || !ferry_has_room(dev, FERRY_CLS_CTL))
		return -FERRY_ENOSPC;
	return 0;
}

int ferry_dev_tag_check(struct ferry_dev *dev)
{
	ferry_irqflags_t flags;
	int ret;

	ferry_lock(&dev->lock, flags);
	ret = ferry_tag_check_locked(dev);
	ferry_unlock(&dev->lock, flags);
	return ret;
}

int ferry_tag_cut(struct ferry_dev **devs, u32 n, u64 tag_id, u64 *seqs,
		  u32 *events)
{
	ferry_irqflags_t flags;
	struct ferry_slot *s;
	u32 i;
	int ret;

	for (i = 0; i < n; i++) {
		ferry_lock(&devs[i]->lock, flags);
		ret = ferry_tag_check_locked(devs[i]);
		if (!ret && (!devs[i]->hold || devs[i]->inflight))
			ret = -FERRY_EBUSY;
		ferry_unlock(&devs[i]->lock, flags);
		if (ret)
			return ret;
	}
	/*
	 * Every device is held with nothing in flight and the caller
	 * serializes control calls, so nothing changed since the check.
	 */
	for (i = 0; i < n; i++) {
		ferry_lock(&devs[i]->lock, flags);
		s = ferry_push(devs[i], FERRY_REC_TAG, tag_id, 0, 0, events);
		seqs[i] = s->seq;
		devs[i]->ctr.tags++;
		ferry_unlock(&devs[i]->lock, flags);
	}
	return 0;
}

int ferry_dev_resync_mark(struct ferry_dev *dev, u64 offset, u32 length,
			  u64 *seq, u32 *events)
{
	ferry_irqflags_t flags;
	struct ferry_slot *s;
	int ret = 0;

	if (!length)
		return -FERRY_EINVAL;
	if (offset >= dev->cfg.dev_size || length > dev->cfg.dev_size - offset)
		return -FERRY_ERANGE;
	ferry_lock(&dev->lock, flags);
	if (!dev->started || dev->frozen) {
		ret = -FERRY_EAGAIN;
	} else if (!ferry_has_room(dev, FERRY_CLS_CTL)) {
		ret = -FERRY_ENOSPC;
	} else {
		s = ferry_push(dev, FERRY_REC_RESYNC_MARK, offset, length, 0,
			       events);
		*seq = s->seq;
		dev->ctr.resync_marks++;
	}
	ferry_unlock(&dev->lock, flags);
	return ret;
}

int ferry_dev_bitmap_cut(struct ferry_dev *dev, u64 *seq, u64 *epoch,
			 u32 *events)
{
	ferry_irqflags_t flags;
	struct ferry_slot *s;
	int ret = 0;

	ferry_lock(&dev->lock, flags);
	if (!dev->started || dev->frozen) {
		ret = -FERRY_EAGAIN;
	} else if (dev->mode == FERRY_MODE_BITMAP) {
		ret = -FERRY_EBUSY;
	} else if (!ferry_has_room(dev, FERRY_CLS_CTL)) {
		ret = -FERRY_ENOSPC;
	} else {
		s = ferry_push(dev, FERRY_REC_RESYNC_MARK, 0, 0,
			       FERRY_REC_F_BITMAP_CUT, events);
		*seq = s->seq;
		*epoch = dev->epoch;
	}
	ferry_unlock(&dev->lock, flags);
	return ret;
}

int ferry_dev_bitmap_read(struct ferry_dev *dev, u64 start, void *dst,
			  u32 len, u32 *copied, u64 *epoch)
{
	ferry_irqflags_t flags;
	u64 total = dev->bitmap_words * 8;
	int ret = 0;

	*copied = 0;
	if (!len)
		return -FERRY_EINVAL;
	if (start >= total)
		return -FERRY_ERANGE;
	if (len > total - start)
		len = (u32)(total - start);
	ferry_lock(&dev->lock, flags);
	if (dev->mode == FERRY_MODE_BITMAP) {
		ret = -FERRY_EBUSY;
	} else {
		ferry_memcpy(dst, (const u8 *)dev->bitmap + start, len);
		*copied = len;
		*epoch = dev->epoch;
	}
	ferry_unlock(&dev->lock, flags);
	return ret;
}

int ferry_dev_bitmap_clear(struct ferry_dev *dev, u64 epoch, u64 start_bit,
			   u64 nbits, u32 *events)
{
	ferry_irqflags_t flags;
	int ret = 0;

	if (!nbits)
		return -FERRY_EINVAL;
	if (start_bit >= dev->nbits || nbits > dev->nbits - start_bit)
		return -FERRY_ERANGE;
	ferry_lock(&dev->lock, flags);
	if (!dev->started || dev->frozen) {
		ret = -FERRY_EAGAIN;
	} else if (epoch != dev->epoch) {
		ret = -FERRY_ESTALE;
	} else if (dev->mode == FERRY_MODE_BITMAP) {
		ret = -FERRY_EBUSY;
	} else {
		ferry_bits_clear(dev->bitmap, start_bit, nbits,
				 &dev->dirty_bits);
		ferry_try_exit_draining(dev, events);
	}
	ferry_unlock(&dev->lock, flags);
	return ret;
}

void ferry_dev_info(struct ferry_dev *dev, struct ferry_dev_info *info)
{
	ferry_irqflags_t flags;
	const struct ferry_counters *c = &dev->ctr;

	ferry_lock(&dev->lock, flags);
	info->index = dev->index;
	info->mode = dev->mode;
	info->size_bytes = dev->cfg.dev_size;
	info->granularity = dev->cfg.granularity;
	info->start_state = dev->start_state;
	info->generation = dev->generation;
	if (dev->frozen)
		info->flags |= FERRY_DEV_F_SUSPENDED;
	if (dev->hold)
		info->flags |= FERRY_DEV_F_HOLD;
	if (dev->mode == FERRY_MODE_DRAINING &&
	    dev->level == FERRY_MODE_METADATA)
		info->flags |= FERRY_DEV_F_POOL_LOW;
	info->first_seq = dev->first_seq;
	info->next_seq = dev->next_seq;
	info->committed_seq = dev->committed_seq;
	info->seq_limit = dev->seq_limit;
	info->bitmap_bits = dev->nbits;
	info->dirty_bits = dev->dirty_bits;
	info->bitmap_epoch = dev->epoch;
	info->ring_capacity = dev->cfg.ring_capacity;
	info->ring_used = dev->used;
	info->ring_handed_out = dev->nsent;
	info->pool_size = dev->cfg.pool_size;
	info->pool_used = dev->pool_used;
	info->inflight = dev->inflight;
	info->writes = c->writes;
	info->write_bytes = c->write_bytes;
	info->dirty_records = c->dirty_records;
	info->discards = c->discards;
	info->flushes = c->flushes;
	info->tags = c->tags;
	info->resync_marks = c->resync_marks;
	info->mode_changes = c->mode_changes;
	info->bitmap_writes = c->bitmap_writes;
	info->failed_writes = c->failed_writes;
	info->dropped_flushes = c->dropped_flushes;
	info->records_committed = c->records_committed;
	info->bytes_committed = c->bytes_committed;
	info->overlaps = c->overlaps;
	info->overlap_dirty = c->overlap_dirty;
	ferry_unlock(&dev->lock, flags);
}

/* ---- stream internals shared with ferry_stream.c ---- */

const struct ferry_slot *ferry_dev_slot(const struct ferry_dev *dev, u32 rel)
{
	return &dev->ring[ferry_ring_idx(dev, rel)];
}

void ferry_dev_release(struct ferry_dev *dev, const struct ferry_batch_mark *m,
		       u32 *events)
{
	FERRY_BUG_ON(m->nrec > dev->nsent || m->bytes > dev->pool_used);
	dev->head = ferry_ring_idx(dev, m->nrec);
	dev->used -= m->nrec;
	dev->nsent -= m->nrec;
	dev->redeliver = dev->redeliver > m->nrec ? dev->redeliver - m->nrec : 0;
	if (dev->cfg.pool_size) {
		dev->pool_head += m->bytes;
		if (dev->pool_head >= dev->cfg.pool_size)
			dev->pool_head -= dev->cfg.pool_size;
	}
	dev->pool_used -= m->bytes;
	dev->committed_seq = m->last_seq;
	dev->ctr.records_committed += m->nrec;
	dev->ctr.bytes_committed += m->bytes;
	ferry_recover(dev, events);
}
