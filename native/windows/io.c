// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * The I/O path of a volume filter: admission of write-type IRPs (writes,
 * flushes, destructive DSM requests), the queue of IRPs held by a gate,
 * and capture at completion.
 *
 * Completion routines may run at DISPATCH_LEVEL: they use only spin locks,
 * the core's preallocated non-paged memory and MDL mappings, and never
 * allocate.  Each admitted IRP is counted in flight by the core until its
 * completion records it (ferry_io_begin / ferry_capture_*), which is what a
 * tag waits for.  Its ranges are on the core's list of writes in flight
 * meanwhile (overlapping writes in flight are read back, see
 * ../common/ferry_core.c); the list entries live in the IRP's completion
 * context, allocated at dispatch: a lookaside entry for a write, an array
 * next to the DSM ranges.  Without one the I/O is admitted untracked.
 */
#include "ferryflt.h"

enum ferry_admit {
	FERRY_ADMIT_QUEUED,	/* held: resubmitted when the gate opens */
	FERRY_ADMIT_PASS,	/* not protected: sent down, counted in passthru */
	FERRY_ADMIT_CAPTURE,	/* protected: counted in flight by the core */
};

/* A destructive DSM request, parsed at dispatch (the lower driver may
 * reuse the system buffer for its output before completion). */
struct ferry_dsm_ctx {
	struct ferry_prot *prot;
	u32 kind;
	u32 n;
	struct ferry_io *io;		/* n entries, or NULL: untracked */
	struct ferry_dsm_range r[FERRY_DSM_MAX];
};

/* The completion context of a captured write (g_ferry.write_ctx). */
struct ferry_write_ctx {
	struct ferry_prot *prot;
	struct ferry_io io;
};

/* What an IRP asks the core to admit: n ranges, with their entries. */
struct ferry_admit_req {
	const struct ferry_dsm_range *r;
	struct ferry_io *io;		/* n entries, or NULL: untracked */
	u32 n;
};

static NTSTATUS ferry_submit(struct ferry_vol *vol, IRP *irp, bool requeued);

static void ferry_dsm_free(struct ferry_dsm_ctx *d)
{
	if (!d)
		return;
	if (d->io)
		ExFreePoolWithTag(d->io, FERRY_POOL_TAG);
	ExFreePoolWithTag(d, FERRY_POOL_TAG);
}

/* At driver load (no DriverUnload: the list lives as long as the driver). */
void ferry_io_init(void)
{
	ExInitializeNPagedLookasideList(&g_ferry.write_ctx, NULL, NULL,
					POOL_NX_ALLOCATION,
					sizeof(struct ferry_write_ctx),
					FERRY_POOL_TAG, 0);
}

void ferry_prot_events(struct ferry_prot *p, u32 ev)
{
	if (ev & FERRY_EV_READY)
		ferry_ctl_wake();
	if (ev & FERRY_EV_DRAINED)
		KeSetEvent(&g_ferry.drained, IO_NO_INCREMENT, FALSE);
	if (ev & FERRY_EV_LEASE)
		ferry_vol_queue_work(p->vol, FERRY_WORK_LEASE);
}

/*
 * The end of a captured IRP's completion: events, then drop the reference
 * that keeps p alive (unprotect waits for it), then the remove lock.
 */
static void ferry_prot_done(struct ferry_prot *p, IRP *irp, u32 ev)
{
	struct ferry_vol *vol = p->vol;

	ferry_prot_events(p, ev);
	if (InterlockedDecrement(&p->ios) == 0)
		KeSetEvent(&p->idle, IO_NO_INCREMENT, FALSE);
	IoReleaseRemoveLock(&vol->remove_lock, irp);
}

/* Waits until no admitted IRP's completion uses p any more. */
NTSTATUS ferry_prot_wait_idle(struct ferry_prot *p, u32 ms)
{
	LARGE_INTEGER t;

	t.QuadPart = -(LONGLONG)ms * 10000;
	for (;;) {
		KeClearEvent(&p->idle);
		if (!InterlockedCompareExchange(&p->ios, 0, 0))
			return STATUS_SUCCESS;
		if (KeWaitForSingleObject(&p->idle, Executive, KernelMode,
					  FALSE, &t) == STATUS_TIMEOUT)
			return STATUS_TIMEOUT;
	}
}

/*
 * Waits (PASSIVE_LEVEL) at most ms until none of the held devices has a
 * write in flight; the last completion signals g_ferry.drained.
 */
NTSTATUS ferry_wait_drained(struct ferry_dev **cores, u32 n, u32 ms)
{
	u64 deadline = ferry_mono_ns() + (u64)ms * 1000000ULL;
	LARGE_INTEGER t;
	u32 i;

	for (;;) {
		u64 now;
		bool busy = false;

		KeClearEvent(&g_ferry.drained);
		for (i = 0; i < n && !busy; i++)
			busy = ferry_dev_inflight(cores[i]) != 0;
		if (!busy)
			return STATUS_SUCCESS;
		now = ferry_mono_ns();
		if (now >= deadline)
			return STATUS_TIMEOUT;
		t.QuadPart = -(LONGLONG)((deadline - now) / 100);
		KeWaitForSingleObject(&g_ferry.drained, Executive, KernelMode,
				      FALSE, &t);
	}
}

/* [*off, *off + *len) clipped to the protected size; false if empty. */
static bool ferry_clip(const struct ferry_prot *p, u64 *off, u64 *len)
{
	u64 size = p->cfg.dev_size, end;

	if (!*len || *off >= size)
		return false;
	end = *off + *len;
	if (end < *off || end > size)
		end = size;
	*len = end - *off;
	return true;
}

/* ---- the gate ---- */

static void ferry_list_take(LIST_ENTRY *from, LIST_ENTRY *to)
{
	InitializeListHead(to);
	if (IsListEmpty(from))
		return;
	to->Flink = from->Flink;
	to->Blink = from->Blink;
	to->Flink->Blink = to;
	to->Blink->Flink = to;
	InitializeListHead(from);
}

/*
 * Sets or clears gate bits.  FERRY_GATE_HOLD is mirrored into the core's
 * hold so that the last completion in flight reports FERRY_EV_DRAINED.
 * When no bit is left the held IRPs are resubmitted, oldest first.
 * PASSIVE_LEVEL when clearing (resubmission calls the lower driver).
 */
void ferry_vol_gate(struct ferry_vol *vol, u32 bits, bool on)
{
	LIST_ENTRY list;
	KIRQL irql;

	InitializeListHead(&list);
	KeAcquireSpinLock(&vol->lock, &irql);
	if (on)
		vol->gate |= bits;
	else
		vol->gate &= ~bits;
	if (vol->prot)
		ferry_dev_hold(vol->prot->core,
			       (vol->gate & FERRY_GATE_HOLD) != 0);
	if (!vol->gate)
		ferry_list_take(&vol->held, &list);
	KeReleaseSpinLock(&vol->lock, irql);

	while (!IsListEmpty(&list)) {
		LIST_ENTRY *e = RemoveHeadList(&list);

		ferry_submit(vol, CONTAINING_RECORD(e, IRP, Tail.Overlay.ListEntry),
			     true);
	}
}

/* Waits (PASSIVE_LEVEL) until no uncaptured write is in flight. */
NTSTATUS ferry_vol_wait_passthru(struct ferry_vol *vol, u32 ms)
{
	u64 deadline = ferry_mono_ns() + (u64)ms * 1000000ULL;
	LARGE_INTEGER t;

	for (;;) {
		u64 now;

		KeClearEvent(&vol->passthru_idle);
		if (!InterlockedCompareExchange(&vol->passthru, 0, 0))
			return STATUS_SUCCESS;
		now = ferry_mono_ns();
		if (now >= deadline)
			return STATUS_TIMEOUT;
		t.QuadPart = -(LONGLONG)((deadline - now) / 100);
		KeWaitForSingleObject(&vol->passthru_idle, Executive,
				      KernelMode, FALSE, &t);
	}
}

static enum ferry_admit ferry_admit(struct ferry_vol *vol, IRP *irp,
				    const struct ferry_admit_req *req,
				    struct ferry_prot **pp)
{
	enum ferry_admit how;
	bool redirty = false;
	KIRQL irql;
	u32 i;

	KeAcquireSpinLock(&vol->lock, &irql);
	if (vol->gate) {
		InsertTailList(&vol->held, &irp->Tail.Overlay.ListEntry);
		redirty = (vol->gate & FERRY_GATE_CLEAN) != 0;
		how = FERRY_ADMIT_QUEUED;
	} else if (!vol->prot) {
		InterlockedIncrement(&vol->passthru);
		how = FERRY_ADMIT_PASS;
	} else {
		/*
		 * The core's hold is only ever set together with the gate
		 * (under this lock), so every ferry_io_begin() admits.
		 */
		*pp = vol->prot;
		InterlockedIncrement(&vol->prot->ios);
		for (i = 0; i < req->n; i++)
			if (ferry_io_begin(vol->prot->core,
					   req->io ? &req->io[i] : NULL,
					   req->r[i].offset, req->r[i].length))
				ferry_bug(__FILE__, __LINE__);
		how = FERRY_ADMIT_CAPTURE;
	}
	KeReleaseSpinLock(&vol->lock, irql);
	if (redirty)
		ferry_vol_queue_work(vol, FERRY_WORK_REDIRTY);
	return how;
}

/* ---- completions ---- */

static NTSTATUS ferry_passthru_done(DEVICE_OBJECT *dev, IRP *irp, void *ctx)
{
	struct ferry_vol *vol = ctx;

	(void)dev;
	if (irp->PendingReturned)
		IoMarkIrpPending(irp);
	if (InterlockedDecrement(&vol->passthru) == 0)
		KeSetEvent(&vol->passthru_idle, IO_NO_INCREMENT, FALSE);
	IoReleaseRemoveLock(&vol->remove_lock, irp);
	return STATUS_CONTINUE_COMPLETION;
}

/* Copies the written bytes from the IRP's MDL chain into the pool. */
static u32 ferry_capture_payload(struct ferry_prot *p, IRP *irp,
				 struct ferry_io *io, u64 off, u32 len,
				 u32 flags)
{
	struct ferry_cap cap;
	MDL *mdl;
	u32 ev;

	ev = ferry_capture_write(p->core, io, off, len, flags, &cap);
	if (!(ev & FERRY_CAP_COPY))
		return ev;
	for (mdl = irp->MdlAddress; mdl && cap.left; mdl = mdl->Next) {
		void *va = MmGetSystemAddressForMdlSafe(
			mdl, NormalPagePriority | MdlMappingNoExecute);

		/* no mapping: the short copy becomes a DIRTY record */
		if (!va)
			break;
		ferry_capture_copy(p->core, &cap, va, MmGetMdlByteCount(mdl));
	}
	return ev | ferry_capture_end(p->core, &cap);
}

/* A captured write completed; io: its entry, or NULL if untracked. */
static void ferry_write_complete(struct ferry_prot *p, IRP *irp,
				 struct ferry_io *io)
{
	IO_STACK_LOCATION *sp = IoGetCurrentIrpStackLocation(irp);
	u64 off = (u64)sp->Parameters.Write.ByteOffset.QuadPart;
	u64 len = sp->Parameters.Write.Length, clen = len;
	u32 flags = (sp->Flags & SL_WRITE_THROUGH) ? FERRY_REC_F_FUA : 0;
	bool ok = NT_SUCCESS(irp->IoStatus.Status) &&
		  irp->IoStatus.Information == len;
	u32 ev;

	if (!ferry_clip(p, &off, &clen))
		/* empty, or past the protected size: nothing to record */
		ev = ferry_io_cancel(p->core, io);
	else if (ok && clen == len)
		ev = ferry_capture_payload(p, irp, io, off, (u32)len, flags);
	else
		/* failed, short, or partly past the end: read it back */
		ev = ferry_capture_failed(p->core, io, off, clen);
	ferry_prot_done(p, irp, ev);
}

static NTSTATUS ferry_write_done(DEVICE_OBJECT *dev, IRP *irp, void *ctx)
{
	struct ferry_write_ctx *w = ctx;

	(void)dev;
	if (irp->PendingReturned)
		IoMarkIrpPending(irp);
	/* the core is done with w->io once the capture call returns */
	ferry_write_complete(w->prot, irp, &w->io);
	ExFreeToNPagedLookasideList(&g_ferry.write_ctx, w);
	return STATUS_CONTINUE_COMPLETION;
}

/* A write admitted without a context (none could be allocated). */
static NTSTATUS ferry_write_untracked_done(DEVICE_OBJECT *dev, IRP *irp,
					   void *ctx)
{
	(void)dev;
	if (irp->PendingReturned)
		IoMarkIrpPending(irp);
	ferry_write_complete(ctx, irp, NULL);
	return STATUS_CONTINUE_COMPLETION;
}

static NTSTATUS ferry_flush_done(DEVICE_OBJECT *dev, IRP *irp, void *ctx)
{
	struct ferry_prot *p = ctx;
	u32 ev;

	(void)dev;
	if (irp->PendingReturned)
		IoMarkIrpPending(irp);
	/* a failed flush promises nothing: no marker */
	if (NT_SUCCESS(irp->IoStatus.Status))
		ev = ferry_capture_flush(p->core, NULL);
	else
		ev = ferry_io_cancel(p->core, NULL);
	ferry_prot_done(p, irp, ev);
	return STATUS_CONTINUE_COMPLETION;
}

static NTSTATUS ferry_dsm_done(DEVICE_OBJECT *dev, IRP *irp, void *ctx)
{
	struct ferry_dsm_ctx *d = ctx;
	struct ferry_prot *p = d->prot;
	bool ok = NT_SUCCESS(irp->IoStatus.Status);
	u32 ev = 0, i;

	(void)dev;
	if (irp->PendingReturned)
		IoMarkIrpPending(irp);
	/* one record-making call per admitted range (ranges are clipped) */
	for (i = 0; i < d->n; i++) {
		struct ferry_io *io = d->io ? &d->io[i] : NULL;

		if (ok && d->kind == FERRY_DSM_DISCARD)
			ev |= ferry_capture_discard(p->core, io, d->r[i].offset,
						    d->r[i].length);
		else
			ev |= ferry_capture_failed(p->core, io, d->r[i].offset,
						   d->r[i].length);
	}
	ferry_dsm_free(d);
	ferry_prot_done(p, irp, ev);
	return STATUS_CONTINUE_COMPLETION;
}

/* A destructive DSM whose ranges could not be kept: the whole volume. */
static NTSTATUS ferry_dsm_unknown_done(DEVICE_OBJECT *dev, IRP *irp, void *ctx)
{
	struct ferry_prot *p = ctx;
	u32 ev;

	(void)dev;
	if (irp->PendingReturned)
		IoMarkIrpPending(irp);
	ev = ferry_capture_failed(p->core, NULL, 0, p->cfg.dev_size);
	ferry_prot_done(p, irp, ev);
	return STATUS_CONTINUE_COMPLETION;
}

/* ---- dispatch ---- */

/*
 * Parses a DSM request.  *kind NONE: it changes no data.  Returns the
 * context with its ranges, or NULL when it could not be allocated (the
 * request then counts as changing the whole volume).  Without room for the
 * ranges' list entries they are admitted untracked.
 */
static struct ferry_dsm_ctx *ferry_dsm_prepare(struct ferry_vol *vol, IRP *irp,
					       u32 *kind)
{
	IO_STACK_LOCATION *sp = IoGetCurrentIrpStackLocation(irp);
	struct ferry_dsm_ctx *d;

	d = ExAllocatePoolWithTag(NonPagedPoolNx, sizeof(*d), FERRY_POOL_TAG);
	if (!d) {
		struct ferry_dsm_range unused;
		u32 n;

		*kind = ferry_dsm_parse(irp->AssociatedIrp.SystemBuffer,
					sp->Parameters.DeviceIoControl.InputBufferLength,
					vol->size, &unused, 0, &n);
		return NULL;
	}
	d->prot = NULL;
	d->io = NULL;
	d->kind = ferry_dsm_parse(irp->AssociatedIrp.SystemBuffer,
				  sp->Parameters.DeviceIoControl.InputBufferLength,
				  vol->size, d->r, FERRY_DSM_MAX, &d->n);
	if (d->kind != FERRY_DSM_NONE && d->n)
		d->io = ExAllocatePoolWithTag(NonPagedPoolNx,
					      d->n * sizeof(*d->io),
					      FERRY_POOL_TAG);
	*kind = d->kind;
	return d;
}

/*
 * Admits a write-type IRP and sends it down with the completion that
 * records it.  requeued: it comes from the held queue (already pending).
 */
static NTSTATUS ferry_submit(struct ferry_vol *vol, IRP *irp, bool requeued)
{
	IO_STACK_LOCATION *sp = IoGetCurrentIrpStackLocation(irp);
	struct ferry_dsm_ctx *dsm = NULL;
	struct ferry_write_ctx *w = NULL;
	struct ferry_dsm_range whole = { 0, 0 };
	struct ferry_admit_req req = { &whole, NULL, 1 };
	struct ferry_prot *p = NULL;
	PIO_COMPLETION_ROUTINE done;
	enum ferry_admit how;
	u32 kind = 0;
	void *ctx;

	if (sp->MajorFunction == IRP_MJ_DEVICE_CONTROL) {
		dsm = ferry_dsm_prepare(vol, irp, &kind);
		if (kind == FERRY_DSM_NONE) {
			ferry_dsm_free(dsm);
			IoCopyCurrentIrpStackLocationToNext(irp);
			IoSetCompletionRoutine(irp, ferry_passthru_done, vol,
					       TRUE, TRUE, TRUE);
			InterlockedIncrement(&vol->passthru);
			return IoCallDriver(vol->lower, irp);
		}
		if (dsm) {
			req.r = dsm->r;
			req.io = dsm->io;
			req.n = dsm->n;
		}
	} else if (sp->MajorFunction == IRP_MJ_WRITE) {
		whole.offset = (u64)sp->Parameters.Write.ByteOffset.QuadPart;
		whole.length = sp->Parameters.Write.Length;
		/* none left: the write goes down untracked (read back whole) */
		w = ExAllocateFromNPagedLookasideList(&g_ferry.write_ctx);
		if (w)
			req.io = &w->io;
	}
	how = ferry_admit(vol, irp, &req, &p);
	if (how != FERRY_ADMIT_CAPTURE && w)
		ExFreeToNPagedLookasideList(&g_ferry.write_ctx, w);
	if (how == FERRY_ADMIT_QUEUED) {
		ferry_dsm_free(dsm);
		if (!requeued)
			IoMarkIrpPending(irp);
		return STATUS_PENDING;
	}
	if (how == FERRY_ADMIT_PASS) {
		ferry_dsm_free(dsm);
		done = ferry_passthru_done;
		ctx = vol;
	} else if (sp->MajorFunction == IRP_MJ_WRITE) {
		if (w) {
			w->prot = p;
			done = ferry_write_done;
			ctx = w;
		} else {
			done = ferry_write_untracked_done;
			ctx = p;
		}
	} else if (sp->MajorFunction == IRP_MJ_FLUSH_BUFFERS) {
		done = ferry_flush_done;
		ctx = p;
	} else if (dsm) {
		dsm->prot = p;
		done = ferry_dsm_done;
		ctx = dsm;
	} else {
		done = ferry_dsm_unknown_done;
		ctx = p;
	}
	IoCopyCurrentIrpStackLocationToNext(irp);
	IoSetCompletionRoutine(irp, done, ctx, TRUE, TRUE, TRUE);
	return IoCallDriver(vol->lower, irp);
}

static NTSTATUS ferry_vol_write_type(struct ferry_vol *vol, IRP *irp)
{
	NTSTATUS status = IoAcquireRemoveLock(&vol->remove_lock, irp);

	if (!NT_SUCCESS(status))
		return ferry_complete(irp, status, 0);
	/* the remove lock is released by the completion routine */
	return ferry_submit(vol, irp, false);
}

NTSTATUS ferry_vol_write(struct ferry_vol *vol, IRP *irp)
{
	return ferry_vol_write_type(vol, irp);
}

NTSTATUS ferry_vol_flush(struct ferry_vol *vol, IRP *irp)
{
	return ferry_vol_write_type(vol, irp);
}

NTSTATUS ferry_vol_dsm(struct ferry_vol *vol, IRP *irp)
{
	return ferry_vol_write_type(vol, irp);
}
