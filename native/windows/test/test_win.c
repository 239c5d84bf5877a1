// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * The fake platform for the control calls, and main().  The fake keeps
 * the contract of ferry_ctl_ops: hold() sets the core's hold, and
 * wait_drained() completes the writes in flight unless told they are
 * stuck (then it times out like the driver's wait).
 */
#include "test_win.h"

struct tplat tp;

static void fp_hold(struct ferry_ctl *c, struct ferry_ctl_dev *d, bool on)
{
	(void)c;
	ferry_dev_hold(d->core, on);
	if (on)
		tp.holds_on++;
	else
		tp.holds_off++;
}

static int fp_wait_drained(struct ferry_ctl *c, struct ferry_ctl_dev **devs,
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
	tp.clock_ns += 1000000;	/* the wait took 1 ms */
	return 0;
}

static u64 fp_now(struct ferry_ctl *c)
{
	(void)c;
	return tp.clock_ns += 1000;
}

static void fp_events(struct ferry_ctl *c, struct ferry_ctl_dev *d, u32 ev)
{
	(void)c;
	(void)d;
	tp.events |= ev;
}

static int fp_rescan(struct ferry_ctl *c, struct ferry_win_rescan *out)
{
	(void)c;
	out->started = 2;
	out->failed = 1;
	return tp.rescan_ret;
}

static const struct ferry_ctl_ops fp_ops = {
	.hold = fp_hold,
	.wait_drained = fp_wait_drained,
	.now_ns = fp_now,
	.events = fp_events,
	.rescan = fp_rescan,
};

void tplat_init(u32 n)
{
	struct ferry_dev_config cfg = tcfg(1 << 20, 4096, 256, 1 << 16);
	u32 i;

	memset(&tp, 0, sizeof(tp));
	tp.clock_ns = 1000000000ULL;
	ferry_ctl_init(&tp.ctl, &fp_ops, &tp);
	for (i = 0; i < n; i++) {
		tp.devs[i].core = tdev_clean(&cfg, 1);
		snprintf(tp.devs[i].name, sizeof(tp.devs[i].name),
			 "Volume{0000000%u-test}", i);
		CHECK_EQ(ferry_ctl_attach(&tp.ctl, &tp.devs[i]), i);
	}
}

void tplat_free(void)
{
	u32 i;

	for (i = 0; i < 4; i++) {
		if (!tp.devs[i].core)
			continue;
		ferry_ctl_detach(&tp.ctl, &tp.devs[i]);
		ferry_dev_destroy(tp.devs[i].core);
		tp.devs[i].core = NULL;
	}
}

void tplat_begin_write(u32 i)
{
	/* untracked (no list entry): the tests only count writes in flight */
	CHECK_EQ(ferry_io_begin(tp.devs[i].core, NULL, 0, 4096), 0);
	tp.pending[i]++;
}

struct ferry_ctl_result tcall(const void *caller, u32 code, void *buf,
			      u32 in_len, u32 out_len)
{
	return ferry_ctl_call(&tp.ctl, caller, code, buf, in_len, out_len,
			      NULL, 0);
}

struct ferry_ctl_result tcall_direct(const void *caller, u32 code, void *in,
				     u32 in_len, void *data, u64 data_len)
{
	return ferry_ctl_call(&tp.ctl, caller, code, in, in_len, 0, data,
			      data_len);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} tests[] = {
		{ "ctl", test_ctl_all },
		{ "dsm", test_dsm_all },
	};
	size_t k;
	int before;

	for (k = 0; k < sizeof(tests) / sizeof(tests[0]); k++) {
		if (argc > 1 && strcmp(argv[1], tests[k].name))
			continue;
		ferry_test_current = tests[k].name;
		before = ferry_test_failures;
		tests[k].fn();
		printf("%s %s\n", ferry_test_failures == before ? "ok  " : "FAIL",
		       tests[k].name);
	}
	if (ferry_test_failures) {
		printf("%d check(s) failed\n", ferry_test_failures);
		return 1;
	}
	printf("all windows host tests passed\n");
	return 0;
}
