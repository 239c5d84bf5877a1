/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The on-disk metadata of a protected device (the small
 * metadata device of the dm table line; a file or partition on Windows).
 *
 *   bytes [0, 4096)                 superblock (struct ferry_md_sb + zeros)
 *   bytes [4096, 4096 + bitmap)     dirty bitmap, little-endian u64 words,
 *                                   rounded up to 4096 bytes
 *
 * The superblock is rewritten DIRTY when a table goes live (with a fresh
 * seq lease) and CLEAN with the bitmap at a clean teardown.  See README.md.
 */
#ifndef FERRY_MD_H
#define FERRY_MD_H

#include "ferry_platform.h"
#include "ferry_abi.h"
#include "ferry_errno.h"

#define FERRY_MD_MAGIC		0x31444d5952524546ULL	/* "FERRYMD1" */
#define FERRY_MD_VERSION	1u
#define FERRY_MD_BLOCK		4096u
#define FERRY_MD_F_CLEAN	0x1u

struct ferry_md_sb {
	u64 magic;
	u32 version;
	u32 flags;		/* FERRY_MD_F_CLEAN */
	u32 sb_crc;		/* crc32 of the 4096-byte block, this field 0 */
	u32 granularity;	/* bytes per bitmap bit */
	u64 dev_size;		/* bytes of the data device */
	u64 nbits;
	u64 bitmap_offset;	/* bytes from the start: 4096 */
	u64 bitmap_bytes;	/* bytes of bitmap data (multiple of 8) */
	u64 next_seq;		/* CLEAN: where seqs continue */
	u64 seq_limit;		/* every seq ever handed out is below this */
	u32 generation;		/* table loads so far */
	u32 bitmap_crc;		/* CLEAN: crc32 of the bitmap bytes */
	u64 reserved[6];
};

/* Standard CRC-32 (IEEE 802.3, reflected), chainable: start with 0. */
u32 ferry_crc32(u32 crc, const void *buf, size_t len);

/* Bytes the metadata device needs for a bitmap of bitmap_bytes. */
u64 ferry_md_size(u64 bitmap_bytes);

/* Writes sb into a zeroed FERRY_MD_BLOCK-byte block, computing sb_crc. */
void ferry_md_encode(const struct ferry_md_sb *sb, void *block);

/*
 * Reads a superblock: 0, -FERRY_ENODEV (no Ferry metadata: a new device),
 * -FERRY_EPROTO (unknown version), -FERRY_EINVAL (corrupt).
 */
int ferry_md_decode(const void *block, struct ferry_md_sb *sb);

/*
 * How the stream starts given the decoded superblock (decode result in
 * ret), the current geometry and whether the saved bitmap's crc matched:
 * NEW without valid metadata, CLEAN after a clean teardown with the same
 * geometry and an intact bitmap, DIRTY otherwise.  *next_seq gets where
 * seqs continue (1 for NEW).
 */
u8 ferry_md_start_state(int ret, const struct ferry_md_sb *sb, u64 dev_size,
			u32 granularity, bool bitmap_ok, u64 *next_seq);

#endif /* FERRY_MD_H */
