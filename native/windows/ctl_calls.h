/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The IOCTLs of \\.\FerryCtl, independent of the I/O manager: each call
 * gets the buffers the I/O manager hands a driver (METHOD_BUFFERED: one
 * system buffer used for input and output; METHOD_OUT_DIRECT: the input in
 * the system buffer, the output mapped from the caller's buffer), checks
 * the Windows rules (input and output lengths, pointer fields that must be
 * 0) and runs the shared control call of ../common/ferry_ctl_ops.h.  The
 * Windows-only calls (WAIT, RESCAN, the VSS-armed tag) live here too.
 *
 * Like the core, this file includes no OS header, so the host tests
 * (native/windows/test) run exactly the code the driver runs.  Every call
 * is serialized by the caller (the driver's control mutex).
 */
#ifndef FERRY_CTL_CALLS_H
#define FERRY_CTL_CALLS_H

#include "ferry_ctl_ops.h"
#include "ferry_winioctl.h"

FERRY_ABI_ASSERT(FERRY_WIN_TAG_HOLD_MAX_MS == FERRY_CTL_HOLD_MAX_MS,
		 "one hold limit");

/* The VSS-armed tag (FERRY_WIN_IOC_VSS_ARM). */
struct ferry_win_vss {
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

struct ferry_win_ctl;

/* RESCAN: re-read the protection list; 0 or -errno. */
typedef int (*ferry_win_rescan_fn)(struct ferry_win_ctl *w,
				   struct ferry_win_rescan *out);

struct ferry_win_ctl {
	struct ferry_ctl ctl;		/* the calls both systems have */
	struct ferry_win_vss vss;
	ferry_win_rescan_fn rescan;
};

/* The outcome of one call. */
struct ferry_ctl_result {
	int err;		/* 0 or -errno */
	u32 info;		/* bytes of output (IoStatus.Information) */
	bool results;		/* on failure, the output holds results: warning severity */
	bool pend;		/* WAIT: nothing ready, pend the request */
};

void ferry_win_ctl_init(struct ferry_win_ctl *w, const struct ferry_ctl_ops *ops,
			ferry_win_rescan_fn rescan);

/*
 * One control call.  caller identifies the open handle (file object).
 * sysbuf holds in_len input bytes and receives up to out_len output bytes
 * (METHOD_BUFFERED: one buffer, at least max(in_len, out_len) long).  For
 * METHOD_OUT_DIRECT calls data/data_len is the mapped output buffer.
 */
struct ferry_ctl_result ferry_win_ctl_call(struct ferry_win_ctl *w,
					   const void *caller, u32 code,
					   void *sysbuf, u32 in_len,
					   u32 out_len, void *data,
					   u64 data_len);

/*
 * Passes the freeze IOCTL on and waits at most ms for it to complete
 * below: true if it completed in time.
 */
typedef bool (*ferry_win_forward_fn)(void *ctx, u32 ms);

/*
 * The VSS freeze point (IOCTL_VOLSNAP_FLUSH_AND_HOLD_WRITES) reached device
 * d.  If an unexpired arm lists d and d was not tagged yet: holds new
 * writes on d, waits for the ones in flight (at most hold_ms), inserts the
 * TAG, calls forward() with what is left of hold_ms, releases the hold and
 * records the outcome for VSS_RESULT.  Returns false, without calling
 * forward(), if d is not armed, or (status EBUSY) while a hold (HOLD) is
 * in place: the caller passes the IOCTL on as usual.
 */
bool ferry_win_vss_freeze(struct ferry_win_ctl *w, struct ferry_ctl_dev *d,
			  ferry_win_forward_fn forward, void *ctx);

#endif /* FERRY_CTL_CALLS_H */
