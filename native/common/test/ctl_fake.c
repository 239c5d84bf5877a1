// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* The fake platform of the control calls (see ctl_fake.h). */
#include "ctl_fake.h"

struct tctl tp;

static void fake_hold(struct ferry_ctl *c, struct ferry_ctl_dev *d, bool on)
{
	(void)c;
	ferry_dev_hold(d->core, on);
	if (on)
		tp.holds_on++;
	else
		tp.holds_off++;
}

static int fake_wait_drained(struct ferry_ctl *c, struct ferry_ctl_dev **devs,
			     u32 n, u32 ms)
{
	u32 i, k;

	(void)c;
	tp.last_wait_ms = ms;
	for (i = 0; i < n; i++) {
		u32 idx = (u32)(devs[i] - tp.devs);

		if (tp.stuck && tp.pending[idx])
			return -FERRY_ETIMEDOUT;
		/* the writes in flight complete (4 KiB each, no payload) */
		for (k = 0; k < tp.pending[idx]; k++)
			tp.events |= ferry_capture_failed(devs[i]->core, NULL,
							  k * 4096, 4096);
		tp.pending[idx] = 0;
		if (ferry_dev_inflight(devs[i]->core))
			return -FERRY_ETIMEDOUT;
	}
	tp.clock_ns += tp.drain_ns ? tp.drain_ns : 1000000;	/* 1 ms */
	return 0;
}

static u64 fake_now(struct ferry_ctl *c)
{
	(void)c;
	return tp.clock_ns += 1000;
}

static void fake_events(struct ferry_ctl *c, struct ferry_ctl_dev *d, u32 ev)
{
	(void)c;
	tp.events |= ev;
	tp.event_calls++;
	tp.event_dev = d;
}

static void fake_describe(struct ferry_ctl *c, struct ferry_ctl_dev *d,
			  struct ferry_dev_info *info)
{
	(void)c;
	tp.describes++;
	info->dev_major = 7 + (u32)d->index;
	snprintf(info->name, sizeof(info->name), "dm-%d", d->index);
}

static void fake_arm_release(struct ferry_ctl *c, u64 ns)
{
	(void)c;
	tp.armed = true;
	tp.armed_at_ns = tp.clock_ns + ns;
	tp.arms++;
}

static void fake_cancel_release(struct ferry_ctl *c)
{
	(void)c;
	tp.armed = false;
	tp.cancels++;
}

const struct ferry_ctl_ops tctl_ops = {
	.hold = fake_hold,
	.wait_drained = fake_wait_drained,
	.now_ns = fake_now,
	.events = fake_events,
	.arm_release = fake_arm_release,
	.cancel_release = fake_cancel_release,
};

const struct ferry_ctl_ops tctl_ops_describe = {
	.hold = fake_hold,
	.wait_drained = fake_wait_drained,
	.now_ns = fake_now,
	.events = fake_events,
	.describe = fake_describe,
	.arm_release = fake_arm_release,
	.cancel_release = fake_cancel_release,
};

bool tctl_fire(u64 ns)
{
	if (ns > tp.clock_ns)
		tp.clock_ns = ns;
	if (!tp.armed || tp.clock_ns < tp.armed_at_ns)
		return false;
	tp.armed = false;
	ferry_ctl_hold_timer(tp.ctl);
	return true;
}

void tctl_setup(struct ferry_ctl *c, u32 n)
{
	struct ferry_dev_config cfg = tcfg(1 << 20, 4096, 256, 1 << 16);
	u32 i;

	memset(&tp, 0, sizeof(tp));
	tp.ctl = c;
	tp.clock_ns = 1000000000ULL;
	for (i = 0; i < n; i++) {
		tp.devs[i].core = tdev_clean(&cfg, 1);
		tp.devs[i].index = -1;
		snprintf(tp.devs[i].name, sizeof(tp.devs[i].name),
			 "Volume{0000000%u-test}", i);
		CHECK_EQ(ferry_ctl_attach(c, &tp.devs[i], -1), i);
	}
}

void tctl_free(void)
{
	u32 i;

	for (i = 0; i < TCTL_DEVS; i++) {
		if (!tp.devs[i].core)
			continue;
		ferry_ctl_detach(tp.ctl, &tp.devs[i]);
		ferry_dev_destroy(tp.devs[i].core);
		tp.devs[i].core = NULL;
	}
}

void tctl_begin_write(u32 i)
{
	/* untracked (no list entry): the tests only count writes in flight */
	CHECK_EQ(ferry_io_begin(tp.devs[i].core, NULL, 0, 4096), 0);
	tp.pending[i]++;
}
