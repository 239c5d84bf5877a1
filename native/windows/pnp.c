// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Plug and Play, power and shutdown IRPs of a volume filter device.
 *
 *  START            after the volume below started: read its size and
 *                   unique id, start protection if the registry lists it.
 *  QUERY_REMOVE     save the bitmap CLEAN (the volume may go away).
 *  SURPRISE_REMOVAL stop protection without writing (the volume is gone).
 *  REMOVE           stop protection, detach, delete.
 *  SET_POWER S4     remember: the hibernation file is written by the
 *                   crash-dump stack, below every filter, so after the
 *                   resume the stream restarts DIRTY (protect.c).
 *  SHUTDOWN         save the bitmap CLEAN.
 */
#include "ferryflt.h"

static NTSTATUS ferry_sync_done(DEVICE_OBJECT *dev, IRP *irp, void *ctx)
{
	(void)dev;
	(void)irp;
	KeSetEvent((KEVENT *)ctx, IO_NO_INCREMENT, FALSE);
	return STATUS_MORE_PROCESSING_REQUIRED;
}

/* Sends irp down and waits until the lower drivers completed it. */
static NTSTATUS ferry_forward_wait(struct ferry_vol *vol, IRP *irp)
{
	KEVENT ev;

	KeInitializeEvent(&ev, NotificationEvent, FALSE);
	IoCopyCurrentIrpStackLocationToNext(irp);
	IoSetCompletionRoutine(irp, ferry_sync_done, &ev, TRUE, TRUE, TRUE);
	if (IoCallDriver(vol->lower, irp) == STATUS_PENDING)
		KeWaitForSingleObject(&ev, Executive, KernelMode, FALSE, NULL);
	return irp->IoStatus.Status;
}

static NTSTATUS ferry_usage_done(DEVICE_OBJECT *dev, IRP *irp, void *ctx)
{
	struct ferry_vol *vol = ctx;

	if (irp->PendingReturned)
		IoMarkIrpPending(irp);
	/* on the way up the device below may have become non-pageable */
	if (!(vol->lower->Flags & DO_POWER_PAGABLE))
		dev->Flags &= ~DO_POWER_PAGABLE;
	IoReleaseRemoveLock(&vol->remove_lock, irp);
	return STATUS_CONTINUE_COMPLETION;
}

/* Waits (bounded) until no deferred work runs, before the device goes. */
static void ferry_vol_wait_work(struct ferry_vol *vol)
{
	u32 i;

	for (i = 0; i < 30000 && InterlockedCompareExchange(&vol->work_bits,
							    0, 0); i += 10)
		ferry_sleep_ms(10);
}

static NTSTATUS ferry_vol_remove(struct ferry_vol *vol, IRP *irp)
{
	KIRQL irql;
	NTSTATUS status;

	ferry_ctl_lock();
	vol->removing = true;
	ferry_vol_unprotect(vol);
	ferry_ctl_unlock();
	KeAcquireSpinLock(&g_ferry.vols_lock, &irql);
	RemoveEntryList(&vol->link);
	KeReleaseSpinLock(&g_ferry.vols_lock, irql);
	ferry_vol_wait_work(vol);
	IoReleaseRemoveLockAndWait(&vol->remove_lock, irp);
	IoSkipCurrentIrpStackLocation(irp);
	status = IoCallDriver(vol->lower, irp);
	IoDetachDevice(vol->lower);
	IoFreeWorkItem(vol->work);
	IoDeleteDevice(vol->self);
	return status;
}

NTSTATUS ferry_vol_pnp(struct ferry_vol *vol, IRP *irp)
{
	IO_STACK_LOCATION *sp = IoGetCurrentIrpStackLocation(irp);
	NTSTATUS status = IoAcquireRemoveLock(&vol->remove_lock, irp);

	if (!NT_SUCCESS(status))
		return ferry_complete(irp, status, 0);

	switch (sp->MinorFunction) {
	case IRP_MN_START_DEVICE:
		status = ferry_forward_wait(vol, irp);
		if (NT_SUCCESS(status)) {
			vol->self->Characteristics |=
				vol->lower->Characteristics & FILE_REMOVABLE_MEDIA;
			ferry_vol_started(vol);
		}
		ferry_complete(irp, status, irp->IoStatus.Information);
		IoReleaseRemoveLock(&vol->remove_lock, irp);
		return status;

	case IRP_MN_QUERY_REMOVE_DEVICE:
		ferry_ctl_lock();
		if (vol->prot)
			ferry_prot_save(vol->prot);
		ferry_ctl_unlock();
		break;

	case IRP_MN_SURPRISE_REMOVAL:
		ferry_ctl_lock();
		vol->removing = true;
		ferry_vol_unprotect(vol);
		ferry_ctl_unlock();
		break;

	case IRP_MN_REMOVE_DEVICE:
		return ferry_vol_remove(vol, irp);

	case IRP_MN_DEVICE_USAGE_NOTIFICATION:
		/* on the way down the device may become pageable: mimic below */
		if (!vol->self->AttachedDevice ||
		    (vol->self->AttachedDevice->Flags & DO_POWER_PAGABLE))
			vol->self->Flags |= DO_POWER_PAGABLE;
		IoCopyCurrentIrpStackLocationToNext(irp);
		IoSetCompletionRoutine(irp, ferry_usage_done, vol, TRUE, TRUE,
				       TRUE);
		return IoCallDriver(vol->lower, irp);

	default:
		break;
	}
	IoSkipCurrentIrpStackLocation(irp);
	status = IoCallDriver(vol->lower, irp);
	IoReleaseRemoveLock(&vol->remove_lock, irp);
	return status;
}

NTSTATUS ferry_vol_power(struct ferry_vol *vol, IRP *irp)
{
	IO_STACK_LOCATION *sp = IoGetCurrentIrpStackLocation(irp);
	NTSTATUS status;

	if (sp->MinorFunction == IRP_MN_SET_POWER &&
	    sp->Parameters.Power.Type == SystemPowerState) {
		SYSTEM_POWER_STATE s = sp->Parameters.Power.State.SystemState;

		if (s == PowerSystemHibernate) {
			vol->hibernating = true;
		} else if (s == PowerSystemWorking && vol->hibernating) {
			vol->hibernating = false;
			ferry_vol_queue_work(vol, FERRY_WORK_RESTART);
		}
	}
	status = IoAcquireRemoveLock(&vol->remove_lock, irp);
	PoStartNextPowerIrp(irp);
	if (!NT_SUCCESS(status))
		return ferry_complete(irp, status, 0);
	IoSkipCurrentIrpStackLocation(irp);
	status = PoCallDriver(vol->lower, irp);
	IoReleaseRemoveLock(&vol->remove_lock, irp);
	return status;
}

NTSTATUS ferry_vol_shutdown(struct ferry_vol *vol, IRP *irp)
{
	if (KeGetCurrentIrql() == PASSIVE_LEVEL) {
		ferry_ctl_lock();
		if (vol->prot)
			ferry_prot_save(vol->prot);
		ferry_ctl_unlock();
	}
	return ferry_vol_pass(vol, irp);
}
