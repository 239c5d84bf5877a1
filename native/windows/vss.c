// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * The VSS freeze point.  During a shadow copy VSS freezes the writers,
 * then sends IOCTL_VOLSNAP_FLUSH_AND_HOLD_WRITES to each volume: the file
 * system flushes, stops changing the volume and passes the IOCTL down the
 * volume stack to volsnap, which holds writes until the snapshot is made.
 * ferryflt sits above volsnap, so it sees the IOCTL at exactly the point
 * where the volume holds an application-consistent image.  When the agent
 * armed a tag (FERRY_WIN_IOC_VSS_ARM), the TAG goes in here; ctl_calls.c has
 * the logic, this file the IRP handling.
 */
#include "ferryflt.h"

/* Shared by the dispatch (waits) and the completion (signals). */
struct ferry_freeze_ctx {
	volatile LONG refs;
	KEVENT done;
	IRP *irp;
	struct ferry_vol *vol;
};

static void ferry_freeze_put(struct ferry_freeze_ctx *f)
{
	if (InterlockedDecrement(&f->refs) == 0)
		ExFreePoolWithTag(f, FERRY_POOL_TAG);
}

static NTSTATUS ferry_freeze_done(DEVICE_OBJECT *dev, IRP *irp, void *ctx)
{
	struct ferry_freeze_ctx *f = ctx;
	struct ferry_vol *vol = f->vol;

	(void)dev;
	if (irp->PendingReturned)
		IoMarkIrpPending(irp);
	KeSetEvent(&f->done, IO_NO_INCREMENT, FALSE);
	IoReleaseRemoveLock(&vol->remove_lock, irp);
	ferry_freeze_put(f);
	return STATUS_CONTINUE_COMPLETION;
}

/* ferry_win_forward_fn: send the IOCTL down, wait at most ms for it. */
static bool ferry_freeze_forward(void *ctx, u32 ms)
{
	struct ferry_freeze_ctx *f = ctx;
	LARGE_INTEGER t;

	IoMarkIrpPending(f->irp);
	IoCopyCurrentIrpStackLocationToNext(f->irp);
	IoSetCompletionRoutine(f->irp, ferry_freeze_done, f, TRUE, TRUE, TRUE);
	IoCallDriver(f->vol->lower, f->irp);
	t.QuadPart = -(LONGLONG)ms * 10000;
	return KeWaitForSingleObject(&f->done, Executive, KernelMode, FALSE,
				     &t) == STATUS_SUCCESS;
}

NTSTATUS ferry_vol_freeze_point(struct ferry_vol *vol, IRP *irp)
{
	struct ferry_freeze_ctx *f;
	struct ferry_prot *p;
	bool handled;
	NTSTATUS status;

	/* the file system sends it at PASSIVE_LEVEL; anything else: pass */
	if (KeGetCurrentIrql() != PASSIVE_LEVEL || !vol->prot)
		return ferry_vol_pass(vol, irp);
	status = IoAcquireRemoveLock(&vol->remove_lock, irp);
	if (!NT_SUCCESS(status))
		return ferry_complete(irp, status, 0);
	f = ExAllocatePoolWithTag(NonPagedPoolNx, sizeof(*f), FERRY_POOL_TAG);
	if (f) {
		f->refs = 2;
		KeInitializeEvent(&f->done, NotificationEvent, FALSE);
		f->irp = irp;
		f->vol = vol;
	}
	ferry_ctl_lock();
	p = vol->prot;
	handled = f && p &&
		  ferry_win_vss_freeze(&g_ferry.ctl, &p->cdev,
				       ferry_freeze_forward, f);
	ferry_ctl_unlock();
	if (handled) {
		/* the completion releases the remove lock */
		ferry_freeze_put(f);
		return STATUS_PENDING;
	}
	if (f)
		ExFreePoolWithTag(f, FERRY_POOL_TAG);
	IoSkipCurrentIrpStackLocation(irp);
	status = IoCallDriver(vol->lower, irp);
	IoReleaseRemoveLock(&vol->remove_lock, irp);
	return status;
}
