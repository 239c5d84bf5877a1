// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Metadata superblock encoding and the crc32 both drivers use.
 */
#include "ferry_md.h"

FERRY_ABI_ASSERT(sizeof(struct ferry_md_sb) == 128, "superblock size");

u32 ferry_crc32(u32 crc, const void *buf, size_t len)
{
	static const u32 nibble[16] = {
		0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac,
		0x76dc4190, 0x6b6b51f4, 0x4db26158, 0x5005713c,
		0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
		0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c,
	};
	const u8 *p = buf;

	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		crc = (crc >> 4) ^ nibble[crc & 15];
		crc = (crc >> 4) ^ nibble[crc & 15];
	}
	return ~crc;
}

u64 ferry_md_size(u64 bitmap_bytes)
{
	return FERRY_MD_BLOCK +
	       ((bitmap_bytes + FERRY_MD_BLOCK - 1) & ~(u64)(FERRY_MD_BLOCK - 1));
}

void ferry_md_encode(const struct ferry_md_sb *sb, void *block)
{
	struct ferry_md_sb *out = block;

	ferry_memset(block, 0, FERRY_MD_BLOCK);
	*out = *sb;
	out->magic = FERRY_MD_MAGIC;
	out->version = FERRY_MD_VERSION;
	out->sb_crc = 0;
	out->sb_crc = ferry_crc32(0, block, FERRY_MD_BLOCK);
}

/* sb_crc sits at bytes [16, 20) of the block */
#define FERRY_MD_CRC_AT 16u
FERRY_ABI_ASSERT(sizeof(u64) + 2 * sizeof(u32) == FERRY_MD_CRC_AT,
		 "sb_crc offset");

int ferry_md_decode(const void *block, struct ferry_md_sb *sb)
{
	static const u8 zeros[4];
	const u8 *p = block;
	u32 crc;

	ferry_memcpy(sb, block, sizeof(*sb));
	if (sb->magic != FERRY_MD_MAGIC)
		return -FERRY_ENODEV;
	if (sb->version != FERRY_MD_VERSION)
		return -FERRY_EPROTO;
	crc = ferry_crc32(0, p, FERRY_MD_CRC_AT);
	crc = ferry_crc32(crc, zeros, sizeof(zeros));
	crc = ferry_crc32(crc, p + FERRY_MD_CRC_AT + 4,
			  FERRY_MD_BLOCK - FERRY_MD_CRC_AT - 4);
	if (crc != sb->sb_crc)
		return -FERRY_EINVAL;
	return 0;
}

u8 ferry_md_start_state(int ret, const struct ferry_md_sb *sb, u64 dev_size,
			u32 granularity, bool bitmap_ok, u64 *next_seq)
{
	if (ret) {
		*next_seq = 1;
		return FERRY_START_NEW;
	}
	if ((sb->flags & FERRY_MD_F_CLEAN) && sb->dev_size == dev_size &&
	    sb->granularity == granularity && bitmap_ok &&
	    sb->next_seq && sb->next_seq <= sb->seq_limit) {
		*next_seq = sb->next_seq;
		return FERRY_START_CLEAN;
	}
	/* a crash (or a changed geometry): no seq below the lease is safe */
	*next_seq = sb->seq_limit > sb->next_seq ? sb->seq_limit : sb->next_seq;
	if (!*next_seq)
		*next_seq = 1;
	return FERRY_START_DIRTY;
}
