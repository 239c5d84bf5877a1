/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * A platform shim with no headers at all: `make -C native/common
 * freestanding` compiles the core with -ffreestanding -nostdinc against
 * it, which proves the core needs nothing from an OS or a C library.
 */
#ifndef FERRY_PLATFORM_H
#define FERRY_PLATFORM_H

typedef __UINT8_TYPE__ u8;
typedef __UINT16_TYPE__ u16;
typedef __UINT32_TYPE__ u32;
typedef __UINT64_TYPE__ u64;
typedef __INT32_TYPE__ s32;
typedef __INT64_TYPE__ s64;
typedef __UINT8_TYPE__ uint8_t;
typedef __UINT16_TYPE__ uint16_t;
typedef __UINT32_TYPE__ uint32_t;
typedef __UINT64_TYPE__ uint64_t;
typedef __SIZE_TYPE__ size_t;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

#define ferry_memcpy(d, s, n) __builtin_memcpy((d), (s), (n))
#define ferry_memset(d, c, n) __builtin_memset((d), (c), (n))

void *ferry_zalloc(size_t n);
void ferry_free(void *p);
u64 ferry_now_ns(void);

typedef struct { volatile int v; } ferry_lock_t;
typedef unsigned long ferry_irqflags_t;
void ferry_platform_lock(ferry_lock_t *l, ferry_irqflags_t *flags);
void ferry_platform_unlock(ferry_lock_t *l, ferry_irqflags_t flags);
#define ferry_lock_init(l) ((l)->v = 0)
#define ferry_lock(l, f) ferry_platform_lock((l), &(f))
#define ferry_unlock(l, f) ferry_platform_unlock((l), (f))

#define FERRY_BUG_ON(cond) do { if (cond) __builtin_trap(); } while (0)

#endif /* FERRY_PLATFORM_H */
