// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Overlapping writes in flight (ferry_core.c, "Overlapping writes in
 * flight"): which records come out, in which order, and a model of a disk
 * that applies writes in any order while they are in flight, replayed the
 * way the agent does, which must end equal to the disk.
 */
#include "harness.h"

static struct tbatch *ob_new(void)
{
	struct tbatch *b = calloc(1, sizeof(*b));

	if (!b)
		abort();
	return b;
}

static void ob_del(struct tbatch *b)
{
	tbatch_free(b);
	free(b);
}

static bool opayload_ok(const struct trec *r, u8 seed)
{
	u8 *want = malloc(r->h.data_len ? r->h.data_len : 1);
	bool ok;

	tfill(want, r->h.data_len, r->h.offset, seed);
	ok = r->h.data_len == r->h.length &&
	     memcmp(want, r->data, r->h.data_len) == 0;
	free(want);
	return ok;
}

static void oinfo(struct ferry_dev *dev, struct ferry_dev_info *i)
{
	memset(i, 0, sizeof(*i));
	ferry_dev_info(dev, i);
}

/* Nothing admitted is left: no I/O in flight, the list is empty. */
#define CHECK_IDLE(dev)							\
	do {								\
		CHECK((dev)->io_list == NULL);				\
		CHECK_EQ((dev)->io_tracked, 0);				\
		CHECK_EQ(ferry_dev_inflight(dev), 0);			\
	} while (0)

static void obegin(struct ferry_dev *dev, struct ferry_io *io, u64 off,
		   u64 len)
{
	CHECK_EQ(ferry_io_begin(dev, io, off, len), 0);
}

/* GET one batch, commit it; the records stay in b. */
static void oget(struct ferry_stream *s, struct tbatch *b)
{
	u32 ev = 0;

	CHECK_EQ(tget(s, 1 << 20, b), 0);
	if (b->h.batch_id)
		CHECK_EQ(ferry_stream_commit(s, b->h.batch_id, &ev), 0);
}

static void check_rec(const struct trec *r, u16 kind, u64 off, u32 len,
		      u32 flags, int line)
{
	if (r->h.kind != kind || r->h.offset != off || r->h.length != len ||
	    r->h.flags != flags) {
		fprintf(stderr,
			"  FAIL line %d [%s]: got %s %llu+%u flags %#x, want %s %llu+%u flags %#x\n",
			line, ferry_test_current, tkind(r->h.kind),
			(unsigned long long)r->h.offset, r->h.length,
			r->h.flags, tkind(kind), (unsigned long long)off, len,
			flags);
		ferry_test_failures++;
	}
}

#define REC(r, kind, off, len, flags) check_rec((r), (kind), (off), (len), (flags), __LINE__)

#define OV FERRY_REC_F_OVERLAP

/*
 * The records of each simple case: side by side, overlapped whole,
 * overlapped in part (WRITE then DIRTY, delivered only once the payload is
 * complete), a discard, a failed write, a cancel, an untracked I/O.
 */
void test_overlap_records(void)
{
	struct ferry_dev_config c = tcfg(1 << 20, 4096, 256, 1 << 16);
	struct ferry_dev *dev = tdev_clean(&c, 1);
	struct tbatch *b = ob_new();
	struct ferry_io a, d, e;
	struct ferry_stream s;
	struct ferry_dev_info i;
	struct ferry_cap cap;
	u8 buf[16384];
	u32 ev;

	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, dev);
	oget(&s, b);				/* START */

	/* side by side (touching, not overlapping): no extra record */
	obegin(dev, &a, 0, 4096);
	obegin(dev, &d, 4096, 4096);
	CHECK_EQ(dev->io_tracked, 2);
	tcomplete(dev, &d, 4096, 4096, 2);
	tcomplete(dev, &a, 0, 4096, 1);
	CHECK_IDLE(dev);
	oget(&s, b);
	CHECK_EQ(b->n, 2);
	REC(&b->r[0], FERRY_REC_WRITE, 4096, 4096, 0);
	REC(&b->r[1], FERRY_REC_WRITE, 0, 4096, 0);
	CHECK(opayload_ok(&b->r[0], 2) && opayload_ok(&b->r[1], 1));
	oinfo(dev, &i);
	CHECK_EQ(i.overlaps, 0);

	/* overlapped whole: the later one is a DIRTY record, no payload */
	obegin(dev, &a, 8192, 4096);
	obegin(dev, &d, 8192, 4096);
	tcomplete(dev, &d, 8192, 4096, 2);
	ev = ferry_capture_write(dev, &a, 8192, 4096, FERRY_REC_F_FUA, &cap);
	CHECK(!(ev & FERRY_CAP_COPY));
	CHECK(ev & FERRY_EV_READY);
	CHECK_IDLE(dev);
	oinfo(dev, &i);
	CHECK_EQ(i.overlaps, 1);
	CHECK_EQ(i.overlap_dirty, 0);
	CHECK_EQ(i.dirty_records, 1);
	CHECK_EQ(i.pool_used, 4096);		/* only the first one's payload */
	oget(&s, b);
	CHECK_EQ(b->n, 2);
	REC(&b->r[0], FERRY_REC_WRITE, 8192, 4096, 0);
	CHECK(opayload_ok(&b->r[0], 2));
	REC(&b->r[1], FERRY_REC_DIRTY, 8192, 4096, FERRY_REC_F_FUA | OV);
	CHECK_EQ(b->r[1].h.data_len, 0);

	/*
	 * Overlapped in part: WRITE with its payload, then a DIRTY over the
	 * overlap with the next seq, handed out only with the WRITE.
	 */
	obegin(dev, &a, 16384, 16384);
	obegin(dev, &d, 20480, 4096);
	tcomplete(dev, &d, 20480, 4096, 3);
	oget(&s, b);
	CHECK_EQ(b->n, 1);
	ev = ferry_capture_write(dev, &a, 16384, 16384, 0, &cap);
	CHECK(ev & FERRY_CAP_COPY);
	CHECK(!(ev & FERRY_EV_READY));
	CHECK(dev->io_list == NULL);		/* off the list at its seq */
	CHECK_EQ(ferry_dev_inflight(dev), 1);	/* in flight until the end */
	oget(&s, b);
	CHECK_EQ(b->n, 0);			/* the WRITE is not ready yet */
	tfill(buf, 16384, 16384, 4);
	ferry_capture_copy(dev, &cap, buf, 16384);
	CHECK(ferry_capture_end(dev, &cap) & FERRY_EV_READY);
	CHECK_IDLE(dev);
	oget(&s, b);
	CHECK_EQ(b->n, 2);
	REC(&b->r[0], FERRY_REC_WRITE, 16384, 16384, 0);
	CHECK(opayload_ok(&b->r[0], 4));
	REC(&b->r[1], FERRY_REC_DIRTY, 20480, 4096, OV);
	CHECK_EQ(b->r[1].h.seq, b->r[0].h.seq + 1);
	oinfo(dev, &i);
	CHECK_EQ(i.overlaps, 2);
	CHECK_EQ(i.overlap_dirty, 1);

	/* the earlier one of the pair gets nothing extra, whatever its size */
	obegin(dev, &a, 32768, 16384);
	obegin(dev, &d, 36864, 4096);
	tcomplete(dev, &a, 32768, 16384, 5);
	tcomplete(dev, &d, 36864, 4096, 6);	/* overlapped whole: DIRTY */
	oget(&s, b);
	CHECK_EQ(b->n, 2);
	REC(&b->r[0], FERRY_REC_WRITE, 32768, 16384, 0);
	REC(&b->r[1], FERRY_REC_DIRTY, 36864, 4096, OV);

	/* a discard completing after an overlapping write */
	obegin(dev, &a, 65536, 8192);
	obegin(dev, &d, 61440, 8192);
	tcomplete(dev, &a, 65536, 8192, 7);
	ferry_capture_discard(dev, &d, 61440, 8192);
	oget(&s, b);
	CHECK_EQ(b->n, 3);
	REC(&b->r[0], FERRY_REC_WRITE, 65536, 8192, 0);
	REC(&b->r[1], FERRY_REC_DISCARD, 61440, 8192, 0);
	REC(&b->r[2], FERRY_REC_DIRTY, 65536, 4096, OV);

	/* a failed write's own DIRTY covers its overlap: nothing extra */
	obegin(dev, &a, 81920, 8192);
	obegin(dev, &d, 81920, 4096);
	tcomplete(dev, &a, 81920, 8192, 8);
	ferry_capture_failed(dev, &d, 81920, 4096);
	/* ... and a failed write marks the writes it overlaps */
	obegin(dev, &a, 98304, 8192);
	obegin(dev, &d, 98304, 4096);
	ferry_capture_failed(dev, &d, 98304, 4096);
	tcomplete(dev, &a, 98304, 8192, 9);
	CHECK_IDLE(dev);
	oget(&s, b);
	CHECK_EQ(b->n, 5);
	REC(&b->r[0], FERRY_REC_WRITE, 81920, 8192, 0);
	REC(&b->r[1], FERRY_REC_DIRTY, 81920, 4096, FERRY_REC_F_IO_ERROR);
	REC(&b->r[2], FERRY_REC_DIRTY, 98304, 4096, FERRY_REC_F_IO_ERROR);
	REC(&b->r[3], FERRY_REC_WRITE, 98304, 8192, 0);
	REC(&b->r[4], FERRY_REC_DIRTY, 98304, 4096, OV);

	/* a cancelled I/O changed nothing: it marks nothing */
	oinfo(dev, &i);
	obegin(dev, &a, 131072, 4096);
	obegin(dev, &d, 131072, 4096);
	ferry_io_cancel(dev, &d);
	tcomplete(dev, &a, 131072, 4096, 10);
	oget(&s, b);
	CHECK_EQ(b->n, 1);
	REC(&b->r[0], FERRY_REC_WRITE, 131072, 4096, 0);
	{
		struct ferry_dev_info j;

		oinfo(dev, &j);
		CHECK_EQ(j.overlaps, i.overlaps);
	}

	/*
	 * Untracked (no storage for an io): it is read back whole, and it
	 * still marks the tracked writes it overlaps.
	 */
	obegin(dev, &a, 147456, 8192);
	CHECK_EQ(ferry_io_begin(dev, NULL, 151552, 4096), 0);
	CHECK_EQ(dev->io_tracked, 1);
	ev = ferry_capture_write(dev, NULL, 151552, 4096, 0, &cap);
	CHECK(!(ev & FERRY_CAP_COPY));
	tcomplete(dev, &a, 147456, 8192, 11);
	/* an untracked discard is followed by a DIRTY over its range */
	CHECK_EQ(ferry_io_begin(dev, NULL, 163840, 4096), 0);
	ferry_capture_discard(dev, NULL, 163840, 4096);
	/* a flush has no range: never on the list, marks nothing */
	obegin(dev, &e, 0, 0);
	CHECK(dev->io_list == NULL);
	ferry_capture_flush(dev, &e);
	CHECK_IDLE(dev);
	oget(&s, b);
	CHECK_EQ(b->n, 6);
	REC(&b->r[0], FERRY_REC_DIRTY, 151552, 4096, OV);
	REC(&b->r[1], FERRY_REC_WRITE, 147456, 8192, 0);
	REC(&b->r[2], FERRY_REC_DIRTY, 151552, 4096, OV);
	REC(&b->r[3], FERRY_REC_DISCARD, 163840, 4096, 0);
	REC(&b->r[4], FERRY_REC_DIRTY, 163840, 4096, OV);
	REC(&b->r[5], FERRY_REC_FLUSH, 0, 0, 0);

	/* the accounting: every write is one WRITE, DIRTY or bitmap entry */
	oinfo(dev, &i);
	CHECK_EQ(i.writes, 11);
	CHECK_EQ(i.dirty_records, 3);	/* 2 overlapped whole, 1 untracked */
	CHECK_EQ(i.overlap_dirty, 5);
	CHECK_EQ(i.failed_writes, 2);
	ob_del(b);
	ferry_dev_destroy(dev);
}

/*
 * Chains: A [0,8K) overlaps B [4K,12K) overlaps C [8K,16K); A and C do not
 * meet.  Each overlap is read back after the later write of its own pair,
 * in every completion order.  And the overlap a write collects from
 * several others is their hull.
 */
void test_overlap_chain(void)
{
	static const struct {
		int order[3];
		/* expected, in stream order: kind, offset, length, flags */
		struct { u16 kind; u64 off; u32 len; u32 flags; } r[5];
		u32 n;
	} cases[] = {
		{ { 0, 1, 2 }, { { FERRY_REC_WRITE, 0, 8192, 0 },
				 { FERRY_REC_WRITE, 4096, 8192, 0 },
				 { FERRY_REC_DIRTY, 4096, 4096, OV },
				 { FERRY_REC_WRITE, 8192, 8192, 0 },
				 { FERRY_REC_DIRTY, 8192, 4096, OV } }, 5 },
		{ { 2, 1, 0 }, { { FERRY_REC_WRITE, 8192, 8192, 0 },
				 { FERRY_REC_WRITE, 4096, 8192, 0 },
				 { FERRY_REC_DIRTY, 8192, 4096, OV },
				 { FERRY_REC_WRITE, 0, 8192, 0 },
				 { FERRY_REC_DIRTY, 4096, 4096, OV } }, 5 },
		/* the middle one first: both ends get a read-back */
		{ { 1, 0, 2 }, { { FERRY_REC_WRITE, 4096, 8192, 0 },
				 { FERRY_REC_WRITE, 0, 8192, 0 },
				 { FERRY_REC_DIRTY, 4096, 4096, OV },
				 { FERRY_REC_WRITE, 8192, 8192, 0 },
				 { FERRY_REC_DIRTY, 8192, 4096, OV } }, 5 },
		/* the middle one last: overlapped whole by the two others */
		{ { 0, 2, 1 }, { { FERRY_REC_WRITE, 0, 8192, 0 },
				 { FERRY_REC_WRITE, 8192, 8192, 0 },
				 { FERRY_REC_DIRTY, 4096, 8192, OV } }, 3 },
	};
	static const u64 off[3] = { 0, 4096, 8192 };
	struct ferry_dev_config c = tcfg(1 << 20, 4096, 256, 1 << 16);
	struct tbatch *b = ob_new();
	struct ferry_io io[3];
	size_t k;
	u32 r;

	for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		struct ferry_dev *dev = tdev_clean(&c, 1);
		struct ferry_stream s;

		ferry_stream_init(&s);
		ferry_stream_set(&s, 0, dev);
		oget(&s, b);
		for (r = 0; r < 3; r++)
			obegin(dev, &io[r], off[r], 8192);
		for (r = 0; r < 3; r++) {
			int w = cases[k].order[r];

			tcomplete(dev, &io[w], off[w], 8192, (u8)w);
		}
		CHECK_IDLE(dev);
		oget(&s, b);
		CHECK_EQ(b->n, cases[k].n);
		for (r = 0; r < cases[k].n && r < b->n; r++)
			REC(&b->r[r], cases[k].r[r].kind, cases[k].r[r].off,
			    cases[k].r[r].len, cases[k].r[r].flags);
		ferry_dev_destroy(dev);
	}

	/* the hull: X [0,32K) met [0,4K) and [8K,12K) -> one DIRTY [0,12K) */
	{
		struct ferry_dev *dev = tdev_clean(&c, 1);
		struct ferry_stream s;
		struct ferry_dev_info i;

		ferry_stream_init(&s);
		ferry_stream_set(&s, 0, dev);
		oget(&s, b);
		obegin(dev, &io[0], 0, 32768);
		obegin(dev, &io[1], 0, 4096);
		obegin(dev, &io[2], 8192, 4096);
		tcomplete(dev, &io[2], 8192, 4096, 2);
		tcomplete(dev, &io[1], 0, 4096, 1);
		tcomplete(dev, &io[0], 0, 32768, 0);
		oget(&s, b);
		CHECK_EQ(b->n, 4);
		REC(&b->r[3], FERRY_REC_DIRTY, 0, 12288, OV);
		/*
		 * Met at both ends: the hull is the whole write (its middle is
		 * read back too: one range per write keeps the entry small).
		 */
		obegin(dev, &io[0], 0, 16384);
		obegin(dev, &io[1], 0, 4096);
		obegin(dev, &io[2], 12288, 8192);
		tcomplete(dev, &io[1], 0, 4096, 1);
		tcomplete(dev, &io[2], 12288, 8192, 2);
		tcomplete(dev, &io[0], 0, 16384, 0);
		oget(&s, b);
		CHECK_EQ(b->n, 3);
		REC(&b->r[2], FERRY_REC_DIRTY, 0, 16384, OV);
		CHECK_IDLE(dev);
		oinfo(dev, &i);
		CHECK_EQ(i.overlaps, 4);
		CHECK_EQ(i.overlap_dirty, 1);
		ferry_dev_destroy(dev);
	}
	ob_del(b);
}

/*
 * Overlaps when records cannot carry data: in METADATA mode the write is a
 * DIRTY record anyway (nothing extra); in BITMAP mode its bits cover it;
 * when the WRITE takes the last I/O slot, the overlap goes to the bitmap.
 */
void test_overlap_modes(void)
{
	struct ferry_dev_config c = tcfg(1 << 20, 4096, 64, 0);
	struct ferry_dev *dev = tdev_clean(&c, 1);
	struct tbatch *b = ob_new();
	struct ferry_io a, d;
	struct ferry_stream s;
	struct ferry_dev_info i;
	u32 n;

	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, dev);
	oget(&s, b);
	obegin(dev, &a, 0, 16384);
	obegin(dev, &d, 4096, 4096);
	tcomplete(dev, &d, 4096, 4096, 1);
	tcomplete(dev, &a, 0, 16384, 2);
	oget(&s, b);
	CHECK_EQ(b->n, 2);
	REC(&b->r[0], FERRY_REC_DIRTY, 4096, 4096, 0);
	REC(&b->r[1], FERRY_REC_DIRTY, 0, 16384, 0);
	oinfo(dev, &i);
	CHECK_EQ(i.overlap_dirty, 0);
	CHECK_EQ(i.overlaps, 1);
	ferry_dev_destroy(dev);

	/* DATA, ring of 64: I/O records may use 48 slots */
	c = tcfg(1 << 20, 4096, 64, 1 << 20);
	dev = tdev_clean(&c, 1);
	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, dev);
	for (n = 0; n < 46; n++)		/* START + 46 = 47 used */
		twrite(dev, (1 << 20) - 4096, 4096, 0);
	obegin(dev, &a, 40960, 16384);		/* regions 10..13 */
	obegin(dev, &d, 45056, 4096);		/* region 11 */
	twrite(dev, 0, 0, 0);			/* an empty write: the 48th slot */
	oinfo(dev, &i);
	CHECK_EQ(i.ring_used, 48);
	/* ring full for I/O: d goes to the bitmap, and marks a */
	tcomplete(dev, &d, 45056, 4096, 1);
	oinfo(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_BITMAP);
	CHECK_EQ(i.dirty_bits, 1);
	/* a completes in BITMAP mode: its bits, nothing else */
	tcomplete(dev, &a, 40960, 16384, 2);
	CHECK_IDLE(dev);
	oinfo(dev, &i);
	CHECK_EQ(i.dirty_bits, 4);
	CHECK_EQ(i.overlap_dirty, 0);
	ferry_dev_destroy(dev);

	/* the ring is full for I/O when it completes: its bits cover it */
	dev = tdev_clean(&c, 1);
	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, dev);
	for (n = 0; n < 46; n++)
		twrite(dev, (1 << 20) - 4096, 4096, 0);
	obegin(dev, &a, 40960, 16384);
	obegin(dev, &d, 45056, 4096);
	tcomplete(dev, &d, 45056, 4096, 1);	/* the 48th slot */
	oinfo(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_DATA);
	CHECK_EQ(i.ring_used, 48);
	tcomplete(dev, &a, 40960, 16384, 2);
	oinfo(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_BITMAP);
	CHECK_EQ(i.dirty_bits, 4);
	ferry_dev_destroy(dev);

	/* room for the WRITE only: its overlap's DIRTY does not fit */
	dev = tdev_clean(&c, 1);
	ferry_stream_init(&s);
	ferry_stream_set(&s, 0, dev);
	for (n = 0; n < 45; n++)		/* START + 45 = 46 used */
		twrite(dev, (1 << 20) - 4096, 4096, 0);
	obegin(dev, &a, 40960, 16384);
	obegin(dev, &d, 45056, 4096);
	tcomplete(dev, &d, 45056, 4096, 1);	/* 47 used */
	tcomplete(dev, &a, 40960, 16384, 2);	/* WRITE: 48; DIRTY: no room */
	CHECK_IDLE(dev);
	oinfo(dev, &i);
	CHECK_EQ(i.mode, FERRY_MODE_BITMAP);
	CHECK_EQ(i.ring_used, 49);		/* + MODE(BITMAP) */
	CHECK_EQ(i.dirty_bits, 1);		/* region 11: the overlap */
	CHECK_EQ(i.writes, 45 + 2);
	CHECK_EQ(tget(&s, 1 << 20, b), 0);
	CHECK_EQ(b->n, 49);
	REC(&b->r[47], FERRY_REC_WRITE, 40960, 16384, 0);
	CHECK_EQ(b->r[48].h.kind, FERRY_REC_MODE);
	CHECK_EQ(b->r[48].h.mode, FERRY_MODE_BITMAP);
	ob_del(b);
	ferry_dev_destroy(dev);
}

/*
 * Every admitted I/O leaves the list and the in-flight count, whichever
 * way it ends (written, discarded, flushed, failed, cancelled, untracked,
 * held then released) and in whatever state the device is (DATA, METADATA,
 * BITMAP, suspended, not started).
 */
void test_overlap_bookkeeping(void)
{
	struct ferry_dev_config data = tcfg(1 << 20, 4096, 64, 1 << 16);
	struct ferry_dev_config meta = tcfg(1 << 20, 4096, 64, 0);
	int state;

	for (state = 0; state < 5; state++) {
		struct ferry_dev *dev;
		struct ferry_io io[8];
		struct ferry_cap cap;
		struct ferry_stream s;
		struct tbatch *b = ob_new();
		int k;

		if (state == 4) {
			dev = ferry_dev_create(&data);	/* not started */
		} else {
			dev = tdev_clean(state == 1 ? &meta : &data, 1);
			ferry_stream_init(&s);
			ferry_stream_set(&s, 0, dev);
		}
		if (state == 2) {
			while (dev->mode != FERRY_MODE_BITMAP)
				twrite(dev, 0, 4096, 0);
		}
		if (state == 3)
			ferry_dev_freeze(dev);
		for (k = 0; k < 8; k++)
			obegin(dev, &io[k], 4096ULL * (k / 2), 8192);
		CHECK_EQ(dev->io_tracked, 8);
		tcomplete(dev, &io[0], 0, 8192, 1);
		ferry_capture_discard(dev, &io[1], 0, 8192);
		ferry_capture_failed(dev, &io[2], 4096, 8192);
		ferry_io_cancel(dev, &io[3]);
		if (ferry_capture_write(dev, &io[4], 8192, 8192, 0, &cap) &
		    FERRY_CAP_COPY)
			ferry_capture_end(dev, &cap);	/* short: nothing copied */
		/* held, then released and admitted again */
		ferry_dev_hold(dev, true);
		CHECK_EQ(ferry_io_begin(dev, &io[0], 0, 4096), 1);
		CHECK_EQ(ferry_io_begin(dev, NULL, 0, 4096), 1);
		CHECK_EQ(dev->io_tracked, 3);
		CHECK_EQ(ferry_dev_inflight(dev), 3);
		tcomplete(dev, &io[5], 8192, 8192, 2);
		ferry_capture_flush(dev, &io[6]);	/* a flush admitted with a range */
		CHECK_EQ(ferry_dev_inflight(dev), 1);
		CHECK(ferry_io_cancel(dev, &io[7]) & FERRY_EV_DRAINED);
		ferry_dev_hold(dev, false);
		CHECK_EQ(ferry_io_begin(dev, &io[0], 0, 4096), 0);
		CHECK_EQ(ferry_io_begin(dev, NULL, 0, 4096), 0);
		CHECK_EQ(dev->io_tracked, 1);
		CHECK_EQ(ferry_dev_inflight(dev), 2);
		ferry_capture_failed(dev, NULL, 0, 4096);
		tcomplete(dev, &io[0], 0, 4096, 3);
		CHECK_IDLE(dev);
		ob_del(b);
		ferry_dev_destroy(dev);
	}
}

/* ---- a model: a disk that applies writes in flight in any order ------ */

#define OM_SIZE		(64u * 1024)
#define OM_SECTOR	512u
#define OM_MAXIO	20
#define OM_CUTS		8

enum om_kind { OM_WRITE, OM_DISCARD, OM_FAILED, OM_CANCEL, OM_FLUSH };
enum om_state { OM_FREE, OM_HELD, OM_FLIGHT, OM_COPYING };

struct om_io {
	int state;
	int kind;
	bool untracked;
	u64 off;
	u32 len, split;
	bool landed[2];
	u8 data[16384];
	struct ferry_io io;
	struct ferry_cap cap;
};

/* Data read back after a bitmap cut: applied when the cut's seq comes. */
struct om_cut {
	bool used;
	u64 seq;
	u64 bits;
	u8 image[OM_SIZE];
};

struct om {
	struct ferry_dev *dev;
	struct ferry_stream s;
	struct tbatch *b;
	u64 rng;
	u64 next_seq;
	u8 disk[OM_SIZE];
	u8 replica[OM_SIZE];	/* the records replayed, read-backs taken then */
	u8 naive[OM_SIZE];	/* every write's data in completion order */
	struct om_io io[OM_MAXIO];
	struct om_cut cuts[OM_CUTS];
	bool held;
	bool lazy;		/* a slow consumer: the ring overflows */
};

static u32 om_rand(struct om *m, u32 n)
{
	/* xorshift64* */
	m->rng ^= m->rng >> 12;
	m->rng ^= m->rng << 25;
	m->rng ^= m->rng >> 27;
	return (u32)((m->rng * 2685821657736338717ULL) >> 33) % n;
}

/* One half of an I/O reaches the disk (a failed write: maybe not). */
static void om_land(struct om *m, struct om_io *o, int half)
{
	u32 from = half ? o->split : 0, to = half ? o->len : o->split;

	o->landed[half] = true;
	if (o->kind == OM_WRITE)
		memcpy(m->disk + o->off + from, o->data + from, to - from);
	else if (o->kind == OM_DISCARD)
		memset(m->disk + o->off + from, 0, to - from);
	else if (o->kind == OM_FAILED && om_rand(m, 2))
		memcpy(m->disk + o->off + from, o->data + from, to - from);
}

static void om_copy_end(struct om *m, struct om_io *o)
{
	/* now and then only part of the payload can be copied */
	u32 n = om_rand(m, 10) ? o->len : o->len / 2;

	ferry_capture_copy(m->dev, &o->cap, o->data, n);
	ferry_capture_end(m->dev, &o->cap);
	o->state = OM_FREE;
}

static void om_complete(struct om *m, struct om_io *o)
{
	struct ferry_io *io = o->untracked ? NULL : &o->io;

	switch (o->kind) {
	case OM_WRITE:
		memcpy(m->naive + o->off, o->data, o->len);
		if (ferry_capture_write(m->dev, io, o->off, o->len, 0,
					&o->cap) & FERRY_CAP_COPY) {
			o->state = OM_COPYING;
			if (om_rand(m, 2))
				om_copy_end(m, o);
			return;
		}
		break;
	case OM_DISCARD:
		memset(m->naive + o->off, 0, o->len);
		ferry_capture_discard(m->dev, io, o->off, o->len);
		break;
	case OM_FAILED:
		memcpy(m->naive + o->off, m->disk + o->off, o->len);
		ferry_capture_failed(m->dev, io, o->off, o->len);
		break;
	case OM_CANCEL:
		ferry_io_cancel(m->dev, io);
		break;
	default:
		ferry_capture_flush(m->dev, io);
		break;
	}
	o->state = OM_FREE;
}

static void om_start(struct om *m, struct om_io *o)
{
	u32 pick = om_rand(m, 100);
	u32 sectors = 1 + om_rand(m, 16);

	o->kind = pick < 70 ? OM_WRITE : pick < 80 ? OM_DISCARD :
		  pick < 88 ? OM_FAILED : pick < 94 ? OM_CANCEL : OM_FLUSH;
	o->untracked = o->kind != OM_CANCEL && om_rand(m, 20) == 0;
	o->len = o->kind == OM_FLUSH ? 0 : sectors * OM_SECTOR;
	o->off = o->len ? (u64)om_rand(m, (OM_SIZE - o->len) / OM_SECTOR + 1) *
			  OM_SECTOR : 0;
	o->split = o->len ? om_rand(m, sectors + 1) * OM_SECTOR : 0;
	o->landed[0] = o->landed[1] = false;
	tfill(o->data, o->len, o->off, (u8)om_rand(m, 256));
	if (ferry_io_begin(m->dev, o->untracked ? NULL : &o->io, o->off,
			   o->len))
		o->state = OM_HELD;
	else
		o->state = OM_FLIGHT;
}

/* Applies one record the way the agent and the receiver do. */
static void om_apply(struct om *m, const struct trec *r)
{
	int k;
	u64 bit;

	CHECK_EQ(r->h.seq, m->next_seq);
	m->next_seq = r->h.seq + 1;
	if (r->h.offset + r->h.length > OM_SIZE && r->h.kind != FERRY_REC_TAG &&
	    r->h.kind != FERRY_REC_START) {
		CHECK(!"record past the device");
		return;
	}
	switch (r->h.kind) {
	case FERRY_REC_WRITE:
		if (r->h.data_len == r->h.length)
			memcpy(m->replica + r->h.offset, r->data, r->h.length);
		else
			CHECK(!"WRITE without its payload");
		break;
	case FERRY_REC_DIRTY:
		/* read back now: after the record was made */
		memcpy(m->replica + r->h.offset, m->disk + r->h.offset,
		       r->h.length);
		break;
	case FERRY_REC_DISCARD:
		memset(m->replica + r->h.offset, 0, r->h.length);
		break;
	case FERRY_REC_RESYNC_MARK:
		for (k = 0; k < OM_CUTS; k++) {
			struct om_cut *c = &m->cuts[k];

			if (!c->used || c->seq != r->h.seq)
				continue;
			for (bit = 0; bit < OM_SIZE / 4096; bit++)
				if (c->bits & (1ULL << bit))
					memcpy(m->replica + bit * 4096,
					       c->image + bit * 4096, 4096);
			c->used = false;
		}
		break;
	default:
		break;
	}
}

/* The consumer: take a batch, apply it, commit; drain the bitmap. */
static void om_consume(struct om *m)
{
	struct ferry_dev_info i;
	u32 ev = 0, r, copied;
	u64 seq, epoch;
	int k;

	CHECK_EQ(tget(&m->s, 1 << 20, m->b), 0);
	for (r = 0; r < m->b->n; r++)
		om_apply(m, &m->b->r[r]);
	if (m->b->h.batch_id)
		CHECK_EQ(ferry_stream_commit(&m->s, m->b->h.batch_id, &ev), 0);
	oinfo(m->dev, &i);
	if (i.mode != FERRY_MODE_DRAINING || !i.dirty_bits)
		return;
	for (k = 0; k < OM_CUTS && m->cuts[k].used; k++)
		;
	if (k == OM_CUTS)
		return;
	if (ferry_dev_bitmap_cut(m->dev, &seq, &epoch, &ev))
		return;
	/* read the regions after the cut: their data belongs at its seq */
	m->cuts[k].used = true;
	m->cuts[k].seq = seq;
	m->cuts[k].bits = 0;
	CHECK_EQ(ferry_dev_bitmap_read(m->dev, 0, &m->cuts[k].bits, 8,
				       &copied, &epoch), 0);
	memcpy(m->cuts[k].image, m->disk, OM_SIZE);
	ferry_dev_bitmap_clear(m->dev, epoch, 0, OM_SIZE / 4096, &ev);
}

static struct om_io *om_pick(struct om *m, int state, bool landed)
{
	u32 start = om_rand(m, OM_MAXIO), k;

	for (k = 0; k < OM_MAXIO; k++) {
		struct om_io *o = &m->io[(start + k) % OM_MAXIO];

		if (o->state != state)
			continue;
		if (state == OM_FLIGHT &&
		    landed != (o->landed[0] && o->landed[1]))
			continue;
		return o;
	}
	return NULL;
}

static void om_release(struct om *m)
{
	int k;

	ferry_dev_hold(m->dev, false);
	m->held = false;
	for (k = 0; k < OM_MAXIO; k++) {
		struct om_io *o = &m->io[k];

		if (o->state != OM_HELD)
			continue;
		CHECK_EQ(ferry_io_begin(m->dev, o->untracked ? NULL : &o->io,
					o->off, o->len), 0);
		o->state = OM_FLIGHT;
	}
}

/* One step of the schedule; false when nothing could be done. */
static bool om_step(struct om *m, bool finishing)
{
	u32 what = om_rand(m, 100);
	struct om_io *o;

	if (what < 30 && !finishing && (o = om_pick(m, OM_FREE, false))) {
		om_start(m, o);
		return true;
	}
	if (what < 55 && (o = om_pick(m, OM_FLIGHT, false))) {
		int half = o->landed[0] ? 1 : o->landed[1] ? 0 :
			   (int)om_rand(m, 2);

		if (o->kind == OM_CANCEL)	/* never reaches the disk */
			o->landed[0] = o->landed[1] = true;
		else
			om_land(m, o, half);
		return true;
	}
	if (what < 80 && (o = om_pick(m, OM_FLIGHT, true))) {
		om_complete(m, o);
		return true;
	}
	if (what < 88 && (o = om_pick(m, OM_COPYING, false))) {
		om_copy_end(m, o);
		return true;
	}
	if (what < 90 && !finishing && !m->held) {
		ferry_dev_hold(m->dev, true);
		m->held = true;
		return true;
	}
	if (what < 93 && m->held) {
		om_release(m);
		return true;
	}
	if (!finishing && m->lazy && om_rand(m, 8))
		return false;
	om_consume(m);
	return true;
}

static bool om_busy(struct om *m)
{
	int k;

	for (k = 0; k < OM_MAXIO; k++)
		if (m->io[k].state != OM_FREE)
			return true;
	return false;
}

/* One random schedule; returns whether completion-order replay went wrong. */
static bool om_run(u64 seed, const struct ferry_dev_config *cfg,
		   struct ferry_dev_info *out)
{
	struct om *m = calloc(1, sizeof(*m));
	struct ferry_dev_info i;
	bool naive_wrong;
	int step, rounds;

	if (!m)
		abort();
	m->rng = seed * 0x9e3779b97f4a7c15ULL + 1;
	m->lazy = cfg->ring_capacity < 256;
	m->b = ob_new();
	m->dev = tdev_clean(cfg, 1);
	m->next_seq = 1;
	ferry_stream_init(&m->s);
	ferry_stream_set(&m->s, 0, m->dev);
	for (step = 0; step < 400; step++)
		om_step(m, false);
	if (m->held)
		om_release(m);
	while (om_busy(m))
		om_step(m, true);
	CHECK_IDLE(m->dev);
	/* drain everything: records, then the bitmap, until quiet */
	for (rounds = 0; rounds < 1000; rounds++) {
		om_consume(m);
		oinfo(m->dev, &i);
		if (!i.ring_used && !i.dirty_bits &&
		    (i.mode == FERRY_MODE_DATA || i.mode == FERRY_MODE_METADATA))
			break;
	}
	CHECK(rounds < 1000);
	if (memcmp(m->replica, m->disk, OM_SIZE)) {
		u32 at = 0;

		while (m->replica[at] == m->disk[at])
			at++;
		fprintf(stderr, "  model seed %llu: replica differs from the disk at byte %u\n",
			(unsigned long long)seed, at);
		ferry_test_failures++;
	}
	naive_wrong = memcmp(m->naive, m->disk, OM_SIZE) != 0;
	oinfo(m->dev, out);
	ferry_dev_destroy(m->dev);
	ob_del(m->b);
	free(m);
	return naive_wrong;
}

void test_overlap_model(void)
{
	static const struct { u32 ring, pool; } cfgs[] = {
		{ 1024, 1 << 20 },	/* DATA throughout */
		{ 1024, 16384 },	/* DATA and METADATA */
		{ 64, 1 << 20 },	/* BITMAP episodes and drains */
		{ 64, 0 },		/* METADATA and BITMAP */
	};
	u64 seed, overlaps = 0, overlap_dirty = 0, naive_wrong = 0;
	u64 bitmap = 0;

	for (seed = 1; seed <= 240; seed++) {
		struct ferry_dev_config c = tcfg(OM_SIZE, 4096,
						 cfgs[seed % 4].ring,
						 cfgs[seed % 4].pool);
		struct ferry_dev_info i;

		naive_wrong += om_run(seed, &c, &i);
		overlaps += i.overlaps;
		overlap_dirty += i.overlap_dirty;
		bitmap += i.bitmap_writes;
	}
	/* the schedules do reorder overlapping writes, in every mode */
	CHECK(naive_wrong > 60);
	CHECK(overlaps > 1000);
	CHECK(overlap_dirty > 100);
	CHECK(bitmap > 100);
	printf("  model: 240 schedules, %llu overlaps, %llu overlap DIRTY records, "
	       "%llu bitmap-only writes, %llu where completion order alone would be wrong\n",
	       (unsigned long long)overlaps, (unsigned long long)overlap_dirty,
	       (unsigned long long)bitmap, (unsigned long long)naive_wrong);
}
