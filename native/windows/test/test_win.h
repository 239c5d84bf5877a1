/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Host tests of ferryflt's portable parts (ctl_ops.c, dsm.c) with the
 * user-space platform shim of native/common/test and its harness.
 */
#ifndef FERRY_TEST_WIN_H
#define FERRY_TEST_WIN_H

#include "harness.h"
#include "ctl_ops.h"
#include "dsm.h"

/* A fake platform under ferry_ctl: devices, held writes, a clock. */
struct tplat {
	struct ferry_ctl ctl;
	struct ferry_ctl_dev devs[4];
	u32 pending[4];		/* writes in flight per device (admitted) */
	bool stuck;		/* in-flight writes never complete */
	u32 holds_on, holds_off;
	u32 last_wait_ms;
	u64 clock_ns;
	u32 events;
	int rescan_ret;
	/* VSS forward() */
	u32 forward_calls;
	u32 forward_ms;
	bool forward_completes;
};

extern struct tplat tp;

/* Fresh platform with n devices of 1 MiB (4 KiB bits, DATA mode). */
void tplat_init(u32 n);
void tplat_free(void);
/* Admits a write on device i that stays in flight. */
void tplat_begin_write(u32 i);

/* One call; the caller's handle is `caller`. */
struct ferry_ctl_result tcall(const void *caller, u32 code, void *buf,
			      u32 in_len, u32 out_len);
struct ferry_ctl_result tcall_direct(const void *caller, u32 code, void *in,
				     u32 in_len, void *data, u64 data_len);

/* size/version header of an argument struct. */
#define TARG(a) do {						\
		memset(&(a), 0, sizeof(a));			\
		(a).size = sizeof(a);				\
		(a).version = FERRY_ABI_VERSION;		\
	} while (0)

void test_ctl_all(void);
void test_dsm_all(void);

#endif /* FERRY_TEST_WIN_H */
