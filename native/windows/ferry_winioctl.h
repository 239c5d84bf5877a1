/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The Windows control device of ferryflt.sys (\\.\FerryCtl): IOCTL codes,
 * the status codes it returns and the Windows-only argument structs.
 *
 * No OS header: the driver, the N-API addon (native/addon/win) and the host
 * tests (native/windows/test) all include this file.  The argument structs
 * of the calls that mirror /dev/ferry-ctl are the ones in ferry_abi.h; the
 * differences are listed in native/windows/README.md ("Control device").
 */
#ifndef FERRY_WINIOCTL_H
#define FERRY_WINIOCTL_H

#include "ferry_abi.h"

#define FERRY_WIN_CTL_DEVICE	L"\\Device\\FerryCtl"
#define FERRY_WIN_CTL_LINK	L"\\DosDevices\\FerryCtl"
#define FERRY_WIN_CTL_PATH	"\\\\.\\FerryCtl"	/* CreateFile path */

/*
 * CTL_CODE(DeviceType, Function, Method, Access) spelled out so that no
 * Windows header is needed.  0xF7F7 is in the vendor range (>= 0x8000),
 * functions 0x800.. are in the vendor range too; every call needs a handle
 * opened for read and write (FILE_READ_DATA | FILE_WRITE_DATA = 3).
 */
#define FERRY_WIN_DEVICE_TYPE	0xF7F7u
#define FERRY_WIN_BUFFERED	0u	/* METHOD_BUFFERED */
#define FERRY_WIN_OUT_DIRECT	2u	/* METHOD_OUT_DIRECT */
#define FERRY_WIN_CODE(fn, method) \
	((FERRY_WIN_DEVICE_TYPE << 16) | (3u << 14) | ((fn) << 2) | (method))
#define FERRY_WIN_CODE_DEVICE_TYPE(code)	((code) >> 16)
#define FERRY_WIN_CODE_METHOD(code)		((code) & 3u)

/* The calls that mirror /dev/ferry-ctl (same argument structs). */
#define FERRY_WIN_IOC_VERSION		FERRY_WIN_CODE(0x800, FERRY_WIN_BUFFERED)
#define FERRY_WIN_IOC_LIST		FERRY_WIN_CODE(0x801, FERRY_WIN_BUFFERED)
#define FERRY_WIN_IOC_GET_CHANGES	FERRY_WIN_CODE(0x802, FERRY_WIN_OUT_DIRECT)
#define FERRY_WIN_IOC_COMMIT		FERRY_WIN_CODE(0x803, FERRY_WIN_BUFFERED)
#define FERRY_WIN_IOC_TAG		FERRY_WIN_CODE(0x804, FERRY_WIN_BUFFERED)
#define FERRY_WIN_IOC_STATS		FERRY_WIN_CODE(0x805, FERRY_WIN_BUFFERED)
#define FERRY_WIN_IOC_GET_BITMAP	FERRY_WIN_CODE(0x806, FERRY_WIN_OUT_DIRECT)
#define FERRY_WIN_IOC_CLEAR_BITMAP	FERRY_WIN_CODE(0x807, FERRY_WIN_BUFFERED)
#define FERRY_WIN_IOC_RESYNC_MARK	FERRY_WIN_CODE(0x808, FERRY_WIN_BUFFERED)
#define FERRY_WIN_IOC_HOLD		FERRY_WIN_CODE(0x809, FERRY_WIN_BUFFERED)
#define FERRY_WIN_IOC_RELEASE		FERRY_WIN_CODE(0x80A, FERRY_WIN_BUFFERED)
/* Windows only. */
#define FERRY_WIN_IOC_WAIT		FERRY_WIN_CODE(0x810, FERRY_WIN_BUFFERED)
#define FERRY_WIN_IOC_RESCAN		FERRY_WIN_CODE(0x811, FERRY_WIN_BUFFERED)
#define FERRY_WIN_IOC_VSS_ARM		FERRY_WIN_CODE(0x812, FERRY_WIN_BUFFERED)
#define FERRY_WIN_IOC_VSS_RESULT	FERRY_WIN_CODE(0x813, FERRY_WIN_BUFFERED)

/*
 * Status codes.  Every error of the capture core and of the argument
 * checks is a customer NTSTATUS (bit 29) in facility 0xF7 whose low 16
 * bits are the Linux errno value (ferry_errno.h), so the agent sees the
 * same error names on both systems.  RtlNtStatusToDosError passes customer
 * codes through unchanged: GetLastError() returns the same 32-bit value.
 *
 *   0xE0F7xxxx  error severity: nothing is copied back to the caller.
 *   0xA0F7xxxx  warning severity: used where results travel back on failure
 *               (TAG .hold_ns, HOLD .drain_ns, CLEAR_BITMAP .dirty_bits,
 *               GET_CHANGES .needed); the I/O manager copies METHOD_BUFFERED output
 *               for any status that is not an error.
 */
#define FERRY_WIN_FACILITY		0x0F7u
#define FERRY_WIN_STATUS_ERROR(e)	(0xE0000000u | (FERRY_WIN_FACILITY << 16) | (unsigned int)(e))
#define FERRY_WIN_STATUS_WARNING(e)	(0xA0000000u | (FERRY_WIN_FACILITY << 16) | (unsigned int)(e))
/* The errno carried by a ferry status (or 0 if the code is not one). */
#define FERRY_WIN_STATUS_ERRNO(s) \
	((((unsigned int)(s)) & 0x2FFF0000u) == (0x20000000u | (FERRY_WIN_FACILITY << 16)) ? \
	 (((unsigned int)(s)) & 0xFFFFu) : 0u)

/* A warning-severity ferry status: the output holds results. */
#define FERRY_WIN_STATUS_IS_WARNING(s) \
	((((unsigned int)(s)) & 0xC0000000u) == 0x80000000u && \
	 FERRY_WIN_STATUS_ERRNO(s) != 0u)

/* errnos only the Windows control device uses (Linux values). */
#define FERRY_WIN_EPERM		1	/* not an administrator */
#define FERRY_WIN_ENOENT	2	/* VSS: the volume never reached the freeze point */
#define FERRY_WIN_EIO		5	/* metadata I/O failed */
#define FERRY_WIN_ENOTTY	25	/* unknown IOCTL */
#define FERRY_WIN_ECANCELED	125	/* WAIT cancelled (handle closed, CancelIoEx) */

/* ---------------------------------------------------------------------
 * Windows-only argument structs.  Each starts with { size, version } and
 * follows the rules of ferry_abi.h (size must be exact, version must be
 * FERRY_ABI_VERSION, reserved fields zero).
 */

/* FERRY_WIN_IOC_WAIT: pends until records are waiting to be handed out. */
struct ferry_win_wait {
	uint32_t size;
	uint32_t version;
	uint32_t ready;			/* out: 1 */
	uint32_t reserved;
};

FERRY_ABI_ASSERT(sizeof(struct ferry_win_wait) == 16, "wait size");

/* FERRY_WIN_IOC_RESCAN: re-read the protection list from the registry. */
struct ferry_win_rescan {
	uint32_t size;
	uint32_t version;
	uint32_t started;		/* out: volumes that began protection */
	uint32_t stopped;		/* out: volumes that ended protection */
	uint32_t failed;		/* out: configured volumes that could not start */
	uint32_t tracked;		/* out: volumes tracked now */
};

FERRY_ABI_ASSERT(sizeof(struct ferry_win_rescan) == 24, "rescan size");

/*
 * FERRY_WIN_IOC_VSS_ARM: the next IOCTL_VOLSNAP_FLUSH_AND_HOLD_WRITES that
 * passes each listed device (sent by VSS at the freeze point, after the
 * writers froze and the file system flushed) inserts a TAG there.  The arm
 * expires after expire_ms.  One arm at a time (EBUSY).
 */
struct ferry_win_vss_arm {
	uint32_t size;
	uint32_t version;
	uint64_t tag_id;
	uint32_t hold_ms;		/* bound on the write hold per device; 0 = default */
	uint32_t expire_ms;		/* 1 .. FERRY_WIN_VSS_EXPIRE_MAX_MS */
	uint32_t ndevs;			/* 1 .. FERRY_MAX_DEVICES */
	uint32_t reserved;
	uint32_t devs[FERRY_MAX_DEVICES];
};

FERRY_ABI_ASSERT(sizeof(struct ferry_win_vss_arm) == 288, "vss arm size");

#define FERRY_WIN_VSS_EXPIRE_MAX_MS	600000u
/* The longest write hold a TAG or VSS_ARM may ask for (VERSION reports it). */
#define FERRY_WIN_TAG_HOLD_MAX_MS	5000u

/*
 * FERRY_WIN_IOC_VSS_RESULT: what the armed tag did, per device (in the
 * order of the arm); disarms.  status[i] is 0 when the TAG was inserted,
 * else an errno: ENOENT (no freeze point seen), ETIMEDOUT (writes in
 * flight did not drain within hold_ms), EAGAIN / ENOSPC (as for TAG).
 * bridged has bit i set when the write hold lasted until the freeze IOCTL
 * completed below, so no write could slip between the TAG and the hold of
 * volsnap (the cut is then consistent across all bridged devices).
 */
struct ferry_win_vss_result {
	uint32_t size;
	uint32_t version;
	uint64_t tag_id;		/* out */
	uint32_t ndevs;			/* out */
	uint32_t armed;			/* out: 1 if an arm was pending */
	uint64_t bridged;		/* out: bit per device */
	uint64_t hold_ns;		/* out: longest hold */
	uint32_t status[FERRY_MAX_DEVICES];	/* out */
	uint64_t seqs[FERRY_MAX_DEVICES];	/* out: TAG seq, 0 if none */
};

FERRY_ABI_ASSERT(sizeof(struct ferry_win_vss_result) == 808, "vss result size");

/*
 * The metadata area of a protected volume (ferry_md.h layout) is a
 * contiguous preallocated file on that volume.  Whoever creates it writes
 * this magic into its first 8 bytes; the driver writes only over an area
 * that starts with this magic or with a Ferry superblock, so a stale
 * registry entry can never make it overwrite user data.
 */
#define FERRY_WIN_MD_RESERVED_MAGIC	0x58444d5952524546ULL	/* "FERRYMDX" */

#endif /* FERRY_WINIOCTL_H */
