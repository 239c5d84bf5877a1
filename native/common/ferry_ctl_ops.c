// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * The control calls both drivers offer (see ferry_ctl_ops.h for the
 * contract and the order of the checks).
 */
#include "ferry_ctl_ops.h"

struct ferry_ctl_hdr {
	u32 size;
	u32 version;
};

static void ctl_events(struct ferry_ctl *c, struct ferry_ctl_dev *d, u32 ev)
{
	if (ev && c->ops->events)
		c->ops->events(c, d, ev);
}

static void ctl_strcpy(char *dst, u32 cap, const char *src)
{
	u32 i = 0;

	while (i + 1 < cap && src[i]) {
		dst[i] = src[i];
		i++;
	}
	if (cap)
		dst[i] = 0;
}

static void ctl_fill_info(struct ferry_ctl *c, struct ferry_ctl_dev *d,
			  struct ferry_dev_info *info)
{
	ferry_memset(info, 0, sizeof(*info));
	ferry_dev_info(d->core, info);
	ctl_strcpy(info->name, sizeof(info->name), d->name);
	if (c->ops->describe)
		c->ops->describe(c, d, info);
}

/* Writes len bytes at off of the caller's buffer. */
static int ctl_put(const struct ferry_ctl_out *out, u64 off, const void *src,
		   u32 len)
{
	if (out->mem) {
		ferry_memcpy(out->mem + off, src, len);
		return 0;
	}
	return out->copy(out->ctx, off, src, len);
}

static int ctl_put_fn(void *ctx, u64 off, const void *src, u32 len)
{
	return ctl_put(ctx, off, src, len);
}

void ferry_ctl_init(struct ferry_ctl *c, const struct ferry_ctl_ops *ops)
{
	ferry_memset(c, 0, sizeof(*c));
	ferry_stream_init(&c->stream);
	c->ops = ops;
	c->tag_hold_ms = FERRY_CTL_HOLD_DEFAULT_MS;
}

int ferry_ctl_attach(struct ferry_ctl *c, struct ferry_ctl_dev *d, int index)
{
	int r;

	if (index < 0)
		index = ferry_stream_free_index(&c->stream);
	if (index < 0)
		return index;
	r = ferry_stream_set(&c->stream, (u32)index, d->core);
	if (r)
		return r;
	c->devs[index] = d;
	d->index = index;
	return index;
}

/* Ends the hold in place (its writes go on); counts it in *how. */
static u64 ctl_hold_end(struct ferry_ctl *c, u64 *how)
{
	struct ferry_ctl_hold *h = &c->hold;
	u64 held;

	c->ops->cancel_release(c);
	ferry_ctl_unhold(c, h->devs, h->n);
	held = c->ops->now_ns(c) - h->start_ns;
	(*how)++;
	if (held > c->hold_stats.hold_max_ns)
		c->hold_stats.hold_max_ns = held;
	ferry_memset(h, 0, sizeof(*h));
	return held;
}

static bool ctl_hold_has(const struct ferry_ctl *c, const struct ferry_ctl_dev *d)
{
	u32 i;

	for (i = 0; i < c->hold.n; i++)
		if (c->hold.devs[i] == d)
			return true;
	return false;
}

bool ferry_ctl_holding(const struct ferry_ctl *c)
{
	return c->hold.id != 0;
}

void ferry_ctl_detach(struct ferry_ctl *c, struct ferry_ctl_dev *d)
{
	/* the cut of a hold can no longer cover every device it held */
	if (ferry_ctl_holding(c) && ctl_hold_has(c, d))
		ctl_hold_end(c, &c->hold_stats.holds_aborted);
	if (d->index >= 0 && d->index < (int)FERRY_MAX_DEVICES &&
	    c->devs[d->index] == d) {
		ferry_stream_set(&c->stream, (u32)d->index, NULL);
		c->devs[d->index] = NULL;
	}
	d->index = -1;
}

struct ferry_ctl_dev *ferry_ctl_dev_at(struct ferry_ctl *c, u32 index)
{
	return index < FERRY_MAX_DEVICES ? c->devs[index] : NULL;
}

void ferry_ctl_release(struct ferry_ctl *c, const void *caller)
{
	if (!caller)
		return;
	if (ferry_ctl_holding(c) && c->hold.owner == caller)
		ctl_hold_end(c, &c->hold_stats.holds_aborted);
	if (c->owner != caller)
		return;
	/* the consumer went away: redeliver what it did not commit */
	ferry_stream_reset(&c->stream);
	c->owner = NULL;
}

bool ferry_ctl_pending(struct ferry_ctl *c)
{
	return ferry_stream_pending(&c->stream);
}

int ferry_ctl_check_hdr(const void *arg, u32 want, bool any_version)
{
	const struct ferry_ctl_hdr *h = arg;

	if (h->size != want)
		return -FERRY_EINVAL;
	if (!any_version && h->version != FERRY_ABI_VERSION)
		return -FERRY_EPROTO;
	return 0;
}

int ferry_ctl_version(struct ferry_ctl *c, struct ferry_ioc_version *a)
{
	int r = ferry_ctl_check_hdr(a, sizeof(*a), true);

	(void)c;
	if (r)
		return r;
	a->version = FERRY_ABI_VERSION;
	a->abi_version = FERRY_ABI_VERSION;
	a->max_devices = FERRY_MAX_DEVICES;
	a->batch_hdr_size = sizeof(struct ferry_batch_hdr);
	a->rec_hdr_size = sizeof(struct ferry_rec);
	a->dev_info_size = sizeof(struct ferry_dev_info);
	a->max_tag_hold_ms = FERRY_CTL_HOLD_MAX_MS;
	ferry_memset(a->module_version, 0, sizeof(a->module_version));
	ctl_strcpy(a->module_version, sizeof(a->module_version),
		   FERRY_MODULE_VERSION);
	return 0;
}

int ferry_ctl_list(struct ferry_ctl *c, struct ferry_ioc_list *a,
		   const struct ferry_ctl_out *out)
{
	u32 i, n = 0, count = 0;
	int r = ferry_ctl_check_hdr(a, sizeof(*a), false);

	if (r)
		return r;
	if (a->reserved || a->capacity > FERRY_MAX_DEVICES)
		return -FERRY_EINVAL;
	if (out->err)
		return out->err;
	for (i = 0; i < FERRY_MAX_DEVICES; i++) {
		if (!c->devs[i])
			continue;
		count++;
		if (n >= a->capacity)
			continue;
		ctl_fill_info(c, c->devs[i], &c->info);
		r = ctl_put(out, (u64)n * sizeof(c->info), &c->info,
			    sizeof(c->info));
		if (r)
			return r;
		n++;
	}
	a->count = count;
	a->returned = n;
	return 0;
}

int ferry_ctl_get(struct ferry_ctl *c, const void *caller,
		  struct ferry_ioc_get *a, const struct ferry_ctl_out *out,
		  bool *results)
{
	struct ferry_get_result gr;
	int r = ferry_ctl_check_hdr(a, sizeof(*a), false);

	*results = false;
	if (r)
		return r;
	if (c->owner && c->owner != caller)
		return -FERRY_EBUSY;
	if (out->err)
		return out->err;
	c->owner = caller;
	r = ferry_stream_get(&c->stream, out->len, ctl_put_fn, (void *)out,
			     &gr);
	a->batch_id = gr.batch_id;
	a->bytes = gr.bytes;
	a->needed = gr.needed;
	a->nrecords = gr.nrecords;
	a->batch_flags = gr.flags;
	*results = r != 0;
	return r;
}

int ferry_ctl_commit(struct ferry_ctl *c, const void *caller,
		     struct ferry_ioc_commit *a)
{
	u32 ev = 0;
	int r = ferry_ctl_check_hdr(a, sizeof(*a), false);

	if (r)
		return r;
	if (c->owner != caller)
		return -FERRY_EBUSY;
	r = ferry_stream_commit(&c->stream, a->batch_id, &ev);
	ctl_events(c, NULL, ev);
	return r;
}

/*
 * The n device indexes of a TAG or HOLD into c->tag_devs: -FERRY_EINVAL
 * (*malformed set) for one listed twice, -FERRY_ENODEV for one not tracked.
 */
static int ctl_resolve(struct ferry_ctl *c, const u32 *devs, u32 n,
		       bool *malformed)
{
	u64 seen = 0;
	u32 i;

	*malformed = false;
	for (i = 0; i < n; i++) {
		u32 d = devs[i];

		if (d < FERRY_MAX_DEVICES && (seen & (1ULL << d))) {
			*malformed = true;
			return -FERRY_EINVAL;
		}
		if (d >= FERRY_MAX_DEVICES || !c->devs[d])
			return -FERRY_ENODEV;
		seen |= 1ULL << d;
		c->tag_devs[i] = c->devs[d];
	}
	return 0;
}

/*
 * The state a cut on c->tag_devs[0..n) needs: no hold in place
 * (-FERRY_EBUSY), then ferry_dev_tag_check() of every device.
 */
static int ctl_cut_ready(struct ferry_ctl *c, u32 n)
{
	u32 i;
	int r;

	if (ferry_ctl_holding(c))
		return -FERRY_EBUSY;
	for (i = 0; i < n; i++) {
		r = ferry_dev_tag_check(c->tag_devs[i]->core);
		if (r)
			return r;
	}
	return 0;
}

static void ctl_note_tag_hold(struct ferry_ctl *c, u64 held)
{
	c->hold_last_ns = held;
	if (held > c->hold_max_ns)
		c->hold_max_ns = held;
}

/* TAG .hold_id: the cut of the hold in place, which then ends. */
static int ctl_tag_at_hold(struct ferry_ctl *c, struct ferry_ioc_tag *a,
			   bool *results)
{
	struct ferry_ctl_hold *h = &c->hold;
	u32 i, n, ev = 0;
	int r;

	if (a->hold_ms || a->ndevs || a->hold_id > c->last_hold_id)
		return -FERRY_EINVAL;
	*results = true;
	a->hold_ns = 0;
	if (h->id != a->hold_id)
		return -FERRY_ESTALE;	/* its bound, RELEASE or close ended it */
	n = h->n;
	for (i = 0; i < n; i++) {
		c->tag_cores[i] = h->devs[i]->core;
		a->devs[i] = (u32)h->devs[i]->index;
	}
	r = ferry_tag_cut(c->tag_cores, n, a->tag_id, a->seqs, &ev);
	a->hold_ns = ctl_hold_end(c, r ? &c->hold_stats.holds_aborted :
					 &c->hold_stats.holds_ok);
	a->ndevs = n;
	ctl_note_tag_hold(c, a->hold_ns);
	for (i = n; i < FERRY_MAX_DEVICES; i++) {
		a->devs[i] = 0;
		if (!r)
			a->seqs[i] = 0;
	}
	ferry_ctl_tag_done(c, NULL, r, ev);
	return r;
}

int ferry_ctl_tag(struct ferry_ctl *c, struct ferry_ioc_tag *a, bool *results)
{
	u64 start, held;
	u32 i, hold_ms, ev = 0;
	bool malformed;
	int r = ferry_ctl_check_hdr(a, sizeof(*a), false);

	*results = false;
	if (r)
		return r;
	if (a->hold_id)
		return ctl_tag_at_hold(c, a, results);
	hold_ms = a->hold_ms ? a->hold_ms : c->tag_hold_ms;
	if (!a->ndevs || a->ndevs > FERRY_MAX_DEVICES ||
	    !hold_ms || hold_ms > FERRY_CTL_HOLD_MAX_MS)
		return -FERRY_EINVAL;
	r = ctl_resolve(c, a->devs, a->ndevs, &malformed);
	if (malformed)
		return r;
	*results = true;
	a->hold_ns = 0;
	if (!r)
		r = ctl_cut_ready(c, a->ndevs);
	if (r)
		return r;

	start = c->ops->now_ns(c);
	r = ferry_ctl_hold_cut(c, c->tag_devs, a->ndevs, a->tag_id, hold_ms,
			       a->seqs, &ev);
	ferry_ctl_unhold(c, c->tag_devs, a->ndevs);
	held = c->ops->now_ns(c) - start;

	a->hold_ns = held;
	ctl_note_tag_hold(c, held);
	if (!r)
		for (i = a->ndevs; i < FERRY_MAX_DEVICES; i++)
			a->seqs[i] = 0;
	ferry_ctl_tag_done(c, NULL, r, ev);
	return r;
}

int ferry_ctl_hold(struct ferry_ctl *c, const void *caller,
		   struct ferry_ioc_hold *a, bool *results)
{
	struct ferry_ctl_hold *h = &c->hold;
	u64 start, bound, now;
	u32 i, n;
	bool malformed;
	int r = ferry_ctl_check_hdr(a, sizeof(*a), false);

	*results = false;
	if (r)
		return r;
	if (a->reserved || !a->ndevs || a->ndevs > FERRY_MAX_DEVICES ||
	    !a->hold_ms || a->hold_ms > FERRY_CTL_HOLD_MAX_MS)
		return -FERRY_EINVAL;
	n = a->ndevs;
	r = ctl_resolve(c, a->devs, n, &malformed);
	if (malformed)
		return r;
	*results = true;
	a->hold_id = 0;
	a->drain_ns = 0;
	if (!r)
		r = ctl_cut_ready(c, n);
	if (r)
		return r;

	bound = (u64)a->hold_ms * 1000000ULL;
	start = c->ops->now_ns(c);
	for (i = 0; i < n; i++)
		c->ops->hold(c, c->tag_devs[i], true);
	r = c->ops->wait_drained(c, c->tag_devs, n, a->hold_ms);
	now = c->ops->now_ns(c);
	a->drain_ns = now - start;
	if (!r && a->drain_ns >= bound)
		r = -FERRY_ETIMEDOUT;	/* drained, but no time left to hold */
	if (r) {
		ferry_ctl_unhold(c, c->tag_devs, n);
		c->hold_stats.holds_aborted++;
		return r;
	}
	h->id = ++c->last_hold_id;
	h->owner = caller;
	h->start_ns = start;
	h->deadline_ns = start + bound;
	h->n = n;
	for (i = 0; i < n; i++)
		h->devs[i] = c->tag_devs[i];
	c->ops->arm_release(c, h->deadline_ns - now);
	a->hold_id = h->id;
	return 0;
}

int ferry_ctl_release_hold(struct ferry_ctl *c, struct ferry_ioc_release *a)
{
	int r = ferry_ctl_check_hdr(a, sizeof(*a), false);

	if (r)
		return r;
	if (a->reserved || !a->hold_id || a->hold_id > c->last_hold_id)
		return -FERRY_EINVAL;
	a->held_ns = 0;
	if (c->hold.id != a->hold_id)
		return -FERRY_ESTALE;
	a->held_ns = ctl_hold_end(c, &c->hold_stats.holds_aborted);
	return 0;
}

void ferry_ctl_hold_timer(struct ferry_ctl *c)
{
	u64 now;

	if (!ferry_ctl_holding(c))
		return;		/* ended meanwhile */
	now = c->ops->now_ns(c);
	if (now < c->hold.deadline_ns) {
		c->ops->arm_release(c, c->hold.deadline_ns - now);
		return;
	}
	ctl_hold_end(c, &c->hold_stats.holds_expired);
}

int ferry_ctl_hold_cut(struct ferry_ctl *c, struct ferry_ctl_dev **devs,
		       u32 n, u64 tag_id, u32 hold_ms, u64 *seqs, u32 *ev)
{
	u32 i;
	int r;

	for (i = 0; i < n; i++)
		c->ops->hold(c, devs[i], true);
	r = c->ops->wait_drained(c, devs, n, hold_ms);
	if (r)
		return r;
	for (i = 0; i < n; i++)
		c->tag_cores[i] = devs[i]->core;
	return ferry_tag_cut(c->tag_cores, n, tag_id, seqs, ev);
}

void ferry_ctl_unhold(struct ferry_ctl *c, struct ferry_ctl_dev **devs, u32 n)
{
	u32 i;

	for (i = 0; i < n; i++)
		c->ops->hold(c, devs[i], false);
}

void ferry_ctl_tag_done(struct ferry_ctl *c, struct ferry_ctl_dev *d, int r,
			u32 ev)
{
	if (!r)
		c->tags_ok++;
	else if (r == -FERRY_ETIMEDOUT)
		c->tags_timed_out++;
	ctl_events(c, d, ev);
}

int ferry_ctl_stats(struct ferry_ctl *c, struct ferry_ioc_stats *a)
{
	struct ferry_global_stats *g = &a->global;
	struct ferry_ctl_dev *d = NULL;
	bool v0 = a->size == FERRY_IOC_STATS_SIZE_V0;
	int r = ferry_ctl_check_hdr(a, v0 ? FERRY_IOC_STATS_SIZE_V0 :
					    (u32)sizeof(*a), false);

	if (r)
		return r;
	if (a->reserved)
		return -FERRY_EINVAL;
	if (a->dev_index != FERRY_DEV_NONE) {
		d = ferry_ctl_dev_at(c, a->dev_index);
		if (!d)
			return -FERRY_ENODEV;
	}
	ferry_memset(g, 0, sizeof(*g));
	g->ndevices = c->stream.ndevs;
	g->batches_inflight = ferry_stream_inflight(&c->stream);
	g->consumer_attached = c->owner != NULL;
	g->next_batch_id = c->stream.next_batch;
	g->committed_batch_id = c->stream.committed;
	g->gets = c->stream.gets;
	g->commits = c->stream.commits;
	g->resets = c->stream.resets;
	g->tags_ok = c->tags_ok;
	g->tags_timed_out = c->tags_timed_out;
	g->tag_hold_last_ns = c->hold_last_ns;
	g->tag_hold_max_ns = c->hold_max_ns;
	if (d)
		ctl_fill_info(c, d, &a->dev);
	else
		ferry_memset(&a->dev, 0, sizeof(a->dev));
	if (!v0)	/* the caller's struct ends before .holds */
		a->holds = c->hold_stats;
	return 0;
}

/*
 * Copies a->buf_len bitmap bytes from a->start_byte, one device-lock hold
 * per chunk; the epoch of every chunk must be the first one's.  The bytes
 * copied into *done, the epoch into *epoch0.
 */
static int ctl_read_bitmap(struct ferry_ctl *c, struct ferry_dev *dev,
			   const struct ferry_ioc_bitmap *a,
			   const struct ferry_ctl_out *out, u32 *done,
			   u64 *epoch0)
{
	u32 max = out->mem ? FERRY_CTL_CHUNK : FERRY_CTL_BOUNCE;
	u64 epoch = 0;
	int r;

	while (*done < a->buf_len) {
		u32 chunk = a->buf_len - *done < max ? a->buf_len - *done : max;
		u8 *dst = out->mem ? out->mem + *done : c->bounce;
		u32 copied;

		r = ferry_dev_bitmap_read(dev, a->start_byte + *done, dst,
					  chunk, &copied, &epoch);
		if (r == -FERRY_ERANGE && *done)
			break;		/* reached the end of the bitmap */
		if (r)
			return r;
		if (*done && epoch != *epoch0)
			return -FERRY_ESTALE;	/* overflowed again meanwhile */
		*epoch0 = epoch;
		if (!out->mem) {
			r = out->copy(out->ctx, *done, c->bounce, copied);
			if (r)
				return r;
		}
		*done += copied;
		if (copied < chunk)
			break;
	}
	return 0;
}

int ferry_ctl_get_bitmap(struct ferry_ctl *c, struct ferry_ioc_bitmap *a,
			 const struct ferry_ctl_out *out)
{
	struct ferry_ctl_dev *d;
	u64 epoch0 = 0;
	u32 done = 0, ev = 0;
	int r = ferry_ctl_check_hdr(a, sizeof(*a), false);

	if (r)
		return r;
	if (a->reserved || (a->flags & ~FERRY_BITMAP_F_CUT) || !a->buf_len)
		return -FERRY_EINVAL;
	if (out->err)
		return out->err;
	d = ferry_ctl_dev_at(c, a->dev_index);
	if (!d)
		return -FERRY_ENODEV;
	a->cut_seq = 0;
	if (a->flags & FERRY_BITMAP_F_CUT) {
		r = ferry_dev_bitmap_cut(d->core, &a->cut_seq, &epoch0, &ev);
		ctl_events(c, d, ev);
		if (r)
			return r;
	}
	r = ctl_read_bitmap(c, d->core, a, out, &done, &epoch0);
	if (r)
		return r;
	ferry_memset(&c->info, 0, sizeof(c->info));
	ferry_dev_info(d->core, &c->info);
	a->returned = done;
	a->granularity = c->info.granularity;
	a->nbits = c->info.bitmap_bits;
	a->dirty_bits = c->info.dirty_bits;
	a->epoch = epoch0;
	return 0;
}

int ferry_ctl_clear_bitmap(struct ferry_ctl *c,
			   struct ferry_ioc_clear_bitmap *a, bool *results)
{
	struct ferry_ctl_dev *d;
	u32 ev = 0;
	int r = ferry_ctl_check_hdr(a, sizeof(*a), false);

	*results = false;
	if (r)
		return r;
	if (a->reserved)
		return -FERRY_EINVAL;
	d = ferry_ctl_dev_at(c, a->dev_index);
	if (!d)
		return -FERRY_ENODEV;
	r = ferry_dev_bitmap_clear(d->core, a->epoch, a->start_bit, a->nbits,
				   &ev);
	ctl_events(c, d, ev);
	ferry_memset(&c->info, 0, sizeof(c->info));
	ferry_dev_info(d->core, &c->info);
	a->dirty_bits = c->info.dirty_bits;
	*results = r != 0;
	return r;
}

int ferry_ctl_resync(struct ferry_ctl *c, struct ferry_ioc_resync *a)
{
	struct ferry_ctl_dev *d;
	u32 ev = 0;
	int r = ferry_ctl_check_hdr(a, sizeof(*a), false);

	if (r)
		return r;
	d = ferry_ctl_dev_at(c, a->dev_index);
	if (!d)
		return -FERRY_ENODEV;
	r = ferry_dev_resync_mark(d->core, a->offset, a->length, &a->seq, &ev);
	ctl_events(c, d, ev);
	return r;
}
