// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * ferryflt.sys: driver entry, AddDevice and the dispatch table.
 *
 * One driver object serves two kinds of device object: the control device
 * (\Device\FerryCtl, ctl.c) and one filter device per volume, attached on
 * top of every volume's stack (the driver is an upper filter of the Volume
 * class).  A volume that is not protected is passed through untouched.
 */
#include "ferryflt.h"

struct ferry_global g_ferry;

DRIVER_INITIALIZE DriverEntry;
static DRIVER_ADD_DEVICE ferry_add_device;
static DRIVER_DISPATCH ferry_dispatch;
static IO_WORKITEM_ROUTINE ferry_work;

static bool ferry_is_ctl(DEVICE_OBJECT *dev)
{
	return ((struct ferry_ctl_ext *)dev->DeviceExtension)->magic ==
	       FERRY_EXT_CTL;
}

NTSTATUS ferry_complete(IRP *irp, NTSTATUS status, ULONG_PTR info)
{
	irp->IoStatus.Status = status;
	irp->IoStatus.Information = info;
	IoCompleteRequest(irp, IO_NO_INCREMENT);
	return status;
}

void ferry_ctl_lock(void)
{
	KeWaitForSingleObject(&g_ferry.ctl_mutex, Executive, KernelMode, FALSE,
			      NULL);
}

void ferry_ctl_unlock(void)
{
	KeReleaseMutex(&g_ferry.ctl_mutex, FALSE);
}

/* Sends irp down unchanged, holding the remove lock while it is ours. */
NTSTATUS ferry_vol_pass(struct ferry_vol *vol, IRP *irp)
{
	NTSTATUS status = IoAcquireRemoveLock(&vol->remove_lock, irp);

	if (!NT_SUCCESS(status))
		return ferry_complete(irp, status, 0);
	IoSkipCurrentIrpStackLocation(irp);
	status = IoCallDriver(vol->lower, irp);
	IoReleaseRemoveLock(&vol->remove_lock, irp);
	return status;
}

static NTSTATUS ferry_vol_ioctl(struct ferry_vol *vol, IRP *irp)
{
	IO_STACK_LOCATION *sp = IoGetCurrentIrpStackLocation(irp);

	switch (sp->Parameters.DeviceIoControl.IoControlCode) {
	case IOCTL_STORAGE_MANAGE_DATA_SET_ATTRIBUTES:
		return ferry_vol_dsm(vol, irp);
	case IOCTL_VOLSNAP_FLUSH_AND_HOLD_WRITES:
		return ferry_vol_freeze_point(vol, irp);
	default:
		return ferry_vol_pass(vol, irp);
	}
}

static NTSTATUS ferry_dispatch(DEVICE_OBJECT *dev, IRP *irp)
{
	struct ferry_vol *vol = dev->DeviceExtension;

	if (ferry_is_ctl(dev))
		return ferry_ctl_dispatch(dev, irp);
	switch (IoGetCurrentIrpStackLocation(irp)->MajorFunction) {
	case IRP_MJ_WRITE:
		return ferry_vol_write(vol, irp);
	case IRP_MJ_FLUSH_BUFFERS:
		return ferry_vol_flush(vol, irp);
	case IRP_MJ_DEVICE_CONTROL:
		return ferry_vol_ioctl(vol, irp);
	case IRP_MJ_PNP:
		return ferry_vol_pnp(vol, irp);
	case IRP_MJ_POWER:
		return ferry_vol_power(vol, irp);
	case IRP_MJ_SHUTDOWN:
		return ferry_vol_shutdown(vol, irp);
	default:
		return ferry_vol_pass(vol, irp);
	}
}

/* ---- deferred work: lease, CLEAN -> DIRTY, restart after hibernation ---- */

#define FERRY_WORK_QUEUED 0x40000000	/* the work item is queued or running */

static void ferry_work(DEVICE_OBJECT *dev, void *ctx)
{
	struct ferry_vol *vol = dev->DeviceExtension;
	LONG bits;

	(void)ctx;
	for (;;) {
		/* take the pending bits, stay marked as queued */
		bits = InterlockedAnd(&vol->work_bits, FERRY_WORK_QUEUED) &
		       ~FERRY_WORK_QUEUED;
		if (bits) {
			ferry_vol_do_work(vol, bits);
			continue;
		}
		/* nothing new since: done (a later request queues again) */
		if (InterlockedCompareExchange(&vol->work_bits, 0,
					       FERRY_WORK_QUEUED) ==
		    FERRY_WORK_QUEUED)
			break;
	}
}

/* Any IRQL <= DISPATCH_LEVEL. */
void ferry_vol_queue_work(struct ferry_vol *vol, LONG bits)
{
	LONG old = InterlockedOr(&vol->work_bits, bits | FERRY_WORK_QUEUED);

	if (!(old & FERRY_WORK_QUEUED))
		IoQueueWorkItem(vol->work, ferry_work, DelayedWorkQueue, NULL);
}

/* ---- AddDevice: attach to every volume ---- */

static NTSTATUS ferry_add_device(DRIVER_OBJECT *driver, DEVICE_OBJECT *pdo)
{
	DEVICE_OBJECT *self, *top;
	struct ferry_vol *vol;
	DEVICE_TYPE type;
	ULONG chars;
	KIRQL irql;
	NTSTATUS status;

	top = IoGetAttachedDeviceReference(pdo);
	type = top->DeviceType;
	chars = top->Characteristics;
	ObDereferenceObject(top);

	status = IoCreateDevice(driver, sizeof(struct ferry_vol), NULL, type,
				(chars & FILE_REMOVABLE_MEDIA) |
					FILE_DEVICE_SECURE_OPEN,
				FALSE, &self);
	if (!NT_SUCCESS(status))
		return status;
	vol = self->DeviceExtension;
	RtlZeroMemory(vol, sizeof(*vol));
	vol->magic = FERRY_EXT_VOL;
	vol->self = self;
	vol->pdo = pdo;
	KeInitializeSpinLock(&vol->lock);
	InitializeListHead(&vol->held);
	KeInitializeEvent(&vol->passthru_idle, NotificationEvent, TRUE);
	IoInitializeRemoveLock(&vol->remove_lock, FERRY_POOL_TAG, 0, 0);
	vol->work = IoAllocateWorkItem(self);
	if (!vol->work) {
		IoDeleteDevice(self);
		return STATUS_INSUFFICIENT_RESOURCES;
	}
	status = IoAttachDeviceToDeviceStackSafe(self, pdo, &vol->lower);
	if (!NT_SUCCESS(status) || !vol->lower) {
		IoFreeWorkItem(vol->work);
		IoDeleteDevice(self);
		return NT_SUCCESS(status) ? STATUS_NO_SUCH_DEVICE : status;
	}
	/* look like the device below: I/O method, power pageability */
	self->Flags |= vol->lower->Flags &
		       (DO_DIRECT_IO | DO_BUFFERED_IO | DO_POWER_PAGABLE);
	self->AlignmentRequirement = vol->lower->AlignmentRequirement;
	KeAcquireSpinLock(&g_ferry.vols_lock, &irql);
	InsertTailList(&g_ferry.vols, &vol->link);
	KeReleaseSpinLock(&g_ferry.vols_lock, irql);
	self->Flags &= ~DO_DEVICE_INITIALIZING;
	return STATUS_SUCCESS;
}

NTSTATUS DriverEntry(DRIVER_OBJECT *driver, UNICODE_STRING *reg_path)
{
	USHORT len = reg_path->Length;
	NTSTATUS status;
	ULONG i;

	RtlZeroMemory(&g_ferry, sizeof(g_ferry));
	g_ferry.driver = driver;
	g_ferry.reg_path.Buffer = ExAllocatePoolWithTag(NonPagedPoolNx,
							len + sizeof(WCHAR),
							FERRY_POOL_TAG);
	if (!g_ferry.reg_path.Buffer)
		return STATUS_INSUFFICIENT_RESOURCES;
	RtlCopyMemory(g_ferry.reg_path.Buffer, reg_path->Buffer, len);
	g_ferry.reg_path.Length = len;
	g_ferry.reg_path.MaximumLength = (USHORT)(len + sizeof(WCHAR));

	ferry_platform_init();
	ferry_io_init();
	KeInitializeMutex(&g_ferry.ctl_mutex, 0);
	KeInitializeEvent(&g_ferry.drained, NotificationEvent, FALSE);
	KeInitializeSpinLock(&g_ferry.vols_lock);
	InitializeListHead(&g_ferry.vols);
	ferry_win_ctl_init(&g_ferry.ctl, &ferry_win_ctl_ops, ferry_rescan);
	ferry_config_globals();

	for (i = 0; i <= IRP_MJ_MAXIMUM_FUNCTION; i++)
		driver->MajorFunction[i] = ferry_dispatch;
	driver->DriverExtension->AddDevice = ferry_add_device;
	/*
	 * No DriverUnload: a filter in every volume stack (the boot volume's
	 * too) cannot go away while the system runs.
	 */
	status = ferry_ctl_create(driver);
	if (!NT_SUCCESS(status)) {
		ExFreePoolWithTag(g_ferry.reg_path.Buffer, FERRY_POOL_TAG);
		return status;
	}
	return STATUS_SUCCESS;
}
