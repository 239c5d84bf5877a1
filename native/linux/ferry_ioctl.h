/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR Apache-2.0 */
/*
 * Ioctl numbers of /dev/ferry-ctl.  Usable from the kernel
 * and from user space (needs only the uapi <linux/ioctl.h>); the argument
 * structs are in native/common/ferry_abi.h.
 */
#ifndef FERRY_IOCTL_H
#define FERRY_IOCTL_H

#include <linux/ioctl.h>

#include "ferry_abi.h"

#define FERRY_CTL_NAME		"ferry-ctl"
#define FERRY_IOC_MAGIC		0xF7

#define FERRY_IOC_VERSION	_IOWR(FERRY_IOC_MAGIC, 0x00, struct ferry_ioc_version)
#define FERRY_IOC_LIST		_IOWR(FERRY_IOC_MAGIC, 0x01, struct ferry_ioc_list)
#define FERRY_IOC_GET_CHANGES	_IOWR(FERRY_IOC_MAGIC, 0x02, struct ferry_ioc_get)
#define FERRY_IOC_COMMIT	_IOW(FERRY_IOC_MAGIC, 0x03, struct ferry_ioc_commit)
#define FERRY_IOC_TAG		_IOWR(FERRY_IOC_MAGIC, 0x04, struct ferry_ioc_tag)
#define FERRY_IOC_STATS		_IOWR(FERRY_IOC_MAGIC, 0x05, struct ferry_ioc_stats)
/* STATS with the struct's size before the hold figures (no .holds) */
#define FERRY_IOC_STATS_V0	_IOC(_IOC_READ | _IOC_WRITE, FERRY_IOC_MAGIC, 0x05, \
				     FERRY_IOC_STATS_SIZE_V0)
#define FERRY_IOC_GET_BITMAP	_IOWR(FERRY_IOC_MAGIC, 0x06, struct ferry_ioc_bitmap)
#define FERRY_IOC_CLEAR_BITMAP	_IOWR(FERRY_IOC_MAGIC, 0x07, struct ferry_ioc_clear_bitmap)
#define FERRY_IOC_RESYNC_MARK	_IOWR(FERRY_IOC_MAGIC, 0x08, struct ferry_ioc_resync)
#define FERRY_IOC_HOLD		_IOWR(FERRY_IOC_MAGIC, 0x09, struct ferry_ioc_hold)
#define FERRY_IOC_RELEASE	_IOWR(FERRY_IOC_MAGIC, 0x0a, struct ferry_ioc_release)

#define FERRY_TAG_HOLD_MAX_MS	5000u

#endif /* FERRY_IOCTL_H */
