/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The control calls both drivers offer (/dev/ferry-ctl on Linux,
 * \\.\FerryCtl on Windows), on argument structs already in kernel memory:
 * VERSION, LIST, GET_CHANGES, COMMIT, TAG, HOLD, RELEASE, STATS,
 * GET_BITMAP, CLEAR_BITMAP and RESYNC_MARK, plus the registry of tracked
 * devices, the ownership of the change stream and the one write hold that
 * may outlive a call (HOLD).
 *
 * Like the core, this file includes only "ferry_platform.h".  What needs
 * the OS comes through struct ferry_ctl_ops.  The platform keeps what
 * differs between the systems: how arguments travel (copy_{from,to}_user;
 * the I/O manager's buffers), what travels back on failure, waiting for
 * records (poll; pended WAIT requests), and its own calls (Windows: WAIT,
 * RESCAN, the VSS-armed tag).
 *
 * Contract:
 *  - Every function here is a control call of ferry_core.h: the caller
 *    serializes them all (Linux: the registry mutex; Windows: the control
 *    mutex), attach and detach included, in a context that may sleep
 *    (process context; PASSIVE_LEVEL).  The ops may sleep.
 *  - Each call checks, in this order: the struct's size field (EINVAL),
 *    its version (EPROTO; VERSION accepts any), reserved fields and ranges
 *    (EINVAL), device indexes (ENODEV), then the state of the stream or
 *    device.  Nothing changes before every check passed.  Errors are
 *    -FERRY_E* (the Linux errno values).
 *  - Calls with bulk output (LIST entries, the GET batch, GET_BITMAP
 *    bytes) write it through a struct ferry_ctl_out.  Its err is the
 *    platform's verdict on the caller's buffer (Linux: -FERRY_EFAULT for a
 *    NULL address); each call says where it reports it.
 *  - Results in the struct are valid when a call returns 0.  TAG, HOLD,
 *    GET_CHANGES and CLEAR_BITMAP set *results when the struct also holds
 *    results on failure (.hold_ns, .drain_ns, .needed, .dirty_bits).
 *  - A hold (HOLD) keeps new writes held after the call returns, bounded:
 *    it ends with TAG .hold_id (cut, release), RELEASE, the close of the
 *    file that asked for it (ferry_ctl_release), the detach of one of its
 *    devices, or its bound (the platform's timer, ferry_ctl_hold_timer),
 *    whichever comes first.  While it is in place another HOLD and a TAG
 *    of its own get -FERRY_EBUSY.
 */
#ifndef FERRY_CTL_OPS_H
#define FERRY_CTL_OPS_H

#include "ferry_core.h"

/* The drivers' version, reported by VERSION (.module_version). */
#define FERRY_MODULE_VERSION		"0.1.0"
/* The longest write hold a TAG or HOLD may ask for (VERSION reports it). */
#define FERRY_CTL_HOLD_MAX_MS		5000u
/* The hold of a TAG that asks for 0, until the platform sets another. */
#define FERRY_CTL_HOLD_DEFAULT_MS	300u
/* Bitmap bytes read per device-lock hold into plain memory / the bounce. */
#define FERRY_CTL_CHUNK			65536u
#define FERRY_CTL_BOUNCE		4096u

/* One tracked device as the control calls see it. */
struct ferry_ctl_dev {
	struct ferry_dev *core;
	int index;			/* stream index, -1 when not tracked */
	char name[FERRY_DEV_NAME_LEN];	/* reported in ferry_dev_info.name */
	void *priv;			/* the platform's device */
};

struct ferry_ctl;

struct ferry_ctl_ops {
	/*
	 * Required.  Hold (on) or release (off) new write-type I/O on a
	 * device: must call ferry_dev_hold() itself; release resubmits what
	 * was queued.
	 */
	void (*hold)(struct ferry_ctl *c, struct ferry_ctl_dev *d, bool on);
	/*
	 * Required.  Waits at most ms for no write in flight on any of the
	 * n devices: 0, or -FERRY_ETIMEDOUT.
	 */
	int (*wait_drained)(struct ferry_ctl *c, struct ferry_ctl_dev **devs,
			    u32 n, u32 ms);
	/* Required.  A monotonic clock, ns (hold times). */
	u64 (*now_ns)(struct ferry_ctl *c);
	/*
	 * Optional.  Core events (FERRY_EV_*) of device d, or of several
	 * devices when d is NULL (COMMIT, TAG): wake readers, extend leases.
	 */
	void (*events)(struct ferry_ctl *c, struct ferry_ctl_dev *d, u32 ev);
	/*
	 * Optional.  Adds what the platform knows to a device's info after
	 * the core's fields and d->name (Linux: the dm name, device numbers).
	 */
	void (*describe)(struct ferry_ctl *c, struct ferry_ctl_dev *d,
			 struct ferry_dev_info *info);
	/*
	 * Required by HOLD.  Calls ferry_ctl_hold_timer() ns from now (not
	 * earlier; a little later is fine), serialized with the control calls,
	 * in a context that may sleep and resubmit I/O (a work item).  Arming
	 * again replaces the earlier time.
	 */
	void (*arm_release)(struct ferry_ctl *c, u64 ns);
	/*
	 * Required by HOLD.  Disarms without waiting (the caller holds the
	 * serialization the timer's call needs); a call already on its way
	 * finds nothing to release.
	 */
	void (*cancel_release)(struct ferry_ctl *c);
};

/* The write hold of HOLD, in place while id != 0. */
struct ferry_ctl_hold {
	u64 id;
	const void *owner;		/* the open file that asked for it */
	u64 start_ns, deadline_ns;	/* ops->now_ns() */
	u32 n;
	struct ferry_ctl_dev *devs[FERRY_MAX_DEVICES];
};

struct ferry_ctl {
	struct ferry_stream stream;
	struct ferry_ctl_dev *devs[FERRY_MAX_DEVICES];
	const void *owner;		/* the open file that consumes the stream */
	u32 tag_hold_ms;		/* TAG with hold_ms 0; the platform's setting */
	u64 tags_ok, tags_timed_out, hold_last_ns, hold_max_ns;
	struct ferry_ctl_hold hold;
	u64 last_hold_id;		/* ids are 1, 2, ... */
	struct ferry_hold_stats hold_stats;
	const struct ferry_ctl_ops *ops;
	/* scratch of the calls (serialized; too large for a kernel stack) */
	struct ferry_ctl_dev *tag_devs[FERRY_MAX_DEVICES];
	struct ferry_dev *tag_cores[FERRY_MAX_DEVICES];
	struct ferry_dev_info info;
	u8 bounce[FERRY_CTL_BOUNCE];
};

/*
 * Where a call's bulk output goes: plain memory (mem), or copy() into the
 * caller's buffer (ctx), len bytes long.  copy() returns 0 or -errno.
 */
struct ferry_ctl_out {
	u8 *mem;
	ferry_copy_out_fn copy;
	void *ctx;
	u64 len;
	int err;		/* 0, or why the buffer cannot be used */
};

void ferry_ctl_init(struct ferry_ctl *c, const struct ferry_ctl_ops *ops);

/*
 * Tracks d at index, or at the lowest free index when index < 0: returns
 * the index, -FERRY_ENOSPC (no free index) or -FERRY_EBUSY (index taken).
 */
int ferry_ctl_attach(struct ferry_ctl *c, struct ferry_ctl_dev *d, int index);
/* Stops tracking d (nothing if it is not tracked); d->index becomes -1. */
void ferry_ctl_detach(struct ferry_ctl *c, struct ferry_ctl_dev *d);
/* The device tracked at index, or NULL. */
struct ferry_ctl_dev *ferry_ctl_dev_at(struct ferry_ctl *c, u32 index);

/*
 * The open file caller was closed: if it owned the stream, redeliver; if
 * it asked for the hold in place, release it.
 */
void ferry_ctl_release(struct ferry_ctl *c, const void *caller);
/* True if records wait to be handed out (poll, WAIT). */
bool ferry_ctl_pending(struct ferry_ctl *c);

/* The size/version rule of every argument struct (VERSION: any_version). */
int ferry_ctl_check_hdr(const void *arg, u32 want, bool any_version);

/* ---- the calls ---- */

int ferry_ctl_version(struct ferry_ctl *c, struct ferry_ioc_version *a);
/*
 * Up to .capacity entries at out offsets 0, sizeof(info), ...; .entries is
 * the platform's (it is not looked at).  out->err after the EINVAL checks.
 */
int ferry_ctl_list(struct ferry_ctl *c, struct ferry_ioc_list *a,
		   const struct ferry_ctl_out *out);
/*
 * The next batch into out (out->len bytes; .buf and .buf_len are the
 * platform's).  caller becomes the stream's owner; another caller gets
 * -FERRY_EBUSY.  out->err after the ownership check.
 */
int ferry_ctl_get(struct ferry_ctl *c, const void *caller,
		  struct ferry_ioc_get *a, const struct ferry_ctl_out *out,
		  bool *results);
/* Only the stream's owner may commit (-FERRY_EBUSY). */
int ferry_ctl_commit(struct ferry_ctl *c, const void *caller,
		     struct ferry_ioc_commit *a);
/*
 * Holds new writes on the listed devices, waits at most hold_ms for the
 * ones in flight, inserts one TAG on all of them, releases the writes.
 * With .hold_id: the TAG at the cut of that hold, which must still be in
 * place (-FERRY_ESTALE, nothing inserted; -FERRY_EINVAL for an id never
 * given out); the hold ends either way once the checks passed.
 */
int ferry_ctl_tag(struct ferry_ctl *c, struct ferry_ioc_tag *a,
		  bool *results);
/*
 * Holds new writes on the listed devices, waits at most hold_ms for the
 * ones in flight (-FERRY_ETIMEDOUT: released, .drain_ns comes back) and
 * leaves them held, with the release armed hold_ms after the hold began.
 * caller owns the hold (its close releases it).
 */
int ferry_ctl_hold(struct ferry_ctl *c, const void *caller,
		   struct ferry_ioc_hold *a, bool *results);
/* Ends hold .hold_id now; -FERRY_ESTALE if it already ended. */
int ferry_ctl_release_hold(struct ferry_ctl *c, struct ferry_ioc_release *a);
/*
 * The platform's armed release fired: ends the hold in place if its bound
 * passed, arms again if it fired early, and does nothing without a hold.
 */
void ferry_ctl_hold_timer(struct ferry_ctl *c);
/* True while a hold (HOLD) is in place. */
bool ferry_ctl_holding(const struct ferry_ctl *c);
int ferry_ctl_stats(struct ferry_ctl *c, struct ferry_ioc_stats *a);
/*
 * .buf_len bitmap bytes into out (which must hold them), clipped at the
 * bitmap's end.  out->err after the EINVAL checks.
 */
int ferry_ctl_get_bitmap(struct ferry_ctl *c, struct ferry_ioc_bitmap *a,
			 const struct ferry_ctl_out *out);
int ferry_ctl_clear_bitmap(struct ferry_ctl *c,
			   struct ferry_ioc_clear_bitmap *a, bool *results);
int ferry_ctl_resync(struct ferry_ctl *c, struct ferry_ioc_resync *a);

/* ---- the tag steps, for a platform's own tags (the VSS freeze point) ---- */

/*
 * Holds new writes on devs[0..n), waits at most hold_ms for the ones in
 * flight, then inserts one TAG (tag_id) on all of them: seqs[i], events
 * into *ev.  0, -FERRY_ETIMEDOUT or ferry_tag_cut()'s error.  The writes
 * stay held either way: release them with ferry_ctl_unhold().
 */
int ferry_ctl_hold_cut(struct ferry_ctl *c, struct ferry_ctl_dev **devs,
		       u32 n, u64 tag_id, u32 hold_ms, u64 *seqs, u32 *ev);
void ferry_ctl_unhold(struct ferry_ctl *c, struct ferry_ctl_dev **devs,
		      u32 n);
/* Counts the outcome r of a tag and passes its events on (d: see ops). */
void ferry_ctl_tag_done(struct ferry_ctl *c, struct ferry_ctl_dev *d, int r,
			u32 ev);

#endif /* FERRY_CTL_OPS_H */
