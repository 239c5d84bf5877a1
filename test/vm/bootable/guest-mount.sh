# shellcheck shell=bash
# Shell functions for VM-lab guests (test/vm/lab.ts) that work on the bootable Debian disk
# (test/vm/bootable/debian-image.sh): map its root partition with dm-linear, mount it, write the
# marker files that the booted machine later lists on its console, unmount and unmap.
# Source it in a lab script (bash, root, DM_DISABLE_UDEV=1 as the lab sets it):
#
#   . test/vm/bootable/guest-mount.sh
#   dmsetup create f --table "0 $DISK_SECTORS ferry /dev/vda /dev/vdb ..."   # optional: dm-ferry
#   mount_root_partition /dev/mapper/f "$PART_START_SECTOR" "$PART_SECTORS" /run/ferry-root
#   write_marker /run/ferry-root m1          # /var/lib/ferry-markers/m1, fsynced
#   umount_root_partition /run/ferry-root     # unmount + remove the dm-linear map (f-p1)
#
# PART_START_SECTOR / PART_SECTORS are FERRY_DEBIAN_PART_START_SECTOR / FERRY_DEBIAN_PART_SECTORS
# from debian-image.sh (pass them in the lab's env). ext4 is built into the lab's Debian cloud
# kernel and dm-linear is part of dm-mod, which the lab loads: no extra modules are needed.
# Each function prints an error and returns non-zero on failure.

# mount_root_partition DEVICE START_SECTOR SECTORS MOUNTPOINT
#   Maps DEVICE's sectors [START_SECTOR, START_SECTOR+SECTORS) as /dev/mapper/<basename DEVICE>-p1
#   and mounts it (ext4) on MOUNTPOINT (created if missing).
mount_root_partition() {
  local dev=$1 start=$2 sectors=$3 mnt=$4
  if [ $# -ne 4 ] || [ ! -b "$dev" ] || ! [[ "$start" =~ ^[0-9]+$ && "$sectors" =~ ^[0-9]+$ ]] || [ -z "$mnt" ]; then
    echo "mount_root_partition: usage: mount_root_partition BLOCK_DEVICE START_SECTOR SECTORS MOUNTPOINT (got: $*)" >&2
    return 2
  fi
  local name
  name=$(basename "$dev")-p1
  dmsetup create "$name" --table "0 $sectors linear $dev $start" || {
    echo "mount_root_partition: dmsetup create $name over $dev failed" >&2
    return 1
  }
  mkdir -p "$mnt"
  if ! mount -t ext4 "/dev/mapper/$name" "$mnt"; then
    echo "mount_root_partition: mounting /dev/mapper/$name (sector $start of $dev) failed" >&2
    dmsetup remove "$name"
    return 1
  fi
}

# umount_root_partition MOUNTPOINT
#   Unmounts MOUNTPOINT (flushing the filesystem) and removes the dm-linear map under it.
umount_root_partition() {
  local mnt=$1 src name
  src=$(awk -v m="$mnt" '$2 == m { print $1 }' /proc/mounts | tail -n1)
  if [ -z "$src" ]; then
    echo "umount_root_partition: nothing is mounted on $mnt" >&2
    return 1
  fi
  case "$src" in
    /dev/mapper/*) name=${src#/dev/mapper/} ;;
    /dev/dm-*) name=$(cat "/sys/block/${src#/dev/}/dm/name") ;;
    *) echo "umount_root_partition: $mnt is $src, not a device-mapper device" >&2; return 1 ;;
  esac
  umount "$mnt" || { echo "umount_root_partition: umount $mnt failed" >&2; return 1; }
  dmsetup remove "$name" || { echo "umount_root_partition: dmsetup remove $name failed" >&2; return 1; }
}

# write_marker MOUNTPOINT NAME
#   Creates var/lib/ferry-markers/NAME under MOUNTPOINT and makes it durable (file and directory
#   fsynced), so that a recovery point taken afterwards holds it.
write_marker() {
  local mnt=$1 name=$2
  if [ $# -ne 2 ] || ! [[ "$name" =~ ^[A-Za-z0-9_-][A-Za-z0-9._-]*$ ]]; then
    echo "write_marker: usage: write_marker MOUNTPOINT NAME (NAME: letters, digits, . _ -; got: $*)" >&2
    return 2
  fi
  local dir=$mnt/var/lib/ferry-markers
  [ -d "$dir" ] || { echo "write_marker: $dir does not exist (not the Ferry Debian image?)" >&2; return 1; }
  echo "$name" > "$dir/$name" && sync "$dir/$name" "$dir"
}
