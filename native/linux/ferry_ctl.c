// SPDX-License-Identifier: GPL-2.0
/*
 * /dev/ferry-ctl: the control device of dm-ferry.  One registry of tracked
 * devices and one change stream over all of them; the first file that
 * calls GET_CHANGES owns the stream until it is closed, which hands every
 * uncommitted batch out again to the next owner.  The calls themselves
 * are the shared ones of ../common/ferry_ctl_ops.c; this file adds the
 * misc device, copy_{from,to}_user, the wait queues and the platform ops,
 * among them the timer that ends a write hold (HOLD) at its bound.
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

static struct {
	struct mutex lock;		/* every control call and attach/detach */
	struct ferry_ctl ctl;		/* the registry, the stream, the calls */
	wait_queue_head_t readers;	/* poll: records available */
	wait_queue_head_t tag_wq;	/* tag: in-flight writes drained */
	struct delayed_work hold_end;	/* a hold's bound (ferry_wq) */
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

static struct ferry_target *ferry_target_of(struct ferry_ctl_dev *d)
{
	return d->priv;
}

int ferry_ctldev_attach(struct ferry_target *ft)
{
	struct ferry_ctl_dev *d;
	int i, idx = -1, r = 0;

	mutex_lock(&reg.lock);
	if (ft->cdev.index >= 0)
		goto out;		/* the same table resuming again */
	/* a reloaded table takes over its device's index */
	for (i = 0; i < FERRY_MAX_DEVICES; i++) {
		d = ferry_ctl_dev_at(&reg.ctl, i);
		if (d && ferry_target_of(d)->md == ft->md) {
			ferry_ctl_detach(&reg.ctl, d);
			idx = i;
			break;
		}
	}
	r = ferry_ctl_attach(&reg.ctl, &ft->cdev, idx);
	if (r > 0)
		r = 0;
out:
	mutex_unlock(&reg.lock);
	return r;
}

void ferry_ctldev_detach(struct ferry_target *ft)
{
	mutex_lock(&reg.lock);
	ferry_ctl_detach(&reg.ctl, &ft->cdev);
	mutex_unlock(&reg.lock);
}

/* ---- the platform under the shared control calls (reg.lock held) ---- */

static void ferry_op_hold(struct ferry_ctl *c, struct ferry_ctl_dev *d,
			  bool on)
{
	if (on)
		ferry_dev_hold(d->core, true);
	else
		ferry_release_held(ferry_target_of(d));
}

static bool ferry_drained(struct ferry_ctl_dev **devs, u32 n)
{
	u32 i;

	for (i = 0; i < n; i++)
		if (ferry_dev_inflight(devs[i]->core))
			return false;
	return true;
}

static int ferry_op_wait_drained(struct ferry_ctl *c,
				 struct ferry_ctl_dev **devs, u32 n, u32 ms)
{
	long left = wait_event_timeout(reg.tag_wq, ferry_drained(devs, n),
				       msecs_to_jiffies(ms));

	if (!left && !ferry_drained(devs, n))
		return -ETIMEDOUT;
	return 0;
}

static u64 ferry_op_now(struct ferry_ctl *c)
{
	return ktime_get_ns();
}

/* Device events too go to every device: as ever on Linux. */
static void ferry_op_events(struct ferry_ctl *c, struct ferry_ctl_dev *d,
			    u32 events)
{
	struct ferry_ctl_dev *t;
	int i;

	if (events & FERRY_EV_READY)
		ferry_ctl_wake_readers();
	/*
	 * Stream-wide calls merge the events of every device, so a lease
	 * request cannot be traced to its device: extend every lease (an
	 * early extension costs one metadata write).
	 */
	if (events & FERRY_EV_LEASE)
		for (i = 0; i < FERRY_MAX_DEVICES; i++) {
			t = ferry_ctl_dev_at(c, i);
			if (t)
				ferry_handle_events(ferry_target_of(t),
						    FERRY_EV_LEASE);
		}
}

static void ferry_op_describe(struct ferry_ctl *c, struct ferry_ctl_dev *d,
			      struct ferry_dev_info *info)
{
	struct ferry_target *ft = ferry_target_of(d);
	dev_t devt = disk_devt(dm_disk(ft->md));
	char name[DM_NAME_LEN];

	if (!dm_copy_name_and_uuid(ft->md, name, NULL))
		strscpy(info->name, name, sizeof(info->name));
	info->dev_major = MAJOR(devt);
	info->dev_minor = MINOR(devt);
	info->data_major = MAJOR(ft->data->bdev->bd_dev);
	info->data_minor = MINOR(ft->data->bdev->bd_dev);
	info->meta_major = MAJOR(ft->meta->bdev->bd_dev);
	info->meta_minor = MINOR(ft->meta->bdev->bd_dev);
}

/*
 * The release runs on ferry_wq (process context, WQ_MEM_RECLAIM): it takes
 * reg.lock and resubmits the held writes.  A firing that raced with the
 * end of the hold finds nothing to do; an early one arms again.
 */
static void ferry_hold_end_work(struct work_struct *work)
{
	mutex_lock(&reg.lock);
	ferry_ctl_hold_timer(&reg.ctl);
	mutex_unlock(&reg.lock);
}

static void ferry_op_arm_release(struct ferry_ctl *c, u64 ns)
{
	/* one jiffy more: the current one has partly passed */
	mod_delayed_work(ferry_wq, &reg.hold_end, nsecs_to_jiffies(ns) + 1);
}

static void ferry_op_cancel_release(struct ferry_ctl *c)
{
	/* never _sync: the work needs reg.lock, which the caller holds */
	cancel_delayed_work(&reg.hold_end);
}

static const struct ferry_ctl_ops ferry_ctl_linux_ops = {
	.hold = ferry_op_hold,
	.wait_drained = ferry_op_wait_drained,
	.now_ns = ferry_op_now,
	.events = ferry_op_events,
	.describe = ferry_op_describe,
	.arm_release = ferry_op_arm_release,
	.cancel_release = ferry_op_cancel_release,
};

/* ---- ioctls ---- */

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
	struct ferry_ioc_hold hold;
	struct ferry_ioc_release release;
};

static bool ferry_ioc_known(unsigned int cmd)
{
	switch (cmd) {
	case FERRY_IOC_VERSION:
	case FERRY_IOC_LIST:
	case FERRY_IOC_GET_CHANGES:
	case FERRY_IOC_COMMIT:
	case FERRY_IOC_TAG:
	case FERRY_IOC_STATS:
	case FERRY_IOC_STATS_V0:
	case FERRY_IOC_GET_BITMAP:
	case FERRY_IOC_CLEAR_BITMAP:
	case FERRY_IOC_RESYNC_MARK:
	case FERRY_IOC_HOLD:
	case FERRY_IOC_RELEASE:
		return true;
	default:
		return false;
	}
}

struct ferry_user_buf {
	u8 __user *base;
};

static int ferry_copy_to_user(void *ctx, u64 off, const void *src, u32 len)
{
	struct ferry_user_buf *ub = ctx;

	return copy_to_user(ub->base + off, src, len) ? -EFAULT : 0;
}

/* The caller's buffer at user address uaddr: EFAULT if it is NULL. */
static struct ferry_ctl_out ferry_user_out(struct ferry_user_buf *ub,
					   u64 uaddr, u64 len)
{
	struct ferry_ctl_out out = {
		.copy = ferry_copy_to_user,
		.ctx = ub,
		.len = len,
		.err = uaddr ? 0 : -EFAULT,
	};

	ub->base = u64_to_user_ptr(uaddr);
	return out;
}

/* One call on the argument struct in kernel memory (reg.lock held). */
static int ferry_ioc_call(struct file *file, unsigned int cmd,
			  union ferry_ioc_arg *a)
{
	struct ferry_user_buf ub;
	struct ferry_ctl_out out;
	bool results;

	switch (cmd) {
	case FERRY_IOC_VERSION:
		return ferry_ctl_version(&reg.ctl, &a->version);
	case FERRY_IOC_LIST:
		out = ferry_user_out(&ub, a->list.entries,
				     (u64)a->list.capacity *
					     sizeof(struct ferry_dev_info));
		if (!a->list.capacity)
			out.err = 0;	/* nothing to write */
		return ferry_ctl_list(&reg.ctl, &a->list, &out);
	case FERRY_IOC_GET_CHANGES:
		out = ferry_user_out(&ub, a->get.buf, a->get.buf_len);
		return ferry_ctl_get(&reg.ctl, file, &a->get, &out, &results);
	case FERRY_IOC_COMMIT:
		return ferry_ctl_commit(&reg.ctl, file, &a->commit);
	case FERRY_IOC_TAG:
		reg.ctl.tag_hold_ms = READ_ONCE(ferry_tag_hold_ms);
		return ferry_ctl_tag(&reg.ctl, &a->tag, &results);
	case FERRY_IOC_STATS:
		return ferry_ctl_stats(&reg.ctl, &a->stats);
	case FERRY_IOC_STATS_V0:
		/* the shorter struct must say so: .holds would not travel */
		if (a->stats.size != FERRY_IOC_STATS_SIZE_V0)
			return -EINVAL;
		return ferry_ctl_stats(&reg.ctl, &a->stats);
	case FERRY_IOC_HOLD:
		return ferry_ctl_hold(&reg.ctl, file, &a->hold, &results);
	case FERRY_IOC_RELEASE:
		return ferry_ctl_release_hold(&reg.ctl, &a->release);
	case FERRY_IOC_GET_BITMAP:
		out = ferry_user_out(&ub, a->bitmap.buf, a->bitmap.buf_len);
		return ferry_ctl_get_bitmap(&reg.ctl, &a->bitmap, &out);
	case FERRY_IOC_CLEAR_BITMAP:
		return ferry_ctl_clear_bitmap(&reg.ctl, &a->clear, &results);
	default:
		return ferry_ctl_resync(&reg.ctl, &a->resync);
	}
}

/*
 * Results go back on success, and for GET_CHANGES also on EMSGSIZE
 * (.needed), for TAG on failure (.hold_ns), for HOLD (.drain_ns), for
 * CLEAR (.dirty_bits).
 * A malformed header never gets anything back.
 */
static bool ferry_ioc_copy_back(unsigned int cmd, long r)
{
	if (!(_IOC_DIR(cmd) & _IOC_READ))
		return false;
	if (!r)
		return true;
	if (r == -EINVAL || r == -EPROTO || r == -EFAULT)
		return false;
	return cmd == FERRY_IOC_GET_CHANGES || cmd == FERRY_IOC_TAG ||
	       cmd == FERRY_IOC_HOLD || cmd == FERRY_IOC_CLEAR_BITMAP;
}

static long ferry_ctl_ioctl(struct file *file, unsigned int cmd,
			    unsigned long uarg)
{
	void __user *argp = (void __user *)uarg;
	union ferry_ioc_arg *a;
	size_t size = _IOC_SIZE(cmd);
	long r;

	if (!ferry_ioc_known(cmd) || size > sizeof(*a))
		return -ENOTTY;
	a = kzalloc(sizeof(*a), GFP_KERNEL);
	if (!a)
		return -ENOMEM;
	if (copy_from_user(a, argp, size)) {
		kfree(a);
		return -EFAULT;
	}
	mutex_lock(&reg.lock);
	r = ferry_ioc_call(file, cmd, a);
	mutex_unlock(&reg.lock);
	if (ferry_ioc_copy_back(cmd, r) && copy_to_user(argp, a, size))
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

static int ferry_ctl_close(struct inode *inode, struct file *file)
{
	/*
	 * if it consumed the stream, what it did not commit is redelivered;
	 * a hold it asked for ends
	 */
	mutex_lock(&reg.lock);
	ferry_ctl_release(&reg.ctl, file);
	mutex_unlock(&reg.lock);
	return 0;
}

static __poll_t ferry_ctl_poll(struct file *file, poll_table *wait)
{
	__poll_t mask = 0;

	poll_wait(file, &reg.readers, wait);
	mutex_lock(&reg.lock);
	if (ferry_ctl_pending(&reg.ctl))
		mask |= EPOLLIN | EPOLLRDNORM;
	mutex_unlock(&reg.lock);
	return mask;
}

static const struct file_operations ferry_ctl_fops = {
	.owner = THIS_MODULE,
	.open = ferry_ctl_open,
	.release = ferry_ctl_close,
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

int ferry_ctldev_init(void)
{
	BUILD_BUG_ON(FERRY_TAG_HOLD_MAX_MS != FERRY_CTL_HOLD_MAX_MS);
	mutex_init(&reg.lock);
	ferry_ctl_init(&reg.ctl, &ferry_ctl_linux_ops);
	init_waitqueue_head(&reg.readers);
	init_waitqueue_head(&reg.tag_wq);
	INIT_DELAYED_WORK(&reg.hold_end, ferry_hold_end_work);
	return misc_register(&ferry_misc);
}

void ferry_ctldev_exit(void)
{
	misc_deregister(&ferry_misc);
	/* no device is left, so no hold: only a stale firing may be queued */
	cancel_delayed_work_sync(&reg.hold_end);
}
