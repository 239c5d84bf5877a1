/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * ferryflt.sys internals shared by its source files.  See README.md for
 * the design: a WDM upper filter of the Volume class that captures writes
 * at IRP completion into the portable core (native/common).
 */
#ifndef FERRYFLT_H
#define FERRYFLT_H

#include "ferry_platform.h"

#include <ntddstor.h>
#include <ntdddisk.h>
#include <mountdev.h>

#include "ferry_core.h"
#include "ferry_md.h"
#include "ferry_winioctl.h"
#include "ctl_calls.h"
#include "dsm.h"

#ifndef MdlMappingNoExecute
#define MdlMappingNoExecute 0x40000000	/* Windows 8+; not in every DDK */
#endif
#ifndef POOL_NX_ALLOCATION
#define POOL_NX_ALLOCATION 0x200	/* Windows 8+: NX entries in a lookaside list */
#endif
#ifndef IOCTL_VOLSNAP_FLUSH_AND_HOLD_WRITES
#define IOCTL_VOLSNAP_FLUSH_AND_HOLD_WRITES \
	CTL_CODE(0x53, 0, METHOD_BUFFERED, FILE_READ_ACCESS | FILE_WRITE_ACCESS)
#endif

#define FERRY_EXT_CTL	0x4c544346u	/* "FCTL" */
#define FERRY_EXT_VOL	0x4c4f5646u	/* "FVOL" */

#define FERRY_UID_MAX	256u		/* MOUNTDEV_UNIQUE_ID bytes kept */
#define FERRY_DSM_MAX	256u		/* DSM ranges recorded one by one */

/* Why new write-type IRPs wait in a volume's held queue (ferry_vol.gate). */
#define FERRY_GATE_HOLD		0x1u	/* a tag / save / restart drains writes */
#define FERRY_GATE_CLEAN	0x2u	/* metadata says CLEAN: mark DIRTY first */
#define FERRY_GATE_START	0x4u	/* protection starts or stops */

/* Deferred work of a volume (ferry_vol.work_bits). */
#define FERRY_WORK_LEASE	0x1u	/* extend the seq lease */
#define FERRY_WORK_REDIRTY	0x2u	/* a write waits for CLEAN -> DIRTY */
#define FERRY_WORK_RESTART	0x4u	/* resumed from hibernation */

/* Protection settings of one volume, from the registry (config.c). */
struct ferry_vol_config {
	char name[FERRY_DEV_NAME_LEN];	/* registry key: the agent's volume name */
	u8 uid[FERRY_UID_MAX];
	u16 uid_len;
	u64 md_offset;			/* metadata area: bytes into the volume */
	u64 md_bytes;
	u32 pool_kb, ring_records, granularity_kb;
};

struct ferry_vol;

/* A protected volume: capture state plus metadata (all non-paged). */
struct ferry_prot {
	struct ferry_vol *vol;
	struct ferry_dev *core;
	struct ferry_ctl_dev cdev;	/* its entry in the control registry */
	struct ferry_dev_config cfg;
	u64 md_offset, md_bytes;
	u64 bm_bytes, bm_io_bytes;
	u8 *sb_buf;			/* FERRY_MD_BLOCK bytes */
	u8 *bm_buf;			/* bm_io_bytes */
	u32 generation;
	bool md_clean;			/* the superblock on disk says CLEAN */
	bool md_broken;			/* metadata area unusable: never write it */
	/* admitted IRPs whose completion has not finished with this struct */
	volatile LONG ios;
	KEVENT idle;
};

/* Device extension of a volume filter device object. */
struct ferry_vol {
	u32 magic;			/* FERRY_EXT_VOL */
	DEVICE_OBJECT *self;
	DEVICE_OBJECT *lower;
	DEVICE_OBJECT *pdo;
	IO_REMOVE_LOCK remove_lock;
	LIST_ENTRY link;		/* g.vols */

	/* admission: prot, gate, held and passthru change under lock */
	KSPIN_LOCK lock;
	struct ferry_prot *prot;
	u32 gate;
	LIST_ENTRY held;		/* IRPs waiting for the gate */
	volatile LONG passthru;		/* write-type IRPs sent down uncaptured */
	KEVENT passthru_idle;

	/* identity and size (PASSIVE_LEVEL, set at start) */
	u8 uid[FERRY_UID_MAX];
	u16 uid_len;
	u64 size;
	bool started;
	bool removing;			/* set under the ctl mutex: never protect again */
	bool hibernating;		/* saw a system S4 power IRP */
	NTSTATUS last_status;		/* of the last protection attempt */

	PIO_WORKITEM work;
	volatile LONG work_bits;	/* FERRY_WORK_* */
};

/* Device extension of the control device object. */
struct ferry_ctl_ext {
	u32 magic;			/* FERRY_EXT_CTL */
};

/* Driver-wide state (driver.c). */
struct ferry_global {
	DRIVER_OBJECT *driver;
	UNICODE_STRING reg_path;	/* the service key */
	DEVICE_OBJECT *ctl_dev;
	KMUTEX ctl_mutex;		/* every control call, protect/unprotect, metadata */
	struct ferry_win_ctl ctl;
	KEVENT drained;			/* FERRY_EV_DRAINED: a held device drained */
	KSPIN_LOCK vols_lock;
	LIST_ENTRY vols;
	/* pended FERRY_WIN_IOC_WAIT requests */
	IO_CSQ wait_csq;
	KSPIN_LOCK wait_lock;
	LIST_ENTRY waiters;
	volatile LONG nwaiters;
	/* the bound of a write hold (HOLD): timer -> DPC -> work item (ctl.c) */
	KTIMER hold_timer;
	KDPC hold_dpc;
	PIO_WORKITEM hold_work;
	volatile LONG hold_work_queued;
	/* completion contexts of captured writes (io.c), never deleted */
	NPAGED_LOOKASIDE_LIST write_ctx;
	/* defaults (registry Parameters) */
	u64 seq_lease;
	u32 pool_kb, ring_records, granularity_kb;
};

extern struct ferry_global g_ferry;

/* platform.c */
void ferry_platform_init(void);
u64 ferry_mono_ns(void);
void ferry_sleep_ms(u32 ms);
NTSTATUS ferry_status(int err);	/* -errno -> error NTSTATUS */

/* driver.c */
NTSTATUS ferry_vol_pass(struct ferry_vol *vol, IRP *irp);
NTSTATUS ferry_complete(IRP *irp, NTSTATUS status, ULONG_PTR info);
void ferry_ctl_lock(void);
void ferry_ctl_unlock(void);
void ferry_vol_queue_work(struct ferry_vol *vol, LONG bits);

/* io.c: the I/O path */
void ferry_io_init(void);
NTSTATUS ferry_vol_write(struct ferry_vol *vol, IRP *irp);
NTSTATUS ferry_vol_flush(struct ferry_vol *vol, IRP *irp);
NTSTATUS ferry_vol_dsm(struct ferry_vol *vol, IRP *irp);
void ferry_vol_gate(struct ferry_vol *vol, u32 bits, bool on);
NTSTATUS ferry_vol_wait_passthru(struct ferry_vol *vol, u32 ms);
NTSTATUS ferry_wait_drained(struct ferry_dev **cores, u32 n, u32 ms);
NTSTATUS ferry_prot_wait_idle(struct ferry_prot *p, u32 ms);
void ferry_prot_events(struct ferry_prot *p, u32 ev);

/* vss.c */
NTSTATUS ferry_vol_freeze_point(struct ferry_vol *vol, IRP *irp);

/* pnp.c */
NTSTATUS ferry_vol_pnp(struct ferry_vol *vol, IRP *irp);
NTSTATUS ferry_vol_power(struct ferry_vol *vol, IRP *irp);
NTSTATUS ferry_vol_shutdown(struct ferry_vol *vol, IRP *irp);

/* protect.c: protection lifecycle (ctl mutex held) */
NTSTATUS ferry_vol_protect(struct ferry_vol *vol,
			   const struct ferry_vol_config *cfg);
void ferry_vol_unprotect(struct ferry_vol *vol);
NTSTATUS ferry_prot_save(struct ferry_prot *p);
void ferry_vol_do_work(struct ferry_vol *vol, LONG bits);
int ferry_rescan(struct ferry_win_ctl *w, struct ferry_win_rescan *out);
void ferry_vol_started(struct ferry_vol *vol);
void ferry_save_all(void);

/* mdio.c: metadata I/O below the filter (PASSIVE_LEVEL) */
NTSTATUS ferry_md_load(struct ferry_prot *p);
NTSTATUS ferry_md_mark_dirty(struct ferry_prot *p, u64 next_seq, u64 limit);
NTSTATUS ferry_md_save(struct ferry_prot *p);
NTSTATUS ferry_lower_ioctl(struct ferry_vol *vol, ULONG code, void *out,
			   ULONG out_len, ULONG_PTR *returned);

/* config.c: the registry */
void ferry_config_globals(void);
NTSTATUS ferry_config_find(const u8 *uid, u16 uid_len,
			   struct ferry_vol_config *out);
void ferry_config_set_status(const char *name, NTSTATUS status);

/* ctl.c: the control device */
NTSTATUS ferry_ctl_create(DRIVER_OBJECT *driver);
NTSTATUS ferry_ctl_dispatch(DEVICE_OBJECT *dev, IRP *irp);
void ferry_ctl_wake(void);
extern const struct ferry_ctl_ops ferry_win_ctl_ops;

#endif /* FERRYFLT_H */
