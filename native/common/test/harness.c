// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
#include "harness.h"

int ferry_test_failures;
const char *ferry_test_current = "";
long ferry_test_alloc_budget = -1;
u64 ferry_test_clock_ns = 1000;
u64 ferry_test_clock_step = 1;

struct ferry_dev_config tcfg(u64 size, u32 gran, u32 ring, u32 pool)
{
	struct ferry_dev_config c = {
		.dev_size = size,
		.granularity = gran,
		.ring_capacity = ring,
		.pool_size = pool,
		.pool_low_pct = 50,
		.ring_low_pct = 50,
		.seq_lease = 1ULL << 32,
	};
	return c;
}

struct ferry_dev *tdev_clean(const struct ferry_dev_config *cfg, u64 next_seq)
{
	struct ferry_dev *dev = ferry_dev_create(cfg);

	if (!dev) {
		fprintf(stderr, "ferry_dev_create failed\n");
		abort();
	}
	ferry_dev_start(dev, FERRY_START_CLEAN, 1, next_seq,
			next_seq + cfg->seq_lease);
	return dev;
}

void tfill(u8 *p, u32 len, u64 offset, u8 seed)
{
	u32 i;

	for (i = 0; i < len; i++)
		p[i] = (u8)((offset + i) * 31 + seed + ((offset + i) >> 9));
}

u32 twrite(struct ferry_dev *dev, u64 offset, u32 length, u8 seed)
{
	struct ferry_io io;

	if (ferry_io_begin(dev, &io, offset, length)) {
		fprintf(stderr, "twrite: device is held\n");
		abort();
	}
	return tcomplete(dev, &io, offset, length, seed);
}

u32 tcomplete(struct ferry_dev *dev, struct ferry_io *io, u64 offset,
	      u32 length, u8 seed)
{
	struct ferry_cap cap;
	u32 ev;

	ev = ferry_capture_write(dev, io, offset, length, 0, &cap);
	if (ev & FERRY_CAP_COPY) {
		u8 *p = malloc(length);
		u32 half = length / 3;

		tfill(p, length, offset, seed);
		/* copy in two pieces, like a bio with two segments */
		ferry_capture_copy(dev, &cap, p, half);
		ferry_capture_copy(dev, &cap, p + half, length - half);
		free(p);
		ev |= ferry_capture_end(dev, &cap);
	}
	return ev;
}

struct tcopy {
	u8 *buf;
	u64 len;
};

static int tcopy_out(void *ctx, u64 off, const void *src, u32 len)
{
	struct tcopy *c = ctx;

	if (off + len > c->len) {
		fprintf(stderr, "copy out of bounds %llu+%u > %llu\n",
			(unsigned long long)off, len,
			(unsigned long long)c->len);
		abort();
	}
	memcpy(c->buf + off, src, len);
	return 0;
}

void tbatch_free(struct tbatch *b)
{
	free(b->buf);
	b->buf = NULL;
}

int tget(struct ferry_stream *s, u64 buf_len, struct tbatch *b)
{
	struct ferry_get_result res;
	struct tcopy c;
	u64 off;
	int ret;

	tbatch_free(b);
	memset(b, 0, sizeof(*b));
	b->buf = malloc(buf_len ? buf_len : 1);
	memset(b->buf, 0xa5, buf_len);
	c.buf = b->buf;
	c.len = buf_len;
	ret = ferry_stream_get(s, buf_len, tcopy_out, &c, &res);
	if (ret)
		return ret;
	memcpy(&b->h, b->buf, sizeof(b->h));
	CHECK_EQ(b->h.magic, FERRY_BATCH_MAGIC);
	CHECK_EQ(b->h.version, FERRY_ABI_VERSION);
	CHECK_EQ(b->h.hdr_size, sizeof(struct ferry_batch_hdr));
	CHECK_EQ(b->h.rec_hdr_size, sizeof(struct ferry_rec));
	CHECK_EQ(b->h.batch_id, res.batch_id);
	CHECK_EQ(b->h.nrecords, res.nrecords);
	CHECK_EQ(b->h.total_bytes, res.bytes);
	CHECK(res.bytes <= buf_len);
	off = sizeof(b->h);
	for (b->n = 0; b->n < b->h.nrecords; b->n++) {
		struct trec *r = &b->r[b->n];
		u32 pad;

		memcpy(&r->h, b->buf + off, sizeof(r->h));
		CHECK_EQ(r->h.rec_size, FERRY_REC_SIZE(r->h.data_len));
		CHECK_EQ(r->h.rec_size % 8, 0);
		r->data = b->buf + off + sizeof(r->h);
		for (pad = sizeof(r->h) + r->h.data_len; pad < r->h.rec_size;
		     pad++)
			CHECK_EQ(b->buf[off + pad], 0);
		off += r->h.rec_size;
	}
	CHECK_EQ(off, res.bytes);
	return 0;
}

u32 tdrain(struct ferry_stream *s, struct tbatch *b)
{
	u32 events = 0;
	int ret = tget(s, 1 << 20, b);

	CHECK_EQ(ret, 0);
	if (!ret && b->h.batch_id)
		CHECK_EQ(ferry_stream_commit(s, b->h.batch_id, &events), 0);
	return events;
}

const char *tkind(u16 kind)
{
	static const char *names[] = {
		"?", "WRITE", "DISCARD", "FLUSH", "TAG", "RESYNC_MARK",
		"DIRTY", "MODE", "START",
	};
	return kind < 9 ? names[kind] : "?";
}
