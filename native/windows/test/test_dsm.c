// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * DSM parsing (dsm.c): what a trim / offload write does to a volume, from
 * well-formed and malformed input buffers.  The DDK layout the offsets
 * stand for is checked at compile time in dsm_layout.c.
 */
#include "test_win.h"

#define SIZE (1ULL << 30)	/* a 1 GiB volume */

struct tdsm {
	u8 buf[28 + 8 + 16 * 300];
	u32 len;
};

static void put32(u8 *p, u32 v)
{
	memcpy(p, &v, 4);
}

static void put64(u8 *p, u64 v)
{
	memcpy(p, &v, 8);
}

/* A request with n ranges at offset 32 (8-aligned, after the header). */
static void tdsm_make(struct tdsm *d, u32 action, u32 flags, u32 n,
		      const u64 *ranges)
{
	u32 i;

	memset(d, 0, sizeof(*d));
	put32(d->buf, 28);
	put32(d->buf + 4, action);
	put32(d->buf + 8, flags);
	put32(d->buf + 20, n ? 32 : 0);
	put32(d->buf + 24, n * 16);
	for (i = 0; i < n; i++) {
		put64(d->buf + 32 + i * 16, ranges[2 * i]);
		put64(d->buf + 32 + i * 16 + 8, ranges[2 * i + 1]);
	}
	d->len = 32 + n * 16;
}

static enum ferry_dsm_kind tparse(struct tdsm *d, struct ferry_dsm_range *r,
				  u32 max, u32 *n)
{
	return ferry_dsm_parse(d->buf, d->len, SIZE, r, max, n);
}

static void test_dsm_well_formed(void)
{
	static const u64 trims[] = {
		4096, 8192,			/* kept */
		0, 0,				/* empty: dropped */
		SIZE - 4096, 65536,		/* clipped at the end */
		SIZE + 4096, 4096,		/* past the end: dropped */
	};
	struct ferry_dsm_range r[8];
	struct tdsm d;
	u32 n;

	ferry_test_current = "dsm/well_formed";
	tdsm_make(&d, FERRY_DSM_ACTION_TRIM, 0, 4, trims);
	CHECK_EQ(tparse(&d, r, 8, &n), FERRY_DSM_DISCARD);
	CHECK_EQ(n, 2);
	CHECK_EQ(r[0].offset, 4096);
	CHECK_EQ(r[0].length, 8192);
	CHECK_EQ(r[1].offset, SIZE - 4096);
	CHECK_EQ(r[1].length, 4096);

	/* offload write: data changed, not by an IRP_MJ_WRITE: read back */
	tdsm_make(&d, 4, 0, 1, trims);
	CHECK_EQ(tparse(&d, r, 8, &n), FERRY_DSM_DIRTY);
	CHECK_EQ(n, 1);
	/* an unknown destructive action: the same */
	tdsm_make(&d, 0x55, 0, 1, trims);
	CHECK_EQ(tparse(&d, r, 8, &n), FERRY_DSM_DIRTY);
	/* non-destructive actions change nothing */
	tdsm_make(&d, 3 | FERRY_DSM_ACTION_NONDESTRUCTIVE, 0, 1, trims);
	CHECK_EQ(tparse(&d, r, 8, &n), FERRY_DSM_NONE);
	CHECK_EQ(n, 0);
	/* the whole volume */
	tdsm_make(&d, FERRY_DSM_ACTION_TRIM, FERRY_DSM_FLAG_ENTIRE_RANGE, 0, NULL);
	CHECK_EQ(tparse(&d, r, 8, &n), FERRY_DSM_DISCARD);
	CHECK_EQ(n, 1);
	CHECK_EQ(r[0].offset, 0);
	CHECK_EQ(r[0].length, SIZE);
	/* no ranges at all, or all outside: nothing happens */
	tdsm_make(&d, FERRY_DSM_ACTION_TRIM, 0, 0, NULL);
	CHECK_EQ(tparse(&d, r, 8, &n), FERRY_DSM_NONE);
	tdsm_make(&d, FERRY_DSM_ACTION_TRIM, 0, 1, trims + 6);
	CHECK_EQ(tparse(&d, r, 8, &n), FERRY_DSM_NONE);
}

static void test_dsm_too_many(void)
{
	u64 ranges[2 * 300];
	struct ferry_dsm_range r[4];
	struct tdsm d;
	u32 i, n;

	ferry_test_current = "dsm/too_many";
	for (i = 0; i < 300; i++) {
		ranges[2 * i] = (u64)(i + 10) * 1048576;
		ranges[2 * i + 1] = 4096;
	}
	tdsm_make(&d, FERRY_DSM_ACTION_TRIM, 0, 300, ranges);
	/* more ranges than kept: never DISCARD the gaps, read the span back */
	CHECK_EQ(tparse(&d, r, 4, &n), FERRY_DSM_DIRTY);
	CHECK_EQ(n, 1);
	CHECK_EQ(r[0].offset, 10 * 1048576);
	CHECK_EQ(r[0].length, 299ULL * 1048576 + 4096);
	/* exactly max ranges: all kept */
	tdsm_make(&d, FERRY_DSM_ACTION_TRIM, 0, 4, ranges);
	CHECK_EQ(tparse(&d, r, 4, &n), FERRY_DSM_DISCARD);
	CHECK_EQ(n, 4);
}

/* Malformed requests: never DISCARD, DIRTY over what may have changed. */
static void test_dsm_malformed(void)
{
	static const u64 one[] = { 4096, 4096 };
	struct ferry_dsm_range r[8];
	struct tdsm d;
	u32 n;

	ferry_test_current = "dsm/malformed";
	tdsm_make(&d, FERRY_DSM_ACTION_TRIM, 0, 1, one);
	CHECK_EQ(ferry_dsm_parse(NULL, 0, SIZE, r, 8, &n), FERRY_DSM_DIRTY);
	CHECK_EQ(n, 1);
	CHECK_EQ(r[0].length, SIZE);
	CHECK_EQ(ferry_dsm_parse(d.buf, 7, SIZE, r, 8, &n), FERRY_DSM_DIRTY);
	CHECK_EQ(r[0].length, SIZE);
	CHECK_EQ(ferry_dsm_parse(d.buf, 27, SIZE, r, 8, &n), FERRY_DSM_DIRTY);
	/* the ranges end past the buffer */
	CHECK_EQ(ferry_dsm_parse(d.buf, d.len - 1, SIZE, r, 8, &n), FERRY_DSM_DIRTY);
	CHECK_EQ(r[0].offset, 0);
	CHECK_EQ(r[0].length, SIZE);
	/* a wrong Size field */
	put32(d.buf, 32);
	CHECK_EQ(tparse(&d, r, 8, &n), FERRY_DSM_DIRTY);
	put32(d.buf, 28);
	/* ranges inside the header, misaligned, or not whole ranges */
	put32(d.buf + 20, 16);
	CHECK_EQ(tparse(&d, r, 8, &n), FERRY_DSM_DIRTY);
	put32(d.buf + 20, 33);
	CHECK_EQ(tparse(&d, r, 8, &n), FERRY_DSM_DIRTY);
	put32(d.buf + 20, 32);
	put32(d.buf + 24, 15);
	CHECK_EQ(tparse(&d, r, 8, &n), FERRY_DSM_DIRTY);
	/* offset + length overflows 32 bits */
	put32(d.buf + 20, 0xfffffff8u);
	put32(d.buf + 24, 16);
	CHECK_EQ(tparse(&d, r, 8, &n), FERRY_DSM_DIRTY);
	CHECK_EQ(r[0].length, SIZE);
	/* a negative StartingOffset */
	tdsm_make(&d, FERRY_DSM_ACTION_TRIM, 0, 1, one);
	put64(d.buf + 32, (u64)-4096);
	CHECK_EQ(tparse(&d, r, 8, &n), FERRY_DSM_DIRTY);
	CHECK_EQ(r[0].length, SIZE);
	/* a length that wraps around: clipped at the end of the volume */
	tdsm_make(&d, FERRY_DSM_ACTION_TRIM, 0, 1, one);
	put64(d.buf + 40, ~0ULL);
	CHECK_EQ(tparse(&d, r, 8, &n), FERRY_DSM_DISCARD);
	CHECK_EQ(r[0].offset, 4096);
	CHECK_EQ(r[0].length, SIZE - 4096);
}

/* Random buffers: no read outside (ASan), ranges always inside the volume. */
static void test_dsm_fuzz(void)
{
	struct ferry_dsm_range r[16];
	struct tdsm d;
	u32 iter, i, n, len;
	u64 seed = 88172645463325252ULL;

	ferry_test_current = "dsm/fuzz";
	for (iter = 0; iter < 200000; iter++) {
		u8 *p;

		/* a plausible header with random fields, then random bytes */
		len = (u32)(seed % 120);
		tdsm_make(&d, (u32)(seed >> 7) % 6, (u32)(seed >> 13) & 1, 0, NULL);
		for (i = 0; i < 96; i++) {
			seed ^= seed << 13;
			seed ^= seed >> 7;
			seed ^= seed << 17;
			if ((seed & 7) == 0)
				d.buf[12 + (seed >> 8) % 84] = (u8)(seed >> 32);
		}
		put32(d.buf + 20, (u32)(seed >> 20) % 64);
		put32(d.buf + 24, (u32)(seed >> 40) % 96);
		p = malloc(len ? len : 1);
		memcpy(p, d.buf, len);
		(void)ferry_dsm_parse(p, len, SIZE, r, 16, &n);
		CHECK(n <= 16);
		for (i = 0; i < n && i < 16; i++) {
			CHECK(r[i].length > 0);
			CHECK(r[i].offset < SIZE);
			CHECK(r[i].length <= SIZE - r[i].offset);
		}
		free(p);
	}
}

void test_dsm_all(void)
{
	test_dsm_well_formed();
	test_dsm_too_many();
	test_dsm_malformed();
	test_dsm_fuzz();
}
