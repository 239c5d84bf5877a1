// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Unit tests of the portable capture core, run in user space.  Each test
 * drives the core the way a driver does (io_begin -> capture -> copy ->
 * end, get/commit) and checks the records that come out.
 */
#include <stddef.h>

#include "harness.h"

static struct tbatch *tb_new(void)
{
	struct tbatch *b = calloc(1, sizeof(*b));

	if (!b)
		abort();
	return b;
}

static void tb_del(struct tbatch *b)
{
	tbatch_free(b);
	free(b);
}

static bool payload_ok(const struct trec *r, u8 seed)
{
	u8 *want = malloc(r->h.data_len ? r->h.data_len : 1);
	bool ok;

	tfill(want, r->h.data_len, r->h.offset, seed);
	ok = memcmp(want, r->data, r->h.data_len) == 0;
	free(want);
	return ok;
}

static void info(struct ferry_dev *dev, struct ferry_dev_info *i)
{
	memset(i, 0, sizeof(*i));
	ferry_dev_info(dev, i);
}

/* ------------------------------------------------------------------ */

static void test_abi_layout(void)
{
	CHECK_EQ(offsetof(struct ferry_batch_hdr, magic), 0);
	CHECK_EQ(offsetof(struct ferry_batch_hdr, version), 4);
	CHECK_EQ(offsetof(struct ferry_batch_hdr, hdr_size), 6);
	CHECK_EQ(offsetof(struct ferry_batch_hdr, rec_hdr_size), 8);
	CHECK_EQ(offsetof(struct ferry_batch_hdr, nrecords), 12);
	CHECK_EQ(offsetof(struct ferry_batch_hdr, batch_id), 16);
	CHECK_EQ(offsetof(struct ferry_batch_hdr, total_bytes), 24);
	CHECK_EQ(offsetof(struct ferry_batch_hdr, flags), 32);
	CHECK_EQ(offsetof(struct ferry_batch_hdr, accuracy), 36);
	CHECK_EQ(offsetof(struct ferry_rec, seq), 0);
	CHECK_EQ(offsetof(struct ferry_rec, offset), 8);
	CHECK_EQ(offsetof(struct ferry_rec, time_ns), 16);
	CHECK_EQ(offsetof(struct ferry_rec, dev_index), 24);
	CHECK_EQ(offsetof(struct ferry_rec, length), 28);
	CHECK_EQ(offsetof(struct ferry_rec, data_len), 32);
	CHECK_EQ(offsetof(struct ferry_rec, rec_size), 36);
	CHECK_EQ(offsetof(struct ferry_rec, kind), 40);
	CHECK_EQ(offsetof(struct ferry_rec, accuracy), 42);
	CHECK_EQ(offsetof(struct ferry_rec, mode), 43);
	CHECK_EQ(offsetof(struct ferry_rec, flags), 44);
	CHECK_EQ(FERRY_REC_SIZE(0), 48);
	CHECK_EQ(FERRY_REC_SIZE(1), 56);
	CHECK_EQ(FERRY_REC_SIZE(8), 56);
	CHECK_EQ(FERRY_REC_SIZE(9), 64);
	CHECK_EQ(offsetof(struct ferry_dev_info, index), 128);
	CHECK_EQ(offsetof(struct ferry_ioc_tag, devs), 24);
	CHECK_EQ(offsetof(struct ferry_ioc_tag, seqs), 280);
	/* errno values are Linux's, which the kernel glue relies on */
	CHECK_EQ(FERRY_EINVAL, EINVAL);
	CHECK_EQ(FERRY_ENOSPC, ENOSPC);
	CHECK_EQ(FERRY_EBUSY, EBUSY);
	CHECK_EQ(FERRY_EAGAIN, EAGAIN);
	CHECK_EQ(FERRY_ERANGE, ERANGE);
	CHECK_EQ(FERRY_ESTALE, ESTALE);
	CHECK_EQ(FERRY_EMSGSIZE, EMSGSIZE);
	CHECK_EQ(FERRY_ENOBUFS, ENOBUFS);
	CHECK_EQ(FERRY_ENODEV, ENODEV);
	CHECK_EQ(FERRY_EPROTO, EPROTO);
	CHECK_EQ(FERRY_ETIMEDOUT, ETIMEDOUT);
	CHECK_EQ(FERRY_EFAULT, EFAULT);
	CHECK_EQ(FERRY_ENOMEM, ENOMEM);
}

static void test_config(void)
{
	struct ferry_dev_config c = tcfg(1 << 20, 4096, 64, 4096);
	struct ferry_dev *dev;

	CHECK_EQ(ferry_config_check(&c), 0);
	c.granularity = 6144;
	CHECK_EQ(ferry_config_check(&c), -EINVAL);
	c.granularity = 2048;
	CHECK_EQ(ferry_config_check(&c), -EINVAL);
	c = tcfg(1 << 20, 4096, 63, 4096);
	CHECK_EQ(ferry_config_check(&c), -EINVAL);
	c = tcfg(0, 4096, 64, 4096);
	CHECK_EQ(ferry_config_check(&c), -EINVAL);
	c = tcfg(1 << 20, 4096, 64, (1u << 30) + 1);
	CHECK_EQ(ferry_config_check(&c), -EINVAL);
	c = tcfg(1 << 20, 4096, 64, 4096);
	c.ring_low_pct = 91;
	CHECK_EQ(ferry_config_check(&c), -EINVAL);
	c = tcfg(1 << 20, 4096, 64, 4096);
	c.seq_lease = 10;
	CHECK_EQ(ferry_config_check(&c), -EINVAL);
	/* 256 bits -> 32 bytes; one byte more -> 257 bits -> 40 bytes */
	c = tcfg(1 << 20, 4096, 64, 0);
	CHECK_EQ(ferry_config_bitmap_bytes(&c), 32);
	c.dev_size++;
	CHECK_EQ(ferry_config_bitmap_bytes(&c), 40);
	CHECK(ferry_config_memory(&c) >= 64 * sizeof(struct ferry_slot) + 40);

	/* allocation failure is reported, nothing leaks (valgrind/asan) */
	c = tcfg(1 << 20, 4096, 64, 4096);
	ferry_test_alloc_budget = 2;
	dev = ferry_dev_create(&c);
	CHECK(dev == NULL);
	ferry_test_alloc_budget = -1;
	dev = ferry_dev_create(&c);
	CHECK(dev != NULL);
	ferry_dev_destroy(dev);
}

static void test_data_capture(void)
{
	struct ferry_dev_config c = tcfg(1 << 20, 4096, 256, 1 << 16);
	struct ferry_dev *dev = tdev_clean(&c, 100);
	struct tbatch *b = tb_new();
	struct ferry_stream s;
	struct ferry_dev_info i;
	struct ferry_io io;
	u32 ev = 0, k;

	ferry_stream_init(&s);
	CHECK_EQ(ferry_stream_set(&s, 3, dev), 0);
	CHECK_EQ(ferry_stream_set(&s, 3, dev), -EBUSY);
	CHECK_EQ(ferry_stream_free_index(&s), 0);
	CHECK(ferry_stream_pending(&s));

	CHECK(twrite(dev, 4096, 512, 1) & FERRY_EV_READY);
	twrite(dev, 0, 8192, 2);
	CHECK_EQ(ferry_io_begin(dev, NULL, 0, 0), 0);
	ferry_capture_flush(dev, NULL);
	CHECK_EQ(ferry_io_begin(dev, &io, 65536, 131072), 0);
	ferry_capture_discard(dev, &io, 65536, 131072);
	CHECK_EQ(ferry_io_begin(dev, &io, 12288, 4096), 0);
	{
		struct ferry_cap cap;

		ferry_capture_write(dev, &io, 12288, 4096, FERRY_REC_F_FUA,
				    &cap);
		ferry_capture_copy(dev, &cap, (u8[4096]){ 7 }, 4096);
		ferry_capture_end(dev, &cap);
	}

	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_DATA);
	CHECK_EQ(i.pool_used, 512 + 8192 + 4096);
	CHECK_EQ(i.ring_used, 6);
	CHECK_EQ(i.inflight, 0);
	CHECK_EQ(i.next_seq, 106);

	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	CHECK_EQ(b->n, 6);
	CHECK_EQ(b->h.batch_id, 1);
	CHECK_EQ(b->h.accuracy, FERRY_ACC_EXACT);
	CHECK_EQ(b->h.flags, 0);
	for (k = 0; k < b->n; k++) {
		CHECK_EQ(b->r[k].h.seq, 100 + k);
		CHECK_EQ(b->r[k].h.dev_index, 3);
		CHECK_EQ(b->r[k].h.accuracy, FERRY_ACC_EXACT);
		CHECK_EQ(b->r[k].h.mode, FERRY_MODE_DATA);
		if (k)
			CHECK(b->r[k].h.time_ns > b->r[k - 1].h.time_ns);
	}
	CHECK_EQ(b->r[0].h.kind, FERRY_REC_START);
	CHECK_EQ(b->r[0].h.offset, 1);		/* generation */
	CHECK_EQ(b->r[0].h.length, FERRY_START_CLEAN);
	CHECK_EQ(b->r[1].h.kind, FERRY_REC_WRITE);
	CHECK_EQ(b->r[1].h.offset, 4096);
	CHECK_EQ(b->r[1].h.length, 512);
	CHECK_EQ(b->r[1].h.data_len, 512);
	CHECK(payload_ok(&b->r[1], 1));
	CHECK_EQ(b->r[2].h.length, 8192);
	CHECK(payload_ok(&b->r[2], 2));
	CHECK_EQ(b->r[3].h.kind, FERRY_REC_FLUSH);
	CHECK_EQ(b->r[4].h.kind, FERRY_REC_DISCARD);
	CHECK_EQ(b->r[4].h.offset, 65536);
	CHECK_EQ(b->r[4].h.length, 131072);
	CHECK_EQ(b->r[4].h.data_len, 0);
	CHECK_EQ(b->r[5].h.flags, FERRY_REC_F_FUA);
	CHECK_EQ(b->r[5].data[0], 7);
	CHECK_EQ(b->r[5].data[1], 0);

	/* handed out but not committed: still held */
	info(dev, &i);
	CHECK_EQ(i.ring_handed_out, 6);
	CHECK(!ferry_stream_pending(&s));
	CHECK_EQ(ferry_stream_commit(&s, 1, &ev), 0);
	info(dev, &i);
	CHECK_EQ(i.ring_used, 0);
	CHECK_EQ(i.pool_used, 0);
	CHECK_EQ(i.committed_seq, 105);
	CHECK_EQ(i.records_committed, 6);
	CHECK_EQ(i.bytes_committed, 512 + 8192 + 4096);
	CHECK_EQ(i.writes, 3);
	CHECK_EQ(i.flushes, 1);
	CHECK_EQ(i.discards, 1);

	/* nothing left: an empty batch, id 0 */
	CHECK_EQ(tget(&s, 4096, b), 0);
	CHECK_EQ(b->h.batch_id, 0);
	CHECK_EQ(b->h.nrecords, 0);
	CHECK_EQ(b->h.total_bytes, sizeof(struct ferry_batch_hdr));

	tb_del(b);
	ferry_dev_destroy(dev);
}

static void test_pool_wrap(void)
{
	struct ferry_dev_config c = tcfg(1 << 20, 4096, 256, 10000);
	struct ferry_dev *dev = tdev_clean(&c, 1);
	struct tbatch *b = tb_new();
	struct ferry_stream s;
	struct ferry_dev_info i;
	u32 ev = 0, round;

	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, dev);
	/* many rounds: the payload wraps around the pool end repeatedly */
	for (round = 0; round < 20; round++) {
		u32 len1 = 4096 - round * 8, len2 = 3000 + round * 13;

		twrite(dev, round * 8192, len1, (u8)round);
		twrite(dev, round * 8192 + 4096, len2, (u8)(round + 100));
		info(dev, &i);
		CHECK_EQ(i.mode, FERRY_MODE_DATA);
		CHECK_EQ(tget(&s, 1 << 20, b), 0);
		CHECK(b->n >= 2);
		CHECK(payload_ok(&b->r[b->n - 2], (u8)round));
		CHECK(payload_ok(&b->r[b->n - 1], (u8)(round + 100)));
		CHECK_EQ(ferry_stream_commit(&s, b->h.batch_id, &ev), 0);
	}
	info(dev, &i);
	CHECK_EQ(i.pool_used, 0);
	CHECK_EQ(i.dirty_records, 0);
	tb_del(b);
	ferry_dev_destroy(dev);
}

static void test_metadata_mode(void)
{
	struct ferry_dev_config c = tcfg(1 << 20, 4096, 256, 8192);
	struct ferry_dev *dev = tdev_clean(&c, 1);
	struct tbatch *b = tb_new();
	struct ferry_stream s;
	struct ferry_dev_info i;
	u32 ev = 0;

	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, dev);
	twrite(dev, 0, 4096, 1);
	twrite(dev, 4096, 4096, 2);		/* pool exactly full */
	CHECK(twrite(dev, 8192, 512, 3) & FERRY_EV_MODE);
	twrite(dev, 16384, 1024, 4);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_METADATA);
	CHECK_EQ(i.pool_used, 8192);

	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	CHECK_EQ(b->n, 6);
	CHECK_EQ(b->r[1].h.kind, FERRY_REC_WRITE);
	CHECK_EQ(b->r[2].h.kind, FERRY_REC_WRITE);
	CHECK_EQ(b->r[3].h.kind, FERRY_REC_MODE);
	CHECK_EQ(b->r[3].h.mode, FERRY_MODE_METADATA);
	CHECK_EQ(b->r[3].h.length, FERRY_MODE_DATA);
	CHECK_EQ(b->r[3].h.accuracy, FERRY_ACC_APPROX);
	CHECK_EQ(b->r[4].h.kind, FERRY_REC_DIRTY);
	CHECK_EQ(b->r[4].h.offset, 8192);
	CHECK_EQ(b->r[4].h.length, 512);
	CHECK_EQ(b->r[4].h.data_len, 0);
	CHECK_EQ(b->r[4].h.accuracy, FERRY_ACC_APPROX);
	CHECK_EQ(b->r[5].h.kind, FERRY_REC_DIRTY);
	CHECK_EQ(b->h.accuracy, FERRY_ACC_APPROX);
	/* seqs are contiguous through the transition */
	CHECK_EQ(b->r[5].h.seq, b->r[0].h.seq + 5);

	/* the commit frees the pool below the low mark: back to DATA */
	CHECK_EQ(ferry_stream_commit(&s, b->h.batch_id, &ev), 0);
	CHECK(ev & FERRY_EV_MODE);
	CHECK(ev & FERRY_EV_READY);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_DATA);
	twrite(dev, 0, 2048, 5);
	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	CHECK_EQ(b->n, 2);
	CHECK_EQ(b->r[0].h.kind, FERRY_REC_MODE);
	CHECK_EQ(b->r[0].h.mode, FERRY_MODE_DATA);
	CHECK_EQ(b->r[0].h.length, FERRY_MODE_METADATA);
	CHECK_EQ(b->r[1].h.kind, FERRY_REC_WRITE);
	CHECK_EQ(b->r[1].h.accuracy, FERRY_ACC_EXACT);
	CHECK(payload_ok(&b->r[1], 5));
	CHECK_EQ(ferry_stream_commit(&s, b->h.batch_id, &ev), 0);

	/* a write larger than the whole pool can never carry its payload */
	twrite(dev, 0, 16384, 6);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_METADATA);
	tb_del(b);
	ferry_dev_destroy(dev);

	/* pool size 0: METADATA from the start, never DATA */
	c = tcfg(1 << 20, 4096, 256, 0);
	dev = tdev_clean(&c, 1);
	twrite(dev, 0, 512, 1);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_METADATA);
	CHECK_EQ(i.dirty_records, 1);
	ferry_dev_destroy(dev);
}

/* Fills the ring with 4 KiB writes until the device enters BITMAP mode. */
static u32 fill_to_bitmap(struct ferry_dev *dev, u64 first_region)
{
	struct ferry_dev_info i;
	u32 n = 0;

	for (;;) {
		info(dev, &i);
		if (i.mode == FERRY_MODE_BITMAP)
			return n;
		twrite(dev, (first_region + n) * 4096, 4096, (u8)n);
		n++;
	}
}

static void test_bitmap_mode_and_drain(void)
{
	struct ferry_dev_config c = tcfg(1 << 20, 4096, 64, 1 << 20);
	struct ferry_dev *dev = tdev_clean(&c, 1);
	struct tbatch *b = tb_new();
	struct ferry_stream s;
	struct ferry_dev_info i;
	struct ferry_io io;
	u64 seq = 0, epoch = 0, epoch2 = 0;
	u8 bits[32];
	u32 ev = 0, copied = 0, n, k;

	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, dev);

	/* START + 47 writes fill the ring up to its I/O limit (64 - 16) */
	n = fill_to_bitmap(dev, 0);
	CHECK_EQ(n, 48);
	info(dev, &i);
	CHECK_EQ(i.ring_used, 49);		/* + MODE(BITMAP) */
	CHECK_EQ(i.dirty_bits, 1);		/* the 48th write, region 47 */
	CHECK_EQ(i.bitmap_writes, 1);

	twrite(dev, 100 * 4096, 8192, 1);	/* regions 100, 101 */
	twrite(dev, 100 * 4096 + 512, 512, 1);	/* same region again */
	CHECK_EQ(ferry_io_begin(dev, NULL, 0, 0), 0);
	ferry_capture_flush(dev, NULL);
	CHECK_EQ(ferry_io_begin(dev, &io, 200 * 4096, 4096), 0);
	ferry_capture_discard(dev, &io, 200 * 4096, 4096);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_BITMAP);
	CHECK_EQ(i.ring_used, 49);
	CHECK_EQ(i.dirty_bits, 4);
	CHECK_EQ(i.bitmap_writes, 4);
	CHECK_EQ(i.dropped_flushes, 1);

	/* bitmap calls wait until the ring drained; tags cannot be placed */
	CHECK_EQ(ferry_dev_bitmap_read(dev, 0, bits, 32, &copied, &epoch),
		 -EBUSY);
	CHECK_EQ(ferry_dev_bitmap_cut(dev, &seq, &epoch, &ev), -EBUSY);
	CHECK_EQ(ferry_dev_bitmap_clear(dev, i.bitmap_epoch, 0, 256, &ev),
		 -EBUSY);
	CHECK_EQ(ferry_dev_tag_check(dev), -ENOSPC);
	/* a resync mark still fits in the control reserve */
	CHECK_EQ(ferry_dev_resync_mark(dev, 0, 4096, &seq, &ev), 0);
	CHECK_EQ(seq, 50);

	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	CHECK_EQ(b->n, 50);
	CHECK_EQ(b->r[48].h.kind, FERRY_REC_MODE);
	CHECK_EQ(b->r[48].h.mode, FERRY_MODE_BITMAP);
	CHECK_EQ(b->r[48].h.accuracy, FERRY_ACC_NONE);
	CHECK_EQ(b->r[49].h.kind, FERRY_REC_RESYNC_MARK);
	for (k = 1; k < 48; k++)
		CHECK(payload_ok(&b->r[k], (u8)(k - 1)));

	/* committing drains the ring below the low mark: DRAINING */
	ev = 0;
	CHECK_EQ(ferry_stream_commit(&s, b->h.batch_id, &ev), 0);
	CHECK(ev & FERRY_EV_MODE);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_DRAINING);
	CHECK_EQ(i.dirty_bits, 4);

	/* records flow again but no point is usable yet */
	twrite(dev, 300 * 4096, 4096, 9);
	CHECK_EQ(ferry_dev_tag_check(dev), 0);
	CHECK_EQ(ferry_dev_bitmap_cut(dev, &seq, &epoch, &ev), 0);
	CHECK_EQ(seq, 53);
	CHECK_EQ(ferry_dev_bitmap_read(dev, 0, bits, sizeof(bits), &copied,
				       &epoch2), 0);
	CHECK_EQ(copied, 32);
	CHECK_EQ(epoch2, epoch);
	CHECK_EQ(bits[47 / 8], 1u << (47 % 8));
	CHECK_EQ(bits[100 / 8], (1u << (100 % 8)) | (1u << (101 % 8)));
	CHECK_EQ(bits[200 / 8], 1u << (200 % 8));
	CHECK_EQ(ferry_dev_bitmap_read(dev, 32, bits, 1, &copied, &epoch2),
		 -ERANGE);
	CHECK_EQ(ferry_dev_bitmap_read(dev, 30, bits, 100, &copied, &epoch2),
		 0);
	CHECK_EQ(copied, 2);

	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	CHECK_EQ(b->n, 3);
	CHECK_EQ(b->r[0].h.kind, FERRY_REC_MODE);
	CHECK_EQ(b->r[0].h.mode, FERRY_MODE_DRAINING);
	CHECK_EQ(b->r[0].h.length, FERRY_MODE_BITMAP);
	CHECK_EQ(b->r[1].h.kind, FERRY_REC_WRITE);
	CHECK_EQ(b->r[1].h.accuracy, FERRY_ACC_NONE);
	CHECK_EQ(b->r[1].h.mode, FERRY_MODE_DRAINING);
	CHECK(payload_ok(&b->r[1], 9));
	CHECK_EQ(b->r[2].h.kind, FERRY_REC_RESYNC_MARK);
	CHECK_EQ(b->r[2].h.flags, FERRY_REC_F_BITMAP_CUT);
	CHECK_EQ(b->r[2].h.seq, 53);
	CHECK_EQ(b->h.accuracy, FERRY_ACC_NONE);
	CHECK_EQ(ferry_stream_commit(&s, b->h.batch_id, &ev), 0);

	/* clearing: wrong epoch, bad ranges, then piecewise to empty */
	CHECK_EQ(ferry_dev_bitmap_clear(dev, epoch + 1, 0, 256, &ev), -ESTALE);
	CHECK_EQ(ferry_dev_bitmap_clear(dev, epoch, 0, 0, &ev), -EINVAL);
	CHECK_EQ(ferry_dev_bitmap_clear(dev, epoch, 250, 7, &ev), -ERANGE);
	CHECK_EQ(ferry_dev_bitmap_clear(dev, epoch, 256, 1, &ev), -ERANGE);
	CHECK_EQ(ferry_dev_bitmap_clear(dev, epoch, 0, 101, &ev), 0);
	info(dev, &i);
	CHECK_EQ(i.dirty_bits, 2);
	CHECK_EQ(i.mode, FERRY_MODE_DRAINING);
	ev = 0;
	CHECK_EQ(ferry_dev_bitmap_clear(dev, epoch, 101, 155, &ev), 0);
	CHECK(ev & FERRY_EV_MODE);
	info(dev, &i);
	CHECK_EQ(i.dirty_bits, 0);
	CHECK_EQ(i.mode, FERRY_MODE_DATA);

	twrite(dev, 0, 512, 3);
	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	CHECK_EQ(b->n, 2);
	CHECK_EQ(b->r[0].h.kind, FERRY_REC_MODE);
	CHECK_EQ(b->r[0].h.mode, FERRY_MODE_DATA);
	CHECK_EQ(b->r[0].h.length, FERRY_MODE_DRAINING);
	CHECK_EQ(b->r[1].h.accuracy, FERRY_ACC_EXACT);
	CHECK_EQ(ferry_stream_commit(&s, b->h.batch_id, &ev), 0);

	/* overflow again while draining: the old epoch is void */
	fill_to_bitmap(dev, 0);
	CHECK_EQ(tdrain(&s, b) & FERRY_EV_MODE, FERRY_EV_MODE);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_DRAINING);
	CHECK_EQ(ferry_dev_bitmap_cut(dev, &seq, &epoch, &ev), 0);
	tdrain(&s, b);
	fill_to_bitmap(dev, 100);		/* back to BITMAP, new epoch */
	info(dev, &i);
	CHECK(i.bitmap_epoch != epoch);
	CHECK_EQ(ferry_dev_bitmap_clear(dev, epoch, 0, 256, &ev), -ESTALE);
	tdrain(&s, b);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_DRAINING);
	CHECK_EQ(i.dirty_bits, 2);		/* regions 47 and 148 */
	CHECK_EQ(ferry_dev_bitmap_cut(dev, &seq, &epoch, &ev), 0);
	CHECK_EQ(ferry_dev_bitmap_clear(dev, epoch, 0, 256, &ev), 0);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_DATA);
	tb_del(b);
	ferry_dev_destroy(dev);
}

static void test_draining_pool_level(void)
{
	/* pool runs out while DRAINING: DIRTY records, mode stays DRAINING */
	struct ferry_dev_config c = tcfg(1 << 20, 4096, 256, 8192);
	struct ferry_dev *dev = ferry_dev_create(&c);
	struct tbatch *b = tb_new();
	struct ferry_stream s;
	struct ferry_dev_info i;
	u64 seq, epoch;
	u32 ev = 0;

	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, dev);
	ferry_dev_start(dev, FERRY_START_NEW, 1, 1, 1ULL << 40);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_DRAINING);
	CHECK_EQ(i.dirty_bits, 256);
	CHECK_EQ(i.start_state, FERRY_START_NEW);
	twrite(dev, 0, 8192, 1);
	twrite(dev, 8192, 4096, 2);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_DRAINING);
	CHECK(i.flags & FERRY_DEV_F_POOL_LOW);
	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	CHECK_EQ(b->n, 3);
	CHECK_EQ(b->r[0].h.kind, FERRY_REC_START);
	CHECK_EQ(b->r[0].h.length, FERRY_START_NEW);
	CHECK_EQ(b->r[0].h.accuracy, FERRY_ACC_NONE);
	CHECK_EQ(b->r[1].h.kind, FERRY_REC_WRITE);
	CHECK_EQ(b->r[2].h.kind, FERRY_REC_DIRTY);
	CHECK_EQ(b->r[2].h.mode, FERRY_MODE_DRAINING);
	/* bitmap drained while the pool is still full: METADATA */
	CHECK_EQ(ferry_dev_bitmap_cut(dev, &seq, &epoch, &ev), 0);
	CHECK_EQ(ferry_dev_bitmap_clear(dev, epoch, 0, 256, &ev), 0);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_METADATA);
	/* the commit frees the pool: DATA */
	CHECK_EQ(ferry_stream_commit(&s, b->h.batch_id, &ev), 0);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_DATA);
	tb_del(b);
	ferry_dev_destroy(dev);
}

static void test_get_commit_redelivery(void)
{
	struct ferry_dev_config c = tcfg(1 << 20, 4096, 256, 1 << 16);
	struct ferry_dev *dev = tdev_clean(&c, 1);
	struct tbatch *b = tb_new();
	struct ferry_stream s;
	struct ferry_dev_info i;
	u32 ev = 0, k;

	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, dev);
	twrite(dev, 0, 512, 1);
	twrite(dev, 512, 512, 2);
	twrite(dev, 1024, 512, 3);

	/* room for START + one write only */
	CHECK_EQ(tget(&s, 48 + 48 + FERRY_REC_SIZE(512), b), 0);
	CHECK_EQ(b->h.batch_id, 1);
	CHECK_EQ(b->n, 2);
	/* pipelining: a second batch before the first is committed */
	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	CHECK_EQ(b->h.batch_id, 2);
	CHECK_EQ(b->n, 2);
	CHECK_EQ(b->r[0].h.seq, 3);
	CHECK_EQ(ferry_stream_inflight(&s), 2);
	CHECK_EQ(ferry_stream_commit(&s, 3, &ev), -EINVAL);
	CHECK_EQ(ferry_stream_commit(&s, 0, &ev), -EINVAL);
	/* cumulative */
	CHECK_EQ(ferry_stream_commit(&s, 2, &ev), 0);
	CHECK_EQ(ferry_stream_inflight(&s), 0);
	info(dev, &i);
	CHECK_EQ(i.ring_used, 0);
	CHECK_EQ(i.committed_seq, 4);
	/* committing again is harmless */
	CHECK_EQ(ferry_stream_commit(&s, 1, &ev), 0);
	CHECK_EQ(ferry_stream_commit(&s, 2, &ev), 0);

	twrite(dev, 2048, 512, 4);
	twrite(dev, 4096, 512, 5);
	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	CHECK_EQ(b->h.batch_id, 3);
	CHECK_EQ(b->n, 2);
	CHECK_EQ(b->h.flags, 0);

	/* the consumer restarts: batch 3 is void and handed out again */
	ferry_stream_reset(&s);
	CHECK_EQ(ferry_stream_commit(&s, 3, &ev), -ESTALE);
	CHECK_EQ(ferry_stream_commit(&s, 2, &ev), 0);
	twrite(dev, 8192, 512, 6);
	CHECK_EQ(tget(&s, 48 + 2 * FERRY_REC_SIZE(512), b), 0);
	CHECK_EQ(b->h.batch_id, 4);
	CHECK_EQ(b->n, 2);
	CHECK_EQ(b->h.flags, FERRY_BATCH_F_REDELIVERY);
	CHECK_EQ(b->r[0].h.seq, 5);
	CHECK_EQ(b->r[1].h.seq, 6);
	for (k = 0; k < 2; k++)
		CHECK_EQ(b->r[k].h.flags, FERRY_REC_F_REDELIVERED);
	CHECK(payload_ok(&b->r[0], 4));
	CHECK(payload_ok(&b->r[1], 5));
	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	CHECK_EQ(b->h.batch_id, 5);
	CHECK_EQ(b->n, 1);
	CHECK_EQ(b->h.flags, 0);
	CHECK_EQ(b->r[0].h.flags, 0);
	CHECK_EQ(b->r[0].h.seq, 7);

	/* reset with two batches out, then redeliver in smaller pieces */
	ferry_stream_reset(&s);
	CHECK_EQ(ferry_stream_commit(&s, 4, &ev), -ESTALE);
	CHECK_EQ(ferry_stream_commit(&s, 5, &ev), -ESTALE);
	CHECK_EQ(tget(&s, 48 + FERRY_REC_SIZE(512), b), 0);
	CHECK_EQ(b->r[0].h.seq, 5);
	CHECK_EQ(b->r[0].h.flags, FERRY_REC_F_REDELIVERED);
	CHECK_EQ(ferry_stream_commit(&s, b->h.batch_id, &ev), 0);
	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	CHECK_EQ(b->n, 2);
	CHECK_EQ(b->r[0].h.seq, 6);
	CHECK_EQ(b->r[0].h.flags, FERRY_REC_F_REDELIVERED);
	CHECK_EQ(b->r[1].h.flags, FERRY_REC_F_REDELIVERED);
	CHECK_EQ(ferry_stream_commit(&s, b->h.batch_id, &ev), 0);
	info(dev, &i);
	CHECK_EQ(i.ring_used, 0);
	CHECK_EQ(i.pool_used, 0);
	CHECK_EQ(s.resets, 2);
	tb_del(b);
	ferry_dev_destroy(dev);
}

static int fail_after_calls;

static int failing_copy(void *ctx, u64 off, const void *src, u32 len)
{
	(void)ctx;
	(void)off;
	(void)src;
	(void)len;
	return --fail_after_calls < 0 ? -EFAULT : 0;
}

static void test_get_limits(void)
{
	struct ferry_dev_config c = tcfg(1 << 20, 4096, 256, 1 << 16);
	struct ferry_dev *dev = tdev_clean(&c, 1);
	struct tbatch *b = tb_new();
	struct ferry_get_result res;
	struct ferry_stream s;
	u32 ev = 0, k;

	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, dev);
	CHECK_EQ(tdrain(&s, b), 0);		/* START */

	twrite(dev, 0, 4096, 1);
	CHECK_EQ(tget(&s, 10, b), -EMSGSIZE);
	CHECK_EQ(ferry_stream_get(&s, 47, failing_copy, NULL, &res),
		 -EMSGSIZE);
	CHECK_EQ(res.needed, 48);
	CHECK_EQ(ferry_stream_get(&s, 200, failing_copy, NULL, &res),
		 -EMSGSIZE);
	CHECK_EQ(res.needed, 48 + 48 + 4096);

	/* a copy fault leaves everything deliverable, no batch consumed */
	fail_after_calls = 2;
	CHECK_EQ(ferry_stream_get(&s, 1 << 20, failing_copy, NULL, &res),
		 -EFAULT);
	CHECK_EQ(ferry_stream_inflight(&s), 0);
	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	CHECK_EQ(b->n, 1);
	CHECK_EQ(b->h.batch_id, 2);
	CHECK_EQ(b->r[0].h.flags, 0);
	CHECK(payload_ok(&b->r[0], 1));
	CHECK_EQ(ferry_stream_commit(&s, 2, &ev), 0);

	/* at most FERRY_MAX_BATCHES outstanding */
	for (k = 0; k < FERRY_MAX_BATCHES + 1; k++)
		twrite(dev, k * 512, 512, (u8)k);
	for (k = 0; k < FERRY_MAX_BATCHES; k++) {
		CHECK_EQ(tget(&s, 48 + FERRY_REC_SIZE(512), b), 0);
		CHECK_EQ(b->n, 1);
	}
	CHECK_EQ(tget(&s, 1 << 20, b), -ENOBUFS);
	CHECK_EQ(ferry_stream_commit(&s, 2 + FERRY_MAX_BATCHES / 2, &ev), 0);
	CHECK_EQ(ferry_stream_inflight(&s), FERRY_MAX_BATCHES / 2);
	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	CHECK_EQ(b->n, 1);
	CHECK_EQ(b->r[0].h.seq, 3 + FERRY_MAX_BATCHES);
	CHECK_EQ(ferry_stream_commit(&s, b->h.batch_id, &ev), 0);
	CHECK_EQ(ferry_stream_inflight(&s), 0);
	tb_del(b);
	ferry_dev_destroy(dev);
}

static void test_tag_cut(void)
{
	struct ferry_dev_config c = tcfg(1 << 20, 4096, 256, 1 << 16);
	struct ferry_dev_config small = tcfg(1 << 20, 4096, 64, 1 << 16);
	struct ferry_dev *a = tdev_clean(&c, 1);
	struct ferry_dev *d = tdev_clean(&c, 1000);
	struct ferry_dev *x = tdev_clean(&small, 1);
	struct ferry_dev *devs[2] = { a, d };
	struct tbatch *b = tb_new();
	struct ferry_stream s;
	struct ferry_dev_info i;
	struct ferry_cap cap;
	struct ferry_io io, held[2];
	u64 seqs[2] = { 0, 0 };
	u32 ev = 0, k, tags = 0;
	u8 buf[512];

	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, a);
	ferry_stream_set(&s, 1, d);
	ferry_stream_set(&s, 2, x);
	twrite(a, 0, 512, 1);
	twrite(d, 0, 512, 2);

	/* a write in flight on A */
	CHECK_EQ(ferry_io_begin(a, &io, 4096, 512), 0);
	ferry_dev_hold(a, true);
	ferry_dev_hold(d, true);
	CHECK_EQ(ferry_dev_inflight(a), 1);
	CHECK_EQ(ferry_tag_cut(devs, 2, 77, seqs, &ev), -EBUSY);
	/* new writes are held */
	CHECK_EQ(ferry_io_begin(d, &held[0], 0, 512), 1);
	CHECK_EQ(ferry_io_begin(a, &held[1], 0, 512), 1);
	/* the in-flight write completes: the hold is achieved */
	ev = ferry_capture_write(a, &io, 4096, 512, 0, &cap);
	CHECK(ev & FERRY_CAP_COPY);
	CHECK(!(ev & FERRY_EV_DRAINED));
	tfill(buf, 512, 4096, 3);
	ferry_capture_copy(a, &cap, buf, 512);
	ev = ferry_capture_end(a, &cap);
	CHECK(ev & FERRY_EV_DRAINED);
	ev = 0;
	CHECK_EQ(ferry_tag_cut(devs, 2, 77, seqs, &ev), 0);
	CHECK(ev & FERRY_EV_READY);
	CHECK_EQ(seqs[0], 4);
	CHECK_EQ(seqs[1], 1002);
	ferry_dev_hold(a, false);
	ferry_dev_hold(d, false);
	/* the held write goes through now, after the cut */
	twrite(d, 8192, 512, 4);

	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	for (k = 0; k < b->n; k++) {
		const struct ferry_rec *r = &b->r[k].h;

		if (r->kind != FERRY_REC_TAG)
			continue;
		tags++;
		CHECK_EQ(r->offset, 77);
		CHECK_EQ(r->seq, seqs[r->dev_index]);
	}
	CHECK_EQ(tags, 2);
	/* on A the tag follows both writes; on D it precedes the held one */
	CHECK_EQ(b->r[3].h.kind, FERRY_REC_TAG);
	CHECK_EQ(b->r[3].h.dev_index, 0);
	CHECK_EQ(b->r[2].h.offset, 4096);
	CHECK_EQ(b->r[6].h.kind, FERRY_REC_TAG);
	CHECK_EQ(b->r[7].h.kind, FERRY_REC_WRITE);
	CHECK_EQ(b->r[7].h.seq, 1003);
	CHECK_EQ(ferry_stream_commit(&s, b->h.batch_id, &ev), 0);

	/* all or nothing: X in BITMAP mode refuses, A gets no tag either */
	fill_to_bitmap(x, 0);
	devs[1] = x;
	ferry_dev_hold(a, true);
	ferry_dev_hold(x, true);
	info(a, &i);
	CHECK_EQ(ferry_tag_cut(devs, 2, 78, seqs, &ev), -ENOSPC);
	{
		struct ferry_dev_info j;

		info(a, &j);
		CHECK_EQ(j.next_seq, i.next_seq);
		CHECK_EQ(j.tags, 1);
	}
	/* not held: refused */
	ferry_dev_hold(a, false);
	ferry_dev_hold(x, false);
	devs[1] = d;
	CHECK_EQ(ferry_tag_cut(devs, 2, 79, seqs, &ev), -EBUSY);
	tb_del(b);
	ferry_dev_destroy(a);
	ferry_dev_destroy(d);
	ferry_dev_destroy(x);
}

static void test_bitmap_granularity(void)
{
	struct ferry_dev_config c = tcfg(10000, 4096, 64, 0);	/* 3 bits */
	struct ferry_dev *dev = ferry_dev_create(&c);
	struct ferry_dev_info i;
	struct ferry_io io;
	struct ferry_stream s;
	struct tbatch *b = tb_new();
	u64 epoch, seq;
	u32 ev = 0, copied;
	u8 bits[8];

	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, dev);
	/* loaded bitmap with bits beyond the device end: they never count */
	ferry_dev_bitmap(dev)[0] = 0xf0ULL | 0x2ULL;
	ferry_dev_start(dev, FERRY_START_CLEAN, 1, 1, 1ULL << 40);
	info(dev, &i);
	CHECK_EQ(i.bitmap_bits, 3);
	CHECK_EQ(i.dirty_bits, 1);
	CHECK_EQ(i.mode, FERRY_MODE_DRAINING);
	CHECK_EQ(ferry_dev_bitmap_cut(dev, &seq, &epoch, &ev), 0);
	CHECK_EQ(ferry_dev_bitmap_clear(dev, epoch, 1, 1, &ev), 0);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_METADATA);	/* pool size 0 */

	/* persist: range edges map onto the right bits */
	{
		u64 out[1];

		twrite(dev, 4095, 2, 0);	/* bits 0 and 1 */
		ferry_dev_persist(dev, out);
		CHECK_EQ(out[0], 0x3);
		tdrain(&s, b);
		twrite(dev, 4096, 4096, 0);	/* exactly bit 1 */
		ferry_dev_persist(dev, out);
		CHECK_EQ(out[0], 0x2);
		tdrain(&s, b);
		CHECK_EQ(ferry_io_begin(dev, &io, 9999, 100000), 0);
		ferry_capture_discard(dev, &io, 9999, 100000);	/* clipped: bit 2 */
		ferry_dev_persist(dev, out);
		CHECK_EQ(out[0], 0x4);
		tdrain(&s, b);
		twrite(dev, 8192, 0, 0);	/* empty write: no bits */
		ferry_dev_persist(dev, out);
		CHECK_EQ(out[0], 0);
		tdrain(&s, b);
	}
	CHECK_EQ(ferry_dev_bitmap_read(dev, 0, bits, 8, &copied, &epoch), 0);
	CHECK_EQ(copied, 8);
	CHECK_EQ(bits[0], 0);
	CHECK_EQ(ferry_dev_bitmap_clear(dev, epoch, 3, 1, &ev), -ERANGE);
	CHECK_EQ(ferry_dev_bitmap_clear(dev, epoch, 0, ~0ULL, &ev), -ERANGE);
	CHECK_EQ(ferry_dev_bitmap_read(dev, 0, bits, 0, &copied, &epoch),
		 -EINVAL);
	ferry_dev_destroy(dev);

	/* 1 GiB granularity over 3 GiB + 1 byte: 4 bits; words boundaries */
	c = tcfg(3ULL * (1 << 30) + 1, 1u << 30, 64, 0);
	dev = tdev_clean(&c, 1);
	info(dev, &i);
	CHECK_EQ(i.bitmap_bits, 4);
	ferry_dev_destroy(dev);

	/* a range crossing a 64-bit word: bits 60..69 set, 10 counted */
	c = tcfg(1 << 20, 4096, 64, 0);
	dev = ferry_dev_create(&c);
	ferry_dev_start(dev, FERRY_START_CLEAN, 1, 1, 1ULL << 40);
	fill_to_bitmap(dev, 0);			/* region 47 dirty */
	twrite(dev, 60 * 4096, 10 * 4096, 0);
	twrite(dev, 65 * 4096 + 1, 4096, 0);	/* overlaps: regions 65, 66 */
	info(dev, &i);
	CHECK_EQ(i.dirty_bits, 11);
	ferry_dev_destroy(dev);
	tb_del(b);
}

static void test_persist(void)
{
	struct ferry_dev_config c = tcfg(1 << 20, 4096, 256, 1 << 16);
	struct ferry_dev *dev = ferry_dev_create(&c);
	struct tbatch *b = tb_new();
	struct ferry_stream s;
	struct ferry_io io;
	u64 out[4], next, seq;
	u32 ev = 0, k;

	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, dev);
	ferry_dev_bitmap(dev)[0] = 1ULL << 10;	/* saved from last time */
	ferry_dev_start(dev, FERRY_START_CLEAN, 7, 500, 1ULL << 40);
	twrite(dev, 0, 4096, 1);		/* bit 0, committed below */
	tdrain(&s, b);
	twrite(dev, 20 * 4096, 4096, 1);	/* bit 20, handed out */
	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	twrite(dev, 30 * 4096, 8192, 1);	/* bits 30, 31 */
	CHECK_EQ(ferry_io_begin(dev, &io, 250 * 4096, 4096), 0);
	ferry_capture_discard(dev, &io, 250 * 4096, 4096);	/* bit 250 */
	CHECK_EQ(ferry_io_begin(dev, NULL, 0, 0), 0);
	ferry_capture_flush(dev, NULL);
	CHECK_EQ(ferry_dev_resync_mark(dev, 100 * 4096, 4096, &seq, &ev), 0);
	ferry_dev_freeze(dev);
	next = ferry_dev_persist(dev, out);
	CHECK_EQ(next, 507);
	CHECK_EQ(out[0], (1ULL << 10) | (1ULL << 20) | (3ULL << 30));
	CHECK_EQ(out[1], 1ULL << (100 - 64));
	CHECK_EQ(out[2], 0);
	CHECK_EQ(out[3], 1ULL << (250 - 192));
	/* frozen: nothing may take a seq */
	CHECK_EQ(ferry_dev_resync_mark(dev, 0, 512, &seq, &ev), -EAGAIN);
	CHECK_EQ(ferry_dev_tag_check(dev), -EAGAIN);
	CHECK_EQ(ferry_dev_bitmap_cut(dev, &seq, out, &ev), -EAGAIN);
	CHECK_EQ(ferry_dev_bitmap_clear(dev, 0, 0, 1, &ev), -EAGAIN);
	CHECK_EQ(ferry_dev_thaw(dev), 0);	/* nothing to announce */
	CHECK_EQ(ferry_dev_resync_mark(dev, 0, 512, &seq, &ev), 0);
	CHECK_EQ(seq, 507);
	/* range checks */
	CHECK_EQ(ferry_dev_resync_mark(dev, 0, 0, &seq, &ev), -EINVAL);
	CHECK_EQ(ferry_dev_resync_mark(dev, 1 << 20, 1, &seq, &ev), -ERANGE);
	CHECK_EQ(ferry_dev_resync_mark(dev, (1 << 20) - 1, 2, &seq, &ev),
		 -ERANGE);
	CHECK_EQ(ferry_dev_resync_mark(dev, ~0ULL, 2, &seq, &ev), -ERANGE);
	for (k = 0; k < 3; k++)
		tdrain(&s, b);
	tb_del(b);
	ferry_dev_destroy(dev);
}

static void test_seq_lease(void)
{
	struct ferry_dev_config c = tcfg(1 << 20, 4096, 256, 1 << 20);
	struct ferry_dev *dev = ferry_dev_create(&c);
	struct tbatch *b = tb_new();
	struct ferry_stream s;
	struct ferry_dev_info i;
	u32 ev, leases = 0, k;
	u64 seq, epoch, max_seq = 0;

	c.seq_lease = 64;
	ferry_dev_destroy(dev);
	dev = ferry_dev_create(&c);
	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, dev);
	ev = ferry_dev_start(dev, FERRY_START_CLEAN, 1, 1, 65);
	for (k = 0; k < 60; k++) {
		ev = twrite(dev, k * 512, 512, 0);
		if (ev & FERRY_EV_LEASE) {
			leases++;
			info(dev, &i);
			CHECK_EQ(i.next_seq, 33);
		}
	}
	CHECK_EQ(leases, 1);
	info(dev, &i);
	/* writes stopped taking seqs at limit - reserve: bitmap */
	CHECK_EQ(i.mode, FERRY_MODE_BITMAP);
	CHECK(i.next_seq <= 65);
	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	for (k = 0; k < b->n; k++)
		if (b->r[k].h.seq > max_seq)
			max_seq = b->r[k].h.seq;
	CHECK(max_seq < 65);
	CHECK_EQ(b->r[b->n - 1].h.kind, FERRY_REC_MODE);
	CHECK_EQ(ferry_dev_tag_check(dev), -ENOSPC);
	/* the metadata write extended the lease: capture climbs back */
	ev = ferry_dev_set_seq_limit(dev, i.next_seq + 64);
	CHECK(ev & FERRY_EV_MODE);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_DRAINING);
	CHECK_EQ(ferry_dev_bitmap_cut(dev, &seq, &epoch, &ev), 0);
	CHECK_EQ(ferry_dev_bitmap_clear(dev, epoch, 0, i.bitmap_bits, &ev), 0);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_DATA);
	tb_del(b);
	ferry_dev_destroy(dev);
}

static void test_discard_failed_short(void)
{
	struct ferry_dev_config c = tcfg(8ULL << 30, 1 << 20, 256, 1 << 16);
	struct ferry_dev *dev = tdev_clean(&c, 1);
	struct tbatch *b = tb_new();
	struct ferry_stream s;
	struct ferry_dev_info i;
	struct ferry_cap cap;
	struct ferry_io io;
	u8 buf[100] = { 0 };

	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, dev);
	CHECK_EQ(ferry_io_begin(dev, &io, 4096, 3ULL << 30), 0);
	ferry_capture_discard(dev, &io, 4096, 3ULL << 30);
	CHECK_EQ(ferry_io_begin(dev, &io, 1 << 20, 65536), 0);
	ferry_capture_failed(dev, &io, 1 << 20, 65536);
	/* the driver could only copy part of the payload */
	CHECK_EQ(ferry_io_begin(dev, &io, 0, 4096), 0);
	CHECK(ferry_capture_write(dev, &io, 0, 4096, 0, &cap) &
	      FERRY_CAP_COPY);
	ferry_capture_copy(dev, &cap, buf, sizeof(buf));
	ferry_capture_end(dev, &cap);
	/* cancelled I/O needs no record */
	CHECK_EQ(ferry_io_begin(dev, &io, 8192, 4096), 0);
	ferry_io_cancel(dev, &io);
	info(dev, &i);
	CHECK_EQ(i.inflight, 0);
	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	CHECK_EQ(b->n, 6);
	CHECK_EQ(b->r[1].h.kind, FERRY_REC_DISCARD);
	CHECK_EQ(b->r[1].h.offset, 4096);
	CHECK_EQ(b->r[1].h.length, 1u << 30);
	CHECK_EQ(b->r[3].h.offset, 4096 + (2ULL << 30));
	CHECK_EQ(b->r[3].h.length, 1u << 30);
	CHECK_EQ(b->r[4].h.kind, FERRY_REC_DIRTY);
	CHECK_EQ(b->r[4].h.flags, FERRY_REC_F_IO_ERROR);
	CHECK_EQ(b->r[5].h.kind, FERRY_REC_DIRTY);
	CHECK_EQ(b->r[5].h.length, 4096);
	CHECK_EQ(b->r[5].h.data_len, 0);
	info(dev, &i);
	CHECK_EQ(i.pool_used, 4096);		/* freed by the commit */
	CHECK_EQ(i.writes, 0);
	CHECK_EQ(i.dirty_records, 1);
	CHECK_EQ(i.failed_writes, 1);
	CHECK_EQ(ferry_stream_commit(&s, b->h.batch_id, &i.flags), 0);
	info(dev, &i);
	CHECK_EQ(i.pool_used, 0);
	tb_del(b);
	ferry_dev_destroy(dev);
}

static void test_md(void)
{
	static u8 block[FERRY_MD_BLOCK];
	struct ferry_md_sb sb, got;
	u64 next;

	CHECK_EQ(ferry_crc32(0, "123456789", 9), 0xcbf43926);
	CHECK_EQ(ferry_crc32(ferry_crc32(0, "1234", 4), "56789", 5),
		 0xcbf43926);
	CHECK_EQ(ferry_md_size(32), 8192);
	CHECK_EQ(ferry_md_size(4096), 8192);
	CHECK_EQ(ferry_md_size(4097), 12288);

	memset(block, 0, sizeof(block));
	CHECK_EQ(ferry_md_decode(block, &got), -ENODEV);
	CHECK_EQ(ferry_md_start_state(-ENODEV, &got, 1, 4096, true, &next),
		 FERRY_START_NEW);
	CHECK_EQ(next, 1);

	memset(&sb, 0, sizeof(sb));
	sb.flags = FERRY_MD_F_CLEAN;
	sb.granularity = 65536;
	sb.dev_size = 1 << 30;
	sb.nbits = 16384;
	sb.bitmap_offset = FERRY_MD_BLOCK;
	sb.bitmap_bytes = 2048;
	sb.next_seq = 1234;
	sb.seq_limit = 5000;
	sb.generation = 3;
	ferry_md_encode(&sb, block);
	CHECK_EQ(ferry_md_decode(block, &got), 0);
	CHECK_EQ(got.next_seq, 1234);
	CHECK_EQ(got.generation, 3);
	CHECK_EQ(ferry_md_start_state(0, &got, 1 << 30, 65536, true, &next),
		 FERRY_START_CLEAN);
	CHECK_EQ(next, 1234);
	/* a torn bitmap, changed geometry or a dirty flag: DIRTY at the lease */
	CHECK_EQ(ferry_md_start_state(0, &got, 1 << 30, 65536, false, &next),
		 FERRY_START_DIRTY);
	CHECK_EQ(next, 5000);
	CHECK_EQ(ferry_md_start_state(0, &got, 2ULL << 30, 65536, true, &next),
		 FERRY_START_DIRTY);
	CHECK_EQ(ferry_md_start_state(0, &got, 1 << 30, 4096, true, &next),
		 FERRY_START_DIRTY);
	got.flags = 0;
	CHECK_EQ(ferry_md_start_state(0, &got, 1 << 30, 65536, true, &next),
		 FERRY_START_DIRTY);
	CHECK_EQ(next, 5000);

	/* corruption anywhere in the block is caught */
	block[4000] ^= 1;
	CHECK_EQ(ferry_md_decode(block, &got), -EINVAL);
	block[4000] ^= 1;
	CHECK_EQ(ferry_md_decode(block, &got), 0);
	((struct ferry_md_sb *)block)->version = 2;
	CHECK_EQ(ferry_md_decode(block, &got), -EPROTO);
}

/* ---- concurrency: writers on two devices against a draining consumer */

#define TW_THREADS 4
#define TW_WRITES 3000

struct tw_ctx {
	struct ferry_dev *devs[2];
	unsigned int seed;
	volatile int *done;
};

static u8 tw_seed(u64 offset, u32 length)
{
	return (u8)((offset >> 9) ^ length ^ (length >> 8));
}

static void *tw_writer(void *arg)
{
	struct tw_ctx *ctx = arg;
	u8 *buf = malloc(65536);
	int k;

	for (k = 0; k < TW_WRITES; k++) {
		struct ferry_dev *dev = ctx->devs[rand_r(&ctx->seed) & 1];
		u32 len = 512 * (1 + rand_r(&ctx->seed) % 64);
		u64 off = 512ULL * (rand_r(&ctx->seed) % 4000);
		struct ferry_cap cap;
		struct ferry_io io;
		u32 ev, half;

		while (ferry_io_begin(dev, &io, off, len))
			;
		ev = ferry_capture_write(dev, &io, off, len, 0, &cap);
		if (ev & FERRY_CAP_COPY) {
			tfill(buf, len, off, tw_seed(off, len));
			half = len / 2;
			ferry_capture_copy(dev, &cap, buf, half);
			ferry_capture_copy(dev, &cap, buf + half, len - half);
			ferry_capture_end(dev, &cap);
		}
	}
	free(buf);
	__atomic_fetch_add(ctx->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void test_concurrent(void)
{
	struct ferry_dev_config c = tcfg(4 << 20, 4096, 512, 256 << 10);
	struct ferry_dev *devs[2] = { tdev_clean(&c, 1), tdev_clean(&c, 1) };
	struct tw_ctx ctx[TW_THREADS];
	pthread_t th[TW_THREADS];
	struct tbatch *b = tb_new();
	struct ferry_stream s;
	struct ferry_dev_info i;
	u64 next_seq[2] = { 1, 1 }, writes = 0, dirty = 0, bad = 0;
	volatile int done = 0;
	int k, idle = 0;
	u32 ev = 0, r, d;

	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, devs[0]);
	ferry_stream_set(&s, 1, devs[1]);
	for (k = 0; k < TW_THREADS; k++) {
		ctx[k].devs[0] = devs[0];
		ctx[k].devs[1] = devs[1];
		ctx[k].seed = 1234u + (unsigned int)k;
		ctx[k].done = &done;
		pthread_create(&th[k], NULL, tw_writer, &ctx[k]);
	}
	for (;;) {
		int finished = __atomic_load_n(&done, __ATOMIC_SEQ_CST);

		CHECK_EQ(tget(&s, 256 << 10, b), 0);
		for (r = 0; r < b->n; r++) {
			const struct trec *t = &b->r[r];

			d = t->h.dev_index;
			if (t->h.seq != next_seq[d])
				bad++;
			next_seq[d] = t->h.seq + 1;
			if (t->h.kind == FERRY_REC_WRITE) {
				writes++;
				if (!payload_ok(t, tw_seed(t->h.offset,
							   t->h.length)))
					bad++;
			} else if (t->h.kind == FERRY_REC_DIRTY) {
				dirty++;
			}
		}
		if (b->h.batch_id)
			CHECK_EQ(ferry_stream_commit(&s, b->h.batch_id, &ev),
				 0);
		/* drain bitmaps the way an agent does */
		for (d = 0; d < 2; d++) {
			u64 seq, epoch;

			info(devs[d], &i);
			if (i.mode == FERRY_MODE_DRAINING &&
			    !ferry_dev_bitmap_cut(devs[d], &seq, &epoch, &ev))
				ferry_dev_bitmap_clear(devs[d], epoch, 0,
						       i.bitmap_bits, &ev);
		}
		if (finished == TW_THREADS && !b->n && ++idle > 2)
			break;
	}
	for (k = 0; k < TW_THREADS; k++)
		pthread_join(th[k], NULL);
	CHECK_EQ(bad, 0);
	{
		struct ferry_dev_info i0, i1;

		info(devs[0], &i0);
		info(devs[1], &i1);
		CHECK_EQ(i0.writes + i1.writes, writes);
		/* DIRTY records: writes without data, and overlap read-backs */
		CHECK_EQ(i0.dirty_records + i1.dirty_records +
			 i0.overlap_dirty + i1.overlap_dirty, dirty);
		CHECK_EQ(i0.writes + i0.dirty_records + i0.bitmap_writes +
			 i1.writes + i1.dirty_records + i1.bitmap_writes,
			 TW_THREADS * TW_WRITES);
		CHECK_EQ(i0.inflight + i1.inflight, 0);
		CHECK_EQ(i0.ring_used + i1.ring_used, 0);
		CHECK_EQ(i0.pool_used + i1.pool_used, 0);
		printf("  concurrent: %llu payload writes, %llu dirty, %llu bitmap, %llu mode changes\n",
		       (unsigned long long)writes, (unsigned long long)dirty,
		       (unsigned long long)(i0.bitmap_writes + i1.bitmap_writes),
		       (unsigned long long)(i0.mode_changes + i1.mode_changes));
	}
	tb_del(b);
	ferry_dev_destroy(devs[0]);
	ferry_dev_destroy(devs[1]);
}

/*
 * A live device restarted DIRTY (the Windows filter does this after a
 * resume from hibernation, whose writes bypass every filter): writes held
 * and drained, ferry_dev_start() again with the current next seq.  Seqs
 * continue without a gap, uncommitted records stay, every bit is set, the
 * old bitmap epoch is void, and the drain protocol leads back to DATA.
 */
static void test_restart_live(void)
{
	struct ferry_dev_config c = tcfg(1 << 20, 4096, 256, 1 << 16);
	struct ferry_dev *dev = tdev_clean(&c, 100);
	struct tbatch *b = tb_new();
	struct ferry_stream s;
	struct ferry_dev_info i;
	u64 old_epoch, next, seq, epoch;
	u32 ev = 0, ev2 = 0;

	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, dev);
	twrite(dev, 0, 4096, 1);
	CHECK_EQ(tget(&s, 1 << 20, b), 0);	/* START, WRITE handed out */
	CHECK_EQ(b->n, 2);
	twrite(dev, 8192, 4096, 2);		/* not handed out yet */
	info(dev, &i);
	old_epoch = i.bitmap_epoch;
	next = i.next_seq;
	CHECK_EQ(next, 103);

	ferry_dev_hold(dev, true);
	CHECK_EQ(ferry_dev_inflight(dev), 0);
	ev = ferry_dev_start(dev, FERRY_START_DIRTY, 2, next, next + 1000);
	ferry_dev_hold(dev, false);
	CHECK(ev & FERRY_EV_READY);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_DRAINING);
	CHECK_EQ(i.start_state, FERRY_START_DIRTY);
	CHECK_EQ(i.generation, 2);
	CHECK_EQ(i.first_seq, next);
	CHECK_EQ(i.next_seq, next + 1);
	CHECK_EQ(i.dirty_bits, 256);
	CHECK(i.bitmap_epoch != old_epoch);
	CHECK_EQ(i.ring_used, 4);		/* the old records are kept */
	CHECK_EQ(ferry_dev_bitmap_clear(dev, old_epoch, 0, 256, &ev2),
		 -ESTALE);

	/* the batch handed out before the restart still commits */
	CHECK_EQ(ferry_stream_commit(&s, b->h.batch_id, &ev2), 0);
	twrite(dev, 4096, 512, 3);
	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	CHECK_EQ(b->n, 3);
	CHECK_EQ(b->r[0].h.kind, FERRY_REC_WRITE);	/* from before */
	CHECK_EQ(b->r[0].h.seq, 102);
	CHECK_EQ(b->r[1].h.kind, FERRY_REC_START);
	CHECK_EQ(b->r[1].h.seq, 103);
	CHECK_EQ(b->r[1].h.length, FERRY_START_DIRTY);
	CHECK_EQ(b->r[1].h.offset, 2);
	CHECK_EQ(b->r[1].h.accuracy, FERRY_ACC_NONE);
	CHECK_EQ(b->r[2].h.kind, FERRY_REC_WRITE);
	CHECK_EQ(b->r[2].h.seq, 104);
	CHECK_EQ(b->r[2].h.mode, FERRY_MODE_DRAINING);
	CHECK_EQ(b->r[2].h.accuracy, FERRY_ACC_NONE);
	CHECK(payload_ok(&b->r[2], 3));
	CHECK_EQ(ferry_stream_commit(&s, b->h.batch_id, &ev2), 0);

	/* drain: cut, read, clear everything: DATA again */
	CHECK_EQ(ferry_dev_bitmap_cut(dev, &seq, &epoch, &ev2), 0);
	CHECK_EQ(seq, 105);
	CHECK_EQ(ferry_dev_bitmap_clear(dev, epoch, 0, 256, &ev2), 0);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_DATA);
	CHECK_EQ(i.dirty_bits, 0);
	tb_del(b);
	ferry_dev_destroy(dev);
}

/*
 * Commits while frozen (the Windows filter keeps a saved device frozen
 * until a write makes it mark the metadata DIRTY again; the agent keeps
 * committing meanwhile): no seq is used while frozen, the mode climbs back
 * at the thaw, with its MODE record.
 */
static void test_frozen_commit(void)
{
	struct ferry_dev_config c = tcfg(1 << 20, 4096, 64, 1 << 20);
	struct ferry_dev *dev = tdev_clean(&c, 1);
	struct tbatch *b = tb_new();
	struct ferry_stream s;
	struct ferry_dev_info i;
	u64 out[4], next;
	u32 ev = 0;

	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, dev);
	fill_to_bitmap(dev, 0);
	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	ferry_dev_freeze(dev);
	next = ferry_dev_persist(dev, out);
	CHECK_EQ(ferry_stream_commit(&s, b->h.batch_id, &ev), 0);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_BITMAP);	/* no MODE record while frozen */
	CHECK_EQ(i.next_seq, next);
	CHECK_EQ(i.ring_used, 0);
	/* BITMAP -> DRAINING now, and its MODE record must wake readers */
	CHECK_EQ(ferry_dev_thaw(dev), FERRY_EV_READY | FERRY_EV_MODE);
	info(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_DRAINING);
	CHECK_EQ(i.next_seq, next + 1);
	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	CHECK_EQ(b->n, 1);
	CHECK_EQ(b->r[0].h.kind, FERRY_REC_MODE);
	CHECK_EQ(b->r[0].h.mode, FERRY_MODE_DRAINING);
	CHECK_EQ(b->r[0].h.seq, next);
	tb_del(b);
	ferry_dev_destroy(dev);
}

/* ------------------------------------------------------------------ */

struct test_case {
	const char *name;
	void (*fn)(void);
};

static const struct test_case tests[] = {
	{ "abi_layout", test_abi_layout },
	{ "config", test_config },
	{ "data_capture", test_data_capture },
	{ "pool_wrap", test_pool_wrap },
	{ "metadata_mode", test_metadata_mode },
	{ "bitmap_mode_and_drain", test_bitmap_mode_and_drain },
	{ "draining_pool_level", test_draining_pool_level },
	{ "get_commit_redelivery", test_get_commit_redelivery },
	{ "get_limits", test_get_limits },
	{ "tag_cut", test_tag_cut },
	{ "bitmap_granularity", test_bitmap_granularity },
	{ "persist", test_persist },
	{ "seq_lease", test_seq_lease },
	{ "restart_live", test_restart_live },
	{ "frozen_commit", test_frozen_commit },
	{ "discard_failed_short", test_discard_failed_short },
	{ "md", test_md },
	{ "concurrent", test_concurrent },
	{ "overlap_records", test_overlap_records },
	{ "overlap_chain", test_overlap_chain },
	{ "overlap_modes", test_overlap_modes },
	{ "overlap_bookkeeping", test_overlap_bookkeeping },
	{ "overlap_model", test_overlap_model },
	{ "ctl_headers", test_ctl_headers },
	{ "ctl_registry", test_ctl_registry },
	{ "ctl_list_stats", test_ctl_list_stats },
	{ "ctl_get_commit", test_ctl_get_commit },
	{ "ctl_tag", test_ctl_tag },
	{ "ctl_tag_steps", test_ctl_tag_steps },
	{ "ctl_hold_args", test_ctl_hold_args },
	{ "ctl_hold_commit", test_ctl_hold_commit },
	{ "ctl_hold_bound", test_ctl_hold_bound },
	{ "ctl_hold_release", test_ctl_hold_release },
	{ "ctl_hold_failed_cut", test_ctl_hold_failed_cut },
	{ "ctl_bitmap", test_ctl_bitmap },
	{ "ctl_clear_resync", test_ctl_clear_resync },
};

int main(int argc, char **argv)
{
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
	printf("all core tests passed\n");
	return 0;
}
