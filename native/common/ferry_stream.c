// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * The transactional change stream over all devices:
 * GET hands out the oldest records not handed out yet as one batch,
 * COMMIT(batch id) frees them, a reset (consumer gone) makes every
 * uncommitted record deliverable again.
 */
#include "ferry_core.h"

void ferry_stream_init(struct ferry_stream *s)
{
	ferry_memset(s, 0, sizeof(*s));
	s->next_batch = 1;
}

int ferry_stream_set(struct ferry_stream *s, u32 index, struct ferry_dev *dev)
{
	if (index >= FERRY_MAX_DEVICES)
		return -FERRY_EINVAL;
	if (dev) {
		if (s->devs[index])
			return -FERRY_EBUSY;
		dev->index = index;
		s->devs[index] = dev;
		s->ndevs++;
	} else if (s->devs[index]) {
		s->devs[index] = NULL;
		s->ndevs--;
	}
	return 0;
}

int ferry_stream_free_index(const struct ferry_stream *s)
{
	u32 i;

	for (i = 0; i < FERRY_MAX_DEVICES; i++)
		if (!s->devs[i])
			return (int)i;
	return -FERRY_ENOSPC;
}

u32 ferry_stream_inflight(const struct ferry_stream *s)
{
	return (u32)(s->next_batch - 1 - s->committed);
}

bool ferry_stream_pending(struct ferry_stream *s)
{
	ferry_irqflags_t flags;
	struct ferry_dev *dev;
	bool pending = false;
	u32 i;

	for (i = 0; i < FERRY_MAX_DEVICES && !pending; i++) {
		dev = s->devs[i];
		if (!dev)
			continue;
		ferry_lock(&dev->lock, flags);
		pending = dev->nsent < dev->used &&
			  ferry_dev_slot(dev, dev->nsent)->ready;
		ferry_unlock(&dev->lock, flags);
	}
	return pending;
}

/* A batch header with nothing in it yet. */
static void ferry_batch_hdr_init(struct ferry_batch_hdr *hdr)
{
	ferry_memset(hdr, 0, sizeof(*hdr));
	hdr->magic = FERRY_BATCH_MAGIC;
	hdr->version = FERRY_ABI_VERSION;
	hdr->hdr_size = sizeof(*hdr);
	hdr->rec_hdr_size = sizeof(struct ferry_rec);
}

static int ferry_copy_record(struct ferry_dev *dev, const struct ferry_slot *sl,
			     bool redelivered, ferry_copy_out_fn copy,
			     void *ctx, u64 off)
{
	static const u8 zeros[8];
	struct ferry_rec rec;
	u32 size = FERRY_REC_SIZE(sl->data_len);
	u32 first, pad;
	int ret;

	ferry_memset(&rec, 0, sizeof(rec));
	rec.seq = sl->seq;
	rec.offset = sl->offset;
	rec.time_ns = sl->time_ns;
	rec.dev_index = dev->index;
	rec.length = sl->length;
	rec.data_len = sl->data_len;
	rec.rec_size = size;
	rec.kind = sl->kind;
	rec.accuracy = sl->accuracy;
	rec.mode = sl->mode;
	rec.flags = sl->flags | (redelivered ? FERRY_REC_F_REDELIVERED : 0);
	ret = copy(ctx, off, &rec, sizeof(rec));
	if (ret)
		return ret;
	off += sizeof(rec);
	if (sl->data_len) {
		first = dev->cfg.pool_size - sl->pool_pos;
		if (first > sl->data_len)
			first = sl->data_len;
		ret = copy(ctx, off, dev->pool + sl->pool_pos, first);
		if (!ret && first < sl->data_len)
			ret = copy(ctx, off + first, dev->pool,
				   sl->data_len - first);
		if (ret)
			return ret;
		off += sl->data_len;
	}
	pad = size - (u32)sizeof(rec) - sl->data_len;
	if (pad)
		ret = copy(ctx, off, zeros, pad);
	return ret;
}

/* Records [start, start + n) of one device taken into the batch. */
struct ferry_take {
	u32 start;
	u32 n;
	u32 redeliver;
};

/* The batch a GET builds. */
struct ferry_batch {
	struct ferry_take take[FERRY_MAX_DEVICES];
	u64 buf_len;
	u64 off;	/* bytes so far, the header included */
	u64 needed;	/* the first record does not fit: what it needs */
	u32 nrec;
	u32 flags;	/* FERRY_BATCH_F_* */
	u8 acc;		/* the worst accuracy of its records */
	bool full;
};

/*
 * Takes the ready records of device i that fit into the batch, marked
 * handed out under the device lock; b->full when one did not fit.
 */
static void ferry_batch_take(struct ferry_stream *s, struct ferry_batch *b,
			     u32 i)
{
	struct ferry_dev *dev = s->devs[i];
	struct ferry_take *t = &b->take[i];
	const struct ferry_slot *sl;
	struct ferry_batch_mark *m;
	ferry_irqflags_t flags;
	u32 n = 0, bytes = 0, size;
	u64 last_seq = 0;

	ferry_lock(&dev->lock, flags);
	while (dev->nsent + n < dev->used) {
		sl = ferry_dev_slot(dev, dev->nsent + n);
		if (!sl->ready)
			break;
		size = FERRY_REC_SIZE(sl->data_len);
		if (b->off + size > b->buf_len) {
			if (!b->nrec && !n)
				b->needed = sizeof(struct ferry_batch_hdr) + size;
			b->full = true;
			break;
		}
		b->off += size;
		bytes += sl->pool_len;
		last_seq = sl->seq;
		if (sl->accuracy > b->acc)
			b->acc = sl->accuracy;
		n++;
	}
	if (n) {
		m = &dev->marks[dev->nmarks++];
		FERRY_BUG_ON(dev->nmarks > FERRY_MAX_BATCHES);
		m->batch_id = s->next_batch;
		m->nrec = n;
		m->bytes = bytes;
		m->last_seq = last_seq;
		t->start = dev->nsent;
		t->n = n;
		t->redeliver = dev->redeliver;
		dev->nsent += n;
		if (t->start < dev->redeliver)
			b->flags |= FERRY_BATCH_F_REDELIVERY;
		b->nrec += n;
	}
	ferry_unlock(&dev->lock, flags);
}

/*
 * Copies the taken records, then the header, to the caller's buffer.
 * Without the device locks: handed-out records are only freed by commit
 * or reset, which the caller serializes with us.
 */
static int ferry_batch_copy(struct ferry_stream *s, struct ferry_batch *b,
			    ferry_copy_out_fn copy, void *ctx)
{
	struct ferry_batch_hdr hdr;
	const struct ferry_slot *sl;
	struct ferry_dev *dev;
	u64 off = sizeof(hdr);
	u32 i, r, rel;
	int ret = 0;

	for (i = 0; i < FERRY_MAX_DEVICES && !ret; i++) {
		dev = s->devs[i];
		for (r = 0; r < b->take[i].n && !ret; r++) {
			rel = b->take[i].start + r;
			sl = ferry_dev_slot(dev, rel);
			ret = ferry_copy_record(dev, sl,
						rel < b->take[i].redeliver,
						copy, ctx, off);
			off += FERRY_REC_SIZE(sl->data_len);
		}
	}
	if (ret)
		return ret;
	ferry_batch_hdr_init(&hdr);
	hdr.batch_id = s->next_batch;
	hdr.nrecords = b->nrec;
	hdr.total_bytes = off;
	hdr.flags = b->flags;
	hdr.accuracy = b->acc;
	return copy(ctx, 0, &hdr, sizeof(hdr));
}

/* The copy failed: the taken records stay deliverable, no batch was made. */
static void ferry_batch_untake(struct ferry_stream *s, struct ferry_batch *b)
{
	ferry_irqflags_t flags;
	struct ferry_dev *dev;
	u32 i;

	for (i = 0; i < FERRY_MAX_DEVICES; i++) {
		if (!b->take[i].n)
			continue;
		dev = s->devs[i];
		ferry_lock(&dev->lock, flags);
		dev->nsent -= b->take[i].n;
		dev->nmarks--;
		ferry_unlock(&dev->lock, flags);
	}
}

int ferry_stream_get(struct ferry_stream *s, u64 buf_len,
		     ferry_copy_out_fn copy, void *ctx,
		     struct ferry_get_result *res)
{
	struct ferry_batch_hdr hdr;
	struct ferry_batch b;
	u32 k, i;
	int ret;

	ferry_memset(res, 0, sizeof(*res));
	if (buf_len < sizeof(hdr)) {
		res->needed = sizeof(hdr);
		return -FERRY_EMSGSIZE;
	}
	if (ferry_stream_inflight(s) >= FERRY_MAX_BATCHES)
		return -FERRY_ENOBUFS;
	s->gets++;

	ferry_memset(&b, 0, sizeof(b));
	b.buf_len = buf_len;
	b.off = sizeof(hdr);
	b.acc = FERRY_ACC_EXACT;
	for (k = 0; k < FERRY_MAX_DEVICES && !b.full; k++) {
		i = (s->rr + k) % FERRY_MAX_DEVICES;
		if (s->devs[i])
			ferry_batch_take(s, &b, i);
	}

	if (!b.nrec) {
		if (b.needed) {
			res->needed = b.needed;
			return -FERRY_EMSGSIZE;
		}
		ferry_batch_hdr_init(&hdr);
		hdr.total_bytes = sizeof(hdr);
		ret = copy(ctx, 0, &hdr, sizeof(hdr));
		if (!ret)
			res->bytes = sizeof(hdr);
		return ret;
	}

	ret = ferry_batch_copy(s, &b, copy, ctx);
	if (ret) {
		ferry_batch_untake(s, &b);
		return ret;
	}
	res->batch_id = s->next_batch++;
	res->bytes = b.off;
	res->nrecords = b.nrec;
	res->flags = b.flags;
	s->rr = (s->rr + 1) % FERRY_MAX_DEVICES;
	return 0;
}

int ferry_stream_commit(struct ferry_stream *s, u64 batch_id, u32 *events)
{
	ferry_irqflags_t flags;
	struct ferry_dev *dev;
	u32 i, j;

	if (!batch_id || batch_id >= s->next_batch)
		return -FERRY_EINVAL;
	if (s->stale_lo && batch_id >= s->stale_lo && batch_id <= s->stale_hi)
		return -FERRY_ESTALE;
	if (batch_id <= s->committed)
		return 0;
	for (i = 0; i < FERRY_MAX_DEVICES; i++) {
		dev = s->devs[i];
		if (!dev)
			continue;
		ferry_lock(&dev->lock, flags);
		for (j = 0; j < dev->nmarks && dev->marks[j].batch_id <= batch_id;
		     j++)
			ferry_dev_release(dev, &dev->marks[j], events);
		if (j) {
			u32 k;

			dev->nmarks -= j;
			for (k = 0; k < dev->nmarks; k++)
				dev->marks[k] = dev->marks[k + j];
		}
		ferry_unlock(&dev->lock, flags);
	}
	s->committed = batch_id;
	s->commits++;
	return 0;
}

void ferry_stream_reset(struct ferry_stream *s)
{
	ferry_irqflags_t flags;
	struct ferry_dev *dev;
	u32 i;

	for (i = 0; i < FERRY_MAX_DEVICES; i++) {
		dev = s->devs[i];
		if (!dev)
			continue;
		ferry_lock(&dev->lock, flags);
		if (dev->nsent > dev->redeliver)
			dev->redeliver = dev->nsent;
		dev->nsent = 0;
		dev->nmarks = 0;
		ferry_unlock(&dev->lock, flags);
	}
	if (s->next_batch - 1 > s->committed) {
		s->stale_lo = s->committed + 1;
		s->stale_hi = s->next_batch - 1;
	}
	s->committed = s->next_batch - 1;
	s->resets++;
}
