/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * A fake platform under struct ferry_ctl (ferry_ctl_ops.h) for the host
 * tests, on real core devices: it keeps the contract of the ops.  hold()
 * sets the core's hold; wait_drained() completes the writes in flight
 * unless they are stuck (then it times out like a driver's wait); the
 * clock advances 1 us a reading and 1 ms a wait (or drain_ns when set);
 * arm_release() only notes when the release is due (tctl_fire() runs it).
 */
#ifndef FERRY_CTL_FAKE_H
#define FERRY_CTL_FAKE_H

#include "harness.h"
#include "ferry_ctl_ops.h"

#define TCTL_DEVS 4

struct tctl {
	struct ferry_ctl *ctl;
	struct ferry_ctl_dev devs[TCTL_DEVS];
	u32 pending[TCTL_DEVS];	/* writes in flight per device (admitted) */
	bool stuck;		/* in-flight writes never complete */
	u32 holds_on, holds_off;
	u32 last_wait_ms;
	u64 clock_ns;
	u32 events;		/* every event passed to ops->events */
	u32 event_calls;
	struct ferry_ctl_dev *event_dev;	/* of the last call */
	u32 describes;
	u64 drain_ns;		/* a wait takes this long when set */
	bool armed;		/* a release is armed ... */
	u64 armed_at_ns;	/* ... for this clock reading */
	u32 arms, cancels;
};

extern struct tctl tp;
/* hold, wait_drained, now_ns, events */
extern const struct ferry_ctl_ops tctl_ops;
/* the same plus describe (dev_major = 7 + index, the name "dm-<index>") */
extern const struct ferry_ctl_ops tctl_ops_describe;

/*
 * Resets the fake around c (already ferry_ctl_init()'ed with one of the
 * ops above) and tracks n devices of 1 MiB (4 KiB bits, DATA mode).
 */
void tctl_setup(struct ferry_ctl *c, u32 n);
void tctl_free(void);
/* Admits a write on device i that stays in flight. */
void tctl_begin_write(u32 i);
/*
 * Moves the clock to ns and, if the armed release is due by then, runs it
 * as the platform's timer would (ferry_ctl_hold_timer); true if it ran.
 */
bool tctl_fire(u64 ns);

/* size/version header of an argument struct. */
#define TARG(a) do {						\
		memset(&(a), 0, sizeof(a));			\
		(a).size = sizeof(a);				\
		(a).version = FERRY_ABI_VERSION;		\
	} while (0)

#endif /* FERRY_CTL_FAKE_H */
