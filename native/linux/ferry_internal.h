/* SPDX-License-Identifier: GPL-2.0 */
/*
 * dm-ferry internals shared by the target, the control device and the
 * metadata code.
 */
#ifndef FERRY_INTERNAL_H
#define FERRY_INTERNAL_H

#include <linux/bio.h>
#include <linux/device-mapper.h>
#include <linux/mutex.h>
#include <linux/workqueue.h>

#include "ferry_platform.h"
#include "ferry_ctl_ops.h"
#include "ferry_md.h"

#define DM_MSG_PREFIX "ferry"

/* One table instance of the "ferry" target. */
struct ferry_target {
	struct dm_target *ti;
	struct dm_dev *data;
	struct dm_dev *meta;
	struct mapped_device *md;
	struct ferry_dev *core;
	struct ferry_dev_config cfg;
	unsigned int pool_kb, ring_records, granularity_kb;

	/* its entry in the control registry; .index -1 when not attached */
	struct ferry_ctl_dev cdev;

	/* metadata; md_lock serializes every metadata write */
	struct mutex md_lock;
	struct dm_io_client *io_client;
	void *sb_buf;			/* FERRY_MD_BLOCK bytes, kmalloc */
	void *bm_buf;			/* bitmap I/O buffer, vmalloc */
	u64 bm_bytes;			/* bitmap bytes (multiple of 8) */
	u64 bm_io_bytes;		/* rounded up to FERRY_MD_BLOCK */
	u32 generation;
	bool loaded;			/* stream started from the metadata */
	bool suspended;
	struct work_struct lease_work;

	/* writes held by a tag (FERRY_IOC_TAG) */
	spinlock_t hold_lock;
	struct bio_list held;
};

extern struct workqueue_struct *ferry_wq;
extern unsigned long ferry_seq_lease;
extern unsigned int ferry_tag_hold_ms;

/* ferry_target.c */
void ferry_handle_events(struct ferry_target *ft, u32 events);
void ferry_release_held(struct ferry_target *ft);

/* ferry_ctl.c */
int ferry_ctldev_init(void);
void ferry_ctldev_exit(void);
void ferry_ctl_lock(void);
void ferry_ctl_unlock(void);
int ferry_ctldev_attach(struct ferry_target *ft);
void ferry_ctldev_detach(struct ferry_target *ft);
void ferry_ctl_wake_readers(void);
void ferry_ctl_wake_tag(void);

/* ferry_mdio.c */
int ferry_md_load(struct ferry_target *ft);
int ferry_md_write_lease(struct ferry_target *ft);
int ferry_md_save(struct ferry_target *ft);

#endif /* FERRY_INTERNAL_H */
