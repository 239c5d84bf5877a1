/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Linux kernel platform shim for the portable capture core
 * (native/common/ferry_core.h lists what a shim provides).
 */
#ifndef FERRY_PLATFORM_H
#define FERRY_PLATFORM_H

#include <linux/types.h>
#include <linux/string.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/timekeeping.h>
#include <linux/bug.h>

#define ferry_memcpy(d, s, n) memcpy((d), (s), (n))
#define ferry_memset(d, c, n) memset((d), (c), (n))

/* Init paths only (table constructor): may sleep. */
static inline void *ferry_zalloc(size_t n)
{
	return kvzalloc(n, GFP_KERNEL);
}

static inline void ferry_free(void *p)
{
	kvfree(p);
}

static inline u64 ferry_now_ns(void)
{
	return ktime_get_real_ns();
}

/* Taken from bio completion (possibly hard interrupt context). */
typedef spinlock_t ferry_lock_t;
typedef unsigned long ferry_irqflags_t;
#define ferry_lock_init(l) spin_lock_init(l)
#define ferry_lock(l, f) spin_lock_irqsave((l), (f))
#define ferry_unlock(l, f) spin_unlock_irqrestore((l), (f))

#define FERRY_BUG_ON(cond) WARN_ON_ONCE(cond)

#endif /* FERRY_PLATFORM_H */
