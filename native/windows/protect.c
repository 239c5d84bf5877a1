// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * The life of a protected volume:
 *
 *   start     queue new writes, wait for uncaptured ones in flight, load
 *             the metadata (NEW / CLEAN / DIRTY), mark it DIRTY durably,
 *             start the stream, join the control registry, release.
 *   save      hold and drain writes, freeze, write bitmap + CLEAN; new
 *             writes then wait (gate CLEAN) until the metadata says DIRTY
 *             again, so a CLEAN superblock never coexists on disk with a
 *             write it does not account for.
 *   restart   after hibernation: the dump stack wrote the hibernation file
 *             below every filter, so the stream restarts DIRTY (every
 *             bit set: hash-compare resync) with seqs continuing.
 *   stop      drain, optionally save, leave the registry, pass through.
 *
 * Everything here runs at PASSIVE_LEVEL with the ctl mutex held.
 */
#include "ferryflt.h"

#define FERRY_SAVE_DRAIN_MS	10000u	/* writes in flight at a save */
#define FERRY_START_DRAIN_MS	30000u	/* uncaptured writes at a start */

static u64 ferry_prot_next_seq(struct ferry_prot *p);

static void ferry_prot_free(struct ferry_prot *p)
{
	if (!p)
		return;
	ferry_dev_destroy(p->core);
	ferry_free(p->sb_buf);
	ferry_free(p->bm_buf);
	ferry_free(p);
}

/* Builds the capture configuration; STATUS_INVALID_PARAMETER if unusable. */
static NTSTATUS ferry_prot_config(struct ferry_prot *p, struct ferry_vol *vol,
				  const struct ferry_vol_config *cfg)
{
	u32 pool_kb = cfg->pool_kb ? cfg->pool_kb : g_ferry.pool_kb;
	u32 gran_kb = cfg->granularity_kb ? cfg->granularity_kb :
					    g_ferry.granularity_kb;

	if (pool_kb > (FERRY_POOL_MAX >> 10) || gran_kb > (FERRY_GRAN_MAX >> 10))
		return STATUS_INVALID_PARAMETER;
	p->cfg.dev_size = vol->size;
	p->cfg.granularity = gran_kb << 10;
	p->cfg.ring_capacity = cfg->ring_records ? cfg->ring_records :
						   g_ferry.ring_records;
	p->cfg.pool_size = pool_kb << 10;
	p->cfg.pool_low_pct = 50;
	p->cfg.ring_low_pct = 50;
	p->cfg.seq_lease = g_ferry.seq_lease;
	if (ferry_config_check(&p->cfg))
		return STATUS_INVALID_PARAMETER;
	p->bm_bytes = ferry_config_bitmap_bytes(&p->cfg);
	p->bm_io_bytes = (p->bm_bytes + FERRY_MD_BLOCK - 1) &
			 ~(u64)(FERRY_MD_BLOCK - 1);
	/* the metadata area: block aligned, big enough, inside the volume */
	p->md_offset = cfg->md_offset;
	p->md_bytes = cfg->md_bytes;
	if ((p->md_offset % FERRY_MD_BLOCK) ||
	    p->md_bytes < ferry_md_size(p->bm_bytes) ||
	    p->md_offset > vol->size || p->md_bytes > vol->size - p->md_offset)
		return STATUS_INVALID_PARAMETER;
	return STATUS_SUCCESS;
}

NTSTATUS ferry_vol_protect(struct ferry_vol *vol,
			   const struct ferry_vol_config *cfg)
{
	struct ferry_prot *p;
	NTSTATUS status;
	KIRQL irql;
	int idx;

	if (vol->prot)
		return STATUS_SUCCESS;
	if (!vol->started || vol->removing || !vol->size)
		return STATUS_DEVICE_NOT_READY;
	p = ferry_zalloc(sizeof(*p));
	if (!p)
		return STATUS_INSUFFICIENT_RESOURCES;
	p->vol = vol;
	KeInitializeEvent(&p->idle, NotificationEvent, TRUE);
	RtlCopyMemory(p->cdev.name, cfg->name, sizeof(p->cdev.name));
	p->cdev.name[sizeof(p->cdev.name) - 1] = 0;
	p->cdev.priv = p;
	p->cdev.index = -1;
	status = ferry_prot_config(p, vol, cfg);
	if (!NT_SUCCESS(status))
		goto fail;
	status = STATUS_INSUFFICIENT_RESOURCES;
	p->core = ferry_dev_create(&p->cfg);
	p->sb_buf = ferry_zalloc(FERRY_MD_BLOCK);
	p->bm_buf = ferry_zalloc((size_t)p->bm_io_bytes);
	if (!p->core || !p->sb_buf || !p->bm_buf)
		goto fail;
	p->cdev.core = p->core;

	/* no uncaptured write may complete after the stream started */
	ferry_vol_gate(vol, FERRY_GATE_START, true);
	status = ferry_vol_wait_passthru(vol, FERRY_START_DRAIN_MS);
	if (NT_SUCCESS(status))
		status = ferry_md_load(p);
	if (!NT_SUCCESS(status))
		goto fail_gate;
	idx = ferry_ctl_attach(&g_ferry.ctl.ctl, &p->cdev, -1);
	if (idx < 0) {
		status = ferry_status(idx);
		goto fail_gate;
	}
	KeAcquireSpinLock(&vol->lock, &irql);
	vol->prot = p;
	KeReleaseSpinLock(&vol->lock, irql);
	ferry_vol_gate(vol, FERRY_GATE_START, false);
	ferry_ctl_wake();	/* the START record */
	return STATUS_SUCCESS;

fail_gate:
	ferry_vol_gate(vol, FERRY_GATE_START, false);
fail:
	ferry_prot_free(p);
	return status;
}

/* Holds new writes and waits for the ones in flight; false on timeout. */
static bool ferry_prot_quiesce(struct ferry_prot *p, u32 ms)
{
	ferry_vol_gate(p->vol, FERRY_GATE_HOLD, true);
	if (NT_SUCCESS(ferry_wait_drained(&p->core, 1, ms)))
		return true;
	ferry_vol_gate(p->vol, FERRY_GATE_HOLD, false);
	return false;
}

NTSTATUS ferry_prot_save(struct ferry_prot *p)
{
	NTSTATUS status;

	if (p->md_clean)
		return STATUS_SUCCESS;		/* saved, writes still waiting */
	if (p->md_broken)
		return ferry_status(-FERRY_ENODEV);
	if (!ferry_prot_quiesce(p, FERRY_SAVE_DRAIN_MS))
		return STATUS_TIMEOUT;		/* stays DIRTY: full compare next time */
	ferry_dev_freeze(p->core);
	status = ferry_md_save(p);
	if (NT_SUCCESS(status))
		ferry_vol_gate(p->vol, FERRY_GATE_CLEAN, true);
	else
		ferry_prot_events(p, ferry_dev_thaw(p->core));
	ferry_vol_gate(p->vol, FERRY_GATE_HOLD, false);
	return status;
}

static bool ferry_vol_has_held(struct ferry_vol *vol)
{
	KIRQL irql;
	bool held;

	KeAcquireSpinLock(&vol->lock, &irql);
	held = !IsListEmpty(&vol->held);
	KeReleaseSpinLock(&vol->lock, irql);
	return held;
}

/*
 * Stops protection.  The metadata stays as it is: DIRTY while the volume
 * was in use (writes made while unprotected are not tracked, so the next
 * start compares everything), CLEAN after a save at QUERY_REMOVE or
 * shutdown.  Writes that waited behind a CLEAN superblock are released
 * only after it was marked DIRTY again.
 */
void ferry_vol_unprotect(struct ferry_vol *vol)
{
	struct ferry_prot *p = vol->prot;
	KIRQL irql;

	if (!p)
		return;
	/* admitted IRPs point at p: wait for every one, however long */
	ferry_vol_gate(vol, FERRY_GATE_HOLD, true);
	while (!NT_SUCCESS(ferry_wait_drained(&p->core, 1, 1000)))
		DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_WARNING_LEVEL,
			   "ferryflt: %s: waiting for writes in flight\n",
			   p->cdev.name);
	if (p->md_clean && !p->md_broken && ferry_vol_has_held(vol)) {
		u64 next = ferry_prot_next_seq(p);

		ferry_md_mark_dirty(p, next, next + p->cfg.seq_lease);
	}
	ferry_ctl_detach(&g_ferry.ctl.ctl, &p->cdev);
	KeAcquireSpinLock(&vol->lock, &irql);
	vol->prot = NULL;
	KeReleaseSpinLock(&vol->lock, irql);
	while (!NT_SUCCESS(ferry_prot_wait_idle(p, 1000)))
		;
	/* whatever waited goes down uncaptured now */
	ferry_vol_gate(vol, FERRY_GATE_HOLD | FERRY_GATE_CLEAN | FERRY_GATE_START,
		       false);
	ferry_prot_free(p);
}

/* ---- deferred work (ctl mutex taken here) ---- */

static u64 ferry_prot_next_seq(struct ferry_prot *p)
{
	struct ferry_dev_info info;

	RtlZeroMemory(&info, sizeof(info));
	ferry_dev_info(p->core, &info);
	return info.next_seq;
}

static void ferry_prot_lease(struct ferry_prot *p)
{
	u64 next, limit;

	if (p->md_clean || p->md_broken)
		return;
	next = ferry_prot_next_seq(p);
	limit = next + p->cfg.seq_lease;
	if (NT_SUCCESS(ferry_md_mark_dirty(p, next, limit)))
		ferry_prot_events(p, ferry_dev_set_seq_limit(p->core, limit));
}

/* A write waits behind a CLEAN superblock: make it DIRTY, then let it go. */
static void ferry_prot_redirty(struct ferry_prot *p)
{
	NTSTATUS status = STATUS_SUCCESS;
	u64 next, limit;
	u32 tries;

	if (p->md_clean) {
		next = ferry_prot_next_seq(p);
		limit = next + p->cfg.seq_lease;
		for (tries = 0; tries < 3; tries++) {
			status = ferry_md_mark_dirty(p, next, limit);
			if (NT_SUCCESS(status) || p->md_broken)
				break;
			ferry_sleep_ms(100);
		}
		if (!NT_SUCCESS(status)) {
			/* the disk refuses metadata writes: do not stall the volume */
			p->md_broken = true;
			p->md_clean = false;
			ferry_config_set_status(p->cdev.name, status);
			DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_ERROR_LEVEL,
				   "ferryflt: %s: cannot mark the metadata dirty (0x%08lx): run a hash-compare resync\n",
				   p->cdev.name, (unsigned long)status);
		}
		ferry_prot_events(p, ferry_dev_thaw(p->core));
		if (NT_SUCCESS(status))
			ferry_prot_events(p, ferry_dev_set_seq_limit(p->core,
								     limit));
	}
	ferry_vol_gate(p->vol, FERRY_GATE_CLEAN, false);
}

static void ferry_prot_restart(struct ferry_prot *p)
{
	struct ferry_dev_info info;
	u64 limit;
	u32 tries;

	for (tries = 0; tries < 10; tries++)
		if (ferry_prot_quiesce(p, 2000))
			break;
	if (tries == 10) {
		DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_ERROR_LEVEL,
			   "ferryflt: %s: cannot drain writes after hibernation: run a hash-compare resync\n",
			   p->cdev.name);
		return;
	}
	/* nothing takes a seq now: writes are held, control calls serialized */
	RtlZeroMemory(&info, sizeof(info));
	ferry_dev_info(p->core, &info);
	limit = info.next_seq + p->cfg.seq_lease;
	p->generation++;
	/* without a new durable lease keep the old one: it is still durable */
	if (!NT_SUCCESS(ferry_md_mark_dirty(p, info.next_seq, limit)))
		limit = info.seq_limit;
	ferry_prot_events(p, ferry_dev_start(p->core, FERRY_START_DIRTY,
					     p->generation, info.next_seq,
					     limit));
	ferry_vol_gate(p->vol, FERRY_GATE_HOLD, false);
	ferry_ctl_wake();
}

void ferry_vol_do_work(struct ferry_vol *vol, LONG bits)
{
	struct ferry_prot *p;

	ferry_ctl_lock();
	p = vol->prot;
	if (p) {
		if (bits & FERRY_WORK_RESTART)
			ferry_prot_restart(p);
		if (bits & FERRY_WORK_REDIRTY)
			ferry_prot_redirty(p);
		if (bits & FERRY_WORK_LEASE)
			ferry_prot_lease(p);
	}
	ferry_ctl_unlock();
}

/* ---- which volumes are protected ---- */

/* Reads size and unique id once the volume below started. */
static void ferry_vol_identify(struct ferry_vol *vol)
{
	GET_LENGTH_INFORMATION len;
	struct {
		USHORT len;
		UCHAR id[FERRY_UID_MAX];
	} uid;
	ULONG_PTR got = 0;

	if (NT_SUCCESS(ferry_lower_ioctl(vol, IOCTL_DISK_GET_LENGTH_INFO, &len,
					 sizeof(len), &got)) &&
	    got >= sizeof(len) && len.Length.QuadPart > 0)
		vol->size = (u64)len.Length.QuadPart;
	RtlZeroMemory(&uid, sizeof(uid));
	if (NT_SUCCESS(ferry_lower_ioctl(vol, IOCTL_MOUNTDEV_QUERY_UNIQUE_ID,
					 &uid, sizeof(uid), &got)) &&
	    uid.len && uid.len <= FERRY_UID_MAX) {
		RtlCopyMemory(vol->uid, uid.id, uid.len);
		vol->uid_len = uid.len;
	}
}

static NTSTATUS ferry_vol_try(struct ferry_vol *vol, bool *configured)
{
	struct ferry_vol_config *cfg;
	NTSTATUS status;

	*configured = false;
	if (!vol->uid_len)
		return STATUS_NOT_FOUND;
	cfg = ferry_zalloc(sizeof(*cfg));
	if (!cfg)
		return STATUS_INSUFFICIENT_RESOURCES;
	status = ferry_config_find(vol->uid, vol->uid_len, cfg);
	if (NT_SUCCESS(status)) {
		*configured = true;
		if (!vol->prot) {
			status = ferry_vol_protect(vol, cfg);
			vol->last_status = status;
			ferry_config_set_status(cfg->name, status);
		}
	}
	ferry_free(cfg);
	return status;
}

void ferry_vol_started(struct ferry_vol *vol)
{
	bool configured;

	ferry_vol_identify(vol);
	ferry_ctl_lock();
	vol->started = true;
	if (!vol->removing)
		ferry_vol_try(vol, &configured);
	ferry_ctl_unlock();
}

/*
 * Calls fn on every started volume.  The list is copied (with references)
 * because fn runs at PASSIVE_LEVEL; a volume being removed sets removing
 * under the ctl mutex first, and the caller holds it.
 */
static void ferry_for_each_vol(void (*fn)(struct ferry_vol *, void *),
			       void *ctx)
{
	struct ferry_vol **list;
	LIST_ENTRY *e;
	KIRQL irql;
	u32 n = 0, i, cap = 512;

	list = ferry_zalloc(cap * sizeof(*list));
	if (!list)
		return;
	KeAcquireSpinLock(&g_ferry.vols_lock, &irql);
	for (e = g_ferry.vols.Flink; e != &g_ferry.vols && n < cap; e = e->Flink) {
		list[n] = CONTAINING_RECORD(e, struct ferry_vol, link);
		ObReferenceObject(list[n]->self);
		n++;
	}
	KeReleaseSpinLock(&g_ferry.vols_lock, irql);
	for (i = 0; i < n; i++) {
		if (list[i]->started && !list[i]->removing)
			fn(list[i], ctx);
		ObDereferenceObject(list[i]->self);
	}
	ferry_free(list);
}

static void ferry_rescan_one(struct ferry_vol *vol, void *ctx)
{
	struct ferry_win_rescan *out = ctx;
	bool was = vol->prot != NULL, configured;
	NTSTATUS status = ferry_vol_try(vol, &configured);

	if (configured && !was) {
		if (NT_SUCCESS(status))
			out->started++;
		else
			out->failed++;
	}
	if (!configured && was) {
		/* the volume stays writable: leave the metadata DIRTY */
		ferry_vol_unprotect(vol);
		out->stopped++;
	}
}

int ferry_rescan(struct ferry_win_ctl *w, struct ferry_win_rescan *out)
{
	(void)w;
	ferry_config_globals();
	ferry_for_each_vol(ferry_rescan_one, out);
	return 0;
}

static void ferry_save_one(struct ferry_vol *vol, void *ctx)
{
	(void)ctx;
	if (vol->prot)
		ferry_prot_save(vol->prot);
}

/* The last-chance shutdown notification: every file system is flushed. */
void ferry_save_all(void)
{
	ferry_ctl_lock();
	ferry_for_each_vol(ferry_save_one, NULL);
	ferry_ctl_unlock();
}
