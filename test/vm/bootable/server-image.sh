#!/usr/bin/env bash
# Builds the "plain Debian server" of the boot-protection test (test/vm/server-protect.test.ts):
# the bootable Debian 12 disk of debian-image.sh (MBR, EXTLINUX, ext4 root on partition 1, cloud
# kernel, serial getty on ttyS0; read its header), grown to SERVER_MIB and given what Ferry's
# install.sh needs to build dm-ferry with DKMS for the image's own kernel (dkms, make, gcc,
# linux-headers-<image kernel>), plus a test-only control channel, the step runner:
#
#   At each boot, ferry-step.service waits for a disk labelled FERRYSTEP (an ext4 file system
#   made on the host with `mkfs.ext4 -L FERRYSTEP -d DIR`, attached as a second virtio disk),
#   mounts it read-only on /run/ferry-step and runs its step.sh as root (cwd = that folder)
#   with stdout and stderr on the second serial port (ttyS1: a file on the host). It prints
#     FERRY-STEP start uptime=<seconds since the kernel started>
#     ... the step's output ...
#     FERRY-STEP rc=<exit code>
#   and then, when step.sh succeeded and the disk has an after.sh, runs it (`systemctl reboot`,
#   a crash with `echo o > /proc/sysrq-trigger`, ...): the rc line is out before the machine goes.
#   Without a FERRYSTEP disk the runner never starts (the unit hangs off the disk's device).
#   The runner first waits (up to 60 s) for a default route: steps talk to the host (10.0.2.2).
#
# Built from debian-image.sh's cached output (never changed; that script is not touched here),
# cached next to it, rebuilt when either script changes (key: hash of both). Needs root.
#
# Usage: test/vm/bootable/server-image.sh [--export]
#   Prints the FERRY_DEBIAN_* lines of debian-image.sh with the values of this image
#   (FERRY_DEBIAN_IMAGE, FERRY_DEBIAN_SIZE, FERRY_DEBIAN_PART_SIZE, FERRY_DEBIAN_PART_SECTORS
#   change; the start, UUID and kernel do not).
#
# Environment: FERRY_VM_CACHE, FERRY_DEBIAN_CACHE, FERRY_DEBIAN_MIRROR as for debian-image.sh.
# Needs (apt): what debian-image.sh needs, plus e2fsprogs (resize2fs), and the Debian archive
# over the network on the first build (~2-4 min).
set -euo pipefail

readonly SERVER_MIB=1152
readonly PACKAGES="dkms make gcc libc6-dev kmod iproute2"

die() { echo "server-image.sh: error: $*" >&2; exit 1; }
note() { echo "server-image.sh: $*" >&2; }

export_mode=0
case "${1:-}" in
  --export) export_mode=1 ;;
  '') ;;
  -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;;
  *) die "unknown argument: $1 (try --help)" ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script_path=$here/$(basename "${BASH_SOURCE[0]}")
base_script=$here/debian-image.sh
repo=$(cd "$here/../../.." && pwd)
cache=${FERRY_DEBIAN_CACHE:-${FERRY_VM_CACHE:-$repo/.cache/vm}/bootable}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
mirror=${FERRY_DEBIAN_MIRROR:-http://deb.debian.org/debian}

key=$(cat "$base_script" "$script_path" "$here/image-build-lib.sh" | sha256sum | cut -c1-16)
image=$cache/server-12-$key.img
meta=$cache/server-12-$key.env

# shellcheck source=test/vm/bootable/image-build-lib.sh
. "$here/image-build-lib.sh"

if [ -f "$image" ] && [ -s "$meta" ]; then
  print_meta
  exit 0
fi

[ "$(id -u)" = 0 ] || die "building the image needs root (loop devices, mount, chroot)"
PATH=$PATH:/usr/sbin:/sbin
for tool in sfdisk resize2fs e2fsck losetup mount umount mountpoint chroot flock fstrim truncate sha256sum unshare; do
  command -v "$tool" >/dev/null || die "$tool not found (install: apt-get install -y fdisk e2fsprogs util-linux)"
done
if [ "${FERRY_SERVER_PRIVATE_NS:-}" != "$$" ]; then
  exec unshare --mount --propagation private env FERRY_SERVER_PRIVATE_NS=$$ bash "$script_path" "$@"
fi

# The base image (built, or found in the cache, by its own script).
base_env=$(bash "$base_script") || die "debian-image.sh failed (see above)"
get() { printf '%s\n' "$base_env" | sed -n "s/^$1=//p"; }
base_image=$(get FERRY_DEBIAN_IMAGE)
part_start_sector=$(get FERRY_DEBIAN_PART_START_SECTOR)
uuid=$(get FERRY_DEBIAN_ROOT_UUID)
kver=$(get FERRY_DEBIAN_KVER)
if [ ! -f "$base_image" ] || [ -z "$part_start_sector" ] || [ -z "$kver" ]; then
  die "debian-image.sh printed no usable image: $base_env"
fi

exec 9>"$cache/server-build.lock"
flock 9
if [ -f "$image" ] && [ -s "$meta" ]; then
  print_meta
  exit 0
fi

work=$cache/server-build-$key.$$
root=$work/root
build_traps "$work" "$root"

started=$(date +%s)
mkdir -p "$root" "$cache/debs"
disk=$work/disk.img
note "growing a copy of $(basename "$base_image") to $SERVER_MIB MiB"
cp --reflink=auto --sparse=always "$base_image" "$disk"
truncate -s "${SERVER_MIB}M" "$disk"
# Partition 1 keeps its start and its boot flag and takes the whole disk.
printf 'label: dos\nstart=%d, type=83, bootable\n' "$part_start_sector" | sfdisk -q --no-reread "$disk" >&2
part_sectors=$(sfdisk --dump "$disk" | sed -n 's/^.*: *start= *'"$part_start_sector"', *size= *\([0-9]*\),.*$/\1/p')
[[ "$part_sectors" =~ ^[0-9]+$ ]] || die "could not read the partition size back from sfdisk"
part_start=$((part_start_sector * 512))
part_size=$((part_sectors * 512))
# sfdisk rewrote the table only: the MBR boot code (syslinux's mbr.bin) must still be there.
cmp -n 440 "$base_image" "$disk" >/dev/null || die "sfdisk changed the MBR boot code"

loop=$(losetup -f --show --offset "$part_start" --sizelimit "$part_size" "$disk")
e2fsck -f -p "$loop" >&2 || die "e2fsck of the base image's root failed"
resize2fs "$loop" >&2 || die "resize2fs failed"
mount -o noatime "$loop" "$root"

chroot_mounts "$root" "$cache/debs"
echo "deb $mirror bookworm main" > "$root/etc/apt/sources.list"

note "installing $PACKAGES linux-headers-$kver in the chroot"
long "${chroot_cmd[@]}" apt-get -q update >&2 || die "apt-get update in the chroot failed (network?)"
# shellcheck disable=SC2086 # a list of package names
long "${chroot_cmd[@]}" apt-get -q -y install $PACKAGES "linux-headers-$kver" >&2 \
  || die "installing $PACKAGES linux-headers-$kver failed: the archive may no longer carry the headers of the base image's kernel; rebuild the base image (debian-image.sh) so that it takes the archive's current kernel"
[ -f "$root/usr/src/linux-headers-$kver/Makefile" ] || die "no headers for $kver in /usr/src"
in_root dkms --version >&2 || die "dkms does not run in the image"

note "installing the step runner"
cat > "$root/usr/local/sbin/ferry-step" <<'EOF'
#!/bin/bash
# Test-only: runs step.sh from the FERRYSTEP disk; output on ttyS1 (see server-image.sh).
out=/dev/ttyS1
stty -F "$out" raw -echo 115200 2>/dev/null || true
exec >"$out" 2>&1
read -r up _ < /proc/uptime
echo "FERRY-STEP start uptime=$up"
dir=/run/ferry-step
mkdir -p "$dir"
if ! mount -o ro /dev/disk/by-label/FERRYSTEP "$dir"; then
  echo "FERRY-STEP rc=125 (cannot mount the step disk)"
  exit 1
fi
# Steps talk to the host: wait for DHCP's default route (networkd starts after the gettys).
for _ in $(seq 1 600); do
  ip -4 route show default 2>/dev/null | grep -q . && break
  sleep 0.1
done
ip -4 route show default | grep -q . || echo "ferry-step: warning: no default route after 60 s"
cd "$dir" || exit 1
rc=0
bash ./step.sh || rc=$?
echo "FERRY-STEP rc=$rc"
sync
if [ "$rc" = 0 ] && [ -f after.sh ]; then
  bash ./after.sh
fi
exit 0
EOF
chmod 755 "$root/usr/local/sbin/ferry-step"
cat > "$root/etc/systemd/system/ferry-step.service" <<'EOF'
[Unit]
Description=Ferry test: run step.sh from the FERRYSTEP disk (output on ttyS1)
BindsTo=dev-disk-by\x2dlabel-FERRYSTEP.device
After=dev-disk-by\x2dlabel-FERRYSTEP.device local-fs.target systemd-networkd.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/ferry-step
TimeoutStartSec=infinity
StandardOutput=journal+console

[Install]
WantedBy=dev-disk-by\x2dlabel-FERRYSTEP.device
EOF
in_root systemctl enable ferry-step.service >&2

note "cleaning up"
finish_root "$root"

write_meta "$work/meta" "$image" "$disk" "$part_start_sector" "$part_sectors" "$uuid" "$kver"
mv -f "$disk" "$image"
mv -f "$work/meta" "$meta"
note "built $(basename "$image") in $(( $(date +%s) - started )) s (${used_kib} KiB used of $((part_size / 1024)) KiB)"
print_meta
