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

/* Records [start, start + n) of one device taken into the batch. */
struct ferry_take {
	u32 start;
	u32 n;
	u32 redeliver;
};

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

int ferry_stream_get(struct ferry_stream *s, u64 buf_len,
		     ferry_copy_out_fn copy, void *ctx,
		     struct ferry_get_result *res)
{
	struct ferry_take take[FERRY_MAX_DEVICES];
	struct ferry_batch_hdr hdr;
	ferry_irqflags_t flags;
	struct ferry_dev *dev;
	u64 off = sizeof(hdr), needed = 0;
	u32 nrec = 0, bflags = 0, k, i, r;
	u8 acc = FERRY_ACC_EXACT;
	bool full = false;
	int ret;

	ferry_memset(res, 0, sizeof(*res));
	ferry_memset(take, 0, sizeof(take));
	if (buf_len < sizeof(hdr)) {
		res->needed = sizeof(hdr);
		return -FERRY_EMSGSIZE;
	}
	if (ferry_stream_inflight(s) >= FERRY_MAX_BATCHES)
		return -FERRY_ENOBUFS;
	s->gets++;

	for (k = 0; k < FERRY_MAX_DEVICES && !full; k++) {
		const struct ferry_slot *sl;
		u32 n = 0, bytes = 0;
		u64 last_seq = 0;

		i = (s->rr + k) % FERRY_MAX_DEVICES;
		dev = s->devs[i];
		if (!dev)
			continue;
		ferry_lock(&dev->lock, flags);
		while (dev->nsent + n < dev->used) {
			u32 size;

			sl = ferry_dev_slot(dev, dev->nsent + n);
			if (!sl->ready)
				break;
			size = FERRY_REC_SIZE(sl->data_len);
			if (off + size > buf_len) {
				if (!nrec && !n)
					needed = sizeof(hdr) + size;
				full = true;
				break;
			}
			off += size;
			bytes += sl->pool_len;
			last_seq = sl->seq;
			if (sl->accuracy > acc)
				acc = sl->accuracy;
			n++;
		}
		if (n) {
			struct ferry_batch_mark *m = &dev->marks[dev->nmarks++];

			FERRY_BUG_ON(dev->nmarks > FERRY_MAX_BATCHES);
			m->batch_id = s->next_batch;
			m->nrec = n;
			m->bytes = bytes;
			m->last_seq = last_seq;
			take[i].start = dev->nsent;
			take[i].n = n;
			take[i].redeliver = dev->redeliver;
			dev->nsent += n;
			if (take[i].start < dev->redeliver)
				bflags |= FERRY_BATCH_F_REDELIVERY;
			nrec += n;
		}
		ferry_unlock(&dev->lock, flags);
	}

	ferry_memset(&hdr, 0, sizeof(hdr));
	hdr.magic = FERRY_BATCH_MAGIC;
	hdr.version = FERRY_ABI_VERSION;
	hdr.hdr_size = sizeof(hdr);
	hdr.rec_hdr_size = sizeof(struct ferry_rec);
	if (!nrec) {
		if (needed) {
			res->needed = needed;
			return -FERRY_EMSGSIZE;
		}
		hdr.total_bytes = sizeof(hdr);
		ret = copy(ctx, 0, &hdr, sizeof(hdr));
		if (!ret)
			res->bytes = sizeof(hdr);
		return ret;
	}

	/*
	 * Copy out without the device locks: handed-out records are only
	 * freed by commit or reset, which the caller serializes with us.
	 */
	off = sizeof(hdr);
	ret = 0;
	for (i = 0; i < FERRY_MAX_DEVICES && !ret; i++) {
		dev = s->devs[i];
		for (r = 0; r < take[i].n && !ret; r++) {
			u32 rel = take[i].start + r;
			const struct ferry_slot *sl = ferry_dev_slot(dev, rel);

			ret = ferry_copy_record(dev, sl, rel < take[i].redeliver,
						copy, ctx, off);
			off += FERRY_REC_SIZE(sl->data_len);
		}
	}
	hdr.batch_id = s->next_batch;
	hdr.nrecords = nrec;
	hdr.total_bytes = off;
	hdr.flags = bflags;
	hdr.accuracy = acc;
	if (!ret)
		ret = copy(ctx, 0, &hdr, sizeof(hdr));
	if (ret) {
		/* undo: the records stay deliverable, no batch was made */
		for (i = 0; i < FERRY_MAX_DEVICES; i++) {
			if (!take[i].n)
				continue;
			dev = s->devs[i];
			ferry_lock(&dev->lock, flags);
			dev->nsent -= take[i].n;
			dev->nmarks--;
			ferry_unlock(&dev->lock, flags);
		}
		return ret;
	}
	res->batch_id = s->next_batch++;
	res->bytes = off;
	res->nrecords = nrec;
	res->flags = bflags;
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
