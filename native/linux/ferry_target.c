// SPDX-License-Identifier: GPL-2.0
/*
 * dm-ferry: a device-mapper target that passes I/O through to a data
 * device and captures every completed write (with its payload while the
 * pool has room) as a change record for the Ferry replication agent.
 *
 * Table line:
 *   ferry <data_dev> <meta_dev> [<#feature args> [pool_kb <n>]
 *         [ring_records <n>] [granularity_kb <n>]]
 *
 * See native/linux/README.md.
 */
#include <linux/module.h>
#include <linux/dm-io.h>
#include <linux/vmalloc.h>

#include "ferry_internal.h"
#include "ferry_ioctl.h"

/*
 * A full ring of 4 KiB writes (16384 x 4 KiB): a burst that the ring can hold
 * keeps its payloads instead of falling to METADATA (read back from the volume)
 * when a quarter of the ring is used.
 */
static unsigned int pool_kb = 65536;
module_param(pool_kb, uint, 0444);
MODULE_PARM_DESC(pool_kb, "Payload pool per device in KiB (default 65536)");

static unsigned int ring_records = 16384;
module_param(ring_records, uint, 0444);
MODULE_PARM_DESC(ring_records, "Change records per device (default 16384)");

static unsigned int granularity_kb = 64;
module_param(granularity_kb, uint, 0444);
MODULE_PARM_DESC(granularity_kb, "Dirty bitmap KiB per bit (default 64)");

unsigned int ferry_tag_hold_ms = FERRY_CTL_HOLD_DEFAULT_MS;
module_param_named(tag_hold_ms, ferry_tag_hold_ms, uint, 0644);
MODULE_PARM_DESC(tag_hold_ms, "Default bound on the write hold of a tag (ms)");

unsigned long ferry_seq_lease = 1UL << 32;
module_param_named(seq_lease, ferry_seq_lease, ulong, 0444);
MODULE_PARM_DESC(seq_lease, "Seqs leased per metadata write (default 2^32)");

/* metadata leases and the end of write holds (both may be needed to free memory) */
struct workqueue_struct *ferry_wq;

/* Per-bio data: what the write was when it was mapped. */
struct ferry_pb {
	struct bvec_iter iter;	/* the bio's iterator at map time */
	u64 offset;		/* bytes into the device */
	bool tracked;		/* a write-type bio: admitted, or held */
	struct ferry_io io;	/* the core's entry while it is in flight */
};

static bool ferry_bio_is_write(struct bio *bio)
{
	return op_is_write(bio_op(bio)) || (bio->bi_opf & REQ_PREFLUSH);
}

static int ferry_map(struct dm_target *ti, struct bio *bio)
{
	struct ferry_target *ft = ti->private;
	struct ferry_pb *pb = dm_per_bio_data(bio, sizeof(*pb));
	unsigned long flags;

	bio_set_dev(bio, ft->data->bdev);
	/* the target covers the whole device (singleton): offsets map 1:1 */
	if (bio_sectors(bio))
		bio->bi_iter.bi_sector = dm_target_offset(ti,
							  bio->bi_iter.bi_sector);
	pb->tracked = false;
	if (!ferry_bio_is_write(bio))
		return DM_MAPIO_REMAPPED;

	pb->iter = bio->bi_iter;
	pb->offset = (u64)bio->bi_iter.bi_sector << SECTOR_SHIFT;
	pb->tracked = true;
	if (likely(!ferry_io_begin(ft->core, &pb->io, pb->offset,
				   pb->iter.bi_size)))
		return DM_MAPIO_REMAPPED;

	/*
	 * A tag holds writes.  Re-check under hold_lock: the release clears
	 * the hold and empties the list under the same lock.
	 */
	spin_lock_irqsave(&ft->hold_lock, flags);
	if (ferry_io_begin(ft->core, &pb->io, pb->offset, pb->iter.bi_size)) {
		bio_list_add(&ft->held, bio);
		spin_unlock_irqrestore(&ft->hold_lock, flags);
		return DM_MAPIO_SUBMITTED;
	}
	spin_unlock_irqrestore(&ft->hold_lock, flags);
	return DM_MAPIO_REMAPPED;
}

/* Ends the hold on this device and submits the writes it held. */
void ferry_release_held(struct ferry_target *ft)
{
	struct bio_list list;
	unsigned long flags;
	struct bio *bio;

	bio_list_init(&list);
	spin_lock_irqsave(&ft->hold_lock, flags);
	ferry_dev_hold(ft->core, false);
	bio_list_merge(&list, &ft->held);
	bio_list_init(&ft->held);
	spin_unlock_irqrestore(&ft->hold_lock, flags);

	while ((bio = bio_list_pop(&list))) {
		struct ferry_pb *pb = dm_per_bio_data(bio, sizeof(*pb));

		/* cannot be held again: holds are serialized */
		WARN_ON_ONCE(ferry_io_begin(ft->core, &pb->io, pb->offset,
					    pb->iter.bi_size));
		dm_submit_bio_remap(bio, NULL);
	}
}

void ferry_handle_events(struct ferry_target *ft, u32 events)
{
	if (events & FERRY_EV_READY)
		ferry_ctl_wake_readers();
	if (events & FERRY_EV_DRAINED)
		ferry_ctl_wake_tag();
	if (events & FERRY_EV_LEASE)
		queue_work(ferry_wq, &ft->lease_work);
}

static u32 ferry_capture_payload(struct ferry_target *ft, struct bio *bio,
				 struct ferry_pb *pb)
{
	struct ferry_cap cap;
	struct bvec_iter iter;
	struct bio_vec bv;
	u32 flags = (bio->bi_opf & REQ_FUA) ? FERRY_REC_F_FUA : 0;
	u32 events;

	events = ferry_capture_write(ft->core, &pb->io, pb->offset,
				     pb->iter.bi_size, flags, &cap);
	if (!(events & FERRY_CAP_COPY))
		return events;
	/* the bio was advanced by its completion: walk the saved iterator */
	__bio_for_each_segment(bv, bio, iter, pb->iter) {
		void *p = bvec_kmap_local(&bv);

		ferry_capture_copy(ft->core, &cap, p, bv.bv_len);
		kunmap_local(p);
	}
	return events | ferry_capture_end(ft->core, &cap);
}

static int ferry_end_io(struct dm_target *ti, struct bio *bio,
			blk_status_t *error)
{
	struct ferry_target *ft = ti->private;
	struct ferry_pb *pb = dm_per_bio_data(bio, sizeof(*pb));
	u32 bytes = pb->iter.bi_size;
	u32 events;

	if (!pb->tracked)
		return DM_ENDIO_DONE;
	pb->tracked = false;

	if (*error) {
		/* a failed write leaves its range unknown: read it back */
		if (bytes)
			events = ferry_capture_failed(ft->core, &pb->io,
						      pb->offset, bytes);
		else
			events = ferry_io_cancel(ft->core, &pb->io);
	} else if (bio_op(bio) == REQ_OP_DISCARD) {
		events = ferry_capture_discard(ft->core, &pb->io, pb->offset,
					       bytes);
	} else if (bio_op(bio) != REQ_OP_WRITE) {
		/* write-zeroes and the like are not enabled; be safe anyway */
		events = ferry_capture_failed(ft->core, &pb->io, pb->offset,
					      bytes);
	} else if (!bytes) {
		events = ferry_capture_flush(ft->core, &pb->io);
	} else {
		events = ferry_capture_payload(ft, bio, pb);
	}
	ferry_handle_events(ft, events);
	return DM_ENDIO_DONE;
}

static void ferry_lease_work(struct work_struct *work)
{
	struct ferry_target *ft = container_of(work, struct ferry_target,
					       lease_work);

	mutex_lock(&ft->md_lock);
	if (!ft->suspended && ft->loaded)
		ferry_md_write_lease(ft);
	mutex_unlock(&ft->md_lock);
}

static int ferry_parse_features(struct ferry_target *ft, struct dm_arg_set *as,
				char **error)
{
	static const struct dm_arg group = {
		0, 6, "Invalid number of feature arguments"
	};
	static const struct dm_arg value = {
		0, UINT_MAX, "Invalid feature value"
	};
	unsigned int argc, v;
	const char *name;
	int r;

	if (!as->argc)
		return 0;
	r = dm_read_arg_group(&group, as, &argc, error);
	if (r)
		return r;
	while (argc) {
		unsigned int *field;

		name = dm_shift_arg(as);
		argc--;
		if (!strcasecmp(name, "pool_kb")) {
			field = &ft->pool_kb;
		} else if (!strcasecmp(name, "ring_records")) {
			field = &ft->ring_records;
		} else if (!strcasecmp(name, "granularity_kb")) {
			field = &ft->granularity_kb;
		} else {
			*error = "Unrecognised feature argument";
			return -EINVAL;
		}
		if (!argc) {
			*error = "Feature argument without a value";
			return -EINVAL;
		}
		r = dm_read_arg(&value, as, &v, error);
		if (r)
			return r;
		argc--;
		*field = v;
	}
	if (as->argc) {
		*error = "Too many arguments";
		return -EINVAL;
	}
	return 0;
}

static void ferry_free_target(struct ferry_target *ft)
{
	ferry_dev_destroy(ft->core);
	if (ft->io_client)
		dm_io_client_destroy(ft->io_client);
	kfree(ft->sb_buf);
	vfree(ft->bm_buf);
	if (ft->meta)
		dm_put_device(ft->ti, ft->meta);
	if (ft->data)
		dm_put_device(ft->ti, ft->data);
	kfree(ft);
}

/* A target with the module's defaults; NULL without memory. */
static struct ferry_target *ferry_target_alloc(struct dm_target *ti)
{
	struct ferry_target *ft = kzalloc(sizeof(*ft), GFP_KERNEL);

	if (!ft)
		return NULL;
	ft->ti = ti;
	ft->cdev.index = -1;
	ft->cdev.priv = ft;
	ft->pool_kb = pool_kb;
	ft->ring_records = ring_records;
	ft->granularity_kb = granularity_kb;
	mutex_init(&ft->md_lock);
	spin_lock_init(&ft->hold_lock);
	bio_list_init(&ft->held);
	INIT_WORK(&ft->lease_work, ferry_lease_work);
	return ft;
}

/* <data_dev> <meta_dev>: two different block devices. */
static int ferry_open_devices(struct ferry_target *ft, struct dm_arg_set *as)
{
	struct dm_target *ti = ft->ti;
	int r;

	r = dm_get_device(ti, dm_shift_arg(as), dm_table_get_mode(ti->table),
			  &ft->data);
	if (r) {
		ti->error = "Cannot open the data device";
		return r;
	}
	r = dm_get_device(ti, dm_shift_arg(as), FMODE_READ | FMODE_WRITE,
			  &ft->meta);
	if (r) {
		ti->error = "Cannot open the metadata device";
		return r;
	}
	if (ft->data->bdev == ft->meta->bdev) {
		ti->error = "Data and metadata devices must differ";
		return -EINVAL;
	}
	return 0;
}

/* The capture configuration: the feature args, checked against the devices. */
static int ferry_configure(struct ferry_target *ft, struct dm_arg_set *as)
{
	struct dm_target *ti = ft->ti;
	u64 need;
	int r;

	r = ferry_parse_features(ft, as, &ti->error);
	if (r)
		return r;
	if (bdev_nr_sectors(ft->data->bdev) < ti->begin + ti->len) {
		ti->error = "Data device is smaller than the target";
		return -EINVAL;
	}
	ft->cfg.dev_size = (u64)ti->len << SECTOR_SHIFT;
	ft->cfg.granularity = ft->granularity_kb << 10;
	ft->cfg.ring_capacity = ft->ring_records;
	ft->cfg.pool_size = ft->pool_kb << 10;
	ft->cfg.pool_low_pct = 50;
	ft->cfg.ring_low_pct = 50;
	ft->cfg.seq_lease = ferry_seq_lease;
	if (ft->granularity_kb > (FERRY_GRAN_MAX >> 10) ||
	    ft->pool_kb > (FERRY_POOL_MAX >> 10) ||
	    ferry_config_check(&ft->cfg)) {
		ti->error = "Invalid pool_kb/ring_records/granularity_kb (or seq_lease)";
		return -EINVAL;
	}
	ft->bm_bytes = ferry_config_bitmap_bytes(&ft->cfg);
	ft->bm_io_bytes = round_up(ft->bm_bytes, FERRY_MD_BLOCK);
	need = ferry_md_size(ft->bm_bytes);
	if (bdev_nr_bytes(ft->meta->bdev) < need) {
		DMERR("metadata device needs at least %llu bytes", need);
		ti->error = "Metadata device is too small";
		return -EINVAL;
	}
	return 0;
}

/* The core device, the metadata buffers and the dm_io client. */
static int ferry_alloc_capture(struct ferry_target *ft)
{
	int r;

	ft->core = ferry_dev_create(&ft->cfg);
	ft->sb_buf = kmalloc(FERRY_MD_BLOCK, GFP_KERNEL);
	ft->bm_buf = vzalloc(ft->bm_io_bytes);
	if (!ft->core || !ft->sb_buf || !ft->bm_buf) {
		ft->ti->error = "Cannot allocate the capture memory";
		return -ENOMEM;
	}
	ft->cdev.core = ft->core;
	ft->io_client = dm_io_client_create();
	if (IS_ERR(ft->io_client)) {
		r = PTR_ERR(ft->io_client);
		ft->io_client = NULL;
		ft->ti->error = "Cannot create the metadata I/O client";
		return r;
	}
	return 0;
}

static int ferry_ctr(struct dm_target *ti, unsigned int argc, char **argv)
{
	struct dm_arg_set as = { .argc = argc, .argv = argv };
	struct ferry_target *ft;
	int r;

	if (argc < 2) {
		ti->error = "Usage: ferry <data_dev> <meta_dev> [<#opts> <opt> <value>...]";
		return -EINVAL;
	}
	ft = ferry_target_alloc(ti);
	if (!ft) {
		ti->error = "Cannot allocate the target";
		return -ENOMEM;
	}
	r = ferry_open_devices(ft, &as);
	if (!r)
		r = ferry_configure(ft, &as);
	if (!r)
		r = ferry_alloc_capture(ft);
	if (r) {
		ferry_free_target(ft);
		return r;
	}

	ft->md = dm_table_get_md(ti->table);
	ti->private = ft;
	ti->num_flush_bios = 1;
	ti->flush_supported = true;
	ti->num_discard_bios = 1;
	ti->num_secure_erase_bios = 0;
	ti->num_write_zeroes_bios = 0;
	ti->per_io_data_size = sizeof(struct ferry_pb);
	ti->accounts_remapped_io = true;
	/* pages must not change while written: we copy them at completion */
#ifdef FERRY_DM_STABLE_WRITES
	ti->needs_stable_writes = true;
#endif
	return 0;
}

static void ferry_dtr(struct dm_target *ti)
{
	struct ferry_target *ft = ti->private;

	ferry_ctldev_detach(ft);
	cancel_work_sync(&ft->lease_work);
	WARN_ON_ONCE(!bio_list_empty(&ft->held));
	ferry_free_target(ft);
}

static int ferry_preresume(struct dm_target *ti)
{
	struct ferry_target *ft = ti->private;
	bool first;
	u32 events;
	int r;

#ifndef FERRY_DM_STABLE_WRITES
	/*
	 * No dm_target.needs_stable_writes in this kernel (Debian 6.1 before
	 * -57): dm set the queue flags at the table swap, before this call.
	 */
	blk_queue_flag_set(QUEUE_FLAG_STABLE_WRITES, dm_disk(ft->md)->queue);
#endif
	r = ferry_ctldev_attach(ft);
	if (r) {
		DMERR("%s: no free device slot (max %u)", dm_device_name(ft->md),
		      FERRY_MAX_DEVICES);
		return r;
	}
	mutex_lock(&ft->md_lock);
	first = !ft->loaded;
	if (first)
		r = ferry_md_load(ft);
	else
		r = ferry_md_write_lease(ft);
	if (!r) {
		ft->loaded = true;
		ft->suspended = false;
	}
	mutex_unlock(&ft->md_lock);
	if (r) {
		if (first)
			ferry_ctldev_detach(ft);
		return r;
	}
	if (!first) {
		/* a mode change while suspended is announced now */
		ferry_ctl_lock();
		events = ferry_dev_thaw(ft->core);
		ferry_ctl_unlock();
		ferry_handle_events(ft, events);
	}
	return 0;
}

static void ferry_postsuspend(struct dm_target *ti)
{
	struct ferry_target *ft = ti->private;

	if (!ft->loaded)
		return;
	/* no I/O in flight now; stop handing out seqs */
	ferry_ctl_lock();
	ferry_dev_freeze(ft->core);
	ferry_ctl_unlock();
	mutex_lock(&ft->md_lock);
	ft->suspended = true;
	mutex_unlock(&ft->md_lock);
	cancel_work_sync(&ft->lease_work);
	mutex_lock(&ft->md_lock);
	ferry_md_save(ft);
	mutex_unlock(&ft->md_lock);
}

static const char *ferry_mode_name(u32 mode)
{
	switch (mode) {
	case FERRY_MODE_DATA:
		return "data";
	case FERRY_MODE_METADATA:
		return "metadata";
	case FERRY_MODE_BITMAP:
		return "bitmap";
	default:
		return "draining";
	}
}

static void ferry_status(struct dm_target *ti, status_type_t type,
			 unsigned int status_flags, char *result,
			 unsigned int maxlen)
{
	struct ferry_target *ft = ti->private;
	struct ferry_dev_info info = {};
	unsigned int sz = 0;

	switch (type) {
	case STATUSTYPE_INFO:
		ferry_dev_info(ft->core, &info);
		DMEMIT("%s %llu %llu %u/%u %u/%u %llu/%llu %u %d %llu",
		       ferry_mode_name(info.mode), info.next_seq,
		       info.committed_seq, info.ring_used, info.ring_capacity,
		       info.pool_used, info.pool_size, info.dirty_bits,
		       info.bitmap_bits, info.start_state, ft->cdev.index,
		       info.overlaps);
		break;
	case STATUSTYPE_TABLE:
		DMEMIT("%s %s 6 pool_kb %u ring_records %u granularity_kb %u",
		       ft->data->name, ft->meta->name, ft->pool_kb,
		       ft->ring_records, ft->granularity_kb);
		break;
	case STATUSTYPE_IMA:
		DMEMIT_TARGET_NAME_VERSION(ti->type);
		DMEMIT(",data_device=%s,meta_device=%s;", ft->data->name,
		       ft->meta->name);
		break;
	}
}

static int ferry_iterate_devices(struct dm_target *ti,
				 iterate_devices_callout_fn fn, void *data)
{
	struct ferry_target *ft = ti->private;

	return fn(ti, ft->data, 0, ti->len, data);
}

static struct target_type ferry_target_type = {
	.name = "ferry",
	.version = {1, 0, 0},
	.features = DM_TARGET_SINGLETON,
	.module = THIS_MODULE,
	.ctr = ferry_ctr,
	.dtr = ferry_dtr,
	.map = ferry_map,
	.end_io = ferry_end_io,
	.postsuspend = ferry_postsuspend,
	.preresume = ferry_preresume,
	.status = ferry_status,
	.iterate_devices = ferry_iterate_devices,
};

static int __init dm_ferry_init(void)
{
	int r;

	BUILD_BUG_ON(FERRY_EINVAL != EINVAL || FERRY_ENOSPC != ENOSPC ||
		     FERRY_EBUSY != EBUSY || FERRY_EAGAIN != EAGAIN ||
		     FERRY_ERANGE != ERANGE || FERRY_ESTALE != ESTALE ||
		     FERRY_EMSGSIZE != EMSGSIZE || FERRY_ENOBUFS != ENOBUFS ||
		     FERRY_ENODEV != ENODEV || FERRY_EPROTO != EPROTO ||
		     FERRY_ETIMEDOUT != ETIMEDOUT || FERRY_EFAULT != EFAULT ||
		     FERRY_ENOMEM != ENOMEM);
	if (ferry_seq_lease < 64 || ferry_seq_lease > (1UL << 62)) {
		pr_err("dm-ferry: seq_lease must be in [64, 2^62]\n");
		return -EINVAL;
	}
	ferry_wq = alloc_workqueue("dm-ferry", WQ_MEM_RECLAIM, 0);
	if (!ferry_wq)
		return -ENOMEM;
	r = ferry_ctldev_init();
	if (r)
		goto bad_ctl;
	r = dm_register_target(&ferry_target_type);
	if (r) {
		DMERR("register failed %d", r);
		goto bad_target;
	}
	DMINFO("version %s loaded", FERRY_MODULE_VERSION);
	return 0;

bad_target:
	ferry_ctldev_exit();
bad_ctl:
	destroy_workqueue(ferry_wq);
	return r;
}

static void __exit dm_ferry_exit(void)
{
	dm_unregister_target(&ferry_target_type);
	ferry_ctldev_exit();
	destroy_workqueue(ferry_wq);
}

module_init(dm_ferry_init);
module_exit(dm_ferry_exit);

MODULE_DESCRIPTION(DM_NAME " ferry target: write capture for continuous replication");
MODULE_AUTHOR("Ferry");
MODULE_LICENSE("GPL");
MODULE_VERSION(FERRY_MODULE_VERSION);
