// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * The control calls of \\.\FerryCtl (see ctl_ops.h).  Every call checks,
 * in this order: the input length and the struct's size field (EINVAL),
 * the version (EPROTO), reserved fields and the output length (EINVAL),
 * device indexes (ENODEV), then the state of the stream or device.
 * Nothing is changed before all checks passed.
 */
#include "ctl_ops.h"

struct ferry_ctl_hdr {
	u32 size;
	u32 version;
};

#define CTL_CHUNK 65536u	/* bitmap bytes copied per device-lock hold */

static struct ferry_ctl_result ctl_res(int err, u32 info)
{
	struct ferry_ctl_result r;

	ferry_memset(&r, 0, sizeof(r));
	r.err = err;
	r.info = err ? 0 : info;
	return r;
}

static int ctl_check_hdr(const void *buf, u32 in_len, u32 want,
			 bool any_version)
{
	const struct ferry_ctl_hdr *h = buf;

	if (!buf || in_len != want || h->size != want)
		return -FERRY_EINVAL;
	if (!any_version && h->version != FERRY_ABI_VERSION)
		return -FERRY_EPROTO;
	return 0;
}

static struct ferry_ctl_dev *ctl_lookup(struct ferry_ctl *c, u32 index)
{
	return index < FERRY_MAX_DEVICES ? c->devs[index] : NULL;
}

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

static void ctl_fill_info(struct ferry_ctl_dev *d, struct ferry_dev_info *info)
{
	ferry_memset(info, 0, sizeof(*info));
	ferry_dev_info(d->core, info);
	ctl_strcpy(info->name, sizeof(info->name), d->name);
	/* no major/minor numbers on Windows: the name identifies the volume */
}

void ferry_ctl_init(struct ferry_ctl *c, const struct ferry_ctl_ops *ops,
		    void *platform)
{
	ferry_memset(c, 0, sizeof(*c));
	ferry_stream_init(&c->stream);
	c->ops = ops;
	c->platform = platform;
	c->tag_hold_ms = FERRY_WIN_TAG_HOLD_DEFAULT_MS;
}

int ferry_ctl_attach(struct ferry_ctl *c, struct ferry_ctl_dev *d)
{
	int idx = ferry_stream_free_index(&c->stream);

	if (idx < 0)
		return idx;
	ferry_stream_set(&c->stream, (u32)idx, d->core);
	c->devs[idx] = d;
	return idx;
}

void ferry_ctl_detach(struct ferry_ctl *c, struct ferry_ctl_dev *d)
{
	u32 i;

	for (i = 0; i < FERRY_MAX_DEVICES; i++) {
		if (c->devs[i] != d)
			continue;
		ferry_stream_set(&c->stream, i, NULL);
		c->devs[i] = NULL;
	}
}

void ferry_ctl_release(struct ferry_ctl *c, const void *caller)
{
	if (!caller || c->owner != caller)
		return;
	/* the consumer went away: redeliver what it did not commit */
	ferry_stream_reset(&c->stream);
	c->owner = NULL;
}

/* ---- calls that mirror /dev/ferry-ctl ---- */

static struct ferry_ctl_result ctl_version(void *buf, u32 in_len, u32 out_len)
{
	struct ferry_ioc_version *a = buf;
	int r = ctl_check_hdr(buf, in_len, sizeof(*a), true);

	if (!r && out_len < sizeof(*a))
		r = -FERRY_EINVAL;
	if (r)
		return ctl_res(r, 0);
	a->version = FERRY_ABI_VERSION;
	a->abi_version = FERRY_ABI_VERSION;
	a->max_devices = FERRY_MAX_DEVICES;
	a->batch_hdr_size = sizeof(struct ferry_batch_hdr);
	a->rec_hdr_size = sizeof(struct ferry_rec);
	a->dev_info_size = sizeof(struct ferry_dev_info);
	a->max_tag_hold_ms = FERRY_WIN_TAG_HOLD_MAX_MS;
	ferry_memset(a->module_version, 0, sizeof(a->module_version));
	ctl_strcpy(a->module_version, sizeof(a->module_version),
		   FERRY_WIN_MODULE_VERSION);
	return ctl_res(0, (u32)sizeof(*a));
}

/* Output: the struct, then `returned` ferry_dev_info entries. */
static struct ferry_ctl_result ctl_list(struct ferry_ctl *c, void *buf,
					u32 in_len, u32 out_len)
{
	struct ferry_ioc_list *a = buf;
	struct ferry_dev_info *out;
	u32 i, n = 0, count = 0;
	int r = ctl_check_hdr(buf, in_len, sizeof(*a), false);

	if (r)
		return ctl_res(r, 0);
	/* entries are not a pointer on Windows: they follow the struct */
	if (a->reserved || a->entries || a->capacity > FERRY_MAX_DEVICES ||
	    out_len < sizeof(*a) + (u64)a->capacity * sizeof(*out))
		return ctl_res(-FERRY_EINVAL, 0);
	out = (struct ferry_dev_info *)((u8 *)buf + sizeof(*a));
	for (i = 0; i < FERRY_MAX_DEVICES; i++) {
		if (!c->devs[i])
			continue;
		count++;
		if (n < a->capacity)
			ctl_fill_info(c->devs[i], &out[n++]);
	}
	a->count = count;
	a->returned = n;
	return ctl_res(0, (u32)sizeof(*a) + n * (u32)sizeof(*out));
}

static int ctl_copy_mem(void *ctx, u64 off, const void *src, u32 len)
{
	ferry_memcpy((u8 *)ctx + off, src, len);
	return 0;
}

/*
 * METHOD_OUT_DIRECT.  Input: the struct (buf and buf_len must be 0).
 * Output: the batch from offset 0; the struct with the results in the
 * last sizeof(struct ferry_ioc_get) bytes of the output buffer.  The
 * batch can use all the bytes before those.
 */
static struct ferry_ctl_result ctl_get(struct ferry_ctl *c, const void *caller,
				       void *buf, u32 in_len, void *data,
				       u64 data_len)
{
	struct ferry_ioc_get a;
	struct ferry_get_result gr;
	struct ferry_ctl_result res;
	u64 space;
	int r = ctl_check_hdr(buf, in_len, sizeof(a), false);

	if (r)
		return ctl_res(r, 0);
	ferry_memcpy(&a, buf, sizeof(a));
	if (a.buf || a.buf_len || !data || data_len < sizeof(a) ||
	    data_len > 0xffffffffULL)
		return ctl_res(-FERRY_EINVAL, 0);
	if (c->owner && c->owner != caller)
		return ctl_res(-FERRY_EBUSY, 0);
	space = data_len - sizeof(a);
	c->owner = caller;
	r = ferry_stream_get(&c->stream, space, ctl_copy_mem, data, &gr);
	a.batch_id = gr.batch_id;
	a.bytes = gr.bytes;
	a.needed = gr.needed;
	a.nrecords = gr.nrecords;
	a.batch_flags = gr.flags;
	ferry_memcpy((u8 *)data + space, &a, sizeof(a));
	res = ctl_res(r, (u32)data_len);
	res.info = (u32)data_len;	/* the trailer travels back on failure too */
	res.results = r != 0;
	return res;
}

static struct ferry_ctl_result ctl_commit(struct ferry_ctl *c,
					  const void *caller, void *buf,
					  u32 in_len)
{
	struct ferry_ioc_commit *a = buf;
	u32 ev = 0;
	int r = ctl_check_hdr(buf, in_len, sizeof(*a), false);

	if (r)
		return ctl_res(r, 0);
	if (c->owner != caller)
		return ctl_res(-FERRY_EBUSY, 0);
	r = ferry_stream_commit(&c->stream, a->batch_id, &ev);
	ctl_events(c, NULL, ev);
	return ctl_res(r, 0);
}

static struct ferry_ctl_result ctl_tag(struct ferry_ctl *c, void *buf,
				       u32 in_len, u32 out_len)
{
	struct ferry_ioc_tag *a = buf;
	struct ferry_ctl_result res;
	u64 seen = 0, start, held;
	u32 i, n, hold_ms, ev = 0;
	int r = ctl_check_hdr(buf, in_len, sizeof(*a), false);

	if (!r && out_len < sizeof(*a))
		r = -FERRY_EINVAL;
	if (r)
		return ctl_res(r, 0);
	hold_ms = a->hold_ms ? a->hold_ms : c->tag_hold_ms;
	if (a->reserved || !a->ndevs || a->ndevs > FERRY_MAX_DEVICES ||
	    !hold_ms || hold_ms > FERRY_WIN_TAG_HOLD_MAX_MS)
		return ctl_res(-FERRY_EINVAL, 0);
	n = a->ndevs;
	a->hold_ns = 0;
	res = ctl_res(0, (u32)sizeof(*a));
	res.results = true;
	for (i = 0; i < n; i++) {
		u32 d = a->devs[i];

		if (d < FERRY_MAX_DEVICES && (seen & (1ULL << d)))
			return ctl_res(-FERRY_EINVAL, 0);	/* a device twice */
		if (d >= FERRY_MAX_DEVICES) {
			res.err = -FERRY_ENODEV;
			return res;
		}
		seen |= 1ULL << d;
		c->tag_devs[i] = ctl_lookup(c, d);
		if (!c->tag_devs[i]) {
			res.err = -FERRY_ENODEV;
			return res;
		}
		c->tag_cores[i] = c->tag_devs[i]->core;
		r = ferry_dev_tag_check(c->tag_cores[i]);
		if (r) {
			res.err = r;
			return res;
		}
	}

	/* hold new writes everywhere, wait for the ones in flight, cut */
	start = c->ops->now_ns(c);
	for (i = 0; i < n; i++)
		c->ops->hold(c, c->tag_devs[i], true);
	r = c->ops->wait_drained(c, c->tag_devs, n, hold_ms);
	if (!r)
		r = ferry_tag_cut(c->tag_cores, n, a->tag_id, a->seqs, &ev);
	for (i = 0; i < n; i++)
		c->ops->hold(c, c->tag_devs[i], false);
	held = c->ops->now_ns(c) - start;

	a->hold_ns = held;
	c->hold_last_ns = held;
	if (held > c->hold_max_ns)
		c->hold_max_ns = held;
	if (r == -FERRY_ETIMEDOUT)
		c->tags_timed_out++;
	else if (!r)
		c->tags_ok++;
	if (!r)
		for (i = n; i < FERRY_MAX_DEVICES; i++)
			a->seqs[i] = 0;
	ctl_events(c, NULL, ev);
	res.err = r;
	return res;
}

static struct ferry_ctl_result ctl_stats(struct ferry_ctl *c, void *buf,
					 u32 in_len, u32 out_len)
{
	struct ferry_ioc_stats *a = buf;
	struct ferry_global_stats *g;
	struct ferry_ctl_dev *d = NULL;
	int r = ctl_check_hdr(buf, in_len, sizeof(*a), false);

	if (!r && (a->reserved || out_len < sizeof(*a)))
		r = -FERRY_EINVAL;
	if (r)
		return ctl_res(r, 0);
	g = &a->global;
	if (a->dev_index != FERRY_DEV_NONE) {
		d = ctl_lookup(c, a->dev_index);
		if (!d)
			return ctl_res(-FERRY_ENODEV, 0);
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
		ctl_fill_info(d, &a->dev);
	else
		ferry_memset(&a->dev, 0, sizeof(a->dev));
	return ctl_res(0, (u32)sizeof(*a));
}

/*
 * METHOD_OUT_DIRECT.  Input: the struct (buf must be 0, buf_len > 0).
 * Output: buf_len bitmap bytes from offset 0 (clipped at the bitmap's
 * end), the struct with the results in the last sizeof(struct) bytes.
 */
static struct ferry_ctl_result ctl_get_bitmap(struct ferry_ctl *c, void *buf,
					      u32 in_len, void *data,
					      u64 data_len)
{
	struct ferry_ioc_bitmap a;
	struct ferry_dev_info info;
	struct ferry_ctl_dev *d;
	u64 epoch = 0, epoch0 = 0;
	u32 done = 0, ev = 0;
	int r = ctl_check_hdr(buf, in_len, sizeof(a), false);

	if (r)
		return ctl_res(r, 0);
	ferry_memcpy(&a, buf, sizeof(a));
	if (a.reserved || (a.flags & ~FERRY_BITMAP_F_CUT) || !a.buf_len ||
	    a.buf || !data || data_len < sizeof(a) ||
	    data_len > 0xffffffffULL || a.buf_len > data_len - sizeof(a))
		return ctl_res(-FERRY_EINVAL, 0);
	d = ctl_lookup(c, a.dev_index);
	if (!d)
		return ctl_res(-FERRY_ENODEV, 0);
	a.cut_seq = 0;
	if (a.flags & FERRY_BITMAP_F_CUT) {
		r = ferry_dev_bitmap_cut(d->core, &a.cut_seq, &epoch0, &ev);
		ctl_events(c, d, ev);
		if (r)
			return ctl_res(r, 0);
	}
	while (done < a.buf_len) {
		u32 chunk = a.buf_len - done < CTL_CHUNK ? a.buf_len - done :
							   CTL_CHUNK;
		u32 copied;

		r = ferry_dev_bitmap_read(d->core, a.start_byte + done,
					  (u8 *)data + done, chunk, &copied,
					  &epoch);
		if (r == -FERRY_ERANGE && done)
			break;		/* reached the end of the bitmap */
		if (r)
			return ctl_res(r, 0);
		if (done && epoch != epoch0)
			return ctl_res(-FERRY_ESTALE, 0);
		epoch0 = epoch;
		done += copied;
		if (copied < chunk)
			break;
	}
	ferry_memset(&info, 0, sizeof(info));
	ferry_dev_info(d->core, &info);
	a.returned = done;
	a.granularity = info.granularity;
	a.nbits = info.bitmap_bits;
	a.dirty_bits = info.dirty_bits;
	a.epoch = epoch0;
	ferry_memcpy((u8 *)data + data_len - sizeof(a), &a, sizeof(a));
	return ctl_res(0, (u32)data_len);
}

static struct ferry_ctl_result ctl_clear_bitmap(struct ferry_ctl *c, void *buf,
						u32 in_len, u32 out_len)
{
	struct ferry_ioc_clear_bitmap *a = buf;
	struct ferry_dev_info info;
	struct ferry_ctl_result res;
	struct ferry_ctl_dev *d;
	u32 ev = 0;
	int r = ctl_check_hdr(buf, in_len, sizeof(*a), false);

	if (!r && (a->reserved || out_len < sizeof(*a)))
		r = -FERRY_EINVAL;
	if (r)
		return ctl_res(r, 0);
	d = ctl_lookup(c, a->dev_index);
	if (!d)
		return ctl_res(-FERRY_ENODEV, 0);
	r = ferry_dev_bitmap_clear(d->core, a->epoch, a->start_bit, a->nbits,
				   &ev);
	ctl_events(c, d, ev);
	ferry_memset(&info, 0, sizeof(info));
	ferry_dev_info(d->core, &info);
	a->dirty_bits = info.dirty_bits;
	res = ctl_res(r, (u32)sizeof(*a));
	res.info = (u32)sizeof(*a);
	res.results = r != 0;
	return res;
}

static struct ferry_ctl_result ctl_resync(struct ferry_ctl *c, void *buf,
					  u32 in_len, u32 out_len)
{
	struct ferry_ioc_resync *a = buf;
	struct ferry_ctl_dev *d;
	u32 ev = 0;
	int r = ctl_check_hdr(buf, in_len, sizeof(*a), false);

	if (!r && out_len < sizeof(*a))
		r = -FERRY_EINVAL;
	if (r)
		return ctl_res(r, 0);
	d = ctl_lookup(c, a->dev_index);
	if (!d)
		return ctl_res(-FERRY_ENODEV, 0);
	r = ferry_dev_resync_mark(d->core, a->offset, a->length, &a->seq, &ev);
	ctl_events(c, d, ev);
	return ctl_res(r, (u32)sizeof(*a));
}

/* ---- Windows-only calls ---- */

static struct ferry_ctl_result ctl_wait(struct ferry_ctl *c, void *buf,
					u32 in_len, u32 out_len)
{
	struct ferry_win_wait *a = buf;
	struct ferry_ctl_result res;
	int r = ctl_check_hdr(buf, in_len, sizeof(*a), false);

	if (!r && (a->reserved || out_len < sizeof(*a)))
		r = -FERRY_EINVAL;
	if (r)
		return ctl_res(r, 0);
	a->ready = 0;
	if (ferry_stream_pending(&c->stream)) {
		a->ready = 1;
		return ctl_res(0, (u32)sizeof(*a));
	}
	res = ctl_res(0, 0);
	res.pend = true;
	return res;
}

static struct ferry_ctl_result ctl_rescan(struct ferry_ctl *c, void *buf,
					  u32 in_len, u32 out_len)
{
	struct ferry_win_rescan *a = buf;
	int r = ctl_check_hdr(buf, in_len, sizeof(*a), false);

	if (!r && out_len < sizeof(*a))
		r = -FERRY_EINVAL;
	if (r)
		return ctl_res(r, 0);
	a->started = a->stopped = a->failed = a->tracked = 0;
	r = c->ops->rescan ? c->ops->rescan(c, a) : -FERRY_WIN_ENOTTY;
	a->tracked = c->stream.ndevs;
	return ctl_res(r, (u32)sizeof(*a));
}

static struct ferry_ctl_result ctl_vss_arm(struct ferry_ctl *c, void *buf,
					   u32 in_len)
{
	struct ferry_win_vss_arm *a = buf;
	struct ferry_ctl_vss *v = &c->vss;
	u64 seen = 0, now;
	u32 i, hold_ms;
	int r = ctl_check_hdr(buf, in_len, sizeof(*a), false);

	if (r)
		return ctl_res(r, 0);
	hold_ms = a->hold_ms ? a->hold_ms : c->tag_hold_ms;
	if (a->reserved || !a->ndevs || a->ndevs > FERRY_MAX_DEVICES ||
	    hold_ms > FERRY_WIN_TAG_HOLD_MAX_MS || !a->expire_ms ||
	    a->expire_ms > FERRY_WIN_VSS_EXPIRE_MAX_MS)
		return ctl_res(-FERRY_EINVAL, 0);
	for (i = 0; i < a->ndevs; i++) {
		u32 d = a->devs[i];

		if (d >= FERRY_MAX_DEVICES || !c->devs[d])
			return ctl_res(-FERRY_ENODEV, 0);
		if (seen & (1ULL << d))
			return ctl_res(-FERRY_EINVAL, 0);
		seen |= 1ULL << d;
	}
	now = c->ops->now_ns(c);
	if (v->armed && now < v->deadline_ns)
		return ctl_res(-FERRY_EBUSY, 0);
	ferry_memset(v, 0, sizeof(*v));
	v->armed = true;
	v->tag_id = a->tag_id;
	v->hold_ms = hold_ms;
	v->deadline_ns = now + (u64)a->expire_ms * 1000000ULL;
	v->ndevs = a->ndevs;
	for (i = 0; i < a->ndevs; i++) {
		v->devs[i] = a->devs[i];
		v->status[i] = FERRY_WIN_ENOENT;
	}
	return ctl_res(0, 0);
}

static struct ferry_ctl_result ctl_vss_result(struct ferry_ctl *c, void *buf,
					      u32 in_len, u32 out_len)
{
	struct ferry_win_vss_result *a = buf;
	struct ferry_ctl_vss *v = &c->vss;
	int r = ctl_check_hdr(buf, in_len, sizeof(*a), false);

	if (!r && out_len < sizeof(*a))
		r = -FERRY_EINVAL;
	if (r)
		return ctl_res(r, 0);
	ferry_memset((u8 *)a + sizeof(struct ferry_ctl_hdr), 0,
		     sizeof(*a) - sizeof(struct ferry_ctl_hdr));
	a->armed = v->armed ? 1 : 0;
	if (v->armed) {
		a->tag_id = v->tag_id;
		a->ndevs = v->ndevs;
		a->bridged = v->bridged;
		a->hold_ns = v->hold_ns;
		ferry_memcpy(a->status, v->status, sizeof(a->status));
		ferry_memcpy(a->seqs, v->seqs, sizeof(a->seqs));
	}
	v->armed = false;
	return ctl_res(0, (u32)sizeof(*a));
}

struct ferry_ctl_result ferry_ctl_call(struct ferry_ctl *c, const void *caller,
				       u32 code, void *sysbuf, u32 in_len,
				       u32 out_len, void *data, u64 data_len)
{
	switch (code) {
	case FERRY_WIN_IOC_VERSION:
		return ctl_version(sysbuf, in_len, out_len);
	case FERRY_WIN_IOC_LIST:
		return ctl_list(c, sysbuf, in_len, out_len);
	case FERRY_WIN_IOC_GET_CHANGES:
		return ctl_get(c, caller, sysbuf, in_len, data, data_len);
	case FERRY_WIN_IOC_COMMIT:
		return ctl_commit(c, caller, sysbuf, in_len);
	case FERRY_WIN_IOC_TAG:
		return ctl_tag(c, sysbuf, in_len, out_len);
	case FERRY_WIN_IOC_STATS:
		return ctl_stats(c, sysbuf, in_len, out_len);
	case FERRY_WIN_IOC_GET_BITMAP:
		return ctl_get_bitmap(c, sysbuf, in_len, data, data_len);
	case FERRY_WIN_IOC_CLEAR_BITMAP:
		return ctl_clear_bitmap(c, sysbuf, in_len, out_len);
	case FERRY_WIN_IOC_RESYNC_MARK:
		return ctl_resync(c, sysbuf, in_len, out_len);
	case FERRY_WIN_IOC_WAIT:
		return ctl_wait(c, sysbuf, in_len, out_len);
	case FERRY_WIN_IOC_RESCAN:
		return ctl_rescan(c, sysbuf, in_len, out_len);
	case FERRY_WIN_IOC_VSS_ARM:
		return ctl_vss_arm(c, sysbuf, in_len);
	case FERRY_WIN_IOC_VSS_RESULT:
		return ctl_vss_result(c, sysbuf, in_len, out_len);
	default:
		return ctl_res(-FERRY_WIN_ENOTTY, 0);
	}
}

/* ---- the VSS-armed tag ---- */

static int ctl_vss_slot(struct ferry_ctl *c, struct ferry_ctl_dev *d)
{
	struct ferry_ctl_vss *v = &c->vss;
	u32 i;

	if (!v->armed || !d || !d->core)
		return -1;
	for (i = 0; i < v->ndevs; i++)
		if (c->devs[v->devs[i]] == d)
			return (int)i;
	return -1;
}

bool ferry_ctl_vss_freeze(struct ferry_ctl *c, struct ferry_ctl_dev *d,
			  ferry_ctl_forward_fn forward, void *ctx)
{
	struct ferry_ctl_vss *v = &c->vss;
	u64 start, seq = 0, spent_ms, held;
	u32 ev = 0, left_ms;
	bool completed;
	int slot = ctl_vss_slot(c, d), r;

	if (slot < 0 || v->status[slot] != FERRY_WIN_ENOENT ||
	    c->ops->now_ns(c) >= v->deadline_ns)
		return false;
	start = c->ops->now_ns(c);
	c->ops->hold(c, d, true);
	r = c->ops->wait_drained(c, &d, 1, v->hold_ms);
	if (!r)
		r = ferry_tag_cut(&d->core, 1, v->tag_id, &seq, &ev);
	v->status[slot] = (u32)-r;
	v->seqs[slot] = r ? 0 : seq;
	/*
	 * Keep the hold while the freeze IOCTL goes down: volsnap starts
	 * holding writes when it completes, so no write can complete between
	 * the TAG and that hold.  Bounded by what is left of hold_ms.
	 */
	spent_ms = (c->ops->now_ns(c) - start) / 1000000ULL;
	left_ms = spent_ms >= v->hold_ms ? 0 : v->hold_ms - (u32)spent_ms;
	completed = forward(ctx, left_ms);
	c->ops->hold(c, d, false);
	held = c->ops->now_ns(c) - start;
	if (completed && !r)
		v->bridged |= 1ULL << slot;
	if (held > v->hold_ns)
		v->hold_ns = held;
	if (!r)
		c->tags_ok++;
	else if (r == -FERRY_ETIMEDOUT)
		c->tags_timed_out++;
	ctl_events(c, d, ev);
	return true;
}
