// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * The control device \Device\FerryCtl (\\.\FerryCtl): open/close, the
 * IOCTLs (argument checks and logic in ctl_calls.c and
 * ../common/ferry_ctl_ops.c), pended WAIT requests
 * (a cancel-safe queue, completed when records become ready), and the
 * last-chance shutdown notification that saves every bitmap.
 *
 * Only administrators (or kernel callers) can open it.  The handle that
 * first calls GET_CHANGES owns the change stream until its last handle
 * closes (IRP_MJ_CLEANUP): then every uncommitted batch is handed out
 * again, as with /dev/ferry-ctl.
 */
#include "ferryflt.h"

/* ---- pended WAIT requests ---- */

static VOID ferry_csq_insert(IO_CSQ *csq, IRP *irp)
{
	(void)csq;
	InsertTailList(&g_ferry.waiters, &irp->Tail.Overlay.ListEntry);
	InterlockedIncrement(&g_ferry.nwaiters);
}

static VOID ferry_csq_remove(IO_CSQ *csq, IRP *irp)
{
	(void)csq;
	RemoveEntryList(&irp->Tail.Overlay.ListEntry);
	InterlockedDecrement(&g_ferry.nwaiters);
}

/* Next IRP after irp (or the first), of file object ctx if given. */
static IRP *ferry_csq_peek(IO_CSQ *csq, IRP *irp, void *ctx)
{
	LIST_ENTRY *e = irp ? irp->Tail.Overlay.ListEntry.Flink :
			      g_ferry.waiters.Flink;

	(void)csq;
	for (; e != &g_ferry.waiters; e = e->Flink) {
		IRP *next = CONTAINING_RECORD(e, IRP, Tail.Overlay.ListEntry);

		if (!ctx ||
		    IoGetCurrentIrpStackLocation(next)->FileObject == ctx)
			return next;
	}
	return NULL;
}

static VOID ferry_csq_lock(IO_CSQ *csq, KIRQL *irql)
{
	(void)csq;
	KeAcquireSpinLock(&g_ferry.wait_lock, irql);
}

static VOID ferry_csq_unlock(IO_CSQ *csq, KIRQL irql)
{
	(void)csq;
	KeReleaseSpinLock(&g_ferry.wait_lock, irql);
}

static VOID ferry_csq_cancelled(IO_CSQ *csq, IRP *irp)
{
	(void)csq;
	ferry_complete(irp, STATUS_CANCELLED, 0);
}

static void ferry_wait_complete(IRP *irp)
{
	struct ferry_win_wait *w = irp->AssociatedIrp.SystemBuffer;

	w->ready = 1;
	ferry_complete(irp, STATUS_SUCCESS, sizeof(*w));
}

/*
 * Records became deliverable: complete every pended WAIT.  Called from
 * write completions (DISPATCH_LEVEL); the common case (nobody waits) is
 * one read.
 */
void ferry_ctl_wake(void)
{
	IRP *irp;

	if (!InterlockedCompareExchange(&g_ferry.nwaiters, 0, 0))
		return;
	for (;;) {
		irp = IoCsqRemoveNextIrp(&g_ferry.wait_csq, NULL);
		if (!irp)
			break;
		ferry_wait_complete(irp);
	}
}

/* ---- platform callbacks of the shared control calls ---- */

static void ferry_op_hold(struct ferry_ctl *c, struct ferry_ctl_dev *d,
			  bool on)
{
	struct ferry_prot *p = d->priv;

	(void)c;
	ferry_vol_gate(p->vol, FERRY_GATE_HOLD, on);
}

static int ferry_op_wait_drained(struct ferry_ctl *c,
				 struct ferry_ctl_dev **devs, u32 n, u32 ms)
{
	u32 i;

	for (i = 0; i < n; i++)
		c->tag_cores[i] = devs[i]->core;
	return NT_SUCCESS(ferry_wait_drained(c->tag_cores, n, ms)) ?
		       0 : -FERRY_ETIMEDOUT;
}

static u64 ferry_op_now(struct ferry_ctl *c)
{
	(void)c;
	return ferry_mono_ns();
}

static void ferry_op_events(struct ferry_ctl *c, struct ferry_ctl_dev *d,
			    u32 ev)
{
	u32 i;

	if (d) {
		ferry_prot_events(d->priv, ev);
		return;
	}
	/* events of several devices: wake readers, and any lease request
	 * goes to every device (an extra metadata write is harmless) */
	if (ev & FERRY_EV_READY)
		ferry_ctl_wake();
	if (ev & FERRY_EV_LEASE)
		for (i = 0; i < FERRY_MAX_DEVICES; i++)
			if (c->devs[i])
				ferry_prot_events(c->devs[i]->priv,
						  FERRY_EV_LEASE);
}

/*
 * The bound of a hold: the timer's DPC (DISPATCH_LEVEL) cannot take the
 * control mutex nor resubmit held IRPs, so it queues a work item, which
 * runs at PASSIVE_LEVEL.  One work item at a time; a firing that raced
 * with the end of the hold finds nothing to do, an early one arms again.
 */
static VOID ferry_hold_work(DEVICE_OBJECT *dev, PVOID ctx)
{
	(void)dev;
	(void)ctx;
	InterlockedExchange(&g_ferry.hold_work_queued, 0);
	ferry_ctl_lock();
	ferry_ctl_hold_timer(&g_ferry.ctl.ctl);
	ferry_ctl_unlock();
}

static VOID ferry_hold_dpc(KDPC *dpc, PVOID ctx, PVOID arg1, PVOID arg2)
{
	(void)dpc;
	(void)ctx;
	(void)arg1;
	(void)arg2;
	if (!InterlockedCompareExchange(&g_ferry.hold_work_queued, 1, 0))
		IoQueueWorkItem(g_ferry.hold_work, ferry_hold_work,
				DelayedWorkQueue, NULL);
}

static void ferry_op_arm_release(struct ferry_ctl *c, u64 ns)
{
	LARGE_INTEGER due;

	(void)c;
	/* relative, in 100 ns units, rounded up */
	due.QuadPart = -(LONGLONG)((ns + 99) / 100);
	KeSetTimer(&g_ferry.hold_timer, due, &g_ferry.hold_dpc);
}

static void ferry_op_cancel_release(struct ferry_ctl *c)
{
	(void)c;
	KeCancelTimer(&g_ferry.hold_timer);
}

const struct ferry_ctl_ops ferry_win_ctl_ops = {
	.hold = ferry_op_hold,
	.wait_drained = ferry_op_wait_drained,
	.now_ns = ferry_op_now,
	.events = ferry_op_events,
	.arm_release = ferry_op_arm_release,
	.cancel_release = ferry_op_cancel_release,
};

/* ---- IRPs ---- */

/* Opening needs an administrator token (like CAP_SYS_ADMIN on Linux). */
static NTSTATUS ferry_ctl_create_irp(IRP *irp)
{
	IO_STACK_LOCATION *sp = IoGetCurrentIrpStackLocation(irp);
	IO_SECURITY_CONTEXT *sec = sp->Parameters.Create.SecurityContext;
	SECURITY_SUBJECT_CONTEXT *sc;
	BOOLEAN admin;

	if (irp->RequestorMode == KernelMode)
		return ferry_complete(irp, STATUS_SUCCESS, 0);
	if (!sec || !sec->AccessState)
		return ferry_complete(irp, STATUS_ACCESS_DENIED, 0);
	/* the requester's token as captured by the I/O manager for this open */
	sc = &sec->AccessState->SubjectSecurityContext;
	SeLockSubjectContext(sc);
	admin = SeTokenIsAdmin(SeQuerySubjectContextToken(sc));
	SeUnlockSubjectContext(sc);
	return ferry_complete(irp, admin ? STATUS_SUCCESS : STATUS_ACCESS_DENIED,
			      0);
}

static NTSTATUS ferry_ctl_cleanup(IRP *irp)
{
	FILE_OBJECT *fo = IoGetCurrentIrpStackLocation(irp)->FileObject;
	IRP *w;

	ferry_ctl_lock();
	ferry_ctl_release(&g_ferry.ctl.ctl, fo);
	ferry_ctl_unlock();
	for (;;) {
		w = IoCsqRemoveNextIrp(&g_ferry.wait_csq, fo);
		if (!w)
			break;
		ferry_complete(w, STATUS_CANCELLED, 0);
	}
	return ferry_complete(irp, STATUS_SUCCESS, 0);
}

static NTSTATUS ferry_ctl_ioctl(IRP *irp)
{
	IO_STACK_LOCATION *sp = IoGetCurrentIrpStackLocation(irp);
	ULONG code = sp->Parameters.DeviceIoControl.IoControlCode;
	ULONG in_len = sp->Parameters.DeviceIoControl.InputBufferLength;
	ULONG out_len = sp->Parameters.DeviceIoControl.OutputBufferLength;
	struct ferry_ctl_result r;
	void *data = NULL;
	NTSTATUS status;

	if (FERRY_WIN_CODE_DEVICE_TYPE(code) != FERRY_WIN_DEVICE_TYPE)
		return ferry_complete(irp, STATUS_INVALID_DEVICE_REQUEST, 0);
	if (FERRY_WIN_CODE_METHOD(code) == FERRY_WIN_OUT_DIRECT &&
	    irp->MdlAddress) {
		data = MmGetSystemAddressForMdlSafe(irp->MdlAddress,
						    NormalPagePriority |
							    MdlMappingNoExecute);
		if (!data)
			return ferry_complete(irp, STATUS_INSUFFICIENT_RESOURCES,
					      0);
	}
	ferry_ctl_lock();
	r = ferry_win_ctl_call(&g_ferry.ctl, sp->FileObject, code,
			       irp->AssociatedIrp.SystemBuffer, in_len, out_len,
			       data, data ? out_len : 0);
	if (r.pend) {
		IoCsqInsertIrp(&g_ferry.wait_csq, irp, NULL);
		/* a record may have become ready before the insert: re-check */
		if (ferry_ctl_pending(&g_ferry.ctl.ctl))
			ferry_ctl_wake();
		ferry_ctl_unlock();
		return STATUS_PENDING;
	}
	ferry_ctl_unlock();
	if (!r.err)
		status = STATUS_SUCCESS;
	else if (r.results)
		status = (NTSTATUS)FERRY_WIN_STATUS_WARNING(-r.err);
	else
		status = ferry_status(r.err);
	return ferry_complete(irp, status, r.err && !r.results ? 0 : r.info);
}

NTSTATUS ferry_ctl_dispatch(DEVICE_OBJECT *dev, IRP *irp)
{
	(void)dev;
	switch (IoGetCurrentIrpStackLocation(irp)->MajorFunction) {
	case IRP_MJ_CREATE:
		return ferry_ctl_create_irp(irp);
	case IRP_MJ_CLEANUP:
		return ferry_ctl_cleanup(irp);
	case IRP_MJ_CLOSE:
		return ferry_complete(irp, STATUS_SUCCESS, 0);
	case IRP_MJ_DEVICE_CONTROL:
		return ferry_ctl_ioctl(irp);
	case IRP_MJ_SHUTDOWN:
		ferry_save_all();
		return ferry_complete(irp, STATUS_SUCCESS, 0);
	default:
		return ferry_complete(irp, STATUS_INVALID_DEVICE_REQUEST, 0);
	}
}

NTSTATUS ferry_ctl_create(DRIVER_OBJECT *driver)
{
	UNICODE_STRING name, link;
	struct ferry_ctl_ext *ext;
	DEVICE_OBJECT *dev;
	NTSTATUS status;

	KeInitializeSpinLock(&g_ferry.wait_lock);
	InitializeListHead(&g_ferry.waiters);
	IoCsqInitialize(&g_ferry.wait_csq, ferry_csq_insert, ferry_csq_remove,
			ferry_csq_peek, ferry_csq_lock, ferry_csq_unlock,
			ferry_csq_cancelled);
	RtlInitUnicodeString(&name, FERRY_WIN_CTL_DEVICE);
	RtlInitUnicodeString(&link, FERRY_WIN_CTL_LINK);
	status = IoCreateDevice(driver, sizeof(*ext), &name,
				FERRY_WIN_DEVICE_TYPE, FILE_DEVICE_SECURE_OPEN,
				FALSE, &dev);
	if (!NT_SUCCESS(status))
		return status;
	ext = dev->DeviceExtension;
	ext->magic = FERRY_EXT_CTL;
	g_ferry.hold_work = IoAllocateWorkItem(dev);
	if (!g_ferry.hold_work) {
		IoDeleteDevice(dev);
		return STATUS_INSUFFICIENT_RESOURCES;
	}
	KeInitializeTimer(&g_ferry.hold_timer);
	KeInitializeDpc(&g_ferry.hold_dpc, ferry_hold_dpc, NULL);
	status = IoCreateSymbolicLink(&link, &name);
	if (!NT_SUCCESS(status)) {
		IoFreeWorkItem(g_ferry.hold_work);
		IoDeleteDevice(dev);
		return status;
	}
	/* after the file systems flushed: the volumes' last writes are in */
	status = IoRegisterLastChanceShutdownNotification(dev);
	if (!NT_SUCCESS(status)) {
		IoDeleteSymbolicLink(&link);
		IoFreeWorkItem(g_ferry.hold_work);
		IoDeleteDevice(dev);
		return status;
	}
	g_ferry.ctl_dev = dev;
	dev->Flags &= ~DO_DEVICE_INITIALIZING;
	return STATUS_SUCCESS;
}
