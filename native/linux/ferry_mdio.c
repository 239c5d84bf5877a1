// SPDX-License-Identifier: GPL-2.0
/*
 * dm-ferry metadata I/O: superblock + dirty bitmap on the metadata device
 * (layout in native/common/ferry_md.h).  Process context only, under
 * ft->md_lock.
 */
#include <linux/dm-io.h>
#include <linux/ioprio.h>
#include <linux/vmalloc.h>

#include "ferry_internal.h"

static int ferry_md_io(struct ferry_target *ft, blk_opf_t opf, void *buf,
		       bool vmem, sector_t sector, sector_t count)
{
	struct dm_io_region region = {
		.bdev = ft->meta->bdev,
		.sector = sector,
		.count = count,
	};
	struct dm_io_request req = {
		.bi_opf = opf,
		.mem.type = vmem ? DM_IO_VMA : DM_IO_KMEM,
		.notify.fn = NULL,
		.client = ft->io_client,
	};
	unsigned long error_bits = 0;
	int r;

	if (vmem)
		req.mem.ptr.vma = buf;
	else
		req.mem.ptr.addr = buf;
#ifdef FERRY_DM_IO_IOPRIO
	r = dm_io(&req, 1, &region, &error_bits, IOPRIO_DEFAULT);
#else
	r = dm_io(&req, 1, &region, &error_bits);
#endif
	if (!r && error_bits)
		r = -EIO;
	return r;
}

static int ferry_md_write_sb(struct ferry_target *ft, bool clean, u64 next_seq,
			     u64 seq_limit, u32 bitmap_crc)
{
	struct ferry_md_sb sb = {
		.flags = clean ? FERRY_MD_F_CLEAN : 0,
		.granularity = ft->cfg.granularity,
		.dev_size = ft->cfg.dev_size,
		.nbits = ft->core->nbits,
		.bitmap_offset = FERRY_MD_BLOCK,
		.bitmap_bytes = ft->bm_bytes,
		.next_seq = next_seq,
		.seq_limit = seq_limit,
		.generation = ft->generation,
		.bitmap_crc = bitmap_crc,
	};

	ferry_md_encode(&sb, ft->sb_buf);
	/* PREFLUSH: whatever was written before (the bitmap) is durable first */
	return ferry_md_io(ft, REQ_OP_WRITE | REQ_SYNC | REQ_PREFLUSH | REQ_FUA,
			   ft->sb_buf, false, 0, FERRY_MD_BLOCK >> SECTOR_SHIFT);
}

static u64 ferry_next_seq(struct ferry_target *ft)
{
	struct ferry_dev_info info = {};

	ferry_dev_info(ft->core, &info);
	return info.next_seq;
}

/*
 * First resume of this table: decide how the stream starts from what the
 * metadata says, lease seqs, mark the metadata dirty, start the stream.
 */
int ferry_md_load(struct ferry_target *ft)
{
	struct ferry_md_sb sb;
	u64 next_seq, limit;
	bool bitmap_ok = false;
	u8 state;
	u32 events;
	int ret, r;

	r = ferry_md_io(ft, REQ_OP_READ | REQ_SYNC, ft->sb_buf, false, 0,
			FERRY_MD_BLOCK >> SECTOR_SHIFT);
	if (r) {
		DMERR("cannot read the metadata superblock: %d", r);
		return r;
	}
	ret = ferry_md_decode(ft->sb_buf, &sb);
	if (ret == -FERRY_EINVAL)
		DMWARN("metadata superblock is corrupt: starting as new");
	else if (ret == -FERRY_EPROTO)
		DMWARN("metadata version %u unknown: starting as new",
		       sb.version);
	if (!ret && (sb.flags & FERRY_MD_F_CLEAN) &&
	    sb.bitmap_bytes == ft->bm_bytes &&
	    sb.bitmap_offset == FERRY_MD_BLOCK) {
		r = ferry_md_io(ft, REQ_OP_READ | REQ_SYNC, ft->bm_buf, true,
				FERRY_MD_BLOCK >> SECTOR_SHIFT,
				ft->bm_io_bytes >> SECTOR_SHIFT);
		if (r) {
			DMERR("cannot read the saved bitmap: %d", r);
			return r;
		}
		bitmap_ok = ferry_crc32(0, ft->bm_buf, ft->bm_bytes) ==
			    sb.bitmap_crc;
		if (!bitmap_ok)
			DMWARN("saved bitmap is corrupt: full resync needed");
	}
	state = ferry_md_start_state(ret, &sb, ft->cfg.dev_size,
				     ft->cfg.granularity, bitmap_ok, &next_seq);
	if (state == FERRY_START_CLEAN)
		memcpy(ferry_dev_bitmap(ft->core), ft->bm_buf, ft->bm_bytes);
	ft->generation = (ret ? 0 : sb.generation) + 1;

	limit = next_seq + ferry_seq_lease;
	r = ferry_md_write_sb(ft, false, next_seq, limit, 0);
	if (r) {
		DMERR("cannot mark the metadata dirty: %d", r);
		return r;
	}
	events = ferry_dev_start(ft->core, state, ft->generation, next_seq,
				 limit);
	DMINFO("%s: stream starts %s at seq %llu (generation %u)",
	       dm_device_name(ft->md),
	       state == FERRY_START_CLEAN ? "clean" :
	       state == FERRY_START_DIRTY ? "dirty" : "new",
	       next_seq, ft->generation);
	ferry_handle_events(ft, events);
	return 0;
}

/*
 * Clean teardown (postsuspend): save the bitmap of everything not yet
 * committed plus the next seq, then mark the metadata clean.
 */
int ferry_md_save(struct ferry_target *ft)
{
	u64 next;
	u32 crc;
	int r;

	ferry_ctl_lock();
	next = ferry_dev_persist(ft->core, ft->bm_buf);
	ferry_ctl_unlock();
	crc = ferry_crc32(0, ft->bm_buf, ft->bm_bytes);
	r = ferry_md_io(ft, REQ_OP_WRITE | REQ_SYNC, ft->bm_buf, true,
			FERRY_MD_BLOCK >> SECTOR_SHIFT,
			ft->bm_io_bytes >> SECTOR_SHIFT);
	if (!r)
		r = ferry_md_write_sb(ft, true, next, next, crc);
	if (r)
		DMERR("%s: cannot save the bitmap (%d): the next load does a full resync",
		      dm_device_name(ft->md), r);
	return r;
}

/*
 * Writes the superblock DIRTY with a fresh seq lease from the next seq,
 * then lets the core use it: when the same table resumes after a suspend
 * (the metadata was saved CLEAN) and when the lease runs low.
 */
int ferry_md_write_lease(struct ferry_target *ft)
{
	u64 next = ferry_next_seq(ft);
	u64 limit = next + ferry_seq_lease;
	int r;

	r = ferry_md_write_sb(ft, false, next, limit, 0);
	if (r) {
		DMERR("%s: cannot mark the metadata dirty with a new seq lease: %d",
		      dm_device_name(ft->md), r);
		return r;
	}
	ferry_handle_events(ft, ferry_dev_set_seq_limit(ft->core, limit));
	return 0;
}
