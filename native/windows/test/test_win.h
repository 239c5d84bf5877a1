/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Host tests of ferryflt's portable parts (ctl_calls.c, dsm.c) with the
 * user-space platform shim of native/common/test, its harness and the
 * fake platform of the control calls (ctl_fake.h).
 */
#ifndef FERRY_TEST_WIN_H
#define FERRY_TEST_WIN_H

#include "ctl_fake.h"
#include "ctl_calls.h"
#include "dsm.h"

/* The Windows control device over the fake platform. */
extern struct ferry_win_ctl twc;
extern int trescan_ret;

/* Fresh control device with n devices (tctl_setup). */
void tplat_init(u32 n);
void tplat_free(void);

/* One call; the caller's handle is `caller`. */
struct ferry_ctl_result tcall(const void *caller, u32 code, void *buf,
			      u32 in_len, u32 out_len);
struct ferry_ctl_result tcall_direct(const void *caller, u32 code, void *in,
				     u32 in_len, void *data, u64 data_len);

void test_ctl_all(void);
void test_dsm_all(void);

#endif /* FERRY_TEST_WIN_H */
