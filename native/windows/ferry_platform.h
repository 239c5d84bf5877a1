/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Windows kernel platform shim for the portable capture core
 * (native/common/ferry_core.h lists what a shim provides).  Builds with
 * the WDK (MSVC) and with mingw-w64's DDK headers.
 */
#ifndef FERRY_PLATFORM_H
#define FERRY_PLATFORM_H

#include <ntifs.h>
#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int32_t s32;
typedef int64_t s64;

#define FERRY_POOL_TAG	0x79727246u	/* 'Frry' in pool dumps */

#define ferry_memcpy(d, s, n) RtlCopyMemory((d), (s), (n))
#define ferry_memset(d, c, n) memset((d), (c), (n))

/*
 * Everything the core allocates (ring, payload pool, bitmap) is touched by
 * write completions, which may run at DISPATCH_LEVEL: non-paged, no-execute
 * pool.  Only device creation allocates (PASSIVE_LEVEL).
 */
static __inline void *ferry_zalloc(size_t n)
{
	void *p;

	if (!n)
		n = 1;
	p = ExAllocatePoolWithTag(NonPagedPoolNx, n, FERRY_POOL_TAG);
	if (p)
		RtlZeroMemory(p, n);
	return p;
}

static __inline void ferry_free(void *p)
{
	if (p)
		ExFreePoolWithTag(p, FERRY_POOL_TAG);
}

/* Wall clock, ns since 1970 (platform.c: the precise clock when present). */
u64 ferry_now_ns(void);

/*
 * A spin lock raises to DISPATCH_LEVEL.  That is the highest IRQL any
 * core call runs at here (IRP completion routines), so it excludes every
 * other user; no interrupt service routine touches the core.
 */
typedef KSPIN_LOCK ferry_lock_t;
typedef KIRQL ferry_irqflags_t;
#define ferry_lock_init(l) KeInitializeSpinLock(l)
#define ferry_lock(l, f) KeAcquireSpinLock((l), &(f))
#define ferry_unlock(l, f) KeReleaseSpinLock((l), (f))

/* Reports a broken core invariant once (like WARN_ON_ONCE); never crashes. */
void ferry_bug(const char *file, int line);
#define FERRY_BUG_ON(cond)					\
	do {							\
		if (cond)					\
			ferry_bug(__FILE__, __LINE__);		\
	} while (0)

#endif /* FERRY_PLATFORM_H */
