// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * The IOCTLs of \\.\FerryCtl (ctl_calls.c), run against real core
 * devices: for each call the size / version / reserved / output-length /
 * device checks, then the behaviour, then what comes back on failure.
 */
#include <stddef.h>

#include "test_win.h"

static const int H1 = 1, H2 = 2;	/* two open handles */
#define A (&H1)
#define B (&H2)

/* Every BUFFERED call refuses a wrong length, size field and version. */
static void check_header_rules(u32 code, u32 size, bool any_version)
{
	u8 buf[1024];
	struct ferry_ctl_result r;
	u32 *h = (u32 *)buf;

	memset(buf, 0, sizeof(buf));
	h[0] = size;
	h[1] = FERRY_ABI_VERSION;
	r = tcall(A, code, buf, size - 1, sizeof(buf));
	CHECK_EQ(r.err, -FERRY_EINVAL);
	r = tcall(A, code, buf, size + 8, sizeof(buf));
	CHECK_EQ(r.err, -FERRY_EINVAL);
	r = tcall(A, code, NULL, 0, 0);
	CHECK_EQ(r.err, -FERRY_EINVAL);
	h[0] = size + 8;
	r = tcall(A, code, buf, size, sizeof(buf));
	CHECK_EQ(r.err, -FERRY_EINVAL);
	h[0] = size;
	h[1] = FERRY_ABI_VERSION + 1;
	r = tcall(A, code, buf, size, sizeof(buf));
	if (any_version)
		CHECK(r.err != -FERRY_EPROTO);
	else
		CHECK_EQ(r.err, -FERRY_EPROTO);
	/* a malformed header never sends results back */
	CHECK(!r.results || !r.err || r.err != -FERRY_EPROTO);
}

static void test_headers(void)
{
	ferry_test_current = "ctl/headers";
	tplat_init(1);
	check_header_rules(FERRY_WIN_IOC_VERSION, sizeof(struct ferry_ioc_version), true);
	check_header_rules(FERRY_WIN_IOC_LIST, sizeof(struct ferry_ioc_list), false);
	check_header_rules(FERRY_WIN_IOC_COMMIT, sizeof(struct ferry_ioc_commit), false);
	check_header_rules(FERRY_WIN_IOC_TAG, sizeof(struct ferry_ioc_tag), false);
	check_header_rules(FERRY_WIN_IOC_STATS, sizeof(struct ferry_ioc_stats), false);
	check_header_rules(FERRY_WIN_IOC_CLEAR_BITMAP, sizeof(struct ferry_ioc_clear_bitmap), false);
	check_header_rules(FERRY_WIN_IOC_RESYNC_MARK, sizeof(struct ferry_ioc_resync), false);
	check_header_rules(FERRY_WIN_IOC_HOLD, sizeof(struct ferry_ioc_hold), false);
	check_header_rules(FERRY_WIN_IOC_RELEASE, sizeof(struct ferry_ioc_release), false);
	check_header_rules(FERRY_WIN_IOC_WAIT, sizeof(struct ferry_win_wait), false);
	check_header_rules(FERRY_WIN_IOC_RESCAN, sizeof(struct ferry_win_rescan), false);
	check_header_rules(FERRY_WIN_IOC_VSS_ARM, sizeof(struct ferry_win_vss_arm), false);
	check_header_rules(FERRY_WIN_IOC_VSS_RESULT, sizeof(struct ferry_win_vss_result), false);
	/* unknown codes, and a known function number of another device type */
	CHECK_EQ(tcall(A, FERRY_WIN_CODE(0x8ff, FERRY_WIN_BUFFERED), NULL, 0, 0).err,
		 -FERRY_WIN_ENOTTY);
	CHECK_EQ(tcall(A, (0x22u << 16) | (3u << 14) | (0x800 << 2), NULL, 0, 0).err,
		 -FERRY_WIN_ENOTTY);
	/* the status encoding carries the errno both ways */
	CHECK_EQ(FERRY_WIN_STATUS_ERROR(FERRY_ESTALE), 0xE0F70074u);
	CHECK_EQ(FERRY_WIN_STATUS_WARNING(FERRY_EMSGSIZE), 0xA0F7005Au);
	CHECK_EQ(FERRY_WIN_STATUS_ERRNO(0xE0F70074u), FERRY_ESTALE);
	CHECK_EQ(FERRY_WIN_STATUS_ERRNO(0xA0F7005Au), FERRY_EMSGSIZE);
	CHECK_EQ(FERRY_WIN_STATUS_ERRNO(0xC0000001u), 0);	/* STATUS_UNSUCCESSFUL */
	CHECK_EQ(FERRY_WIN_STATUS_ERRNO(0xE0F80016u), 0);	/* other facility */
	tplat_free();
}

static void test_version_list_stats(void)
{
	struct ferry_ioc_version v;
	struct ferry_ioc_stats st;
	struct {
		struct ferry_ioc_list l;
		struct ferry_dev_info info[3];
	} lb;
	struct ferry_ctl_result r;

	ferry_test_current = "ctl/version_list_stats";
	tplat_init(2);
	TARG(v);
	v.version = 99;			/* VERSION accepts any version */
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_VERSION, &v, sizeof(v), sizeof(v) - 1).err,
		 -FERRY_EINVAL);
	r = tcall(A, FERRY_WIN_IOC_VERSION, &v, sizeof(v), sizeof(v));
	CHECK_EQ(r.err, 0);
	CHECK_EQ(r.info, sizeof(v));
	CHECK_EQ(v.abi_version, FERRY_ABI_VERSION);
	CHECK_EQ(v.version, FERRY_ABI_VERSION);
	CHECK_EQ(v.rec_hdr_size, 48);
	CHECK_EQ(v.dev_info_size, sizeof(struct ferry_dev_info));
	CHECK_EQ(v.max_tag_hold_ms, FERRY_WIN_TAG_HOLD_MAX_MS);
	CHECK(strcmp(v.module_version, FERRY_MODULE_VERSION) == 0);

	TARG(lb.l);
	lb.l.capacity = 65;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_LIST, &lb, sizeof(lb.l), sizeof(lb)).err,
		 -FERRY_EINVAL);
	lb.l.capacity = 1;
	lb.l.entries = 0x1000;		/* no user pointers on Windows */
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_LIST, &lb, sizeof(lb.l), sizeof(lb)).err,
		 -FERRY_EINVAL);
	lb.l.entries = 0;
	lb.l.reserved = 1;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_LIST, &lb, sizeof(lb.l), sizeof(lb)).err,
		 -FERRY_EINVAL);
	lb.l.reserved = 0;
	lb.l.capacity = 3;		/* room for 3 needs 32 + 3 * 384 */
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_LIST, &lb, sizeof(lb.l),
		       sizeof(lb.l) + 2 * sizeof(struct ferry_dev_info)).err,
		 -FERRY_EINVAL);
	lb.l.capacity = 1;
	r = tcall(A, FERRY_WIN_IOC_LIST, &lb, sizeof(lb.l), sizeof(lb));
	CHECK_EQ(r.err, 0);
	CHECK_EQ(lb.l.count, 2);
	CHECK_EQ(lb.l.returned, 1);
	CHECK_EQ(r.info, sizeof(lb.l) + sizeof(struct ferry_dev_info));
	CHECK_EQ(lb.info[0].index, 0);
	CHECK(strcmp(lb.info[0].name, "Volume{00000000-test}") == 0);
	CHECK_EQ(lb.info[0].size_bytes, 1 << 20);
	CHECK_EQ(lb.info[0].start_state, FERRY_START_CLEAN);
	CHECK_EQ(lb.info[0].dev_major, 0);
	lb.l.capacity = 3;
	r = tcall(A, FERRY_WIN_IOC_LIST, &lb, sizeof(lb.l), sizeof(lb));
	CHECK_EQ(lb.l.returned, 2);
	CHECK_EQ(lb.info[1].index, 1);

	TARG(st);
	st.dev_index = 5;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_STATS, &st, sizeof(st), sizeof(st)).err,
		 -FERRY_ENODEV);
	st.dev_index = 1;
	st.reserved = 1;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_STATS, &st, sizeof(st), sizeof(st)).err,
		 -FERRY_EINVAL);
	st.reserved = 0;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_STATS, &st, sizeof(st), 8).err,
		 -FERRY_EINVAL);
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_STATS, &st, sizeof(st), sizeof(st)).err, 0);
	CHECK_EQ(st.global.ndevices, 2);
	CHECK_EQ(st.dev.index, 1);
	CHECK_EQ(st.global.consumer_attached, 0);
	st.dev_index = FERRY_DEV_NONE;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_STATS, &st, sizeof(st), sizeof(st)).err, 0);
	CHECK_EQ(st.dev.size_bytes, 0);
	/* the size before the hold figures: only that much comes back */
	st.size = FERRY_IOC_STATS_SIZE_V0;
	memset(&st.holds, 0xee, sizeof(st.holds));
	r = tcall(A, FERRY_WIN_IOC_STATS, &st, FERRY_IOC_STATS_SIZE_V0,
		  FERRY_IOC_STATS_SIZE_V0);
	CHECK_EQ(r.err, 0);
	CHECK_EQ(r.info, FERRY_IOC_STATS_SIZE_V0);
	CHECK_EQ(st.holds.holds_ok, 0xeeeeeeeeeeeeeeeeULL);
	r = tcall(A, FERRY_WIN_IOC_STATS, &st, FERRY_IOC_STATS_SIZE_V0,
		  sizeof(st));		/* size field 488, input 488: fine */
	CHECK_EQ(r.err, 0);
	st.size = sizeof(st);
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_STATS, &st, FERRY_IOC_STATS_SIZE_V0,
		       sizeof(st)).err, -FERRY_EINVAL);
	tplat_free();
}

static bool fake_forward(void *ctx, u32 ms);

/* HOLD / TAG .hold_id / RELEASE through the IOCTLs; a VSS freeze waits. */
static void test_hold(void)
{
	static struct ferry_ioc_hold h;
	static struct ferry_ioc_tag t;
	static struct ferry_ioc_release rl;
	static struct ferry_ioc_stats st;
	static struct ferry_win_vss_arm arm;
	static struct ferry_win_vss_result vr;
	struct ferry_ctl_result r;

	ferry_test_current = "ctl/hold";
	tplat_init(2);
	TARG(h);
	h.hold_ms = 500;
	h.ndevs = 2;
	h.devs[0] = 1;
	h.devs[1] = 0;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_HOLD, &h, sizeof(h), 16).err,
		 -FERRY_EINVAL);
	r = tcall(A, FERRY_WIN_IOC_HOLD, &h, sizeof(h), sizeof(h));
	CHECK_EQ(r.err, 0);
	CHECK_EQ(r.info, sizeof(h));
	CHECK_EQ(h.hold_id, 1);
	CHECK(tp.armed);
	r = tcall(B, FERRY_WIN_IOC_HOLD, &h, sizeof(h), sizeof(h));
	CHECK_EQ(r.err, -FERRY_EBUSY);
	CHECK(r.results);		/* drain_ns travels back (warning) */
	TARG(t);
	t.hold_id = 1;
	t.tag_id = 5;
	r = tcall(A, FERRY_WIN_IOC_TAG, &t, sizeof(t), sizeof(t));
	CHECK_EQ(r.err, 0);
	CHECK_EQ(t.ndevs, 2);
	CHECK_EQ(t.devs[0], 1);
	CHECK_EQ(t.seqs[0], 2);		/* START, TAG */
	CHECK(!ferry_ctl_holding(&twc.ctl));
	/* a hold nobody ends: the bound; RELEASE then finds it stale */
	h.hold_id = 0;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_HOLD, &h, sizeof(h), sizeof(h)).err, 0);
	CHECK(tctl_fire(tp.clock_ns + 600000000ULL));
	TARG(rl);
	rl.hold_id = h.hold_id;
	r = tcall(A, FERRY_WIN_IOC_RELEASE, &rl, sizeof(rl), sizeof(rl));
	CHECK_EQ(r.err, -FERRY_ESTALE);
	/* the handle's cleanup ends its hold; a VSS freeze meanwhile waits */
	CHECK_EQ(tcall(B, FERRY_WIN_IOC_HOLD, &h, sizeof(h), sizeof(h)).err, 0);
	TARG(arm);
	arm.ndevs = 1;
	arm.devs[0] = 0;
	arm.expire_ms = 60000;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_VSS_ARM, &arm, sizeof(arm), 0).err, 0);
	CHECK(!ferry_win_vss_freeze(&twc, &tp.devs[0], fake_forward, NULL));
	TARG(vr);
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_VSS_RESULT, &vr, sizeof(vr), sizeof(vr)).err, 0);
	CHECK_EQ(vr.status[0], FERRY_EBUSY);
	CHECK(ferry_ctl_holding(&twc.ctl));	/* not released by the freeze */
	ferry_ctl_release(&twc.ctl, B);
	CHECK(!ferry_ctl_holding(&twc.ctl));
	TARG(st);
	st.dev_index = FERRY_DEV_NONE;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_STATS, &st, sizeof(st), sizeof(st)).err, 0);
	CHECK_EQ(st.holds.holds_ok, 1);
	CHECK_EQ(st.holds.holds_expired, 1);
	CHECK_EQ(st.holds.holds_aborted, 1);
	tplat_free();
}

/* GET_CHANGES into an output buffer of out bytes (batch + trailer). */
static struct ferry_ctl_result tget_changes(const void *caller, u8 *out,
					    u64 out_len,
					    struct ferry_ioc_get *res)
{
	struct ferry_ioc_get in;
	struct ferry_ctl_result r;

	TARG(in);
	r = tcall_direct(caller, FERRY_WIN_IOC_GET_CHANGES, &in, sizeof(in), out,
			 out_len);
	if (out && out_len >= sizeof(*res))
		memcpy(res, out + out_len - sizeof(*res), sizeof(*res));
	return r;
}

static void test_get_commit(void)
{
	static u8 out[1 << 16];
	struct ferry_ioc_get res, in;
	struct ferry_ioc_commit cm;
	struct ferry_batch_hdr hdr;
	struct ferry_rec rec;
	struct ferry_ctl_result r;

	ferry_test_current = "ctl/get_commit";
	tplat_init(1);
	twrite(tp.devs[0].core, 8192, 4096, 7);

	/* argument checks */
	TARG(in);
	in.buf = 1;
	CHECK_EQ(tcall_direct(A, FERRY_WIN_IOC_GET_CHANGES, &in, sizeof(in), out,
			      sizeof(out)).err, -FERRY_EINVAL);
	TARG(in);
	in.buf_len = 4096;
	CHECK_EQ(tcall_direct(A, FERRY_WIN_IOC_GET_CHANGES, &in, sizeof(in), out,
			      sizeof(out)).err, -FERRY_EINVAL);
	TARG(in);
	CHECK_EQ(tcall_direct(A, FERRY_WIN_IOC_GET_CHANGES, &in, sizeof(in), NULL,
			      0).err, -FERRY_EINVAL);
	CHECK_EQ(tcall_direct(A, FERRY_WIN_IOC_GET_CHANGES, &in, sizeof(in), out,
			      sizeof(in) - 1).err, -FERRY_EINVAL);
	CHECK(tp.ctl->owner == NULL);	/* refused calls take no ownership */

	/* too small for the next record: EMSGSIZE, .needed in the trailer */
	memset(out, 0xee, sizeof(out));
	r = tget_changes(A, out, sizeof(res) + 48 + 40, &res);
	CHECK_EQ(r.err, -FERRY_EMSGSIZE);
	CHECK(r.results);
	CHECK_EQ(r.info, sizeof(res) + 88);
	CHECK_EQ(res.needed, 48 + 48);		/* header + the START record */
	CHECK_EQ(res.size, sizeof(res));

	/* the batch from offset 0, results at the end */
	memset(out, 0xee, sizeof(out));
	r = tget_changes(A, out, sizeof(out), &res);
	CHECK_EQ(r.err, 0);
	CHECK_EQ(r.info, sizeof(out));
	/* the trailer describes the batch at offset 0 */
	memcpy(&hdr, out, sizeof(hdr));
	CHECK(res.batch_id && res.batch_id == hdr.batch_id);
	CHECK(res.nrecords == 2 && res.nrecords == hdr.nrecords);
	CHECK_EQ(res.bytes, hdr.total_bytes);
	memcpy(&rec, out + 48 + 48, sizeof(rec));
	CHECK_EQ(rec.kind, FERRY_REC_WRITE);
	CHECK_EQ(rec.offset, 8192);
	CHECK_EQ(rec.data_len, 4096);
	CHECK(tp.ctl->owner == A);

	/* another handle can neither read nor commit */
	CHECK_EQ(tget_changes(B, out, sizeof(out), &res).err, -FERRY_EBUSY);
	TARG(cm);
	cm.batch_id = hdr.batch_id;
	CHECK_EQ(tcall(B, FERRY_WIN_IOC_COMMIT, &cm, sizeof(cm), 0).err,
		 -FERRY_EBUSY);
	cm.batch_id = 99;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_COMMIT, &cm, sizeof(cm), 0).err,
		 -FERRY_EINVAL);

	/* the owner goes away: redelivery, old id void */
	ferry_ctl_release(tp.ctl, B);	/* not the owner: no effect */
	CHECK(tp.ctl->owner == A);
	ferry_ctl_release(tp.ctl, A);
	CHECK(tp.ctl->owner == NULL);
	r = tget_changes(B, out, sizeof(out), &res);
	CHECK_EQ(r.err, 0);
	CHECK_EQ(res.nrecords, 2);
	CHECK(res.batch_flags & FERRY_BATCH_F_REDELIVERY);
	cm.batch_id = hdr.batch_id;
	CHECK_EQ(tcall(B, FERRY_WIN_IOC_COMMIT, &cm, sizeof(cm), 0).err,
		 -FERRY_ESTALE);
	cm.batch_id = res.batch_id;
	tp.events = 0;
	CHECK_EQ(tcall(B, FERRY_WIN_IOC_COMMIT, &cm, sizeof(cm), 0).err, 0);
	/* nothing left: an empty batch */
	r = tget_changes(B, out, sizeof(out), &res);
	CHECK_EQ(r.err, 0);
	CHECK_EQ(res.batch_id, 0);
	CHECK_EQ(res.bytes, 48);
	tplat_free();
}

static void test_tag(void)
{
	static struct ferry_ioc_tag t;
	static u8 out[1 << 16];
	struct ferry_ioc_get res;
	struct ferry_dev_info info;
	struct ferry_ctl_result r;
	u32 i;

	ferry_test_current = "ctl/tag";
	tplat_init(2);
	TARG(t);
	t.ndevs = 0;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_TAG, &t, sizeof(t), sizeof(t)).err,
		 -FERRY_EINVAL);
	t.ndevs = 65;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_TAG, &t, sizeof(t), sizeof(t)).err,
		 -FERRY_EINVAL);
	t.ndevs = 2;
	t.devs[0] = 1;
	t.devs[1] = 1;
	r = tcall(A, FERRY_WIN_IOC_TAG, &t, sizeof(t), sizeof(t));
	CHECK_EQ(r.err, -FERRY_EINVAL);		/* a device twice */
	CHECK(!r.results);			/* malformed: nothing comes back */
	t.devs[1] = 64;
	r = tcall(A, FERRY_WIN_IOC_TAG, &t, sizeof(t), sizeof(t));
	CHECK_EQ(r.err, -FERRY_ENODEV);
	CHECK(r.results);			/* hold_ns (0) comes back, as on Linux */
	CHECK_EQ(t.hold_ns, 0);
	t.devs[1] = 3;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_TAG, &t, sizeof(t), sizeof(t)).err,
		 -FERRY_ENODEV);
	t.devs[1] = 0;
	t.hold_ms = FERRY_WIN_TAG_HOLD_MAX_MS + 1;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_TAG, &t, sizeof(t), sizeof(t)).err,
		 -FERRY_EINVAL);
	t.hold_ms = 0;
	t.hold_id = 1;			/* a hold never given out */
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_TAG, &t, sizeof(t), sizeof(t)).err,
		 -FERRY_EINVAL);
	t.hold_id = 0;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_TAG, &t, sizeof(t), 16).err,
		 -FERRY_EINVAL);
	CHECK_EQ(tp.holds_on, 0);		/* nothing was held so far */

	/* writes in flight on both devices complete inside the hold */
	tctl_begin_write(0);
	tctl_begin_write(1);
	t.tag_id = 0xabc;
	r = tcall(A, FERRY_WIN_IOC_TAG, &t, sizeof(t), sizeof(t));
	CHECK_EQ(r.err, 0);
	CHECK_EQ(tp.last_wait_ms, FERRY_CTL_HOLD_DEFAULT_MS);
	CHECK_EQ(tp.holds_on, 2);
	CHECK_EQ(tp.holds_off, 2);
	CHECK(t.hold_ns > 0);
	/* START, DIRTY (the write), TAG on each device */
	CHECK_EQ(t.seqs[0], 3);
	CHECK_EQ(t.seqs[1], 3);
	CHECK_EQ(t.seqs[2], 0);
	CHECK_EQ(tp.ctl->tags_ok, 1);
	memset(&info, 0, sizeof(info));
	ferry_dev_info(tp.devs[0].core, &info);
	CHECK_EQ(info.flags & FERRY_DEV_F_HOLD, 0);	/* released */
	r = tget_changes(A, out, sizeof(out), &res);
	CHECK_EQ(res.nrecords, 6);

	/* stuck writes: ETIMEDOUT, hold_ns comes back, nothing inserted */
	tctl_begin_write(0);
	tp.stuck = true;
	t.hold_ms = 50;
	t.hold_ns = 0;
	r = tcall(A, FERRY_WIN_IOC_TAG, &t, sizeof(t), sizeof(t));
	CHECK_EQ(r.err, -FERRY_ETIMEDOUT);
	CHECK(r.results);
	CHECK_EQ(r.info, sizeof(t));
	CHECK(t.hold_ns > 0);
	CHECK_EQ(tp.last_wait_ms, 50);
	CHECK_EQ(tp.ctl->tags_timed_out, 1);
	memset(&info, 0, sizeof(info));
	ferry_dev_info(tp.devs[0].core, &info);
	CHECK_EQ(info.flags & FERRY_DEV_F_HOLD, 0);	/* revoked */
	CHECK_EQ(info.tags, 1);
	tp.stuck = false;
	ferry_io_cancel(tp.devs[0].core, NULL);
	tp.pending[0] = 0;

	/* a device in BITMAP mode: ENOSPC before anything is held */
	for (i = 0; i < 300; i++)
		twrite(tp.devs[1].core, (u64)(i % 200) * 4096, 512, 1);
	tp.holds_on = 0;
	t.hold_ms = 0;
	r = tcall(A, FERRY_WIN_IOC_TAG, &t, sizeof(t), sizeof(t));
	CHECK_EQ(r.err, -FERRY_ENOSPC);
	CHECK_EQ(tp.holds_on, 0);
	/* a frozen (saved, CLEAN) device: EAGAIN */
	ferry_dev_freeze(tp.devs[0].core);
	t.ndevs = 1;
	t.devs[0] = 0;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_TAG, &t, sizeof(t), sizeof(t)).err,
		 -FERRY_EAGAIN);
	ferry_dev_thaw(tp.devs[0].core);
	tplat_free();
}

/* GET_BITMAP: out = bitmap bytes from offset 0, struct at the end. */
static void test_bitmap_resync(void)
{
	static u8 out[4096];
	struct ferry_ioc_bitmap in, res;
	struct ferry_ioc_clear_bitmap cl;
	struct ferry_ioc_resync rs;
	struct ferry_ctl_result r;
	u64 epoch;

	ferry_test_current = "ctl/bitmap_resync";
	tplat_init(1);
	/* put the device into DRAINING: a NEW start sets every bit */
	ferry_dev_start(tp.devs[0].core, FERRY_START_NEW, 2, 10, 1 << 20);

	TARG(in);
	in.buf_len = 32;
	in.flags = 2;
	CHECK_EQ(tcall_direct(A, FERRY_WIN_IOC_GET_BITMAP, &in, sizeof(in), out,
			      sizeof(out)).err, -FERRY_EINVAL);
	in.flags = 0;
	in.buf_len = 0;
	CHECK_EQ(tcall_direct(A, FERRY_WIN_IOC_GET_BITMAP, &in, sizeof(in), out,
			      sizeof(out)).err, -FERRY_EINVAL);
	in.buf_len = sizeof(out) - sizeof(in) + 1;	/* no room for the trailer */
	CHECK_EQ(tcall_direct(A, FERRY_WIN_IOC_GET_BITMAP, &in, sizeof(in), out,
			      sizeof(out)).err, -FERRY_EINVAL);
	in.buf_len = 32;
	in.buf = 0x1000;
	CHECK_EQ(tcall_direct(A, FERRY_WIN_IOC_GET_BITMAP, &in, sizeof(in), out,
			      sizeof(out)).err, -FERRY_EINVAL);
	in.buf = 0;
	in.dev_index = 9;
	CHECK_EQ(tcall_direct(A, FERRY_WIN_IOC_GET_BITMAP, &in, sizeof(in), out,
			      sizeof(out)).err, -FERRY_ENODEV);
	in.dev_index = 0;
	in.start_byte = 32;		/* 256 bits = 32 bytes */
	CHECK_EQ(tcall_direct(A, FERRY_WIN_IOC_GET_BITMAP, &in, sizeof(in), out,
			      sizeof(out)).err, -FERRY_ERANGE);
	in.start_byte = 0;
	in.flags = FERRY_BITMAP_F_CUT;
	in.buf_len = 100;		/* clipped at the end of the bitmap */
	memset(out, 0, sizeof(out));
	r = tcall_direct(A, FERRY_WIN_IOC_GET_BITMAP, &in, sizeof(in), out,
			 sizeof(out));
	CHECK_EQ(r.err, 0);
	memcpy(&res, out + sizeof(out) - sizeof(res), sizeof(res));
	CHECK_EQ(res.returned, 32);
	CHECK_EQ(res.nbits, 256);
	CHECK_EQ(res.dirty_bits, 256);
	CHECK_EQ(res.granularity, 4096);
	CHECK_EQ(res.cut_seq, 11);	/* START was 10 */
	CHECK_EQ(out[0], 0xff);
	CHECK_EQ(out[31], 0xff);
	epoch = res.epoch;

	TARG(cl);
	cl.epoch = epoch + 1;
	cl.nbits = 256;
	r = tcall(A, FERRY_WIN_IOC_CLEAR_BITMAP, &cl, sizeof(cl), sizeof(cl));
	CHECK_EQ(r.err, -FERRY_ESTALE);
	CHECK(r.results);			/* dirty_bits comes back */
	CHECK_EQ(cl.dirty_bits, 256);
	cl.epoch = epoch;
	cl.reserved = 1;
	r = tcall(A, FERRY_WIN_IOC_CLEAR_BITMAP, &cl, sizeof(cl), sizeof(cl));
	CHECK_EQ(r.err, -FERRY_EINVAL);
	CHECK(!r.results);
	cl.reserved = 0;
	cl.start_bit = 250;
	cl.nbits = 7;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_CLEAR_BITMAP, &cl, sizeof(cl), sizeof(cl)).err,
		 -FERRY_ERANGE);
	cl.start_bit = 0;
	cl.nbits = 256;
	tp.events = 0;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_CLEAR_BITMAP, &cl, sizeof(cl), sizeof(cl)).err, 0);
	CHECK_EQ(cl.dirty_bits, 0);
	CHECK(tp.events & FERRY_EV_MODE);	/* DRAINING -> DATA */

	TARG(rs);
	rs.length = 0;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_RESYNC_MARK, &rs, sizeof(rs), sizeof(rs)).err,
		 -FERRY_EINVAL);
	rs.length = 2;
	rs.offset = (1 << 20) - 1;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_RESYNC_MARK, &rs, sizeof(rs), sizeof(rs)).err,
		 -FERRY_ERANGE);
	rs.offset = 0;
	rs.dev_index = 1;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_RESYNC_MARK, &rs, sizeof(rs), sizeof(rs)).err,
		 -FERRY_ENODEV);
	rs.dev_index = 0;
	rs.length = 65536;
	r = tcall(A, FERRY_WIN_IOC_RESYNC_MARK, &rs, sizeof(rs), sizeof(rs));
	CHECK_EQ(r.err, 0);
	CHECK_EQ(rs.seq, 13);		/* after the cut and the MODE record */
	tplat_free();
}

static void test_wait_rescan(void)
{
	struct ferry_win_wait w;
	struct ferry_win_rescan rs;
	struct ferry_ctl_result r;
	static u8 out[1 << 16];
	struct ferry_ioc_get res;

	ferry_test_current = "ctl/wait_rescan";
	tplat_init(1);
	TARG(w);
	r = tcall(A, FERRY_WIN_IOC_WAIT, &w, sizeof(w), sizeof(w));
	CHECK_EQ(r.err, 0);
	CHECK(!r.pend);			/* the START record is waiting */
	CHECK_EQ(w.ready, 1);
	tget_changes(A, out, sizeof(out), &res);
	r = tcall(A, FERRY_WIN_IOC_WAIT, &w, sizeof(w), sizeof(w));
	CHECK(r.pend);			/* nothing: the driver pends it */
	CHECK_EQ(r.err, 0);
	w.reserved = 3;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_WAIT, &w, sizeof(w), sizeof(w)).err,
		 -FERRY_EINVAL);
	w.reserved = 0;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_WAIT, &w, sizeof(w), 4).err, -FERRY_EINVAL);

	TARG(rs);
	rs.stopped = 77;			/* outputs are cleared first */
	r = tcall(A, FERRY_WIN_IOC_RESCAN, &rs, sizeof(rs), sizeof(rs));
	CHECK_EQ(r.err, 0);
	CHECK_EQ(rs.started, 2);
	CHECK_EQ(rs.failed, 1);
	CHECK_EQ(rs.stopped, 0);
	CHECK_EQ(rs.tracked, 1);
	trescan_ret = -FERRY_WIN_EIO;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_RESCAN, &rs, sizeof(rs), sizeof(rs)).err,
		 -FERRY_WIN_EIO);
	tplat_free();
}

/* The freeze IOCTL going down (ferry_win_forward_fn). */
static struct {
	u32 calls;
	u32 ms;
	bool completes;
} fwd;

static bool fake_forward(void *ctx, u32 ms)
{
	(void)ctx;
	fwd.calls++;
	fwd.ms = ms;
	return fwd.completes;
}

static void test_vss(void)
{
	static struct ferry_win_vss_arm arm;
	static struct ferry_win_vss_result vr;
	static u8 out[1 << 16];
	struct ferry_ioc_get res;
	struct ferry_batch_hdr hdr;
	struct ferry_rec rec;
	struct ferry_ctl_result r;

	ferry_test_current = "ctl/vss";
	memset(&fwd, 0, sizeof(fwd));
	tplat_init(3);
	TARG(arm);
	arm.ndevs = 2;
	arm.devs[0] = 0;
	arm.devs[1] = 2;
	arm.tag_id = 77;
	arm.expire_ms = 0;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_VSS_ARM, &arm, sizeof(arm), 0).err,
		 -FERRY_EINVAL);
	arm.expire_ms = FERRY_WIN_VSS_EXPIRE_MAX_MS + 1;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_VSS_ARM, &arm, sizeof(arm), 0).err,
		 -FERRY_EINVAL);
	arm.expire_ms = 60000;
	arm.devs[1] = 0;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_VSS_ARM, &arm, sizeof(arm), 0).err,
		 -FERRY_EINVAL);
	arm.devs[1] = 3;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_VSS_ARM, &arm, sizeof(arm), 0).err,
		 -FERRY_ENODEV);
	arm.devs[1] = 2;
	arm.hold_ms = FERRY_WIN_TAG_HOLD_MAX_MS + 1;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_VSS_ARM, &arm, sizeof(arm), 0).err,
		 -FERRY_EINVAL);
	arm.hold_ms = 400;
	/* not armed yet: the freeze point passes through */
	CHECK(!ferry_win_vss_freeze(&twc, &tp.devs[0], fake_forward, NULL));
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_VSS_ARM, &arm, sizeof(arm), 0).err, 0);
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_VSS_ARM, &arm, sizeof(arm), 0).err,
		 -FERRY_EBUSY);

	/* device 1 is not in the arm; device 0 is, with a write in flight */
	CHECK(!ferry_win_vss_freeze(&twc, &tp.devs[1], fake_forward, NULL));
	CHECK_EQ(fwd.calls, 0);
	tctl_begin_write(0);
	fwd.completes = true;
	CHECK(ferry_win_vss_freeze(&twc, &tp.devs[0], fake_forward, NULL));
	CHECK_EQ(fwd.calls, 1);
	CHECK(fwd.ms > 0 && fwd.ms <= 400);
	CHECK_EQ(tp.last_wait_ms, 400);
	CHECK_EQ(tp.holds_on, 1);
	CHECK_EQ(tp.holds_off, 1);	/* released after forward() returned */
	/* only once per arm */
	CHECK(!ferry_win_vss_freeze(&twc, &tp.devs[0], fake_forward, NULL));
	/* device 2: the writes never drain, the freeze IOCTL does not complete */
	tctl_begin_write(2);
	tp.stuck = true;
	fwd.completes = false;
	CHECK(ferry_win_vss_freeze(&twc, &tp.devs[2], fake_forward, NULL));
	CHECK_EQ(fwd.calls, 2);	/* the IOCTL still goes down */
	tp.stuck = false;

	TARG(vr);
	r = tcall(A, FERRY_WIN_IOC_VSS_RESULT, &vr, sizeof(vr), sizeof(vr));
	CHECK_EQ(r.err, 0);
	CHECK_EQ(vr.armed, 1);
	CHECK_EQ(vr.tag_id, 77);
	CHECK_EQ(vr.ndevs, 2);
	CHECK_EQ(vr.status[0], 0);
	CHECK_EQ(vr.seqs[0], 3);		/* START, DIRTY, TAG */
	CHECK_EQ(vr.status[1], FERRY_ETIMEDOUT);
	CHECK_EQ(vr.seqs[1], 0);
	CHECK_EQ(vr.bridged, 1);		/* device 0 only */
	CHECK(vr.hold_ns > 0);
	/* the result disarms */
	r = tcall(A, FERRY_WIN_IOC_VSS_RESULT, &vr, sizeof(vr), sizeof(vr));
	CHECK_EQ(vr.armed, 0);
	CHECK_EQ(vr.ndevs, 0);

	/* the TAG record: tag id as offset, right after the drained write */
	tget_changes(A, out, sizeof(out), &res);
	memcpy(&hdr, out, sizeof(hdr));
	CHECK_EQ(hdr.nrecords, 5);	/* 2 x START, DIRTY, TAG, START(dev2) ... */
	memcpy(&rec, out + 48 + 2 * 48, sizeof(rec));
	CHECK_EQ(rec.kind, FERRY_REC_TAG);
	CHECK_EQ(rec.offset, 77);
	CHECK_EQ(rec.dev_index, 0);

	/* an expired arm does nothing; a never-reached device says ENOENT */
	arm.ndevs = 1;
	arm.devs[0] = 1;
	arm.expire_ms = 1;
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_VSS_ARM, &arm, sizeof(arm), 0).err, 0);
	tp.clock_ns += 5000000;
	CHECK(!ferry_win_vss_freeze(&twc, &tp.devs[1], fake_forward, NULL));
	/* expired: a new arm is accepted without collecting the old one */
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_VSS_ARM, &arm, sizeof(arm), 0).err, 0);
	CHECK_EQ(tcall(A, FERRY_WIN_IOC_VSS_RESULT, &vr, sizeof(vr), sizeof(vr)).err, 0);
	CHECK_EQ(vr.status[0], FERRY_WIN_ENOENT);
	ferry_io_cancel(tp.devs[2].core, NULL);
	tplat_free();
}

void test_ctl_all(void)
{
	test_headers();
	test_version_list_stats();
	test_get_commit();
	test_tag();
	test_hold();
	test_bitmap_resync();
	test_wait_rescan();
	test_vss();
}
