/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The control calls of \\.\FerryCtl, independent of the I/O manager: each
 * call gets the buffers the I/O manager hands a driver (METHOD_BUFFERED:
 * one system buffer used for input and output; METHOD_OUT_DIRECT: the
 * input in the system buffer, the output mapped from the caller's buffer)
 * and checks sizes, versions, reserved fields and ranges before touching
 * the capture core.
 *
 * Like the core, this file includes no OS header, so the host tests
 * (native/windows/test) run exactly the code the driver runs.  The
 * platform supplies the few things that need the OS through
 * struct ferry_ctl_ops.  Every call is serialized by the caller (the
 * driver's control mutex).
 */
#ifndef FERRY_CTL_OPS_H
#define FERRY_CTL_OPS_H

#include "ferry_core.h"
#include "ferry_winioctl.h"

#define FERRY_WIN_MODULE_VERSION	"0.1.0"
#define FERRY_WIN_TAG_HOLD_DEFAULT_MS	300u

/* One tracked (protected) volume as the control calls see it. */
struct ferry_ctl_dev {
	struct ferry_dev *core;
	char name[FERRY_DEV_NAME_LEN];	/* registry key of the volume */
	void *priv;			/* the platform's volume */
};

struct ferry_ctl;

struct ferry_ctl_ops {
	/*
	 * Hold (on) or release (off) new write-type I/O on a device.  Release
	 * resubmits what was queued.  Must call ferry_dev_hold() itself.
	 */
	void (*hold)(struct ferry_ctl *c, struct ferry_ctl_dev *d, bool on);
	/*
	 * Waits at most ms for no write in flight on any of the devices:
	 * 0, or -FERRY_ETIMEDOUT.
	 */
	int (*wait_drained)(struct ferry_ctl *c, struct ferry_ctl_dev **devs,
			    u32 n, u32 ms);
	/* Monotonic clock, ns (hold times). */
	u64 (*now_ns)(struct ferry_ctl *c);
	/* Core events of a device (FERRY_EV_*): wake readers, extend leases. */
	void (*events)(struct ferry_ctl *c, struct ferry_ctl_dev *d, u32 ev);
	/* RESCAN: re-read the protection list; 0 or -errno. */
	int (*rescan)(struct ferry_ctl *c, struct ferry_win_rescan *out);
};

/* The VSS-armed tag (FERRY_WIN_IOC_VSS_ARM). */
struct ferry_ctl_vss {
	bool armed;
	u64 tag_id;
	u32 hold_ms;
	u64 deadline_ns;
	u32 ndevs;
	u32 devs[FERRY_MAX_DEVICES];
	u32 status[FERRY_MAX_DEVICES];	/* ENOENT until the freeze point */
	u64 seqs[FERRY_MAX_DEVICES];
	u64 bridged;
	u64 hold_ns;
};

struct ferry_ctl {
	struct ferry_stream stream;
	struct ferry_ctl_dev *devs[FERRY_MAX_DEVICES];
	const void *owner;		/* the file object that consumes the stream */
	u32 tag_hold_ms;		/* TAG with hold_ms 0 */
	u64 tags_ok, tags_timed_out, hold_last_ns, hold_max_ns;
	struct ferry_ctl_vss vss;
	const struct ferry_ctl_ops *ops;
	void *platform;
	/* scratch for TAG (too large for a kernel stack) */
	struct ferry_ctl_dev *tag_devs[FERRY_MAX_DEVICES];
	struct ferry_dev *tag_cores[FERRY_MAX_DEVICES];
};

/* The outcome of one call. */
struct ferry_ctl_result {
	int err;		/* 0 or -errno */
	u32 info;		/* bytes of output (IoStatus.Information) */
	bool results;		/* on failure, the output holds results: warning severity */
	bool pend;		/* WAIT: nothing ready, pend the request */
};

void ferry_ctl_init(struct ferry_ctl *c, const struct ferry_ctl_ops *ops,
		    void *platform);

/* Adds a device at the lowest free index (-FERRY_ENOSPC if none). */
int ferry_ctl_attach(struct ferry_ctl *c, struct ferry_ctl_dev *d);
void ferry_ctl_detach(struct ferry_ctl *c, struct ferry_ctl_dev *d);

/*
 * One control call.  caller identifies the open handle (file object).
 * sysbuf holds in_len input bytes and receives up to out_len output bytes
 * (METHOD_BUFFERED: one buffer, at least max(in_len, out_len) long).  For
 * METHOD_OUT_DIRECT calls data/data_len is the mapped output buffer.
 */
struct ferry_ctl_result ferry_ctl_call(struct ferry_ctl *c, const void *caller,
				       u32 code, void *sysbuf, u32 in_len,
				       u32 out_len, void *data, u64 data_len);

/* The handle caller was closed: reset the stream if it owned it. */
void ferry_ctl_release(struct ferry_ctl *c, const void *caller);

/*
 * Passes the freeze IOCTL on and waits at most ms for it to complete
 * below: true if it completed in time.
 */
typedef bool (*ferry_ctl_forward_fn)(void *ctx, u32 ms);

/*
 * The VSS freeze point (IOCTL_VOLSNAP_FLUSH_AND_HOLD_WRITES) reached device
 * d.  If an unexpired arm lists d and d was not tagged yet: holds new
 * writes on d, waits for the ones in flight (at most hold_ms), inserts the
 * TAG, calls forward() with what is left of hold_ms, releases the hold and
 * records the outcome for VSS_RESULT.  Returns false, without calling
 * forward(), if d is not armed: the caller passes the IOCTL on as usual.
 */
bool ferry_ctl_vss_freeze(struct ferry_ctl *c, struct ferry_ctl_dev *d,
			  ferry_ctl_forward_fn forward, void *ctx);

#endif /* FERRY_CTL_OPS_H */
