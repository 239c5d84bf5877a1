/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * User-space platform shim for the core's unit tests: libc allocation,
 * pthread mutexes as the device lock, and a clock the tests control.
 */
#ifndef FERRY_PLATFORM_H
#define FERRY_PLATFORM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int32_t s32;
typedef int64_t s64;

#define ferry_memcpy(d, s, n) memcpy((d), (s), (n))
#define ferry_memset(d, c, n) memset((d), (c), (n))

/* Tests may make the next allocations fail: -1 = never. */
extern long ferry_test_alloc_budget;
/* The clock: each call returns ferry_test_clock_ns and then adds step. */
extern u64 ferry_test_clock_ns;
extern u64 ferry_test_clock_step;

static inline void *ferry_zalloc(size_t n)
{
	if (ferry_test_alloc_budget == 0)
		return NULL;
	if (ferry_test_alloc_budget > 0)
		ferry_test_alloc_budget--;
	return calloc(1, n ? n : 1);
}

static inline void ferry_free(void *p)
{
	free(p);
}

static inline u64 ferry_now_ns(void)
{
	return __atomic_fetch_add(&ferry_test_clock_ns, ferry_test_clock_step,
				  __ATOMIC_RELAXED);
}

typedef pthread_mutex_t ferry_lock_t;
typedef int ferry_irqflags_t;

#define ferry_lock_init(l) pthread_mutex_init((l), NULL)
#define ferry_lock(l, f) ((f) = 0, pthread_mutex_lock(l))
#define ferry_unlock(l, f) ((void)(f), pthread_mutex_unlock(l))

#define FERRY_BUG_ON(cond)						\
	do {								\
		if (cond) {						\
			fprintf(stderr, "FERRY_BUG_ON(%s) at %s:%d\n",	\
				#cond, __FILE__, __LINE__);		\
			abort();					\
		}							\
	} while (0)

#endif /* FERRY_PLATFORM_H */
