#!/usr/bin/env bash
# Writes a tiny bootable raw disk: an MBR partition table (syslinux mbr.bin), one bootable ext4
# partition holding extlinux, the VM lab's Debian cloud kernel and a busybox initramfs whose init
# (tiny-init.sh) mounts the partition, prints its /marker on serial, brings every NIC up, serves
# port 22 (tiny-serve.sh: a banner line, then one command), prints "ferry-tiny login: " on
# ttyS0 and tty1, and powers off on the ACPI power button.
#
# Usage: test/vm/bootable/tiny-disk.sh OUT.img [--marker TEXT] [--ip CIDR] [--append ARGS] [--size MIB]
#   --marker TEXT   content of /marker on the partition (printed as "ferry-tiny: marker: TEXT")
#   --ip CIDR       static IPv4 for eth0 (kernel command line ferry.ip=CIDR), e.g. 10.77.0.11/24;
#                   without it eth0 asks DHCP (as does every other NIC)
#   --append ARGS   more kernel command line
#   --size MIB      disk size (default 64)
# Built images are cached in $FERRY_TINY_CACHE (default $FERRY_VM_CACHE/tiny-disk; key: inputs +
# options); OUT.img is a
# fresh copy (reflink where the filesystem can) every time.
#
# Needs root (losetup, mount), extlinux + syslinux-common, busybox-static, e2fsprogs, fdisk
# (sfdisk), kmod; the kernel comes from test/vm/kernel.sh (FERRY_VM_CACHE is honoured).
set -euo pipefail

die() { echo "tiny-disk.sh: error: $*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: tiny-disk.sh OUT.img [--marker TEXT] [--ip CIDR] [--append ARGS] [--size MIB]"
out=$1; shift
marker='' ip='' append='' size=64
while [ $# -gt 0 ]; do
  case $1 in
    --marker) [ $# -ge 2 ] || die "--marker needs a value"; marker=$2; shift 2 ;;
    --ip) [ $# -ge 2 ] || die "--ip needs a value"; ip=$2; shift 2 ;;
    --append) [ $# -ge 2 ] || die "--append needs a value"; append=$2; shift 2 ;;
    --size) [ $# -ge 2 ] || die "--size needs a value"; size=$2; shift 2 ;;
    *) die "unknown argument: $1" ;;
  esac
done
[[ "$size" =~ ^[0-9]+$ ]] && [ "$size" -ge 32 ] || die "--size must be a number of MiB >= 32"
[ -z "$ip" ] || [[ "$ip" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+$ ]] || die "--ip must look like 10.77.0.11/24"
[[ "$append" != *$'\n'* && "$marker" != *$'\n'* ]] || die "--marker and --append are one line"
[ "$(id -u)" = 0 ] || die "needs root (losetup, mount)"

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$script_dir/../../.." && pwd)
export PATH="$PATH:/usr/sbin:/sbin"
for tool in extlinux sfdisk mkfs.ext4 losetup mount modprobe; do
  command -v "$tool" >/dev/null || die "$tool not found (install: apt-get install -y extlinux syslinux-common e2fsprogs fdisk kmod util-linux)"
done
mbr=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$mbr" ] || die "$mbr not found (install: apt-get install -y syslinux-common)"
busybox=$(command -v busybox) || die "busybox not found (install: apt-get install -y busybox-static)"
if ldd "$busybox" >/dev/null 2>&1; then die "$busybox is dynamically linked: install busybox-static"; fi

kernel_env=$("$repo/test/vm/kernel.sh" --export) || die "test/vm/kernel.sh could not provide the kernel (see its message above)"
eval "$kernel_env"
cache=${FERRY_TINY_CACHE:-${FERRY_VM_CACHE:-$repo/.cache/vm}/tiny-disk}
mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9

modules=(virtio_pci virtio_blk virtio_net button evdev)
ordered=()
for m in "${modules[@]}"; do
  deps=$(modprobe -d "$FERRY_VM_ROOT" -S "$FERRY_VM_KVER" --show-depends "$m") || die "modprobe cannot resolve $m"
  while read -r kind path _; do
    [ "$kind" = insmod ] || continue
    rel=${path#"$FERRY_VM_ROOT"/}
    [[ " ${ordered[*]} " == *" $rel "* ]] || ordered+=("$rel")
  done <<< "$deps"
done

cmdline="console=tty1 console=ttyS0,115200 quiet${ip:+ ferry.ip=$ip}${append:+ $append}"
key=$( {
  sha256sum "${BASH_SOURCE[0]}" "$script_dir"/tiny-init.sh "$script_dir"/tiny-serve.sh "$script_dir"/tiny-udhcpc.sh \
    "$busybox" "$FERRY_VM_KERNEL" "$mbr" "$(command -v extlinux)"
  for rel in "${ordered[@]}"; do sha256sum "$FERRY_VM_ROOT/$rel"; done
  printf '%s\n' "$cmdline" "$marker" "$size"
} | sha256sum | cut -c1-16)
image=$cache/tiny-$key.img

if [ ! -s "$image" ]; then
  work=$(mktemp -d "$cache/.build.XXXXXX")
  loop=''
  cleanup() {
    mountpoint -q "$work/mnt" 2>/dev/null && umount "$work/mnt"
    [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null
    rm -rf "$work"
  }
  trap cleanup EXIT

  # initramfs: busybox, the modules in load order, init and its helpers.
  st=$work/initramfs
  mkdir -p "$st"/{bin,dev,proc,sys,tmp,etc,disk}
  cp "$busybox" "$st/bin/busybox"
  for applet in $("$busybox" --list); do [ "$applet" = busybox ] || ln -s busybox "$st/bin/$applet"; done
  for rel in "${ordered[@]}"; do
    mkdir -p "$st/$(dirname "$rel")"
    cp "$FERRY_VM_ROOT/$rel" "$st/$rel"
    echo "/$rel" >> "$st/etc/modules.load"
  done
  install -m 755 "$script_dir/tiny-init.sh" "$st/init"
  install -m 755 "$script_dir/tiny-serve.sh" "$st/bin/ferry-tiny-serve"
  install -m 755 "$script_dir/tiny-udhcpc.sh" "$st/bin/udhcpc-script"
  mkdir -p "$work/boot"
  (cd "$st" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc 2>/dev/null | gzip -1 > "$work/boot/initrd.gz")

  # Disk: MBR, one bootable Linux partition from 1 MiB to the end.
  raw=$work/disk.img
  truncate -s "${size}M" "$raw"
  echo 'start=2048, type=83, bootable' | sfdisk -q "$raw" >/dev/null
  start=$((2048 * 512))
  loop=$(losetup -f --show -o "$start" --sizelimit $(( size * 1024 * 1024 - start )) "$raw")
  # extlinux cannot boot from 64bit/metadata_csum ext4.
  mkfs.ext4 -q -F -L ferry-tiny -O ^64bit,^metadata_csum "$loop" >/dev/null
  mkdir -p "$work/mnt"
  mount "$loop" "$work/mnt"
  mkdir -p "$work/mnt/boot/extlinux"
  cp "$FERRY_VM_KERNEL" "$work/mnt/boot/vmlinuz"
  cp "$work/boot/initrd.gz" "$work/mnt/boot/initrd.gz"
  cat > "$work/mnt/boot/extlinux/extlinux.conf" <<CONF
DEFAULT ferry-tiny
TIMEOUT 0
PROMPT 0
LABEL ferry-tiny
  LINUX /boot/vmlinuz
  INITRD /boot/initrd.gz
  APPEND $cmdline
CONF
  [ -z "$marker" ] || printf '%s\n' "$marker" > "$work/mnt/marker"
  extlinux --install "$work/mnt/boot/extlinux" >/dev/null 2>&1 || die "extlinux --install failed"
  umount "$work/mnt"
  losetup -d "$loop"; loop=''
  dd if="$mbr" of="$raw" bs=440 count=1 conv=notrunc status=none
  mv -f "$raw" "$image"
  # Images of earlier inputs: drop those not used for a day.
  find "$cache" -maxdepth 1 -name 'tiny-*.img' ! -path "$image" -mtime +0 -delete
fi
touch "$image"
mkdir -p "$(dirname "$out")"
rm -f "$out"
cp --reflink=auto --sparse=always "$image" "$out"
