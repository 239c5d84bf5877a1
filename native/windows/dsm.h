/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * What an IOCTL_STORAGE_MANAGE_DATA_SET_ATTRIBUTES request (a "DSM": trim,
 * offload write, ...) does to a volume's data, read from its input buffer.
 * The buffer comes from whoever opened the volume (a file system, or a user
 * program with a volume handle), so every field is checked.  No OS header:
 * the layout offsets below are checked against the DDK's struct in the
 * driver build (dsm_layout.c) and the parser runs in the host tests.
 */
#ifndef FERRY_DSM_H
#define FERRY_DSM_H

#include "ferry_core.h"	/* the types, through the build's platform shim */

/* DEVICE_MANAGE_DATA_SET_ATTRIBUTES, little-endian, 28 bytes. */
#define FERRY_DSM_HDR_SIZE		28u
#define FERRY_DSM_OFF_ACTION		4u
#define FERRY_DSM_OFF_FLAGS		8u
#define FERRY_DSM_OFF_RANGES		20u	/* DataSetRangesOffset */
#define FERRY_DSM_OFF_RANGES_LEN	24u	/* DataSetRangesLength */
/* DEVICE_DATA_SET_RANGE: { LONGLONG StartingOffset; ULONGLONG LengthInBytes } */
#define FERRY_DSM_RANGE_SIZE		16u

#define FERRY_DSM_ACTION_TRIM		1u
#define FERRY_DSM_ACTION_NONDESTRUCTIVE	0x80000000u
#define FERRY_DSM_FLAG_ENTIRE_RANGE	0x1u

enum ferry_dsm_kind {
	FERRY_DSM_NONE = 0,	/* data unchanged: pass it, record nothing */
	FERRY_DSM_DISCARD = 1,	/* trim: DISCARD records for the ranges */
	FERRY_DSM_DIRTY = 2,	/* data changed, not by us: read the ranges back */
};

struct ferry_dsm_range {
	u64 offset;
	u64 length;
};

/*
 * Classifies a DSM input buffer of len bytes sent to a volume of dev_size
 * bytes and writes at most max ranges (clipped to the volume, empty ones
 * dropped) to out, *n of them.
 *
 *  - A non-destructive action (flag bit 31): NONE.
 *  - Trim: DISCARD.  Any other destructive action (offload write, or one
 *    this code does not know): DIRTY.
 *  - The "entire data set" flag: one range [0, dev_size).
 *  - A malformed buffer (too short, bad size field, ranges outside the
 *    buffer, misaligned, negative offsets) or more than max ranges:
 *    DIRTY over what could be changed - the bounding range of the ranges,
 *    or the whole volume if even that is unknown.  Never DISCARD: a wrong
 *    DISCARD would lose data, a wrong DIRTY only costs a read-back.
 */
enum ferry_dsm_kind ferry_dsm_parse(const void *buf, u32 len, u64 dev_size,
				    struct ferry_dsm_range *out, u32 max,
				    u32 *n);

#endif /* FERRY_DSM_H */
