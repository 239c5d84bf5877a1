// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Parsing of DSM (trim / offload write) requests: see dsm.h. */
#include "dsm.h"

static u32 dsm_u32(const u8 *p)
{
	return (u32)p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24;
}

static u64 dsm_u64(const u8 *p)
{
	return (u64)dsm_u32(p) | (u64)dsm_u32(p + 4) << 32;
}

/* [offset, offset + length) clipped to the volume; false if empty. */
static bool dsm_clip(u64 offset, u64 length, u64 dev_size,
		     struct ferry_dsm_range *r)
{
	u64 end;

	if (!length || offset >= dev_size)
		return false;
	end = offset + length;
	if (end < offset || end > dev_size)
		end = dev_size;
	r->offset = offset;
	r->length = end - offset;
	return true;
}

static enum ferry_dsm_kind dsm_whole(u64 dev_size, enum ferry_dsm_kind kind,
				     struct ferry_dsm_range *out, u32 max,
				     u32 *n)
{
	*n = 0;
	if (max && dsm_clip(0, dev_size, dev_size, out))
		*n = 1;
	return kind;
}

enum ferry_dsm_kind ferry_dsm_parse(const void *buf, u32 len, u64 dev_size,
				    struct ferry_dsm_range *out, u32 max,
				    u32 *n)
{
	const u8 *p = buf;
	enum ferry_dsm_kind kind;
	u32 action, flags, roff, rlen, count, i;
	u64 lo = ~0ULL, hi = 0;

	*n = 0;
	if (!p || len < 8)
		/* not even the action is readable: assume the worst */
		return dsm_whole(dev_size, FERRY_DSM_DIRTY, out, max, n);
	action = dsm_u32(p + FERRY_DSM_OFF_ACTION);
	if (action & FERRY_DSM_ACTION_NONDESTRUCTIVE)
		return FERRY_DSM_NONE;
	kind = action == FERRY_DSM_ACTION_TRIM ? FERRY_DSM_DISCARD :
						 FERRY_DSM_DIRTY;
	if (len < FERRY_DSM_HDR_SIZE || dsm_u32(p) != FERRY_DSM_HDR_SIZE)
		return dsm_whole(dev_size, FERRY_DSM_DIRTY, out, max, n);
	flags = dsm_u32(p + FERRY_DSM_OFF_FLAGS);
	if (flags & FERRY_DSM_FLAG_ENTIRE_RANGE)
		return dsm_whole(dev_size, kind, out, max, n);

	roff = dsm_u32(p + FERRY_DSM_OFF_RANGES);
	rlen = dsm_u32(p + FERRY_DSM_OFF_RANGES_LEN);
	if (!rlen)
		return FERRY_DSM_NONE;	/* no ranges: nothing changes */
	if (roff < FERRY_DSM_HDR_SIZE || roff > len || rlen > len - roff ||
	    (roff & 7) || (rlen % FERRY_DSM_RANGE_SIZE))
		return dsm_whole(dev_size, FERRY_DSM_DIRTY, out, max, n);

	count = rlen / FERRY_DSM_RANGE_SIZE;
	for (i = 0; i < count; i++) {
		const u8 *r = p + roff + i * FERRY_DSM_RANGE_SIZE;
		u64 off = dsm_u64(r), length = dsm_u64(r + 8);
		struct ferry_dsm_range c;

		if (off >> 63)	/* a negative LONGLONG offset */
			return dsm_whole(dev_size, FERRY_DSM_DIRTY, out, max, n);
		if (!dsm_clip(off, length, dev_size, &c))
			continue;
		if (c.offset < lo)
			lo = c.offset;
		if (c.offset + c.length > hi)
			hi = c.offset + c.length;
		if (*n < max)
			out[*n] = c;
		(*n)++;
	}
	if (*n <= max)
		return *n ? kind : FERRY_DSM_NONE;
	/* too many ranges to keep: read back everything they span */
	*n = 0;
	if (max && dsm_clip(lo, hi - lo, dev_size, out))
		*n = 1;
	return FERRY_DSM_DIRTY;
}
