// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Configuration in the registry, under the service key
 * (HKLM\SYSTEM\CurrentControlSet\Services\ferryflt):
 *
 *   Parameters            TagHoldMs, SeqLease, PoolKB, RingRecords,
 *                         GranularityKB (defaults for every volume)
 *   Parameters\Volumes\<name>
 *                         UniqueId (REG_BINARY, the mount manager's id of
 *                         the volume), MetadataOffset and MetadataBytes
 *                         (REG_QWORD: the metadata area), optional PoolKB,
 *                         RingRecords, GranularityKB; the driver writes
 *                         LastStatus (REG_DWORD, NTSTATUS of the last start)
 *
 * The SYSTEM hive is loaded before boot-start drivers run, so the boot
 * volume's protection is known when its stack starts.  PASSIVE_LEVEL.
 */
#include "ferryflt.h"

#define FERRY_REG_BUF 1024u

struct ferry_reg_value {
	KEY_VALUE_PARTIAL_INFORMATION info;
	UCHAR more[FERRY_UID_MAX + 16];
};

/* Opens the service key's subkey (suffix) [\name] relative to reg_path. */
static NTSTATUS ferry_reg_open(const WCHAR *suffix, const char *name,
			       ACCESS_MASK access, HANDLE *h)
{
	OBJECT_ATTRIBUTES oa;
	UNICODE_STRING path;
	WCHAR *buf;
	USHORT cap = (USHORT)(g_ferry.reg_path.Length + 600);
	NTSTATUS status;
	USHORT i;

	buf = ferry_zalloc(cap);
	if (!buf)
		return STATUS_INSUFFICIENT_RESOURCES;
	path.Buffer = buf;
	path.Length = 0;
	path.MaximumLength = cap;
	RtlAppendUnicodeStringToString(&path, &g_ferry.reg_path);
	status = RtlAppendUnicodeToString(&path, suffix);
	if (NT_SUCCESS(status) && name) {
		status = RtlAppendUnicodeToString(&path, L"\\");
		for (i = 0; NT_SUCCESS(status) && name[i]; i++) {
			if (path.Length + sizeof(WCHAR) > path.MaximumLength) {
				status = STATUS_NAME_TOO_LONG;
				break;
			}
			path.Buffer[path.Length / sizeof(WCHAR)] = (WCHAR)name[i];
			path.Length = (USHORT)(path.Length + sizeof(WCHAR));
		}
	}
	if (NT_SUCCESS(status)) {
		InitializeObjectAttributes(&oa, &path,
					   OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
					   NULL, NULL);
		status = ZwOpenKey(h, access, &oa);
	}
	ferry_free(buf);
	return status;
}

static NTSTATUS ferry_reg_query(HANDLE h, const WCHAR *name,
				struct ferry_reg_value *v)
{
	UNICODE_STRING n;
	ULONG got;

	RtlInitUnicodeString(&n, name);
	return ZwQueryValueKey(h, &n, KeyValuePartialInformation, v,
			       sizeof(*v), &got);
}

static bool ferry_reg_u32(HANDLE h, const WCHAR *name, u32 *out)
{
	struct ferry_reg_value v;

	if (!NT_SUCCESS(ferry_reg_query(h, name, &v)) ||
	    v.info.Type != REG_DWORD || v.info.DataLength != 4)
		return false;
	RtlCopyMemory(out, v.info.Data, 4);
	return true;
}

static bool ferry_reg_u64(HANDLE h, const WCHAR *name, u64 *out)
{
	struct ferry_reg_value v;
	u32 small;

	if (!NT_SUCCESS(ferry_reg_query(h, name, &v)))
		return false;
	if (v.info.Type == REG_QWORD && v.info.DataLength == 8) {
		RtlCopyMemory(out, v.info.Data, 8);
		return true;
	}
	if (v.info.Type == REG_DWORD && v.info.DataLength == 4) {
		RtlCopyMemory(&small, v.info.Data, 4);
		*out = small;
		return true;
	}
	return false;
}

void ferry_config_globals(void)
{
	HANDLE h;
	u32 v32;
	u64 v64;

	g_ferry.seq_lease = 1ULL << 32;
	g_ferry.pool_kb = 16384;
	g_ferry.ring_records = 16384;
	g_ferry.granularity_kb = 64;
	if (!NT_SUCCESS(ferry_reg_open(L"\\Parameters", NULL, KEY_READ, &h)))
		return;
	if (ferry_reg_u32(h, L"TagHoldMs", &v32) && v32 &&
	    v32 <= FERRY_WIN_TAG_HOLD_MAX_MS)
		g_ferry.ctl.ctl.tag_hold_ms = v32;
	if (ferry_reg_u64(h, L"SeqLease", &v64) && v64 >= 64 &&
	    v64 <= (1ULL << 62))
		g_ferry.seq_lease = v64;
	if (ferry_reg_u32(h, L"PoolKB", &v32))
		g_ferry.pool_kb = v32;
	if (ferry_reg_u32(h, L"RingRecords", &v32))
		g_ferry.ring_records = v32;
	if (ferry_reg_u32(h, L"GranularityKB", &v32))
		g_ferry.granularity_kb = v32;
	ZwClose(h);
}

/* The key name in ASCII (names are chosen by the agent); false if not. */
static bool ferry_key_name(const KEY_BASIC_INFORMATION *k, char *out, u32 cap)
{
	u32 i, n = k->NameLength / sizeof(WCHAR);

	if (!n || n >= cap)
		return false;
	for (i = 0; i < n; i++) {
		if (k->Name[i] < 0x20 || k->Name[i] > 0x7e)
			return false;
		out[i] = (char)k->Name[i];
	}
	out[n] = 0;
	return true;
}

/* Reads one volume's settings from its open key. */
static void ferry_config_read(HANDLE h, struct ferry_vol_config *out)
{
	ferry_reg_u64(h, L"MetadataOffset", &out->md_offset);
	ferry_reg_u64(h, L"MetadataBytes", &out->md_bytes);
	ferry_reg_u32(h, L"PoolKB", &out->pool_kb);
	ferry_reg_u32(h, L"RingRecords", &out->ring_records);
	ferry_reg_u32(h, L"GranularityKB", &out->granularity_kb);
}

NTSTATUS ferry_config_find(const u8 *uid, u16 uid_len,
			   struct ferry_vol_config *out)
{
	KEY_BASIC_INFORMATION *k;
	struct ferry_reg_value *v;
	NTSTATUS status;
	HANDLE vols, h;
	ULONG i, got;
	bool found = false;

	status = ferry_reg_open(L"\\Parameters\\Volumes", NULL, KEY_READ, &vols);
	if (!NT_SUCCESS(status))
		return STATUS_NOT_FOUND;
	k = ferry_zalloc(FERRY_REG_BUF);
	v = ferry_zalloc(sizeof(*v));
	if (!k || !v) {
		status = STATUS_INSUFFICIENT_RESOURCES;
		goto out;
	}
	for (i = 0; !found; i++) {
		status = ZwEnumerateKey(vols, i, KeyBasicInformation, k,
					FERRY_REG_BUF - sizeof(WCHAR), &got);
		if (status == STATUS_NO_MORE_ENTRIES)
			break;
		if (!NT_SUCCESS(status) ||
		    !ferry_key_name(k, out->name, sizeof(out->name)))
			continue;
		if (!NT_SUCCESS(ferry_reg_open(L"\\Parameters\\Volumes",
					       out->name, KEY_READ, &h)))
			continue;
		if (NT_SUCCESS(ferry_reg_query(h, L"UniqueId", v)) &&
		    v->info.Type == REG_BINARY && v->info.DataLength == uid_len &&
		    RtlCompareMemory(v->info.Data, uid, uid_len) == uid_len) {
			RtlCopyMemory(out->uid, uid, uid_len);
			out->uid_len = uid_len;
			ferry_config_read(h, out);
			found = true;
		}
		ZwClose(h);
	}
	status = found ? STATUS_SUCCESS : STATUS_NOT_FOUND;
out:
	ferry_free(k);
	ferry_free(v);
	ZwClose(vols);
	return status;
}

void ferry_config_set_status(const char *name, NTSTATUS status)
{
	UNICODE_STRING n;
	HANDLE h;
	ULONG v = (ULONG)status;

	if (!NT_SUCCESS(ferry_reg_open(L"\\Parameters\\Volumes", name,
				       KEY_SET_VALUE, &h)))
		return;
	RtlInitUnicodeString(&n, L"LastStatus");
	ZwSetValueKey(h, &n, 0, REG_DWORD, &v, sizeof(v));
	ZwClose(h);
}
