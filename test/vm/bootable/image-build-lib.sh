# shellcheck shell=bash
# Shared by the image builders (debian-image.sh, server-image.sh), sourced after they set:
#   export_mode (0|1), meta (the cached KEY=VALUE file), note() and die().
# Both scripts hash this file into their cache keys.
# shellcheck disable=SC2154,SC2034 # export_mode and meta come from the sourcing script; used_kib and chroot_cmd go back to it

# emit KEY VALUE: one line of the script's output (`export KEY=...` with --export).
emit() {
  if [ "$export_mode" = 1 ]; then printf 'export %s=%q\n' "$1" "$2"; else printf '%s=%s\n' "$1" "$2"; fi
}

# print_meta: emits every KEY=VALUE line of $meta.
print_meta() {
  local k v
  while IFS='=' read -r k v; do
    [ -n "$k" ] && emit "$k" "$v"
  done < "$meta"
}

# build_traps WORK ROOT: on exit, unmount everything under ROOT, detach $loop (set it once a
# loop device exists) and remove WORK; INT/TERM stop a step run by `long` at once.
build_traps() {
  build_work=$1
  build_root=$2
  loop=
  child=
  trap build_cleanup EXIT
  trap build_stop INT TERM
}

build_cleanup() {
  local rc=$?
  if [ -d "$build_root" ] && grep -q " ${build_root}[/ ]" /proc/mounts; then
    umount -R "$build_root" 2>/dev/null || umount -R -l "$build_root" 2>/dev/null || true
  fi
  [ -z "$loop" ] || losetup -d "$loop" 2>/dev/null || true
  rm -rf "$build_work"
  [ "$rc" = 0 ] || note "build failed (exit $rc); partial state removed"
}

# bash runs a trap only once its foreground child ends: long steps run through `long`, in their
# own session, so that INT/TERM stops them at once and the cleanup follows.
long() {
  setsid "$@" &
  child=$!
  local rc=0
  wait "$child" || rc=$?
  child=
  return "$rc"
}

build_stop() {
  if [ -n "$child" ]; then kill -TERM -- "-$child" 2>/dev/null || true; wait "$child" 2>/dev/null || true; fi
  exit 130
}

# chroot_mounts ROOT DEBS: proc, sys, dev and the shared package cache in the image's root, and
# no daemon starts inside the chroot; then `in_root CMD...` runs a command in it (and
# "${chroot_cmd[@]}" is that command line, for `long`).
chroot_mounts() {
  mount -t proc proc "$1/proc"
  mount -t sysfs sysfs "$1/sys"
  mount --bind /dev "$1/dev"
  mount --bind "$2" "$1/var/cache/apt/archives"
  printf '#!/bin/sh\nexit 101\n' > "$1/usr/sbin/policy-rc.d"
  chmod 755 "$1/usr/sbin/policy-rc.d"
  chroot_cmd=(env LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive chroot "$1")
}

in_root() { "${chroot_cmd[@]}" "$@"; }

# finish_root ROOT: leaves out what a test machine does not need (docs, man pages,
# translations, apt lists, logs, ssh host keys), unmounts it all, gives the freed blocks back
# so that the image file stays sparse, checks the file system and detaches $loop. Sets
# used_kib (KiB used in the file system).
finish_root() {
  local root=$1
  rm -f "$root/usr/sbin/policy-rc.d"
  umount "$root/var/cache/apt/archives"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/lintian "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
  find "$root/var/log" -type f -exec truncate -s 0 {} +
  rm -f "$root/etc/ssh/ssh_host_"* 2>/dev/null || true
  umount "$root/dev" "$root/sys" "$root/proc"
  # ext4 frees the blocks of deleted files at the journal commit: sync first, or fstrim skips them.
  sync
  fstrim "$root" >&2 || note "fstrim failed; the image is larger on disk than needed"
  used_kib=$(df -k --output=used "$root" | tail -n1 | tr -d ' ')
  umount "$root"
  e2fsck -f -p "$loop" >&2 || die "e2fsck found problems in the new filesystem"
  losetup -d "$loop"
  loop=
}

# write_meta FILE IMAGE DISK PART_START_SECTOR PART_SECTORS UUID KVER: the FERRY_DEBIAN_* lines
# of an image (DISK is the built file, for its size).
write_meta() {
  local sector_bytes=512
  {
    echo "FERRY_DEBIAN_IMAGE=$2"
    echo "FERRY_DEBIAN_SIZE=$(stat -c %s "$3")"
    echo "FERRY_DEBIAN_PART_START=$(($4 * sector_bytes))"
    echo "FERRY_DEBIAN_PART_SIZE=$(($5 * sector_bytes))"
    echo "FERRY_DEBIAN_PART_START_SECTOR=$4"
    echo "FERRY_DEBIAN_PART_SECTORS=$5"
    echo "FERRY_DEBIAN_ROOT_UUID=$6"
    echo "FERRY_DEBIAN_KVER=$7"
  } > "$1"
}
