// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * The control calls both drivers share (ferry_ctl_ops.c), run against real
 * core devices through the fake platform (ctl_fake.h), with output the way
 * the Linux module hands it over: copy() into a caller's buffer that may
 * fault, and an EFAULT verdict for a NULL address.  For each call: the
 * checks and their order, then the behaviour, then what comes back on
 * failure.  native/windows/test runs the Windows IOCTL conventions over
 * the same calls.
 */
#include "ctl_fake.h"

static const int H1 = 1, H2 = 2;	/* two open files */
#define A (&H1)
#define B (&H2)

static struct ferry_ctl ctl;

/* A caller's buffer reached through copy(): faults past fail_at. */
struct tubuf {
	u8 *mem;
	u64 len;
	u64 fail_at;
	u32 copies;
};

static int tub_copy(void *ctx, u64 off, const void *src, u32 len)
{
	struct tubuf *u = ctx;

	u->copies++;
	if (off + len > u->fail_at || off + len > u->len)
		return -FERRY_EFAULT;
	memcpy(u->mem + off, src, len);
	return 0;
}

static struct tubuf tub(void *mem, u64 len)
{
	struct tubuf u = { .mem = mem, .len = len, .fail_at = len };

	memset(mem, 0xee, len);
	return u;
}

static struct ferry_ctl_out tout(struct tubuf *u)
{
	struct ferry_ctl_out o = { .copy = tub_copy, .ctx = u, .len = u->len };

	return o;
}

static const struct ferry_ctl_out tfault = { .err = -FERRY_EFAULT };

static void tinit(u32 n, const struct ferry_ctl_ops *ops)
{
	ferry_ctl_init(&ctl, ops);
	tctl_setup(&ctl, n);
}

/* Every call refuses a wrong size field, and a wrong version (but VERSION). */
void test_ctl_headers(void)
{
	struct ferry_ioc_version v;
	struct ferry_ioc_list l;
	struct ferry_ioc_get g;
	struct ferry_ioc_commit cm;
	static struct ferry_ioc_tag t;
	struct ferry_ioc_stats st;
	struct ferry_ioc_bitmap bm;
	struct ferry_ioc_clear_bitmap cl;
	struct ferry_ioc_resync rs;
	static struct ferry_ioc_hold ho;
	struct ferry_ioc_release rl;
	static u8 mem[4096];
	struct tubuf u = tub(mem, sizeof(mem));
	struct ferry_ctl_out o = tout(&u);
	bool res = true;

	ferry_test_current = "ctl/headers";
	tinit(1, &tctl_ops);
#define HDR_RULES(arg, call)						\
	do {								\
		TARG(arg);						\
		(arg).size++;						\
		CHECK_EQ(call, -FERRY_EINVAL);				\
		TARG(arg);						\
		(arg).version++;					\
		CHECK_EQ(call, -FERRY_EPROTO);				\
	} while (0)
	HDR_RULES(l, ferry_ctl_list(&ctl, &l, &o));
	HDR_RULES(g, ferry_ctl_get(&ctl, A, &g, &o, &res));
	CHECK(!res);
	HDR_RULES(cm, ferry_ctl_commit(&ctl, A, &cm));
	HDR_RULES(t, ferry_ctl_tag(&ctl, &t, &res));
	CHECK(!res);
	HDR_RULES(st, ferry_ctl_stats(&ctl, &st));
	HDR_RULES(bm, ferry_ctl_get_bitmap(&ctl, &bm, &o));
	HDR_RULES(cl, ferry_ctl_clear_bitmap(&ctl, &cl, &res));
	CHECK(!res);
	HDR_RULES(rs, ferry_ctl_resync(&ctl, &rs));
	HDR_RULES(ho, ferry_ctl_hold(&ctl, A, &ho, &res));
	CHECK(!res);
	HDR_RULES(rl, ferry_ctl_release_hold(&ctl, &rl));
#undef HDR_RULES
	CHECK(ctl.owner == NULL);
	CHECK_EQ(u.copies, 0);
	CHECK_EQ(tp.holds_on, 0);

	TARG(v);
	v.size++;
	CHECK_EQ(ferry_ctl_version(&ctl, &v), -FERRY_EINVAL);
	TARG(v);
	v.version = 99;			/* VERSION accepts any version */
	CHECK_EQ(ferry_ctl_version(&ctl, &v), 0);
	CHECK_EQ(v.version, FERRY_ABI_VERSION);
	CHECK_EQ(v.abi_version, FERRY_ABI_VERSION);
	CHECK_EQ(v.max_devices, FERRY_MAX_DEVICES);
	CHECK_EQ(v.batch_hdr_size, 48);
	CHECK_EQ(v.rec_hdr_size, 48);
	CHECK_EQ(v.dev_info_size, sizeof(struct ferry_dev_info));
	CHECK_EQ(v.max_tag_hold_ms, FERRY_CTL_HOLD_MAX_MS);
	CHECK(strcmp(v.module_version, FERRY_MODULE_VERSION) == 0);
	tctl_free();
}

/* Tracking: the lowest free index, a given index, detach. */
void test_ctl_registry(void)
{
	struct ferry_dev_config cfg = tcfg(1 << 20, 4096, 64, 0);
	static struct ferry_ctl_dev many[FERRY_MAX_DEVICES];
	struct ferry_ctl_dev extra = { .index = -1 };
	u32 i;

	ferry_test_current = "ctl/registry";
	tinit(3, &tctl_ops);
	CHECK_EQ(tp.devs[2].index, 2);
	CHECK(ferry_ctl_dev_at(&ctl, 1) == &tp.devs[1]);
	CHECK(ferry_ctl_dev_at(&ctl, 64) == NULL);
	CHECK(ferry_ctl_dev_at(&ctl, 5) == NULL);

	/* a reload takes over the index of the table it replaces */
	extra.core = tdev_clean(&cfg, 1);
	CHECK_EQ(ferry_ctl_attach(&ctl, &extra, 1), -FERRY_EBUSY);
	CHECK_EQ(extra.index, -1);
	ferry_ctl_detach(&ctl, &tp.devs[1]);
	CHECK_EQ(tp.devs[1].index, -1);
	CHECK_EQ(ctl.stream.ndevs, 2);
	CHECK_EQ(ferry_ctl_attach(&ctl, &extra, 1), 1);
	CHECK_EQ(extra.index, 1);
	CHECK_EQ(extra.core->index, 1);
	CHECK(ferry_ctl_dev_at(&ctl, 1) == &extra);
	/* detaching what is not tracked (any more) changes nothing */
	ferry_ctl_detach(&ctl, &tp.devs[1]);
	CHECK(ferry_ctl_dev_at(&ctl, 1) == &extra);
	CHECK_EQ(ctl.stream.ndevs, 3);
	ferry_ctl_detach(&ctl, &extra);
	ferry_ctl_detach(&ctl, &extra);
	CHECK_EQ(ctl.stream.ndevs, 2);

	/* full: ENOSPC */
	for (i = 0; i < FERRY_MAX_DEVICES; i++) {
		many[i].core = extra.core;
		many[i].index = -1;
	}
	for (i = 0; i < FERRY_MAX_DEVICES - 2; i++)
		CHECK(ferry_ctl_attach(&ctl, &many[i], -1) >= 0);
	CHECK_EQ(ferry_ctl_attach(&ctl, &many[i], -1), -FERRY_ENOSPC);
	CHECK_EQ(many[i].index, -1);
	for (i = 0; i < FERRY_MAX_DEVICES; i++)
		ferry_ctl_detach(&ctl, &many[i]);
	CHECK_EQ(ctl.stream.ndevs, 2);
	ferry_dev_destroy(extra.core);
	tctl_free();
}

void test_ctl_list_stats(void)
{
	struct ferry_ioc_list l;
	struct ferry_ioc_stats st;
	struct ferry_dev_info info[3];
	struct tubuf u = tub(info, sizeof(info));
	struct ferry_ctl_out o = tout(&u);

	ferry_test_current = "ctl/list_stats";
	tinit(2, &tctl_ops_describe);
	TARG(l);
	l.capacity = 65;
	CHECK_EQ(ferry_ctl_list(&ctl, &l, &tfault), -FERRY_EINVAL);
	l.capacity = 1;
	l.reserved = 1;
	CHECK_EQ(ferry_ctl_list(&ctl, &l, &tfault), -FERRY_EINVAL);
	l.reserved = 0;
	/* the buffer's verdict comes after the argument checks */
	CHECK_EQ(ferry_ctl_list(&ctl, &l, &tfault), -FERRY_EFAULT);
	CHECK_EQ(l.count, 0);

	l.entries = 0x1000;		/* the platform's: not looked at */
	CHECK_EQ(ferry_ctl_list(&ctl, &l, &o), 0);
	CHECK_EQ(l.count, 2);
	CHECK_EQ(l.returned, 1);
	CHECK_EQ(u.copies, 1);
	CHECK_EQ(info[0].index, 0);
	CHECK_EQ(info[0].size_bytes, 1 << 20);
	CHECK_EQ(info[0].start_state, FERRY_START_CLEAN);
	/* describe() comes after the name: the platform's name wins */
	CHECK(strcmp(info[0].name, "dm-0") == 0);
	CHECK_EQ(info[0].dev_major, 7);
	l.capacity = 3;
	CHECK_EQ(ferry_ctl_list(&ctl, &l, &o), 0);
	CHECK_EQ(l.returned, 2);
	CHECK_EQ(info[1].index, 1);
	CHECK_EQ(info[1].dev_major, 8);
	/* a fault on the second entry */
	u.fail_at = sizeof(info[0]) + 10;
	l.count = l.returned = 77;
	CHECK_EQ(ferry_ctl_list(&ctl, &l, &o), -FERRY_EFAULT);
	CHECK_EQ(l.returned, 77);	/* nothing written back */

	TARG(st);
	st.dev_index = 5;
	CHECK_EQ(ferry_ctl_stats(&ctl, &st), -FERRY_ENODEV);
	st.dev_index = 1;
	st.reserved = 1;
	CHECK_EQ(ferry_ctl_stats(&ctl, &st), -FERRY_EINVAL);
	st.reserved = 0;
	CHECK_EQ(ferry_ctl_stats(&ctl, &st), 0);
	CHECK_EQ(st.global.ndevices, 2);
	CHECK_EQ(st.global.next_batch_id, 1);
	CHECK_EQ(st.global.consumer_attached, 0);
	CHECK_EQ(st.dev.index, 1);
	CHECK(strcmp(st.dev.name, "dm-1") == 0);
	st.dev_index = FERRY_DEV_NONE;
	memset(&st.dev, 0xff, sizeof(st.dev));
	CHECK_EQ(ferry_ctl_stats(&ctl, &st), 0);
	CHECK_EQ(st.dev.size_bytes, 0);
	CHECK_EQ(st.holds.holds_ok, 0);
	/* the size before holds: accepted, .holds (past its end) untouched */
	memset(&st.holds, 0xee, sizeof(st.holds));
	st.size = FERRY_IOC_STATS_SIZE_V0;
	CHECK_EQ(ferry_ctl_stats(&ctl, &st), 0);
	CHECK_EQ(st.global.ndevices, 2);
	CHECK_EQ(st.holds.holds_ok, 0xeeeeeeeeeeeeeeeeULL);
	st.size = FERRY_IOC_STATS_SIZE_V0 + 8;
	CHECK_EQ(ferry_ctl_stats(&ctl, &st), -FERRY_EINVAL);
	tctl_free();

	/* without describe(): the name the platform keeps in the device */
	tinit(1, &tctl_ops);
	l.capacity = 1;
	u.fail_at = u.len;
	CHECK_EQ(ferry_ctl_list(&ctl, &l, &o), 0);
	CHECK(strcmp(info[0].name, "Volume{00000000-test}") == 0);
	CHECK_EQ(info[0].dev_major, 0);
	CHECK_EQ(tp.describes, 0);
	tctl_free();
}

static int tget_changes(const void *caller, struct tubuf *u,
			struct ferry_ioc_get *g, bool *res)
{
	struct ferry_ctl_out o = tout(u);

	TARG(*g);
	return ferry_ctl_get(&ctl, caller, g, &o, res);
}

void test_ctl_get_commit(void)
{
	static u8 mem[1 << 16];
	struct tubuf u = tub(mem, sizeof(mem));
	struct ferry_ioc_get g;
	struct ferry_ioc_commit cm;
	struct ferry_batch_hdr hdr;
	struct ferry_rec rec;
	u64 first;
	bool res;

	ferry_test_current = "ctl/get_commit";
	tinit(1, &tctl_ops);
	twrite(tp.devs[0].core, 8192, 4096, 7);

	/* a bad buffer takes no ownership */
	TARG(g);
	CHECK_EQ(ferry_ctl_get(&ctl, A, &g, &tfault, &res), -FERRY_EFAULT);
	CHECK(!res);
	CHECK(ctl.owner == NULL);

	/* too small for the next record: EMSGSIZE with .needed */
	u.len = 48 + 40;
	CHECK_EQ(tget_changes(A, &u, &g, &res), -FERRY_EMSGSIZE);
	CHECK(res);
	CHECK_EQ(g.needed, 48 + 48);	/* header + the START record */
	CHECK(ctl.owner == A);
	u.len = sizeof(mem);

	/* a fault while copying: no batch, the records stay deliverable */
	u.fail_at = 100;
	CHECK_EQ(tget_changes(A, &u, &g, &res), -FERRY_EFAULT);
	CHECK(res);
	CHECK_EQ(g.batch_id, 0);
	u.fail_at = u.len;

	CHECK_EQ(tget_changes(A, &u, &g, &res), 0);
	CHECK(!res);
	memcpy(&hdr, mem, sizeof(hdr));
	CHECK_EQ(hdr.magic, FERRY_BATCH_MAGIC);
	CHECK_EQ(hdr.nrecords, 2);		/* START, WRITE */
	CHECK_EQ(g.batch_id, hdr.batch_id);
	CHECK_EQ(g.nrecords, 2);
	CHECK_EQ(g.bytes, hdr.total_bytes);
	CHECK_EQ(g.batch_flags, 0);
	memcpy(&rec, mem + 48 + 48, sizeof(rec));
	CHECK_EQ(rec.kind, FERRY_REC_WRITE);
	CHECK_EQ(rec.offset, 8192);
	CHECK_EQ(rec.data_len, 4096);
	first = g.batch_id;

	/* another file can neither read nor commit; busy comes first */
	CHECK_EQ(tget_changes(B, &u, &g, &res), -FERRY_EBUSY);
	CHECK(!res);
	TARG(g);
	CHECK_EQ(ferry_ctl_get(&ctl, B, &g, &tfault, &res), -FERRY_EBUSY);
	TARG(cm);
	cm.batch_id = first;
	CHECK_EQ(ferry_ctl_commit(&ctl, B, &cm), -FERRY_EBUSY);
	cm.batch_id = 99;
	CHECK_EQ(ferry_ctl_commit(&ctl, A, &cm), -FERRY_EINVAL);

	/* the owner goes away: redelivery, the old id void */
	ferry_ctl_release(&ctl, B);	/* not the owner: no effect */
	ferry_ctl_release(&ctl, NULL);
	CHECK(ctl.owner == A);
	ferry_ctl_release(&ctl, A);
	CHECK(ctl.owner == NULL);
	CHECK(ferry_ctl_pending(&ctl));
	CHECK_EQ(tget_changes(B, &u, &g, &res), 0);
	CHECK_EQ(g.nrecords, 2);
	CHECK(g.batch_flags & FERRY_BATCH_F_REDELIVERY);
	CHECK(!ferry_ctl_pending(&ctl));
	cm.batch_id = first;
	CHECK_EQ(ferry_ctl_commit(&ctl, B, &cm), -FERRY_ESTALE);
	cm.batch_id = g.batch_id;
	tp.events = 0;
	tp.event_calls = 0;
	CHECK_EQ(ferry_ctl_commit(&ctl, B, &cm), 0);
	CHECK_EQ(tp.event_calls, 0);	/* no event, no call */

	/* nothing left: an empty batch */
	CHECK_EQ(tget_changes(B, &u, &g, &res), 0);
	CHECK_EQ(g.batch_id, 0);
	CHECK_EQ(g.bytes, 48);
	tctl_free();
}

void test_ctl_tag(void)
{
	static struct ferry_ioc_tag t;
	static struct ferry_ioc_stats st;
	struct ferry_dev_info info;
	u32 i;
	bool res;

	ferry_test_current = "ctl/tag";
	tinit(2, &tctl_ops);
	TARG(t);
	t.ndevs = 0;
	CHECK_EQ(ferry_ctl_tag(&ctl, &t, &res), -FERRY_EINVAL);
	t.ndevs = 65;
	CHECK_EQ(ferry_ctl_tag(&ctl, &t, &res), -FERRY_EINVAL);
	t.ndevs = 1;
	t.hold_id = 1;			/* a hold never given out */
	CHECK_EQ(ferry_ctl_tag(&ctl, &t, &res), -FERRY_EINVAL);
	t.hold_id = 0;
	t.hold_ms = FERRY_CTL_HOLD_MAX_MS + 1;
	CHECK_EQ(ferry_ctl_tag(&ctl, &t, &res), -FERRY_EINVAL);
	CHECK(!res);
	/* hold_ms 0 takes the platform's setting, which must be valid too */
	t.hold_ms = 0;
	ctl.tag_hold_ms = 0;
	CHECK_EQ(ferry_ctl_tag(&ctl, &t, &res), -FERRY_EINVAL);
	ctl.tag_hold_ms = FERRY_CTL_HOLD_MAX_MS + 1;
	CHECK_EQ(ferry_ctl_tag(&ctl, &t, &res), -FERRY_EINVAL);
	ctl.tag_hold_ms = 123;

	t.ndevs = 2;
	t.devs[0] = 1;
	t.devs[1] = 1;
	t.hold_ns = 5;
	CHECK_EQ(ferry_ctl_tag(&ctl, &t, &res), -FERRY_EINVAL);	/* twice */
	CHECK(!res);
	t.devs[1] = 64;
	CHECK_EQ(ferry_ctl_tag(&ctl, &t, &res), -FERRY_ENODEV);
	CHECK(res);			/* hold_ns (0) comes back */
	CHECK_EQ(t.hold_ns, 0);
	t.devs[1] = 3;
	CHECK_EQ(ferry_ctl_tag(&ctl, &t, &res), -FERRY_ENODEV);
	CHECK(res);
	CHECK_EQ(tp.holds_on, 0);	/* nothing was held so far */

	/* writes in flight on both devices complete inside the hold */
	t.devs[1] = 0;
	tctl_begin_write(0);
	tctl_begin_write(1);
	t.tag_id = 0xabc;
	memset(t.seqs, 0xff, sizeof(t.seqs));
	tp.events = 0;
	CHECK_EQ(ferry_ctl_tag(&ctl, &t, &res), 0);
	CHECK_EQ(tp.last_wait_ms, 123);
	CHECK_EQ(tp.holds_on, 2);
	CHECK_EQ(tp.holds_off, 2);
	CHECK(t.hold_ns >= 1000000);	/* the wait took 1 ms */
	/* START, DIRTY (the write), TAG on each device, in the listed order */
	CHECK_EQ(t.seqs[0], 3);
	CHECK_EQ(t.seqs[1], 3);
	CHECK_EQ(t.seqs[2], 0);
	CHECK_EQ(t.seqs[63], 0);
	CHECK_EQ(ctl.tags_ok, 1);
	CHECK(tp.events & FERRY_EV_READY);
	CHECK(tp.event_dev == NULL);	/* several devices */
	for (i = 0; i < 2; i++) {
		memset(&info, 0, sizeof(info));
		ferry_dev_info(tp.devs[i].core, &info);
		CHECK_EQ(info.flags & FERRY_DEV_F_HOLD, 0);	/* released */
		CHECK_EQ(info.tags, 1);
	}

	/* stuck writes: ETIMEDOUT, hold_ns comes back, nothing inserted */
	tctl_begin_write(0);
	tp.stuck = true;
	t.hold_ms = 50;
	CHECK_EQ(ferry_ctl_tag(&ctl, &t, &res), -FERRY_ETIMEDOUT);
	CHECK(res);
	CHECK(t.hold_ns > 0);
	CHECK_EQ(tp.last_wait_ms, 50);
	CHECK_EQ(ctl.tags_timed_out, 1);
	CHECK_EQ(tp.holds_off, tp.holds_on);		/* revoked */
	memset(&info, 0, sizeof(info));
	ferry_dev_info(tp.devs[0].core, &info);
	CHECK_EQ(info.flags & FERRY_DEV_F_HOLD, 0);
	CHECK_EQ(info.tags, 1);
	tp.stuck = false;
	ferry_io_cancel(tp.devs[0].core, NULL);
	tp.pending[0] = 0;

	TARG(st);
	st.dev_index = FERRY_DEV_NONE;
	CHECK_EQ(ferry_ctl_stats(&ctl, &st), 0);
	CHECK_EQ(st.global.tags_ok, 1);
	CHECK_EQ(st.global.tags_timed_out, 1);
	CHECK_EQ(st.global.tag_hold_last_ns, t.hold_ns);
	CHECK(st.global.tag_hold_max_ns >= st.global.tag_hold_last_ns);

	/* a device in BITMAP mode: ENOSPC before anything is held */
	for (i = 0; i < 300; i++)
		twrite(tp.devs[1].core, (u64)(i % 200) * 4096, 512, 1);
	tp.holds_on = 0;
	CHECK_EQ(ferry_ctl_tag(&ctl, &t, &res), -FERRY_ENOSPC);
	CHECK(res);
	CHECK_EQ(tp.holds_on, 0);
	/* a frozen device: EAGAIN */
	ferry_dev_freeze(tp.devs[0].core);
	t.ndevs = 1;
	t.devs[0] = 0;
	CHECK_EQ(ferry_ctl_tag(&ctl, &t, &res), -FERRY_EAGAIN);
	ferry_dev_thaw(tp.devs[0].core);
	tctl_free();
}

static struct ferry_ioc_hold th;
static struct ferry_ioc_tag tt;
static struct ferry_ioc_release tr;

static void thold_arg(u32 hold_ms, u32 n, const u32 *devs)
{
	u32 i;

	TARG(th);
	th.hold_ms = hold_ms;
	th.ndevs = n;
	for (i = 0; i < n && i < 2; i++)	/* at most 2 listed */
		th.devs[i] = devs[i];
}

static void ttag_at(u64 hold_id, u64 tag_id)
{
	TARG(tt);
	tt.hold_id = hold_id;
	tt.tag_id = tag_id;
}

static void trelease_arg(u64 hold_id)
{
	TARG(tr);
	tr.hold_id = hold_id;
}

/* Device i's info from the core. */
static struct ferry_dev_info tinfo(u32 i)
{
	struct ferry_dev_info info;

	memset(&info, 0, sizeof(info));
	ferry_dev_info(tp.devs[i].core, &info);
	return info;
}

/* HOLD: the checks in order, then nothing was held or armed. */
void test_ctl_hold_args(void)
{
	static const u32 d01[] = { 0, 1 }, d11[] = { 1, 1 }, d5[] = { 5 };
	static const u32 d64[] = { 64 };
	bool res = true;

	ferry_test_current = "ctl/hold_args";
	tinit(3, &tctl_ops);
	thold_arg(100, 0, d01);
	CHECK_EQ(ferry_ctl_hold(&ctl, A, &th, &res), -FERRY_EINVAL);
	CHECK(!res);
	thold_arg(100, 65, d01);
	CHECK_EQ(ferry_ctl_hold(&ctl, A, &th, &res), -FERRY_EINVAL);
	thold_arg(0, 2, d01);		/* no default bound: must be given */
	CHECK_EQ(ferry_ctl_hold(&ctl, A, &th, &res), -FERRY_EINVAL);
	thold_arg(FERRY_CTL_HOLD_MAX_MS + 1, 2, d01);
	CHECK_EQ(ferry_ctl_hold(&ctl, A, &th, &res), -FERRY_EINVAL);
	thold_arg(100, 2, d01);
	th.reserved = 1;
	CHECK_EQ(ferry_ctl_hold(&ctl, A, &th, &res), -FERRY_EINVAL);
	/* a device twice is malformed even next to an unknown one */
	thold_arg(100, 2, d11);
	CHECK_EQ(ferry_ctl_hold(&ctl, A, &th, &res), -FERRY_EINVAL);
	CHECK(!res);
	thold_arg(100, 1, d5);
	th.hold_id = 9;
	CHECK_EQ(ferry_ctl_hold(&ctl, A, &th, &res), -FERRY_ENODEV);
	CHECK(res);			/* hold_id and drain_ns (0) come back */
	CHECK_EQ(th.hold_id, 0);
	thold_arg(100, 1, d64);
	CHECK_EQ(ferry_ctl_hold(&ctl, A, &th, &res), -FERRY_ENODEV);
	/* device state: a frozen device, then one in BITMAP mode */
	ferry_dev_freeze(tp.devs[1].core);
	thold_arg(100, 2, d01);
	CHECK_EQ(ferry_ctl_hold(&ctl, A, &th, &res), -FERRY_EAGAIN);
	ferry_dev_thaw(tp.devs[1].core);
	CHECK_EQ(tp.holds_on, 0);
	CHECK_EQ(tp.arms, 0);
	CHECK_EQ(ctl.last_hold_id, 0);

	/* RELEASE and TAG .hold_id: malformed, never given out, then stale */
	trelease_arg(0);
	CHECK_EQ(ferry_ctl_release_hold(&ctl, &tr), -FERRY_EINVAL);
	trelease_arg(1);
	CHECK_EQ(ferry_ctl_release_hold(&ctl, &tr), -FERRY_EINVAL);
	trelease_arg(0);
	tr.reserved = 1;
	CHECK_EQ(ferry_ctl_release_hold(&ctl, &tr), -FERRY_EINVAL);
	ttag_at(1, 7);
	CHECK_EQ(ferry_ctl_tag(&ctl, &tt, &res), -FERRY_EINVAL);
	CHECK(!res);
	thold_arg(100, 2, d01);
	CHECK_EQ(ferry_ctl_hold(&ctl, A, &th, &res), 0);
	ttag_at(th.hold_id, 7);
	tt.ndevs = 2;			/* the devices come from the hold */
	CHECK_EQ(ferry_ctl_tag(&ctl, &tt, &res), -FERRY_EINVAL);
	ttag_at(th.hold_id, 7);
	tt.hold_ms = 10;
	CHECK_EQ(ferry_ctl_tag(&ctl, &tt, &res), -FERRY_EINVAL);
	CHECK(ferry_ctl_holding(&ctl));	/* refused calls changed nothing */
	trelease_arg(th.hold_id);
	CHECK_EQ(ferry_ctl_release_hold(&ctl, &tr), 0);
	tctl_free();
}

/* HOLD, then TAG at its cut: exactly the held devices, one cut, released. */
void test_ctl_hold_commit(void)
{
	static const u32 d20[] = { 2, 0 };
	static struct ferry_ioc_stats st;
	struct ferry_dev_info info;
	u64 id, held;
	u32 i;
	bool res;

	ferry_test_current = "ctl/hold_commit";
	tinit(3, &tctl_ops);
	tctl_begin_write(0);		/* in flight when the hold begins */
	tctl_begin_write(1);		/* on a device not held */
	tp.drain_ns = 40000000;		/* the drain takes 40 ms */
	thold_arg(300, 2, d20);
	CHECK_EQ(ferry_ctl_hold(&ctl, A, &th, &res), 0);
	id = th.hold_id;
	CHECK_EQ(id, 1);
	CHECK(th.drain_ns >= 40000000 && th.drain_ns < 41000000);
	CHECK_EQ(tp.last_wait_ms, 300);
	/* the release is armed for what is left of the 300 ms bound */
	CHECK(tp.armed);
	CHECK(tp.armed_at_ns <= tp.clock_ns + 300000000 - th.drain_ns);
	CHECK(tp.armed_at_ns + 1000000 > tp.clock_ns + 300000000 - th.drain_ns);
	CHECK(ferry_ctl_holding(&ctl));
	CHECK(tinfo(0).flags & FERRY_DEV_F_HOLD);
	CHECK(tinfo(2).flags & FERRY_DEV_F_HOLD);
	CHECK_EQ(tinfo(1).flags & FERRY_DEV_F_HOLD, 0);
	/* new writes wait; other calls go on meanwhile */
	CHECK_EQ(ferry_io_begin(tp.devs[0].core, NULL, 0, 4096), 1);
	CHECK_EQ(ferry_io_begin(tp.devs[1].core, NULL, 0, 4096), 0);
	tp.pending[1]++;
	/* one hold at a time; a TAG of its own waits for it too */
	thold_arg(300, 1, d20 + 1);
	CHECK_EQ(ferry_ctl_hold(&ctl, B, &th, &res), -FERRY_EBUSY);
	CHECK(res);
	TARG(tt);
	tt.ndevs = 1;
	tt.devs[0] = 1;
	CHECK_EQ(ferry_ctl_tag(&ctl, &tt, &res), -FERRY_EBUSY);
	CHECK_EQ(ctl.hold.id, id);

	tp.clock_ns += 100000000;	/* 100 ms of network round */
	ttag_at(id, 0x5151);
	memset(tt.seqs, 0xff, sizeof(tt.seqs));
	memset(tt.devs, 0xff, sizeof(tt.devs));
	CHECK_EQ(ferry_ctl_tag(&ctl, &tt, &res), 0);
	CHECK_EQ(tt.ndevs, 2);
	CHECK_EQ(tt.devs[0], 2);	/* in the hold's order */
	CHECK_EQ(tt.devs[1], 0);
	CHECK_EQ(tt.devs[2], 0);
	CHECK_EQ(tt.seqs[0], 2);	/* START, TAG */
	CHECK_EQ(tt.seqs[1], 3);	/* START, DIRTY (the drained write), TAG */
	CHECK_EQ(tt.seqs[2], 0);
	CHECK(tt.hold_ns >= 140000000 && tt.hold_ns < 150000000);
	held = tt.hold_ns;
	CHECK(!ferry_ctl_holding(&ctl));
	CHECK(!tp.armed);
	CHECK_EQ(tp.holds_off, 2);
	for (i = 0; i < 3; i++) {
		info = tinfo(i);
		CHECK_EQ(info.flags & FERRY_DEV_F_HOLD, 0);
		CHECK_EQ(info.tags, i == 1 ? 0 : 1);	/* exactly the held */
	}
	/* the same hold again: ended */
	ttag_at(id, 0x5152);
	CHECK_EQ(ferry_ctl_tag(&ctl, &tt, &res), -FERRY_ESTALE);
	trelease_arg(id);
	CHECK_EQ(ferry_ctl_release_hold(&ctl, &tr), -FERRY_ESTALE);
	CHECK_EQ(tinfo(0).tags, 1);

	TARG(st);
	st.dev_index = FERRY_DEV_NONE;
	CHECK_EQ(ferry_ctl_stats(&ctl, &st), 0);
	CHECK_EQ(st.holds.holds_ok, 1);
	CHECK_EQ(st.holds.holds_expired, 0);
	CHECK_EQ(st.holds.holds_aborted, 0);
	CHECK_EQ(st.holds.hold_max_ns, held);
	CHECK_EQ(st.global.tags_ok, 1);
	CHECK_EQ(st.global.tag_hold_last_ns, held);
	ferry_io_cancel(tp.devs[1].core, NULL);
	ferry_io_cancel(tp.devs[1].core, NULL);
	tp.pending[1] = 0;
	tctl_free();
}

/* The bound: a drain that takes too long, a hold nobody ends. */
void test_ctl_hold_bound(void)
{
	static const u32 d01[] = { 0, 1 };
	static struct ferry_ioc_stats st;
	u64 id, start;
	u32 tags0;
	bool res;

	ferry_test_current = "ctl/hold_bound";
	tinit(2, &tctl_ops);
	/* stuck writes: ETIMEDOUT, released, drain_ns comes back */
	tctl_begin_write(1);
	tp.stuck = true;
	thold_arg(50, 2, d01);
	CHECK_EQ(ferry_ctl_hold(&ctl, A, &th, &res), -FERRY_ETIMEDOUT);
	CHECK(res);
	CHECK_EQ(tp.last_wait_ms, 50);
	CHECK_EQ(th.hold_id, 0);
	CHECK(!ferry_ctl_holding(&ctl));
	CHECK(!tp.armed);
	CHECK_EQ(tp.holds_off, tp.holds_on);
	CHECK_EQ(tinfo(0).flags & FERRY_DEV_F_HOLD, 0);
	tp.stuck = false;
	ferry_io_cancel(tp.devs[1].core, NULL);
	tp.pending[1] = 0;
	/* drained, but after the whole bound: nothing left to hold */
	tp.drain_ns = 50000000;
	CHECK_EQ(ferry_ctl_hold(&ctl, A, &th, &res), -FERRY_ETIMEDOUT);
	CHECK(th.drain_ns >= 50000000);
	CHECK(!ferry_ctl_holding(&ctl));
	tp.drain_ns = 0;

	/* nobody commits: the armed release ends the hold at its bound */
	start = tp.clock_ns;
	thold_arg(200, 2, d01);
	CHECK_EQ(ferry_ctl_hold(&ctl, A, &th, &res), 0);
	id = th.hold_id;
	CHECK(id > 0);
	CHECK(tp.armed);
	CHECK(tp.armed_at_ns <= start + 200000000 + 1000000);
	CHECK(!tctl_fire(start + 150000000));	/* not due yet */
	CHECK(ferry_ctl_holding(&ctl));
	/* a timer that fires early arms again for the rest */
	tp.armed_at_ns = tp.clock_ns;
	CHECK(tctl_fire(tp.clock_ns));
	CHECK(ferry_ctl_holding(&ctl));
	CHECK(tp.armed);
	CHECK(tp.armed_at_ns >= start + 199000000);
	CHECK(tctl_fire(start + 201000000));
	CHECK(!ferry_ctl_holding(&ctl));
	CHECK_EQ(tinfo(0).flags & FERRY_DEV_F_HOLD, 0);
	CHECK_EQ(tinfo(1).flags & FERRY_DEV_F_HOLD, 0);
	CHECK_EQ(ferry_io_begin(tp.devs[0].core, NULL, 0, 4096), 0);
	ferry_io_cancel(tp.devs[0].core, NULL);
	/* a late commit: ESTALE, no TAG record anywhere */
	tags0 = tinfo(0).tags + tinfo(1).tags;
	ttag_at(id, 77);
	CHECK_EQ(ferry_ctl_tag(&ctl, &tt, &res), -FERRY_ESTALE);
	CHECK(res);
	CHECK_EQ(tt.hold_ns, 0);
	CHECK_EQ(tinfo(0).tags + tinfo(1).tags, tags0);
	trelease_arg(id);
	CHECK_EQ(ferry_ctl_release_hold(&ctl, &tr), -FERRY_ESTALE);
	/* a stale firing after the hold ended does nothing */
	ferry_ctl_hold_timer(&ctl);
	CHECK(!tp.armed);

	TARG(st);
	st.dev_index = FERRY_DEV_NONE;
	CHECK_EQ(ferry_ctl_stats(&ctl, &st), 0);
	CHECK_EQ(st.holds.holds_ok, 0);
	CHECK_EQ(st.holds.holds_expired, 1);
	CHECK_EQ(st.holds.holds_aborted, 2);	/* the two drain timeouts */
	CHECK(st.holds.hold_max_ns >= 200000000);
	tctl_free();
}

/* RELEASE (twice), the owner's close, the detach of a held device. */
void test_ctl_hold_release(void)
{
	static const u32 d01[] = { 0, 1 };
	static struct ferry_ioc_stats st;
	bool res;

	ferry_test_current = "ctl/hold_release";
	tinit(3, &tctl_ops);
	thold_arg(1000, 2, d01);
	CHECK_EQ(ferry_ctl_hold(&ctl, A, &th, &res), 0);
	tp.clock_ns += 5000000;
	trelease_arg(th.hold_id);
	CHECK_EQ(ferry_ctl_release_hold(&ctl, &tr), 0);
	CHECK(tr.held_ns >= 5000000);
	CHECK(!ferry_ctl_holding(&ctl));
	CHECK(!tp.armed);
	CHECK_EQ(tinfo(1).flags & FERRY_DEV_F_HOLD, 0);
	CHECK_EQ(ferry_ctl_release_hold(&ctl, &tr), -FERRY_ESTALE);
	CHECK_EQ(tr.held_ns, 0);
	CHECK_EQ(tinfo(0).tags + tinfo(1).tags, 0);

	/* another file's close leaves it; the owner's close releases it */
	CHECK_EQ(ferry_ctl_hold(&ctl, A, &th, &res), 0);
	CHECK_EQ(th.hold_id, 2);
	ferry_ctl_release(&ctl, B);
	CHECK(ferry_ctl_holding(&ctl));
	ferry_ctl_release(&ctl, A);
	CHECK(!ferry_ctl_holding(&ctl));
	CHECK(!tp.armed);
	CHECK_EQ(tinfo(0).flags & FERRY_DEV_F_HOLD, 0);
	ttag_at(2, 1);
	CHECK_EQ(ferry_ctl_tag(&ctl, &tt, &res), -FERRY_ESTALE);

	/* a held device goes away: the hold ends (its cut cannot cover it) */
	CHECK_EQ(ferry_ctl_hold(&ctl, B, &th, &res), 0);
	ferry_ctl_detach(&ctl, &tp.devs[2]);	/* not held: no effect */
	CHECK(ferry_ctl_holding(&ctl));
	ferry_ctl_detach(&ctl, &tp.devs[1]);
	CHECK(!ferry_ctl_holding(&ctl));
	CHECK_EQ(tinfo(0).flags & FERRY_DEV_F_HOLD, 0);
	CHECK_EQ(tinfo(1).flags & FERRY_DEV_F_HOLD, 0);
	ttag_at(th.hold_id, 1);
	CHECK_EQ(ferry_ctl_tag(&ctl, &tt, &res), -FERRY_ESTALE);

	TARG(st);
	st.dev_index = FERRY_DEV_NONE;
	CHECK_EQ(ferry_ctl_stats(&ctl, &st), 0);
	CHECK_EQ(st.holds.holds_aborted, 3);
	CHECK_EQ(st.holds.holds_ok + st.holds.holds_expired, 0);
	tctl_free();
}

/* A cut that fails at commit (ring full) still ends the hold. */
void test_ctl_hold_failed_cut(void)
{
	static const u32 d0[] = { 0 };
	bool res;
	u32 n = 0;

	ferry_test_current = "ctl/hold_failed_cut";
	tinit(1, &tctl_ops);
	thold_arg(1000, 1, d0);
	CHECK_EQ(ferry_ctl_hold(&ctl, A, &th, &res), 0);
	/* resync marks fill the ring while writes are held */
	while (n < 10000) {
		u64 seq;
		u32 ev = 0;

		if (ferry_dev_resync_mark(tp.devs[0].core, 0, 4096, &seq, &ev))
			break;
		n++;
	}
	CHECK(n > 0 && n < 10000);
	ttag_at(th.hold_id, 3);
	CHECK_EQ(ferry_ctl_tag(&ctl, &tt, &res), -FERRY_ENOSPC);
	CHECK(res);
	CHECK(!ferry_ctl_holding(&ctl));
	CHECK_EQ(tinfo(0).flags & FERRY_DEV_F_HOLD, 0);
	CHECK_EQ(tinfo(0).tags, 0);
	CHECK_EQ(ctl.hold_stats.holds_aborted, 1);
	tctl_free();
}

/* The steps a platform's own tag uses (the VSS freeze point). */
void test_ctl_tag_steps(void)
{
	struct ferry_ctl_dev *d;
	struct ferry_dev_info info;
	u64 seq = 0;
	u32 ev = 0;

	ferry_test_current = "ctl/tag_steps";
	tinit(2, &tctl_ops);
	d = &tp.devs[1];
	CHECK_EQ(ferry_ctl_hold_cut(&ctl, &d, 1, 9, 40, &seq, &ev), 0);
	CHECK_EQ(seq, 2);
	memset(&info, 0, sizeof(info));
	ferry_dev_info(d->core, &info);
	CHECK(info.flags & FERRY_DEV_F_HOLD);	/* still held */
	ferry_ctl_unhold(&ctl, &d, 1);
	memset(&info, 0, sizeof(info));
	ferry_dev_info(d->core, &info);
	CHECK_EQ(info.flags & FERRY_DEV_F_HOLD, 0);
	tp.events = 0;
	ferry_ctl_tag_done(&ctl, d, 0, ev);
	CHECK_EQ(ctl.tags_ok, 1);
	CHECK(tp.event_dev == d);
	CHECK(tp.events & FERRY_EV_READY);

	tctl_begin_write(1);
	tp.stuck = true;
	ev = 0;
	CHECK_EQ(ferry_ctl_hold_cut(&ctl, &d, 1, 10, 40, &seq, &ev),
		 -FERRY_ETIMEDOUT);
	CHECK_EQ(tp.last_wait_ms, 40);
	CHECK_EQ(tp.holds_on, 2);
	CHECK_EQ(tp.holds_off, 1);	/* the caller releases */
	ferry_ctl_unhold(&ctl, &d, 1);
	tp.event_calls = 0;
	ferry_ctl_tag_done(&ctl, d, -FERRY_ETIMEDOUT, ev);
	CHECK_EQ(ctl.tags_timed_out, 1);
	CHECK_EQ(tp.event_calls, 0);
	ferry_ctl_tag_done(&ctl, d, -FERRY_ENOSPC, 0);
	CHECK_EQ(ctl.tags_ok + ctl.tags_timed_out, 2);
	tp.stuck = false;
	ferry_io_cancel(d->core, NULL);
	tp.pending[1] = 0;
	tctl_free();
}

/* A device of `size` bytes at 4 KiB a bit, every bit set, tracked at 1. */
static struct ferry_ctl_dev *tbig(u64 size)
{
	static struct ferry_ctl_dev big;
	struct ferry_dev_config cfg = tcfg(size, 4096, 256, 1 << 16);

	memset(&big, 0, sizeof(big));
	big.index = -1;
	big.core = tdev_clean(&cfg, 1);
	ferry_dev_start(big.core, FERRY_START_NEW, 2, 10, 1 << 20);
	CHECK_EQ(ferry_ctl_attach(&ctl, &big, -1), 1);
	return &big;
}

static void tbig_free(struct ferry_ctl_dev *big)
{
	ferry_ctl_detach(&ctl, big);
	ferry_dev_destroy(big->core);
}

void test_ctl_bitmap(void)
{
	static u8 mem[40000], direct[40000];
	struct tubuf u = tub(mem, sizeof(mem));
	struct ferry_ctl_out o = tout(&u), od;
	struct ferry_ioc_bitmap bm, bd;
	struct ferry_ctl_dev *big;
	u32 i;

	ferry_test_current = "ctl/bitmap";
	tinit(1, &tctl_ops);
	/* 1 GiB: 262144 bits, 32768 bytes: 8 bounce chunks, 1 direct one */
	big = tbig(1ULL << 30);
	TARG(bm);
	bm.dev_index = 1;
	bm.buf_len = 32;
	bm.flags = 2;
	CHECK_EQ(ferry_ctl_get_bitmap(&ctl, &bm, &o), -FERRY_EINVAL);
	bm.flags = 0;
	bm.reserved = 1;
	CHECK_EQ(ferry_ctl_get_bitmap(&ctl, &bm, &o), -FERRY_EINVAL);
	bm.reserved = 0;
	bm.buf_len = 0;
	CHECK_EQ(ferry_ctl_get_bitmap(&ctl, &bm, &o), -FERRY_EINVAL);
	bm.buf_len = 32;
	bm.dev_index = 9;
	/* the buffer's verdict comes before the device */
	CHECK_EQ(ferry_ctl_get_bitmap(&ctl, &bm, &tfault), -FERRY_EFAULT);
	CHECK_EQ(ferry_ctl_get_bitmap(&ctl, &bm, &o), -FERRY_ENODEV);
	bm.dev_index = 1;
	bm.start_byte = 32768;
	CHECK_EQ(ferry_ctl_get_bitmap(&ctl, &bm, &o), -FERRY_ERANGE);
	CHECK_EQ(u.copies, 0);

	/* the whole bitmap with a cut, through copy(): clipped at its end */
	bm.start_byte = 0;
	bm.flags = FERRY_BITMAP_F_CUT;
	bm.buf_len = sizeof(mem);
	tp.event_dev = NULL;
	CHECK_EQ(ferry_ctl_get_bitmap(&ctl, &bm, &o), 0);
	CHECK_EQ(bm.returned, 32768);
	CHECK_EQ(u.copies, 8);
	CHECK_EQ(bm.nbits, 262144);
	CHECK_EQ(bm.dirty_bits, 262144);
	CHECK_EQ(bm.granularity, 4096);
	CHECK_EQ(bm.cut_seq, 11);	/* START was 10 */
	CHECK(tp.event_dev == big);	/* the cut's events, of that device */
	for (i = 0; i < 32768; i++)
		if (mem[i] != 0xff)
			break;
	CHECK_EQ(i, 32768);
	CHECK_EQ(mem[32768], 0xee);

	/* the same into plain memory: one chunk, the same answer */
	memset(&od, 0, sizeof(od));
	od.mem = direct;
	od.len = sizeof(direct);
	TARG(bd);
	bd.dev_index = 1;
	bd.start_byte = 100;
	bd.buf_len = sizeof(direct);
	CHECK_EQ(ferry_ctl_get_bitmap(&ctl, &bd, &od), 0);
	CHECK_EQ(bd.returned, 32768 - 100);
	CHECK_EQ(bd.epoch, bm.epoch);
	CHECK_EQ(bd.cut_seq, 0);
	CHECK_EQ(direct[0], 0xff);

	/* a fault on the third chunk */
	u = tub(mem, sizeof(mem));
	u.fail_at = 2 * 4096 + 1;
	o = tout(&u);
	bm.flags = 0;
	bm.returned = 5;
	CHECK_EQ(ferry_ctl_get_bitmap(&ctl, &bm, &o), -FERRY_EFAULT);
	CHECK_EQ(u.copies, 3);
	CHECK_EQ(bm.returned, 5);
	tbig_free(big);
	tctl_free();
}

void test_ctl_clear_resync(void)
{
	struct ferry_ioc_bitmap bm;
	struct ferry_ioc_clear_bitmap cl;
	struct ferry_ioc_resync rs;
	static u8 mem[64];
	struct ferry_ctl_out o = { .mem = mem, .len = sizeof(mem) };
	bool res;

	ferry_test_current = "ctl/clear_resync";
	tinit(1, &tctl_ops);
	/* DRAINING: a NEW start sets every bit */
	ferry_dev_start(tp.devs[0].core, FERRY_START_NEW, 2, 10, 1 << 20);
	TARG(bm);
	bm.flags = FERRY_BITMAP_F_CUT;
	bm.buf_len = 32;
	CHECK_EQ(ferry_ctl_get_bitmap(&ctl, &bm, &o), 0);

	TARG(cl);
	cl.epoch = bm.epoch + 1;
	cl.nbits = 256;
	CHECK_EQ(ferry_ctl_clear_bitmap(&ctl, &cl, &res), -FERRY_ESTALE);
	CHECK(res);			/* dirty_bits comes back */
	CHECK_EQ(cl.dirty_bits, 256);
	cl.epoch = bm.epoch;
	cl.reserved = 1;
	CHECK_EQ(ferry_ctl_clear_bitmap(&ctl, &cl, &res), -FERRY_EINVAL);
	CHECK(!res);
	cl.reserved = 0;
	cl.dev_index = 2;
	CHECK_EQ(ferry_ctl_clear_bitmap(&ctl, &cl, &res), -FERRY_ENODEV);
	CHECK(!res);
	cl.dev_index = 0;
	cl.start_bit = 250;
	cl.nbits = 7;
	CHECK_EQ(ferry_ctl_clear_bitmap(&ctl, &cl, &res), -FERRY_ERANGE);
	CHECK(res);
	cl.start_bit = 0;
	cl.nbits = 256;
	tp.events = 0;
	CHECK_EQ(ferry_ctl_clear_bitmap(&ctl, &cl, &res), 0);
	CHECK_EQ(cl.dirty_bits, 0);
	CHECK(tp.events & FERRY_EV_MODE);	/* DRAINING -> DATA */
	CHECK(tp.event_dev == &tp.devs[0]);

	TARG(rs);
	rs.length = 0;
	CHECK_EQ(ferry_ctl_resync(&ctl, &rs), -FERRY_EINVAL);
	rs.length = 2;
	rs.offset = (1 << 20) - 1;
	CHECK_EQ(ferry_ctl_resync(&ctl, &rs), -FERRY_ERANGE);
	rs.offset = 0;
	rs.dev_index = 1;
	CHECK_EQ(ferry_ctl_resync(&ctl, &rs), -FERRY_ENODEV);
	rs.dev_index = FERRY_DEV_NONE;
	CHECK_EQ(ferry_ctl_resync(&ctl, &rs), -FERRY_ENODEV);
	rs.dev_index = 0;
	rs.length = 65536;
	tp.event_dev = NULL;
	CHECK_EQ(ferry_ctl_resync(&ctl, &rs), 0);
	CHECK_EQ(rs.seq, 13);		/* after the cut and the MODE record */
	CHECK(tp.event_dev == &tp.devs[0]);
	tctl_free();
}
