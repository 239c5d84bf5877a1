// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Metadata I/O: the superblock and the dirty bitmap (layout in
 * native/common/ferry_md.h) in the volume's metadata area, a contiguous
 * preallocated file whose byte range the registry gives.
 *
 * The I/O goes to the device *below* the filter: it is neither captured
 * nor held by a gate, so a save can run while writes wait, and the area's
 * contents never enter the change stream.  Before the first write of every
 * update the area's first block is read back and must start with a Ferry
 * magic: a stale or wrong registry entry can never overwrite user data.
 *
 * PASSIVE_LEVEL, ctl mutex held (a KMUTEX: the thread stays at PASSIVE).
 */
#include "ferryflt.h"

#define FERRY_MD_CHUNK (1u << 20)

struct ferry_md_wait {
	KEVENT done;
	NTSTATUS status;
};

static NTSTATUS ferry_md_done(DEVICE_OBJECT *dev, IRP *irp, void *ctx)
{
	struct ferry_md_wait *w = ctx;

	(void)dev;
	w->status = irp->IoStatus.Status;
	if (irp->MdlAddress)
		IoFreeMdl(irp->MdlAddress);
	irp->MdlAddress = NULL;
	IoFreeIrp(irp);
	KeSetEvent(&w->done, IO_NO_INCREMENT, FALSE);
	return STATUS_MORE_PROCESSING_REQUIRED;
}

/*
 * One read, write or flush (buf NULL) to the device below, waited for.
 * buf is non-paged pool: an MDL built for it needs no probe-and-lock.
 */
static NTSTATUS ferry_lower_rw(struct ferry_vol *vol, UCHAR major, u64 offset,
			       void *buf, u32 len, bool fua)
{
	struct ferry_md_wait w;
	IO_STACK_LOCATION *sp;
	IRP *irp;
	MDL *mdl = NULL;

	irp = IoAllocateIrp(vol->lower->StackSize, FALSE);
	if (!irp)
		return STATUS_INSUFFICIENT_RESOURCES;
	if (buf) {
		mdl = IoAllocateMdl(buf, len, FALSE, FALSE, NULL);
		if (!mdl) {
			IoFreeIrp(irp);
			return STATUS_INSUFFICIENT_RESOURCES;
		}
		MmBuildMdlForNonPagedPool(mdl);
		irp->MdlAddress = mdl;
		irp->AssociatedIrp.SystemBuffer = buf;
		irp->UserBuffer = buf;
	}
	irp->Flags = IRP_NOCACHE;
	sp = IoGetNextIrpStackLocation(irp);
	sp->MajorFunction = major;
	if (major == IRP_MJ_READ || major == IRP_MJ_WRITE) {
		sp->Parameters.Write.ByteOffset.QuadPart = (LONGLONG)offset;
		sp->Parameters.Write.Length = len;
		if (fua)
			sp->Flags |= SL_WRITE_THROUGH;
	}
	KeInitializeEvent(&w.done, NotificationEvent, FALSE);
	w.status = STATUS_UNSUCCESSFUL;
	IoSetCompletionRoutine(irp, ferry_md_done, &w, TRUE, TRUE, TRUE);
	IoCallDriver(vol->lower, irp);
	KeWaitForSingleObject(&w.done, Executive, KernelMode, FALSE, NULL);
	return w.status;
}

/* Reads or writes [off, off + len) of the metadata area, in chunks. */
static NTSTATUS ferry_md_io(struct ferry_prot *p, bool write, u64 off, u8 *buf,
			    u64 len, bool fua)
{
	NTSTATUS status = STATUS_SUCCESS;

	if (off > p->md_bytes || len > p->md_bytes - off)
		return STATUS_INVALID_PARAMETER;	/* never leave the area */
	while (len && NT_SUCCESS(status)) {
		u32 n = len > FERRY_MD_CHUNK ? FERRY_MD_CHUNK : (u32)len;

		status = ferry_lower_rw(p->vol, write ? IRP_MJ_WRITE : IRP_MJ_READ,
					p->md_offset + off, buf, n, fua);
		off += n;
		buf += n;
		len -= n;
	}
	return status;
}

static NTSTATUS ferry_md_flush(struct ferry_prot *p)
{
	return ferry_lower_rw(p->vol, IRP_MJ_FLUSH_BUFFERS, 0, NULL, 0, false);
}

/* Block 0 into sb_buf; it must start with a Ferry magic. */
static NTSTATUS ferry_md_check(struct ferry_prot *p)
{
	NTSTATUS status;
	u64 magic;

	if (p->md_broken)
		return ferry_status(-FERRY_ENODEV);
	status = ferry_md_io(p, false, 0, p->sb_buf, FERRY_MD_BLOCK, false);
	if (!NT_SUCCESS(status))
		return status;
	RtlCopyMemory(&magic, p->sb_buf, sizeof(magic));
	if (magic != FERRY_MD_MAGIC && magic != FERRY_WIN_MD_RESERVED_MAGIC) {
		p->md_broken = true;
		DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_ERROR_LEVEL,
			   "ferryflt: %s: metadata area has no Ferry magic: not written\n",
			   p->cdev.name);
		return ferry_status(-FERRY_ENODEV);
	}
	return STATUS_SUCCESS;
}

/* Writes the superblock (write-through), then flushes the volume. */
static NTSTATUS ferry_md_put_sb(struct ferry_prot *p, bool clean, u64 next_seq,
				u64 seq_limit, u32 bitmap_crc)
{
	struct ferry_md_sb sb;
	NTSTATUS status;

	RtlZeroMemory(&sb, sizeof(sb));
	sb.flags = clean ? FERRY_MD_F_CLEAN : 0;
	sb.granularity = p->cfg.granularity;
	sb.dev_size = p->cfg.dev_size;
	sb.nbits = p->core->nbits;
	sb.bitmap_offset = FERRY_MD_BLOCK;
	sb.bitmap_bytes = p->bm_bytes;
	sb.next_seq = next_seq;
	sb.seq_limit = seq_limit;
	sb.generation = p->generation;
	sb.bitmap_crc = bitmap_crc;
	ferry_md_encode(&sb, p->sb_buf);
	status = ferry_md_io(p, true, 0, p->sb_buf, FERRY_MD_BLOCK, true);
	if (NT_SUCCESS(status))
		status = ferry_md_flush(p);
	return status;
}

/*
 * First start of protection: decide NEW / CLEAN / DIRTY from the area,
 * lease seqs and mark the area DIRTY (durably), then start the stream.
 */
NTSTATUS ferry_md_load(struct ferry_prot *p)
{
	struct ferry_md_sb sb;
	bool bitmap_ok = false;
	u64 next_seq, limit;
	NTSTATUS status;
	u8 state;
	int ret;

	status = ferry_md_check(p);
	if (!NT_SUCCESS(status))
		return status;
	ret = ferry_md_decode(p->sb_buf, &sb);
	if (!ret && (sb.flags & FERRY_MD_F_CLEAN) &&
	    sb.bitmap_bytes == p->bm_bytes &&
	    sb.bitmap_offset == FERRY_MD_BLOCK) {
		status = ferry_md_io(p, false, FERRY_MD_BLOCK, p->bm_buf,
				     p->bm_io_bytes, false);
		if (!NT_SUCCESS(status))
			return status;
		bitmap_ok = ferry_crc32(0, p->bm_buf, (size_t)p->bm_bytes) ==
			    sb.bitmap_crc;
	}
	state = ferry_md_start_state(ret, &sb, p->cfg.dev_size,
				     p->cfg.granularity, bitmap_ok, &next_seq);
	if (state == FERRY_START_CLEAN)
		RtlCopyMemory(ferry_dev_bitmap(p->core), p->bm_buf,
			      (size_t)p->bm_bytes);
	p->generation = (ret ? 0 : sb.generation) + 1;
	limit = next_seq + p->cfg.seq_lease;
	status = ferry_md_put_sb(p, false, next_seq, limit, 0);
	if (!NT_SUCCESS(status))
		return status;
	p->md_clean = false;
	ferry_dev_start(p->core, state, p->generation, next_seq, limit);
	DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL,
		   "ferryflt: %s: stream starts %s at seq %llu (generation %u)\n",
		   p->cdev.name,
		   state == FERRY_START_CLEAN ? "clean" :
		   state == FERRY_START_DIRTY ? "dirty" : "new",
		   (unsigned long long)next_seq, p->generation);
	return STATUS_SUCCESS;
}

/* DIRTY with a new seq lease (lease extension, CLEAN -> DIRTY, restart). */
NTSTATUS ferry_md_mark_dirty(struct ferry_prot *p, u64 next_seq, u64 limit)
{
	NTSTATUS status = ferry_md_check(p);

	if (!NT_SUCCESS(status))
		return status;
	status = ferry_md_put_sb(p, false, next_seq, limit, 0);
	if (NT_SUCCESS(status))
		p->md_clean = false;
	return status;
}

/*
 * Clean teardown, with the stream frozen and no write in flight: save the
 * live bitmap plus every uncommitted record's range, then the superblock
 * CLEAN with the next seq.  Bitmap first, flush, superblock write-through.
 */
NTSTATUS ferry_md_save(struct ferry_prot *p)
{
	NTSTATUS status = ferry_md_check(p);
	u64 next;
	u32 crc;

	if (!NT_SUCCESS(status))
		return status;
	next = ferry_dev_persist(p->core, (u64 *)p->bm_buf);
	crc = ferry_crc32(0, p->bm_buf, (size_t)p->bm_bytes);
	status = ferry_md_io(p, true, FERRY_MD_BLOCK, p->bm_buf, p->bm_io_bytes,
			     false);
	if (NT_SUCCESS(status))
		status = ferry_md_flush(p);
	if (NT_SUCCESS(status))
		status = ferry_md_put_sb(p, true, next, next, crc);
	if (NT_SUCCESS(status))
		p->md_clean = true;
	else
		DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_ERROR_LEVEL,
			   "ferryflt: %s: cannot save the bitmap (0x%08lx): the next start is a full resync\n",
			   p->cdev.name, (unsigned long)status);
	return status;
}

/* A METHOD_BUFFERED IOCTL to the device below (size, unique id). */
NTSTATUS ferry_lower_ioctl(struct ferry_vol *vol, ULONG code, void *out,
			   ULONG out_len, ULONG_PTR *returned)
{
	IO_STATUS_BLOCK iosb;
	KEVENT ev;
	IRP *irp;
	NTSTATUS status;

	KeInitializeEvent(&ev, NotificationEvent, FALSE);
	irp = IoBuildDeviceIoControlRequest(code, vol->lower, NULL, 0, out,
					    out_len, FALSE, &ev, &iosb);
	if (!irp)
		return STATUS_INSUFFICIENT_RESOURCES;
	status = IoCallDriver(vol->lower, irp);
	if (status == STATUS_PENDING) {
		KeWaitForSingleObject(&ev, Executive, KernelMode, FALSE, NULL);
		status = iosb.Status;
	}
	*returned = iosb.Information;
	return status;
}
