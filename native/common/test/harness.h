/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* A minimal test harness and helpers for driving the core like a driver. */
#ifndef FERRY_TEST_HARNESS_H
#define FERRY_TEST_HARNESS_H

#include <errno.h>
#include <stdarg.h>

#include "ferry_core.h"
#include "ferry_md.h"

extern int ferry_test_failures;
extern const char *ferry_test_current;

#define CHECK(cond)							\
	do {								\
		if (!(cond)) {						\
			fprintf(stderr, "  FAIL %s:%d [%s]: %s\n",	\
				__FILE__, __LINE__, ferry_test_current,	\
				#cond);					\
			ferry_test_failures++;				\
		}							\
	} while (0)

#define CHECK_EQ(a, b)							\
	do {								\
		unsigned long long _a = (unsigned long long)(a);	\
		unsigned long long _b = (unsigned long long)(b);	\
		if (_a != _b) {						\
			fprintf(stderr,					\
				"  FAIL %s:%d [%s]: %s == %s (%llu vs %llu)\n", \
				__FILE__, __LINE__, ferry_test_current,	\
				#a, #b, _a, _b);			\
			ferry_test_failures++;				\
		}							\
	} while (0)

/* A decoded record (payload points into the batch buffer). */
struct trec {
	struct ferry_rec h;
	const u8 *data;
};

struct tbatch {
	struct ferry_batch_hdr h;
	u32 n;
	struct trec r[4096];
	u8 *buf;
};

/* Test config: DATA-capable device of `size` bytes. */
struct ferry_dev_config tcfg(u64 size, u32 gran, u32 ring, u32 pool);
/* Creates and starts a device CLEAN with an empty bitmap (mode DATA). */
struct ferry_dev *tdev_clean(const struct ferry_dev_config *cfg, u64 next_seq);

/* One complete successful write with a payload made from `seed`. */
u32 twrite(struct ferry_dev *dev, u64 offset, u32 length, u8 seed);
/* The completion of a write admitted with io (capture, copy, end). */
u32 tcomplete(struct ferry_dev *dev, struct ferry_io *io, u64 offset,
	      u32 length, u8 seed);
void tfill(u8 *p, u32 len, u64 offset, u8 seed);

/* GET into a fresh buffer of buf_len bytes, decoded into b; returns ret. */
int tget(struct ferry_stream *s, u64 buf_len, struct tbatch *b);
void tbatch_free(struct tbatch *b);

/* Everything one device has in the stream, committed as it goes. */
u32 tdrain(struct ferry_stream *s, struct tbatch *b);

const char *tkind(u16 kind);

/* test_overlap.c */
void test_overlap_records(void);
void test_overlap_chain(void);
void test_overlap_modes(void);
void test_overlap_bookkeeping(void);
void test_overlap_model(void);

/* test_ctl.c */
void test_ctl_headers(void);
void test_ctl_registry(void);
void test_ctl_list_stats(void);
void test_ctl_get_commit(void);
void test_ctl_tag(void);
void test_ctl_tag_steps(void);
void test_ctl_hold_args(void);
void test_ctl_hold_commit(void);
void test_ctl_hold_bound(void);
void test_ctl_hold_release(void);
void test_ctl_hold_failed_cut(void);
void test_ctl_bitmap(void);
void test_ctl_clear_resync(void);

#endif /* FERRY_TEST_HARNESS_H */
