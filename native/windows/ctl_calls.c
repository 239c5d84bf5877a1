// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * The IOCTLs of \\.\FerryCtl (see ctl_calls.h).  Every call checks, in
 * this order: the input length and the struct's size field (EINVAL), the
 * version (EPROTO), the output length and the pointer fields (EINVAL),
 * then the shared call runs its own checks (ferry_ctl_ops.h).  Nothing is
 * changed before all checks passed.
 */
#include "ctl_calls.h"

static struct ferry_ctl_result ctl_res(int err, u32 info)
{
	struct ferry_ctl_result r;

	ferry_memset(&r, 0, sizeof(r));
	r.err = err;
	r.info = err ? 0 : info;
	return r;
}

/* On failure with results, the output travels back with warning status. */
static struct ferry_ctl_result ctl_res_results(int err, bool results, u32 info)
{
	struct ferry_ctl_result r = ctl_res(err, info);

	if (err && results) {
		r.results = true;
		r.info = info;
	}
	return r;
}

/* The input length, then the struct's own size/version rule. */
static int ctl_check_in(const void *buf, u32 in_len, u32 want, bool any_version)
{
	if (!buf || in_len != want)
		return -FERRY_EINVAL;
	return ferry_ctl_check_hdr(buf, want, any_version);
}

/* A METHOD_BUFFERED call whose output is the struct itself. */
static int ctl_check_inout(const void *buf, u32 in_len, u32 out_len, u32 want)
{
	int r = ctl_check_in(buf, in_len, want, false);

	if (!r && out_len < want)
		r = -FERRY_EINVAL;
	return r;
}

/*
 * METHOD_OUT_DIRECT: the mapped output takes the bulk output from offset
 * 0 and, in its last `size` bytes, the struct with the results.
 */
static int ctl_direct_out(void *data, u64 data_len, u32 size,
			  struct ferry_ctl_out *out)
{
	if (!data || data_len < size || data_len > 0xffffffffULL)
		return -FERRY_EINVAL;
	ferry_memset(out, 0, sizeof(*out));
	out->mem = data;
	out->len = data_len - size;
	return 0;
}

/* The struct with the results into the last bytes of the output. */
static struct ferry_ctl_result ctl_trailer(const struct ferry_ctl_out *out,
					   const void *a, u32 size, int err)
{
	ferry_memcpy(out->mem + out->len, a, size);
	return ctl_res_results(err, true, (u32)(out->len + size));
}

void ferry_win_ctl_init(struct ferry_win_ctl *w, const struct ferry_ctl_ops *ops,
			ferry_win_rescan_fn rescan)
{
	ferry_memset(w, 0, sizeof(*w));
	ferry_ctl_init(&w->ctl, ops);
	w->rescan = rescan;
}

/* ---- calls that mirror /dev/ferry-ctl ---- */

static struct ferry_ctl_result ctl_version(struct ferry_ctl *c, void *buf,
					   u32 in_len, u32 out_len)
{
	struct ferry_ioc_version *a = buf;
	int r = ctl_check_in(buf, in_len, sizeof(*a), true);

	if (!r && out_len < sizeof(*a))
		r = -FERRY_EINVAL;
	if (!r)
		r = ferry_ctl_version(c, a);
	return ctl_res(r, (u32)sizeof(*a));
}

/* Output: the struct, then `returned` ferry_dev_info entries. */
static struct ferry_ctl_result ctl_list(struct ferry_ctl *c, void *buf,
					u32 in_len, u32 out_len)
{
	struct ferry_ioc_list *a = buf;
	struct ferry_ctl_out out;
	int r = ctl_check_in(buf, in_len, sizeof(*a), false);

	if (r)
		return ctl_res(r, 0);
	/* entries are not a pointer on Windows: they follow the struct */
	if (a->entries ||
	    out_len < sizeof(*a) + (u64)a->capacity * sizeof(struct ferry_dev_info))
		return ctl_res(-FERRY_EINVAL, 0);
	ferry_memset(&out, 0, sizeof(out));
	out.mem = (u8 *)buf + sizeof(*a);
	out.len = out_len - sizeof(*a);
	r = ferry_ctl_list(c, a, &out);
	return ctl_res(r, (u32)sizeof(*a) +
			  a->returned * (u32)sizeof(struct ferry_dev_info));
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
	struct ferry_ioc_get *a = buf;
	struct ferry_ctl_out out;
	bool results;
	int r = ctl_check_in(buf, in_len, sizeof(*a), false);

	if (!r)
		r = ctl_direct_out(data, data_len, sizeof(*a), &out);
	if (!r && (a->buf || a->buf_len))
		r = -FERRY_EINVAL;
	if (r)
		return ctl_res(r, 0);
	r = ferry_ctl_get(c, caller, a, &out, &results);
	if (r && !results)
		return ctl_res(r, 0);
	return ctl_trailer(&out, a, sizeof(*a), r);	/* on failure too */
}

static struct ferry_ctl_result ctl_commit(struct ferry_ctl *c,
					  const void *caller, void *buf,
					  u32 in_len)
{
	int r = ctl_check_in(buf, in_len, sizeof(struct ferry_ioc_commit),
			     false);

	if (!r)
		r = ferry_ctl_commit(c, caller, buf);
	return ctl_res(r, 0);
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
	struct ferry_ioc_bitmap *a = buf;
	struct ferry_ctl_out out;
	int r = ctl_check_in(buf, in_len, sizeof(*a), false);

	if (!r)
		r = ctl_direct_out(data, data_len, sizeof(*a), &out);
	if (!r && (a->buf || a->buf_len > out.len))
		r = -FERRY_EINVAL;
	if (!r)
		r = ferry_ctl_get_bitmap(c, a, &out);
	if (r)
		return ctl_res(r, 0);
	return ctl_trailer(&out, a, sizeof(*a), 0);
}

/* The METHOD_BUFFERED calls whose output is their struct, size bytes. */
static struct ferry_ctl_result ctl_inout(struct ferry_ctl *c,
					 const void *caller, u32 code,
					 void *buf, u32 in_len, u32 out_len,
					 u32 size)
{
	bool results = false;
	int r = ctl_check_inout(buf, in_len, out_len, size);

	if (r)
		return ctl_res(r, 0);
	switch (code) {
	case FERRY_WIN_IOC_TAG:
		r = ferry_ctl_tag(c, buf, &results);
		break;
	case FERRY_WIN_IOC_STATS:
		r = ferry_ctl_stats(c, buf);
		break;
	case FERRY_WIN_IOC_HOLD:
		r = ferry_ctl_hold(c, caller, buf, &results);
		break;
	case FERRY_WIN_IOC_RELEASE:
		r = ferry_ctl_release_hold(c, buf);
		break;
	case FERRY_WIN_IOC_CLEAR_BITMAP:
		r = ferry_ctl_clear_bitmap(c, buf, &results);
		break;
	default:
		r = ferry_ctl_resync(c, buf);
		break;
	}
	return ctl_res_results(r, results, size);
}

/* ---- Windows-only calls ---- */

static struct ferry_ctl_result ctl_wait(struct ferry_ctl *c, void *buf,
					u32 in_len, u32 out_len)
{
	struct ferry_win_wait *a = buf;
	struct ferry_ctl_result res;
	int r = ctl_check_inout(buf, in_len, out_len, sizeof(*a));

	if (!r && a->reserved)
		r = -FERRY_EINVAL;
	if (r)
		return ctl_res(r, 0);
	a->ready = 0;
	if (ferry_ctl_pending(c)) {
		a->ready = 1;
		return ctl_res(0, (u32)sizeof(*a));
	}
	res = ctl_res(0, 0);
	res.pend = true;
	return res;
}

static struct ferry_ctl_result ctl_rescan(struct ferry_win_ctl *w, void *buf,
					  u32 in_len, u32 out_len)
{
	struct ferry_win_rescan *a = buf;
	int r = ctl_check_inout(buf, in_len, out_len, sizeof(*a));

	if (r)
		return ctl_res(r, 0);
	a->started = a->stopped = a->failed = a->tracked = 0;
	r = w->rescan ? w->rescan(w, a) : -FERRY_WIN_ENOTTY;
	a->tracked = w->ctl.stream.ndevs;
	return ctl_res(r, (u32)sizeof(*a));
}

static struct ferry_ctl_result ctl_vss_arm(struct ferry_win_ctl *w, void *buf,
					   u32 in_len)
{
	struct ferry_win_vss_arm *a = buf;
	struct ferry_win_vss *v = &w->vss;
	struct ferry_ctl *c = &w->ctl;
	u64 seen = 0, now;
	u32 i, hold_ms;
	int r = ctl_check_in(buf, in_len, sizeof(*a), false);

	if (r)
		return ctl_res(r, 0);
	hold_ms = a->hold_ms ? a->hold_ms : c->tag_hold_ms;
	if (a->reserved || !a->ndevs || a->ndevs > FERRY_MAX_DEVICES ||
	    hold_ms > FERRY_WIN_TAG_HOLD_MAX_MS || !a->expire_ms ||
	    a->expire_ms > FERRY_WIN_VSS_EXPIRE_MAX_MS)
		return ctl_res(-FERRY_EINVAL, 0);
	for (i = 0; i < a->ndevs; i++) {
		u32 d = a->devs[i];

		if (!ferry_ctl_dev_at(c, d))
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

static struct ferry_ctl_result ctl_vss_result(struct ferry_win_ctl *w,
					      void *buf, u32 in_len,
					      u32 out_len)
{
	struct ferry_win_vss_result *a = buf;
	struct ferry_win_vss *v = &w->vss;
	int r = ctl_check_inout(buf, in_len, out_len, sizeof(*a));

	if (r)
		return ctl_res(r, 0);
	/* every field after size and version */
	ferry_memset(&a->tag_id, 0, sizeof(*a) - 2 * sizeof(u32));
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

struct ferry_ctl_result ferry_win_ctl_call(struct ferry_win_ctl *w,
					   const void *caller, u32 code,
					   void *sysbuf, u32 in_len,
					   u32 out_len, void *data,
					   u64 data_len)
{
	struct ferry_ctl *c = &w->ctl;

	switch (code) {
	case FERRY_WIN_IOC_VERSION:
		return ctl_version(c, sysbuf, in_len, out_len);
	case FERRY_WIN_IOC_LIST:
		return ctl_list(c, sysbuf, in_len, out_len);
	case FERRY_WIN_IOC_GET_CHANGES:
		return ctl_get(c, caller, sysbuf, in_len, data, data_len);
	case FERRY_WIN_IOC_COMMIT:
		return ctl_commit(c, caller, sysbuf, in_len);
	case FERRY_WIN_IOC_TAG:
		return ctl_inout(c, caller, code, sysbuf, in_len, out_len,
				 sizeof(struct ferry_ioc_tag));
	case FERRY_WIN_IOC_STATS:
		/* the struct's size before the hold figures is accepted too */
		return ctl_inout(c, caller, code, sysbuf, in_len, out_len,
				 in_len == FERRY_IOC_STATS_SIZE_V0 ?
					 FERRY_IOC_STATS_SIZE_V0 :
					 (u32)sizeof(struct ferry_ioc_stats));
	case FERRY_WIN_IOC_HOLD:
		return ctl_inout(c, caller, code, sysbuf, in_len, out_len,
				 sizeof(struct ferry_ioc_hold));
	case FERRY_WIN_IOC_RELEASE:
		return ctl_inout(c, caller, code, sysbuf, in_len, out_len,
				 sizeof(struct ferry_ioc_release));
	case FERRY_WIN_IOC_GET_BITMAP:
		return ctl_get_bitmap(c, sysbuf, in_len, data, data_len);
	case FERRY_WIN_IOC_CLEAR_BITMAP:
		return ctl_inout(c, caller, code, sysbuf, in_len, out_len,
				 sizeof(struct ferry_ioc_clear_bitmap));
	case FERRY_WIN_IOC_RESYNC_MARK:
		return ctl_inout(c, caller, code, sysbuf, in_len, out_len,
				 sizeof(struct ferry_ioc_resync));
	case FERRY_WIN_IOC_WAIT:
		return ctl_wait(c, sysbuf, in_len, out_len);
	case FERRY_WIN_IOC_RESCAN:
		return ctl_rescan(w, sysbuf, in_len, out_len);
	case FERRY_WIN_IOC_VSS_ARM:
		return ctl_vss_arm(w, sysbuf, in_len);
	case FERRY_WIN_IOC_VSS_RESULT:
		return ctl_vss_result(w, sysbuf, in_len, out_len);
	default:
		return ctl_res(-FERRY_WIN_ENOTTY, 0);
	}
}

/* ---- the VSS-armed tag ---- */

static int ctl_vss_slot(struct ferry_win_ctl *w, struct ferry_ctl_dev *d)
{
	struct ferry_win_vss *v = &w->vss;
	u32 i;

	if (!v->armed || !d || !d->core)
		return -1;
	for (i = 0; i < v->ndevs; i++)
		if (ferry_ctl_dev_at(&w->ctl, v->devs[i]) == d)
			return (int)i;
	return -1;
}

bool ferry_win_vss_freeze(struct ferry_win_ctl *w, struct ferry_ctl_dev *d,
			  ferry_win_forward_fn forward, void *ctx)
{
	struct ferry_win_vss *v = &w->vss;
	struct ferry_ctl *c = &w->ctl;
	u64 start, seq = 0, spent_ms, held;
	u32 ev = 0, left_ms;
	bool completed;
	int slot = ctl_vss_slot(w, d), r;

	if (slot < 0 || v->status[slot] != FERRY_WIN_ENOENT ||
	    c->ops->now_ns(c) >= v->deadline_ns)
		return false;
	if (ferry_ctl_holding(c)) {
		/* a group round holds writes: its release is not ours to do */
		v->status[slot] = FERRY_EBUSY;
		return false;
	}
	start = c->ops->now_ns(c);
	r = ferry_ctl_hold_cut(c, &d, 1, v->tag_id, v->hold_ms, &seq, &ev);
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
	ferry_ctl_unhold(c, &d, 1);
	held = c->ops->now_ns(c) - start;
	if (completed && !r)
		v->bridged |= 1ULL << slot;
	if (held > v->hold_ns)
		v->hold_ns = held;
	ferry_ctl_tag_done(c, d, r, ev);
	return true;
}
