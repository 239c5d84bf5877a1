# shellcheck shell=sh
# Ferry boot protection: the functions that put the protected boot disk on dm-ferry before the
# root file system is mounted. POSIX sh (dash, busybox ash), sourced by the initramfs-tools
# local-top script, the dracut hook and the VM lab test; nothing here runs on its own.
#
# The boot config (/etc/ferry/boot.conf, written by install.sh --protect-boot) names the disk,
# the metadata region (a preallocated file on the root file system, or a spare partition) and
# the root partition. At boot:
#   1. find the disk (by-id link, install-time name, else any disk of that size) whose metadata
#      header block carries our marker line; anything else: do nothing
#   2. modprobe dm-ferry
#   3. ferry-boot-meta: dm-linear over the raw disk at the metadata region (after the header)
#   4. ferry-boot: `ferry <disk> /dev/mapper/ferry-boot-meta` (its first resume decides
#      NEW/CLEAN/DIRTY from the metadata)
#   5. ferry-boot-pN: dm-linear over ferry-boot for each partition of the disk (from sysfs)
# Any failure logs one "ferry:" line, removes what this run created, and returns non-zero: the
# system then boots from the plain partition and the agent falls back (ebpf or scan).
#
# Kernel command line: ferry.boot=off skips all of it.

FERRY_BOOT_MARKER=FERRYBOOT1
FERRY_BOOT_CONF=${FERRY_BOOT_CONF:-/etc/ferry/boot.conf}
FERRY_BOOT_NAME=${FERRY_BOOT_NAME:-ferry-boot}
FERRY_BOOT_WAIT=${FERRY_BOOT_WAIT:-10}
FERRY_SYS=${FERRY_SYS:-/sys}
FERRY_DEV=${FERRY_DEV:-/dev}

# ferry_read FILE: its first line (a builtin: no process per sysfs value).
ferry_read() {
	_v=''
	read -r _v < "$1" 2>/dev/null || [ -n "$_v" ] || return 1
	printf '%s' "$_v"
}

ferry_log() {
	printf 'ferry: %s\n' "$*" >&2
	if [ -w /dev/kmsg ] && [ "${FERRY_BOOT_KMSG:-1}" = 1 ]; then
		printf 'ferry: %s\n' "$*" > /dev/kmsg 2>/dev/null || true
	fi
}

# ferry_conf_load FILE: reads FERRY_BOOT_*=VALUE lines. Only known keys and plain values are
# taken (no shell evaluation); returns 1 when the file is missing or incomplete.
ferry_conf_load() {
	_file=$1
	[ -r "$_file" ] || { ferry_log "no boot config $_file"; return 1; }
	FERRY_BOOT_VERSION='' FERRY_BOOT_UUID='' FERRY_BOOT_DISK_ID='' FERRY_BOOT_DISK_NAME=''
	FERRY_BOOT_DISK_SECTORS='' FERRY_BOOT_HEADER_SECTOR='' FERRY_BOOT_META_EXTENTS=''
	FERRY_BOOT_META_SECTORS='' FERRY_BOOT_ROOT_PART='' FERRY_BOOT_ROOT_UUID=''
	FERRY_BOOT_ROOT_PARTUUID='' FERRY_BOOT_ROOT_LABEL='' FERRY_BOOT_ROOT_DEV=''
	while IFS= read -r _line || [ -n "$_line" ]; do
		case "$_line" in
		'' | '#'*) continue ;;
		FERRY_BOOT_*=*) ;;
		*) ferry_log "boot config $_file: ignoring the line '$_line'"; continue ;;
		esac
		_key=${_line%%=*}
		_val=${_line#*=}
		_val=${_val#\"}
		_val=${_val%\"}
		case "$_val" in
		*[!A-Za-z0-9_.:/+=\ -]*) ferry_log "boot config $_file: bad value for $_key"; return 1 ;;
		esac
		case "$_key" in
		FERRY_BOOT_VERSION) FERRY_BOOT_VERSION=$_val ;;
		FERRY_BOOT_UUID) FERRY_BOOT_UUID=$_val ;;
		FERRY_BOOT_DISK_ID) FERRY_BOOT_DISK_ID=$_val ;;
		FERRY_BOOT_DISK_NAME) FERRY_BOOT_DISK_NAME=$_val ;;
		FERRY_BOOT_DISK_SECTORS) FERRY_BOOT_DISK_SECTORS=$_val ;;
		FERRY_BOOT_HEADER_SECTOR) FERRY_BOOT_HEADER_SECTOR=$_val ;;
		FERRY_BOOT_META_EXTENTS) FERRY_BOOT_META_EXTENTS=$_val ;;
		FERRY_BOOT_META_SECTORS) FERRY_BOOT_META_SECTORS=$_val ;;
		FERRY_BOOT_ROOT_PART) FERRY_BOOT_ROOT_PART=$_val ;;
		FERRY_BOOT_ROOT_UUID) FERRY_BOOT_ROOT_UUID=$_val ;;
		FERRY_BOOT_ROOT_PARTUUID) FERRY_BOOT_ROOT_PARTUUID=$_val ;;
		FERRY_BOOT_ROOT_LABEL) FERRY_BOOT_ROOT_LABEL=$_val ;;
		FERRY_BOOT_ROOT_DEV) FERRY_BOOT_ROOT_DEV=$_val ;;
		*) ;;
		esac
	done < "$_file"
	if [ "$FERRY_BOOT_VERSION" != 1 ]; then
		ferry_log "boot config $_file: unsupported version '$FERRY_BOOT_VERSION'"
		return 1
	fi
	for _need in "$FERRY_BOOT_UUID" "$FERRY_BOOT_DISK_SECTORS" "$FERRY_BOOT_HEADER_SECTOR" \
		"$FERRY_BOOT_META_EXTENTS" "$FERRY_BOOT_META_SECTORS"; do
		if [ -z "$_need" ]; then
			ferry_log "boot config $_file is incomplete"
			return 1
		fi
	done
	return 0
}

# ferry_header_line: the marker line the metadata header block must start with.
ferry_header_line() {
	printf '%s uuid=%s disk_sectors=%s meta_sectors=%s' "$FERRY_BOOT_MARKER" "$FERRY_BOOT_UUID" \
		"$FERRY_BOOT_DISK_SECTORS" "$FERRY_BOOT_META_SECTORS"
}

# ferry_meta_table DISK: the dm-linear table of the metadata region (one line per extent).
# FERRY_BOOT_META_EXTENTS: "START:LEN ..." in 512-byte sectors of the disk, header excluded.
ferry_meta_table() {
	_off=0
	for _ext in $FERRY_BOOT_META_EXTENTS; do
		_start=${_ext%%:*}
		_len=${_ext#*:}
		case "$_start$_len" in
		'' | *[!0-9]*) return 1 ;;
		esac
		printf '%s %s linear %s %s\n' "$_off" "$_len" "$1" "$_start"
		_off=$((_off + _len))
	done
	[ "$_off" = "$FERRY_BOOT_META_SECTORS" ]
}

# ferry_meta_sector OFFSET: the disk sector of the metadata region's sector OFFSET.
ferry_meta_sector() {
	_want=$1
	for _ext in $FERRY_BOOT_META_EXTENTS; do
		_start=${_ext%%:*}
		_len=${_ext#*:}
		if [ "$_want" -lt "$_len" ]; then
			printf '%s' $((_start + _want))
			return 0
		fi
		_want=$((_want - _len))
	done
	return 1
}

# ferry_invalidate DISK: the disk is about to be used without dm-ferry, so the bitmap a clean
# shutdown saved will not cover this boot's writes. Changing every byte of its first sector
# breaks its checksum: the next dm-ferry load starts DIRTY (hash-compare resync) instead of
# CLEAN, and keeps its generation and seqs. Only called once the header proved the region ours.
ferry_invalidate() {
	# The bitmap starts 4 KiB into dm-ferry's metadata (after its superblock).
	_bm=$(ferry_meta_sector 8) || return 1
	if dd if="$1" bs=512 skip="$_bm" count=1 2>/dev/null | LC_ALL=C tr '\000-\377' '\001-\377\000' |
		dd of="$1" bs=512 seek="$_bm" count=1 conv=notrunc,fsync 2>/dev/null; then
		ferry_log "the saved dm-ferry bitmap is marked stale: the next protected boot resyncs by hash compare"
	else
		ferry_log "could not mark the saved dm-ferry bitmap stale"
	fi
}

# ferry_root_matches ROOT: whether the initramfs's ROOT names the protected root partition
# (by UUID, PARTUUID, LABEL, their /dev/disk/by-* links, or the install-time device name).
ferry_root_matches() {
	_root=$1
	case "$_root" in
	'') return 1 ;;
	UUID=*) [ -n "$FERRY_BOOT_ROOT_UUID" ] && [ "${_root#UUID=}" = "$FERRY_BOOT_ROOT_UUID" ] ;;
	/dev/disk/by-uuid/*) [ -n "$FERRY_BOOT_ROOT_UUID" ] && [ "${_root#/dev/disk/by-uuid/}" = "$FERRY_BOOT_ROOT_UUID" ] ;;
	PARTUUID=*) [ -n "$FERRY_BOOT_ROOT_PARTUUID" ] && [ "${_root#PARTUUID=}" = "$FERRY_BOOT_ROOT_PARTUUID" ] ;;
	/dev/disk/by-partuuid/*) [ -n "$FERRY_BOOT_ROOT_PARTUUID" ] && [ "${_root#/dev/disk/by-partuuid/}" = "$FERRY_BOOT_ROOT_PARTUUID" ] ;;
	LABEL=*) [ -n "$FERRY_BOOT_ROOT_LABEL" ] && [ "${_root#LABEL=}" = "$FERRY_BOOT_ROOT_LABEL" ] ;;
	/dev/disk/by-label/*) [ -n "$FERRY_BOOT_ROOT_LABEL" ] && [ "${_root#/dev/disk/by-label/}" = "$FERRY_BOOT_ROOT_LABEL" ] ;;
	/dev/*) [ -n "$FERRY_BOOT_ROOT_DEV" ] && [ "$_root" = "$FERRY_BOOT_ROOT_DEV" ] ;;
	*) return 1 ;;
	esac
}

# ferry_root_is_partition ROOT: ROOT is a device path that resolves to the root partition of
# the disk found at boot (its name may differ from the install-time one).
ferry_root_is_partition() {
	case "$1" in /dev/*) ;; *) return 1 ;; esac
	[ -e "$1" ] && [ -n "$FERRY_DISK" ] && [ -n "$FERRY_BOOT_ROOT_PART" ] || return 1
	_r=$(readlink -f "$1")
	_r=${_r##*/}
	if [ "$FERRY_BOOT_ROOT_PART" = 0 ]; then
		[ "$_r" = "$FERRY_DISK" ]
		return
	fi
	[ -r "$FERRY_SYS/block/$FERRY_DISK/$_r/partition" ] &&
		[ "$(ferry_read "$FERRY_SYS/block/$FERRY_DISK/$_r/partition")" = "$FERRY_BOOT_ROOT_PART" ]
}

# ferry_read_header DISK: prints the first line of the header block.
ferry_read_header() {
	dd if="$1" bs=512 skip="$FERRY_BOOT_HEADER_SECTOR" count=1 2>/dev/null | {
		IFS= read -r _hdr || true
		printf '%s' "$_hdr"
	}
}

# ferry_disk_sectors NAME: the size of /sys/block/NAME in 512-byte sectors.
ferry_disk_sectors() {
	ferry_read "$FERRY_SYS/block/$1/size"
}

# ferry_check_disk NAME: the disk has the configured size and carries our header.
ferry_check_disk() {
	[ -n "$1" ] && [ -b "$FERRY_DEV/$1" ] || return 1
	[ "$(ferry_disk_sectors "$1")" = "$FERRY_BOOT_DISK_SECTORS" ] || return 1
	[ "$(ferry_read_header "$FERRY_DEV/$1")" = "$(ferry_header_line)" ]
}

# ferry_find_disk: prints the kernel name of the protected disk (e.g. vda), or returns 1.
ferry_find_disk() {
	_cands=''
	if [ -n "$FERRY_BOOT_DISK_ID" ] && [ -e "$FERRY_DEV/disk/by-id/$FERRY_BOOT_DISK_ID" ]; then
		_t=$(readlink -f "$FERRY_DEV/disk/by-id/$FERRY_BOOT_DISK_ID")
		_cands=${_t##*/}
	fi
	_cands="$_cands $FERRY_BOOT_DISK_NAME"
	for _d in "$FERRY_SYS"/block/*; do
		[ -e "$_d" ] || continue
		_cands="$_cands ${_d##*/}"
	done
	for _c in $_cands; do
		case "$_c" in
		dm-* | ram* | zram* | sr* | md*) continue ;;
		esac
		if ferry_check_disk "$_c"; then
			printf '%s' "$_c"
			return 0
		fi
	done
	return 1
}

# ferry_partitions NAME: "NUMBER START SIZE" per partition of the disk (from sysfs).
ferry_partitions() {
	for _p in "$FERRY_SYS/block/$1"/*; do
		[ -r "$_p/partition" ] || continue
		printf '%s %s %s\n' "$(ferry_read "$_p/partition")" "$(ferry_read "$_p/start")" "$(ferry_read "$_p/size")"
	done
}

FERRY_CREATED=''

ferry_dm_create() {
	_name=$1
	shift
	if ! _err=$(printf '%s\n' "$@" | dmsetup create "$_name" 2>&1); then
		ferry_log "cannot create $_name: $_err"
		return 1
	fi
	FERRY_CREATED="$_name $FERRY_CREATED"
	dmsetup mknodes "$_name" >/dev/null 2>&1 || true
	return 0
}

# ferry_teardown: removes what ferry_setup created (newest first). Removing ferry-boot saves
# its bitmap and marks the metadata CLEAN, as a clean shutdown does.
ferry_teardown() {
	for _n in $FERRY_CREATED; do
		dmsetup remove "$_n" >/dev/null 2>&1 || ferry_log "could not remove $_n"
	done
	FERRY_CREATED=''
}

ferry_cmdline_off() {
	_cmdline=""
	read -r _cmdline < /proc/cmdline 2>/dev/null || true
	for _arg in $_cmdline; do
		[ "$_arg" = ferry.boot=off ] && return 0
	done
	return 1
}

# ferry_size_present: some disk has the configured size (then a header mismatch is final).
ferry_size_present() {
	for _d in "$FERRY_SYS"/block/*; do
		[ "$(ferry_disk_sectors "${_d##*/}")" = "$FERRY_BOOT_DISK_SECTORS" ] && return 0
	done
	return 1
}

# ferry_wait_disk: prints the disk's name; while no disk of the configured size is there (a
# slow controller), waits up to FERRY_BOOT_WAIT seconds for it.
ferry_wait_disk() {
	_i=0
	while :; do
		if ferry_find_disk; then return 0; fi
		ferry_size_present && return 1
		[ "$_i" -lt "$FERRY_BOOT_WAIT" ] || return 1
		sleep 1
		_i=$((_i + 1))
	done
}

# ferry_setup: creates the devices. On success FERRY_DISK is the disk's kernel name.
ferry_setup() {
	FERRY_DISK='' FERRY_CREATED=''
	ferry_conf_load "$FERRY_BOOT_CONF" || return 1
	if ! _table=$(ferry_meta_table /dev/null); then
		ferry_log "the metadata extents in $FERRY_BOOT_CONF do not add up; booting unprotected"
		return 1
	fi
	if ! FERRY_DISK=$(ferry_wait_disk); then
		ferry_log "no disk of $FERRY_BOOT_DISK_SECTORS sectors carries the Ferry metadata header (${FERRY_BOOT_DISK_ID:-$FERRY_BOOT_DISK_NAME}); booting unprotected"
		return 1
	fi
	_disk="$FERRY_DEV/$FERRY_DISK"
	if ferry_cmdline_off; then
		ferry_log "ferry.boot=off on the kernel command line: the boot disk is not protected"
		ferry_invalidate "$_disk"
		return 1
	fi
	# -b: a "blacklist dm_ferry" (modprobe.d, or modprobe.blacklist=dm_ferry on the kernel
	# command line) keeps it out.
	_err=$(modprobe -b dm-ferry 2>&1)
	if [ ! -d "$FERRY_SYS/module/dm_ferry" ]; then
		ferry_log "the dm-ferry module is not loaded (${_err:-blacklisted}; Secure Boot, a blacklist or a kernel without it); booting unprotected"
		ferry_invalidate "$_disk"
		return 1
	fi
	_table=$(ferry_meta_table "$_disk")
	if ! ferry_dm_create "$FERRY_BOOT_NAME-meta" "$_table" ||
		! ferry_dm_create "$FERRY_BOOT_NAME" "0 $FERRY_BOOT_DISK_SECTORS ferry $_disk $FERRY_DEV/mapper/$FERRY_BOOT_NAME-meta 2 granularity_kb 64"; then
		ferry_teardown
		ferry_invalidate "$_disk"
		return 1
	fi
	_parts=$(ferry_partitions "$FERRY_DISK")
	_ok=yes
	_saved_ifs=$IFS
	IFS='
'
	for _pl in $_parts; do
		IFS=$_saved_ifs
		# shellcheck disable=SC2086
		set -- $_pl
		ferry_dm_create "$FERRY_BOOT_NAME-p$1" "0 $3 linear $FERRY_DEV/mapper/$FERRY_BOOT_NAME $2" || { _ok=no; break; }
	done
	IFS=$_saved_ifs
	if [ "$_ok" = no ]; then
		ferry_teardown
		ferry_invalidate "$_disk"
		return 1
	fi
	ferry_log "$FERRY_DISK is protected: $FERRY_BOOT_NAME over $_disk, metadata $FERRY_BOOT_NAME-meta"
	return 0
}

# ferry_root_map ROOT: prints /dev/mapper/ferry-boot-pN when ROOT names the protected root
# partition and that mapping exists.
ferry_root_map() {
	ferry_root_matches "$1" || ferry_root_is_partition "$1" || return 1
	case "$FERRY_BOOT_ROOT_PART" in
	'') return 1 ;;
	0) _m="$FERRY_DEV/mapper/$FERRY_BOOT_NAME" ;;
	*) _m="$FERRY_DEV/mapper/$FERRY_BOOT_NAME-p$FERRY_BOOT_ROOT_PART" ;;
	esac
	[ -b "$_m" ] || return 1
	printf '%s' "$_m"
}
