// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Clocks, sleeping, the core's consistency report and status mapping. */
#include "ferryflt.h"

typedef VOID (NTAPI *ferry_precise_time_fn)(PLARGE_INTEGER);

/* KeQuerySystemTimePrecise exists from Windows 8 on; use it if present. */
static ferry_precise_time_fn ferry_precise_time;
static volatile LONG ferry_bug_reported;

/* 100 ns intervals between 1601-01-01 and 1970-01-01. */
#define FERRY_EPOCH_DIFF 116444736000000000ULL

void ferry_platform_init(void)
{
	UNICODE_STRING name;

	RtlInitUnicodeString(&name, L"KeQuerySystemTimePrecise");
	/* through an integer: a data-to-function pointer cast is not C */
	ferry_precise_time = (ferry_precise_time_fn)(ULONG_PTR)
		MmGetSystemRoutineAddress(&name);
}

u64 ferry_now_ns(void)
{
	LARGE_INTEGER t;

	if (ferry_precise_time)
		ferry_precise_time(&t);
	else
		KeQuerySystemTime(&t);
	if ((u64)t.QuadPart < FERRY_EPOCH_DIFF)
		return 0;
	return ((u64)t.QuadPart - FERRY_EPOCH_DIFF) * 100ULL;
}

/* Monotonic, for hold durations and deadlines. */
u64 ferry_mono_ns(void)
{
	return (u64)KeQueryInterruptTime() * 100ULL;
}

void ferry_sleep_ms(u32 ms)
{
	LARGE_INTEGER t;

	t.QuadPart = -(LONGLONG)ms * 10000;
	KeDelayExecutionThread(KernelMode, FALSE, &t);
}

void ferry_bug(const char *file, int line)
{
	if (InterlockedCompareExchange(&ferry_bug_reported, 1, 0) == 0)
		DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_ERROR_LEVEL,
			   "ferryflt: core consistency check failed at %s:%d\n",
			   file, line);
}

NTSTATUS ferry_status(int err)
{
	if (!err)
		return STATUS_SUCCESS;
	return (NTSTATUS)FERRY_WIN_STATUS_ERROR(err < 0 ? -err : err);
}
