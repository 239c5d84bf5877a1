// SPDX-License-Identifier: GPL-2.0
/*
 * /dev/ferry-ctl: the control device of dm-ferry.  One registry of tracked
 * devices and one change stream over all of them; the first file that
 * calls GET_CHANGES owns the stream until it is closed, which hands every
 * uncommitted batch out again to the next owner.
 */
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/poll.h>
#include <linux/uaccess.h>
#include <linux/capability.h>
#include <linux/blkdev.h>
#include <linux/wait.h>

#include "ferry_internal.h"
#include "ferry_ioctl.h"

#define FERRY_BOUNCE 4096

static struct {
	struct mutex lock;		/* every control call and attach/detach */
	struct ferry_stream stream;
	struct ferry_target *tgt[FERRY_MAX_DEVICES];
	struct file *owner;		/* consumer of the change stream */
	wait_queue_head_t readers;	/* poll: records available */
	wait_queue_head_t tag_wq;	/* tag: in-flight writes drained */
	u64 tags_ok, tags_timed_out, hold_last_ns, hold_max_ns;
	u8 bounce[FERRY_BOUNCE];	/* bitmap copies (under lock) */
} reg;

void ferry_ctl_lock(void)
{
	mutex_lock(&reg.lock);
}

void ferry_ctl_unlock(void)
{
	mutex_unlock(&reg.lock);
}

void ferry_ctl_wake_readers(void)
{
	if (wq_has_sleeper(&reg.readers))
		wake_up_interruptible(&reg.readers);
}

void ferry_ctl_wake_tag(void)
{
	if (wq_has_sleeper(&reg.tag_wq))
		wake_up(&reg.tag_wq);
}

int ferry_ctl_attach(struct ferry_target *ft)
{
	int i, idx = -1, r = 0;

	mutex_lock(&reg.lock);
	if (ft->index >= 0)
		goto out;		/* the same table resuming again */
	/* a reloaded table takes over its device's index */
	for (i = 0; i < FERRY_MAX_DEVICES; i++) {
		if (reg.tgt[i] && reg.tgt[i]->md == ft->md) {
			reg.tgt[i]->index = -1;
			reg.tgt[i] = NULL;
			ferry_stream_set(&reg.stream, i, NULL);
			idx = i;
			break;
		}
	}
	if (idx < 0)
		idx = ferry_stream_free_index(&reg.stream);
	if (idx < 0) {
		r = -ENOSPC;
		goto out;
	}
	ferry_stream_set(&reg.stream, idx, ft->core);
	reg.tgt[idx] = ft;
	ft->index = idx;
out:
	mutex_unlock(&reg.lock);
	return r;
}

void ferry_ctl_detach(struct ferry_target *ft)
{
	mutex_lock(&reg.lock);
	if (ft->index >= 0 && reg.tgt[ft->index] == ft) {
		ferry_stream_set(&reg.stream, ft->index, NULL);
		reg.tgt[ft->index] = NULL;
	}
	ft->index = -1;
	mutex_unlock(&reg.lock);
}

/* ---- argument checks ---- */

struct ferry_ioc_hdr {
	u32 size;
	u32 version;
};

static int ferry_check_hdr(const void *arg, size_t want, bool any_version)
{
	const struct ferry_ioc_hdr *h = arg;

	if (h->size != want)
		return -EINVAL;
	if (!any_version && h->version != FERRY_ABI_VERSION)
		return -EPROTO;
	return 0;
}

static struct ferry_target *ferry_lookup(u32 index)
{
	if (index >= FERRY_MAX_DEVICES)
		return NULL;
	return reg.tgt[index];
}

static void ferry_fill_info(struct ferry_target *ft, struct ferry_dev_info *info)
{
	dev_t devt = disk_devt(dm_disk(ft->md));
	char name[DM_NAME_LEN];

	memset(info, 0, sizeof(*info));
	ferry_dev_info(ft->core, info);
	if (!dm_copy_name_and_uuid(ft->md, name, NULL))
		strscpy(info->name, name, sizeof(info->name));
	info->dev_major = MAJOR(devt);
	info->dev_minor = MINOR(devt);
	info->data_major = MAJOR(ft->data->bdev->bd_dev);
	info->data_minor = MINOR(ft->data->bdev->bd_dev);
	info->meta_major = MAJOR(ft->meta->bdev->bd_dev);
	info->meta_minor = MINOR(ft->meta->bdev->bd_dev);
}

/* ---- ioctls (reg.lock held) ---- */

static int ferry_ioc_version(struct ferry_ioc_version *a)
{
	int r = ferry_check_hdr(a, sizeof(*a), true);

	if (r)
		return r;
	a->version = FERRY_ABI_VERSION;
	a->abi_version = FERRY_ABI_VERSION;
	a->max_devices = FERRY_MAX_DEVICES;
	a->batch_hdr_size = sizeof(struct ferry_batch_hdr);
	a->rec_hdr_size = sizeof(struct ferry_rec);
	a->dev_info_size = sizeof(struct ferry_dev_info);
	a->max_tag_hold_ms = FERRY_TAG_HOLD_MAX_MS;
	memset(a->module_version, 0, sizeof(a->module_version));
	strscpy(a->module_version, FERRY_MODULE_VERSION,
		sizeof(a->module_version));
	return 0;
}

static int ferry_ioc_list(struct ferry_ioc_list *a)
{
	struct ferry_dev_info info;
	struct ferry_dev_info __user *out = u64_to_user_ptr(a->entries);
	u32 i, n = 0, count = 0;
	int r = ferry_check_hdr(a, sizeof(*a), false);

	if (r)
		return r;
	if (a->reserved || a->capacity > FERRY_MAX_DEVICES)
		return -EINVAL;
	if (a->capacity && !a->entries)
		return -EFAULT;
	for (i = 0; i < FERRY_MAX_DEVICES; i++) {
		if (!reg.tgt[i])
			continue;
		count++;
		if (n >= a->capacity)
			continue;
		ferry_fill_info(reg.tgt[i], &info);
		if (copy_to_user(&out[n], &info, sizeof(info)))
			return -EFAULT;
		n++;
	}
	a->count = count;
	a->returned = n;
	return 0;
}

struct ferry_user_buf {
	u8 __user *base;
};

static int ferry_copy_to_user(void *ctx, u64 off, const void *src, u32 len)
{
	struct ferry_user_buf *ub = ctx;

	return copy_to_user(ub->base + off, src, len) ? -EFAULT : 0;
}

static int ferry_ioc_get(struct ferry_ioc_get *a, struct file *file)
{
	struct ferry_get_result res;
	struct ferry_user_buf ub;
	int r = ferry_check_hdr(a, sizeof(*a), false);

	if (r)
		return r;
	if (reg.owner && reg.owner != file)
		return -EBUSY;
	if (!a->buf)
		return -EFAULT;
	ub.base = u64_to_user_ptr(a->buf);
	reg.owner = file;
	r = ferry_stream_get(&reg.stream, a->buf_len, ferry_copy_to_user, &ub,
			     &res);
	a->batch_id = res.batch_id;
	a->bytes = res.bytes;
	a->needed = res.needed;
	a->nrecords = res.nrecords;
	a->batch_flags = res.flags;
	return r;
}

/* Called with reg.lock held. */
static void ferry_dispatch_events(u32 events)
{
	int i;

	if (events & FERRY_EV_READY)
		ferry_ctl_wake_readers();
	/*
	 * Stream-wide calls merge the events of every device, so a lease
	 * request cannot be traced to its device: extend every lease (an
	 * early extension costs one metadata write).
	 */
	if (events & FERRY_EV_LEASE)
		for (i = 0; i < FERRY_MAX_DEVICES; i++)
			if (reg.tgt[i])
				ferry_handle_events(reg.tgt[i], FERRY_EV_LEASE);
}

static int ferry_ioc_commit(struct ferry_ioc_commit *a, struct file *file)
{
	u32 events = 0;
	int r = ferry_check_hdr(a, sizeof(*a), false);

	if (r)
		return r;
	if (reg.owner != file)
		return -EBUSY;
	r = ferry_stream_commit(&reg.stream, a->batch_id, &events);
	ferry_dispatch_events(events);
	return r;
}

static bool ferry_tag_drained(struct ferry_target **fts, u32 n)
{
	u32 i;

	for (i = 0; i < n; i++)
		if (ferry_dev_inflight(fts[i]->core))
			return false;
	return true;
}

static int ferry_ioc_tag(struct ferry_ioc_tag *a)
{
	struct ferry_target *fts[FERRY_MAX_DEVICES];
	struct ferry_dev *cores[FERRY_MAX_DEVICES];
	u64 seen = 0, start, held;
	u32 i, hold_ms, events = 0;
	long left;
	int r = ferry_check_hdr(a, sizeof(*a), false);

	if (r)
		return r;
	hold_ms = a->hold_ms ? a->hold_ms : READ_ONCE(ferry_tag_hold_ms);
	if (a->reserved || !a->ndevs || a->ndevs > FERRY_MAX_DEVICES ||
	    hold_ms > FERRY_TAG_HOLD_MAX_MS || !hold_ms)
		return -EINVAL;
	for (i = 0; i < a->ndevs; i++) {
		u32 d = a->devs[i];

		if (d >= FERRY_MAX_DEVICES || (seen & (1ULL << d)))
			return d >= FERRY_MAX_DEVICES ? -ENODEV : -EINVAL;
		seen |= 1ULL << d;
		fts[i] = ferry_lookup(d);
		if (!fts[i])
			return -ENODEV;
		cores[i] = fts[i]->core;
		r = ferry_dev_tag_check(cores[i]);
		if (r)
			return r;
	}

	/* hold new writes everywhere, wait for the ones in flight */
	start = ktime_get_ns();
	for (i = 0; i < a->ndevs; i++)
		ferry_dev_hold(cores[i], true);
	left = wait_event_timeout(reg.tag_wq, ferry_tag_drained(fts, a->ndevs),
				  msecs_to_jiffies(hold_ms));
	if (!left && !ferry_tag_drained(fts, a->ndevs))
		r = -ETIMEDOUT;
	else
		r = ferry_tag_cut(cores, a->ndevs, a->tag_id, a->seqs, &events);
	for (i = 0; i < a->ndevs; i++)
		ferry_release_held(fts[i]);
	held = ktime_get_ns() - start;

	a->hold_ns = held;
	reg.hold_last_ns = held;
	if (held > reg.hold_max_ns)
		reg.hold_max_ns = held;
	if (r == -ETIMEDOUT)
		reg.tags_timed_out++;
	else if (!r)
		reg.tags_ok++;
	if (!r)
		for (i = a->ndevs; i < FERRY_MAX_DEVICES; i++)
			a->seqs[i] = 0;
	ferry_dispatch_events(events);
	return r;
}

static int ferry_ioc_stats(struct ferry_ioc_stats *a)
{
	struct ferry_global_stats *g = &a->global;
	struct ferry_target *ft = NULL;
	int r = ferry_check_hdr(a, sizeof(*a), false);

	if (r)
		return r;
	if (a->reserved)
		return -EINVAL;
	if (a->dev_index != FERRY_DEV_NONE) {
		ft = ferry_lookup(a->dev_index);
		if (!ft)
			return -ENODEV;
	}
	memset(g, 0, sizeof(*g));
	g->ndevices = reg.stream.ndevs;
	g->batches_inflight = ferry_stream_inflight(&reg.stream);
	g->consumer_attached = reg.owner != NULL;
	g->next_batch_id = reg.stream.next_batch;
	g->committed_batch_id = reg.stream.committed;
	g->gets = reg.stream.gets;
	g->commits = reg.stream.commits;
	g->resets = reg.stream.resets;
	g->tags_ok = reg.tags_ok;
	g->tags_timed_out = reg.tags_timed_out;
	g->tag_hold_last_ns = reg.hold_last_ns;
	g->tag_hold_max_ns = reg.hold_max_ns;
	if (ft)
		ferry_fill_info(ft, &a->dev);
	else
		memset(&a->dev, 0, sizeof(a->dev));
	return 0;
}

static int ferry_ioc_get_bitmap(struct ferry_ioc_bitmap *a)
{
	u8 __user *out = u64_to_user_ptr(a->buf);
	struct ferry_dev_info info = {};
	struct ferry_target *ft;
	u64 epoch = 0, epoch0 = 0;
	u32 done = 0, events = 0;
	int r = ferry_check_hdr(a, sizeof(*a), false);

	if (r)
		return r;
	if (a->reserved || (a->flags & ~FERRY_BITMAP_F_CUT) || !a->buf_len)
		return -EINVAL;
	if (!a->buf)
		return -EFAULT;
	ft = ferry_lookup(a->dev_index);
	if (!ft)
		return -ENODEV;
	ferry_dev_info(ft->core, &info);
	a->cut_seq = 0;
	if (a->flags & FERRY_BITMAP_F_CUT) {
		r = ferry_dev_bitmap_cut(ft->core, &a->cut_seq, &epoch0, &events);
		ferry_dispatch_events(events);
		if (r)
			return r;
	}
	while (done < a->buf_len) {
		u32 chunk = min_t(u32, a->buf_len - done, FERRY_BOUNCE);
		u32 copied;

		r = ferry_dev_bitmap_read(ft->core, a->start_byte + done,
					  reg.bounce, chunk, &copied, &epoch);
		if (r == -ERANGE && done)
			break;		/* reached the end of the bitmap */
		if (r)
			return r;
		if (done && epoch != epoch0)
			return -ESTALE;	/* overflowed again meanwhile */
		epoch0 = epoch;
		if (copy_to_user(out + done, reg.bounce, copied))
			return -EFAULT;
		done += copied;
		if (copied < chunk)
			break;
	}
	ferry_dev_info(ft->core, &info);
	a->returned = done;
	a->granularity = info.granularity;
	a->nbits = info.bitmap_bits;
	a->dirty_bits = info.dirty_bits;
	a->epoch = epoch0;
	return 0;
}

static int ferry_ioc_clear_bitmap(struct ferry_ioc_clear_bitmap *a)
{
	struct ferry_dev_info info = {};
	struct ferry_target *ft;
	u32 events = 0;
	int r = ferry_check_hdr(a, sizeof(*a), false);

	if (r)
		return r;
	if (a->reserved)
		return -EINVAL;
	ft = ferry_lookup(a->dev_index);
	if (!ft)
		return -ENODEV;
	r = ferry_dev_bitmap_clear(ft->core, a->epoch, a->start_bit, a->nbits,
				   &events);
	ferry_dispatch_events(events);
	ferry_dev_info(ft->core, &info);
	a->dirty_bits = info.dirty_bits;
	return r;
}

static int ferry_ioc_resync(struct ferry_ioc_resync *a)
{
	struct ferry_target *ft;
	u32 events = 0;
	int r = ferry_check_hdr(a, sizeof(*a), false);

	if (r)
		return r;
	ft = ferry_lookup(a->dev_index);
	if (!ft)
		return -ENODEV;
	r = ferry_dev_resync_mark(ft->core, a->offset, a->length, &a->seq,
				  &events);
	ferry_dispatch_events(events);
	return r;
}

/* Large enough for every argument struct. */
union ferry_ioc_arg {
	struct ferry_ioc_version version;
	struct ferry_ioc_list list;
	struct ferry_ioc_get get;
	struct ferry_ioc_commit commit;
	struct ferry_ioc_tag tag;
	struct ferry_ioc_stats stats;
	struct ferry_ioc_bitmap bitmap;
	struct ferry_ioc_clear_bitmap clear;
	struct ferry_ioc_resync resync;
};

static long ferry_ctl_ioctl(struct file *file, unsigned int cmd,
			    unsigned long uarg)
{
	void __user *argp = (void __user *)uarg;
	union ferry_ioc_arg *a;
	size_t size = _IOC_SIZE(cmd);
	bool copy_back;
	long r;

	switch (cmd) {
	case FERRY_IOC_VERSION:
	case FERRY_IOC_LIST:
	case FERRY_IOC_GET_CHANGES:
	case FERRY_IOC_COMMIT:
	case FERRY_IOC_TAG:
	case FERRY_IOC_STATS:
	case FERRY_IOC_GET_BITMAP:
	case FERRY_IOC_CLEAR_BITMAP:
	case FERRY_IOC_RESYNC_MARK:
		break;
	default:
		return -ENOTTY;
	}
	if (size > sizeof(*a))
		return -ENOTTY;
	a = kzalloc(sizeof(*a), GFP_KERNEL);
	if (!a)
		return -ENOMEM;
	if (copy_from_user(a, argp, size)) {
		kfree(a);
		return -EFAULT;
	}

	mutex_lock(&reg.lock);
	switch (cmd) {
	case FERRY_IOC_VERSION:
		r = ferry_ioc_version(&a->version);
		break;
	case FERRY_IOC_LIST:
		r = ferry_ioc_list(&a->list);
		break;
	case FERRY_IOC_GET_CHANGES:
		r = ferry_ioc_get(&a->get, file);
		break;
	case FERRY_IOC_COMMIT:
		r = ferry_ioc_commit(&a->commit, file);
		break;
	case FERRY_IOC_TAG:
		r = ferry_ioc_tag(&a->tag);
		break;
	case FERRY_IOC_STATS:
		r = ferry_ioc_stats(&a->stats);
		break;
	case FERRY_IOC_GET_BITMAP:
		r = ferry_ioc_get_bitmap(&a->bitmap);
		break;
	case FERRY_IOC_CLEAR_BITMAP:
		r = ferry_ioc_clear_bitmap(&a->clear);
		break;
	default:
		r = ferry_ioc_resync(&a->resync);
		break;
	}
	mutex_unlock(&reg.lock);

	/*
	 * Results go back on success, and for GET_CHANGES also on EMSGSIZE
	 * (.needed), for TAG on failure (.hold_ns), for CLEAR (.dirty_bits).
	 * A malformed header never gets anything back.
	 */
	copy_back = !r || (r != -EINVAL && r != -EPROTO && r != -EFAULT &&
			   (cmd == FERRY_IOC_GET_CHANGES || cmd == FERRY_IOC_TAG ||
			    cmd == FERRY_IOC_CLEAR_BITMAP));
	if (copy_back && (_IOC_DIR(cmd) & _IOC_READ) &&
	    copy_to_user(argp, a, size))
		r = -EFAULT;
	kfree(a);
	return r;
}

static int ferry_ctl_open(struct inode *inode, struct file *file)
{
	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	return nonseekable_open(inode, file);
}

static int ferry_ctl_release(struct inode *inode, struct file *file)
{
	mutex_lock(&reg.lock);
	if (reg.owner == file) {
		/* the consumer went away: redeliver what it did not commit */
		ferry_stream_reset(&reg.stream);
		reg.owner = NULL;
	}
	mutex_unlock(&reg.lock);
	return 0;
}

static __poll_t ferry_ctl_poll(struct file *file, poll_table *wait)
{
	__poll_t mask = 0;

	poll_wait(file, &reg.readers, wait);
	mutex_lock(&reg.lock);
	if (ferry_stream_pending(&reg.stream))
		mask |= EPOLLIN | EPOLLRDNORM;
	mutex_unlock(&reg.lock);
	return mask;
}

static const struct file_operations ferry_ctl_fops = {
	.owner = THIS_MODULE,
	.open = ferry_ctl_open,
	.release = ferry_ctl_release,
	.unlocked_ioctl = ferry_ctl_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.poll = ferry_ctl_poll,
	.llseek = noop_llseek,
};

static struct miscdevice ferry_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = FERRY_CTL_NAME,
	.fops = &ferry_ctl_fops,
	.mode = 0600,
};

int ferry_ctl_init(void)
{
	mutex_init(&reg.lock);
	ferry_stream_init(&reg.stream);
	init_waitqueue_head(&reg.readers);
	init_waitqueue_head(&reg.tag_wq);
	return misc_register(&ferry_misc);
}

void ferry_ctl_exit(void)
{
	misc_deregister(&ferry_misc);
}
