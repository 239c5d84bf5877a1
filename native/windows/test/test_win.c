// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * The Windows control device over the fake platform of the control calls
 * (../../common/test/ctl_fake.h), and main().
 */
#include "test_win.h"

struct ferry_win_ctl twc;
int trescan_ret;

static int fp_rescan(struct ferry_win_ctl *w, struct ferry_win_rescan *out)
{
	(void)w;
	out->started = 2;
	out->failed = 1;
	return trescan_ret;
}

void tplat_init(u32 n)
{
	ferry_win_ctl_init(&twc, &tctl_ops, fp_rescan);
	trescan_ret = 0;
	tctl_setup(&twc.ctl, n);
}

void tplat_free(void)
{
	tctl_free();
}

struct ferry_ctl_result tcall(const void *caller, u32 code, void *buf,
			      u32 in_len, u32 out_len)
{
	return ferry_win_ctl_call(&twc, caller, code, buf, in_len, out_len,
				  NULL, 0);
}

struct ferry_ctl_result tcall_direct(const void *caller, u32 code, void *in,
				     u32 in_len, void *data, u64 data_len)
{
	return ferry_win_ctl_call(&twc, caller, code, in, in_len, 0, data,
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
