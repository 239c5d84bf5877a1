#!/usr/bin/env bash
# Guest side of boot-protect.test.ts: plays the initramfs of a machine whose boot disk install.sh
# --protect-boot set up, on /dev/vda of the VM lab. Runs the installer's own ferry-boot-setup
# (metadata file + boot config), then the real local-top script and shutdown hook.
# Environment: KO (the dm-ferry .ko), REPO (the repo root). Prints "step: ..." lines to assert on.
set -uo pipefail
boot=$REPO/installer/boot
kver=$(uname -r)
export DM_DISABLE_UDEV=1 FERRY_BOOT_WAIT=0 FERRY_BOOT_KMSG=0

fail() {
  echo "FAILED: $*"
  exit 1
}
ferry_devices() { dmsetup ls 2>/dev/null | awk '$1 ~ /^ferry-/ {print $1}' | sort | tr '\n' ' '; }
# start state and next seq from `dmsetup status ferry-boot`
status_field() { dmsetup status ferry-boot | awk -v f="$1" '{print $(f + 3)}'; }
sb_flags() { dd if=/dev/mapper/ferry-boot-meta bs=4096 count=1 iflag=direct status=none | od -An -tu4 -j12 -N4 | tr -d ' '; }

# dm-ferry through a real modprobe: its own module tree (dm-mod is loaded by the lab already).
mkdir -p "/run/fm/lib/modules/$kver/extra" /run/fm/bin /run/modprobe.d
cp "$KO" "/run/fm/lib/modules/$kver/extra/"
depmod -b /run/fm "$kver" || fail "depmod"
printf '#!/bin/sh\nexec /sbin/modprobe -d /run/fm "$@"\n' > /run/fm/bin/modprobe
chmod 755 /run/fm/bin/modprobe
export PATH=/run/fm/bin:$PATH

# The disk: a partition table, ext4 on partition 1 (the "root"), a second partition.
printf 'label: gpt\n,40M,L\n,,L\n' | sfdisk -q /dev/vda || fail "sfdisk"
[ -b /dev/vda1 ] || fail "no /dev/vda1 after sfdisk"
mkfs.ext4 -q -L ferryroot /dev/vda1 || fail "mkfs"
mkdir -p /tmp/root
mount /dev/vda1 /tmp/root || fail "mount vda1"
t0=$(date +%s%N)
bash ${TRACE:+-x} "$boot/ferry-boot-setup" create /dev/vda1 --root /tmp/root --conf /run/fb/boot.conf > /run/fb-setup.out || fail "ferry-boot-setup create"
echo "step: setup-ms $(( ($(date +%s%N) - t0) / 1000000 ))"
sed 's/^/setup| /' /run/fb-setup.out
sed 's/^/conf| /' /run/fb/boot.conf
echo "step: immutable $(lsattr /tmp/root/var/lib/ferry/boot/boot.meta | cut -c5)"
umount /tmp/root
uuid=$(blkid -o value -s UUID /dev/vda1)
header=$(sed -n 's/^FERRY_BOOT_HEADER_SECTOR=//p' /run/fb/boot.conf)

local_top() {
  rm -f /run/fb/param.conf
  ROOT=$1 FERRY_LIB=$boot/ferry-boot-lib.sh FERRY_BOOT_CONF=/run/fb/boot.conf FERRY_PARAM_CONF=/run/fb/param.conf \
    sh "$boot/initramfs-tools/scripts/local-top/ferry" 2>&1 | sed 's/^/local-top| /'
  echo "step: $2 param=[$(cat /run/fb/param.conf 2>/dev/null)] devices=[$(ferry_devices)]"
}

plain_mount() {
  mount /dev/vda1 /tmp/root || fail "the plain partition does not mount ($1)"
  echo "step: $1 plain-mount ok $(cat /tmp/root/written 2>/dev/null)"
  umount /tmp/root
}

# 1. The module is refused (a blacklist): nothing is created, the plain partition mounts.
echo 'blacklist dm_ferry' > /run/modprobe.d/ferry-test.conf
local_top "UUID=$uuid" refused
rm /run/modprobe.d/ferry-test.conf

# 2. The header's marker is damaged: nothing is created (the module loads meanwhile).
orig=$(dd if=/dev/vda bs=1 skip=$((header * 512)) count=1 status=none)
printf 'X' | dd of=/dev/vda bs=1 seek=$((header * 512)) conv=notrunc status=none
local_top "UUID=$uuid" bad-marker
printf '%s' "$orig" | dd of=/dev/vda bs=1 seek=$((header * 512)) conv=notrunc status=none
plain_mount bad-marker

# 3. The real thing: ferry-boot and its partitions; the root goes to ferry-boot-p1.
t0=$(date +%s%N)
local_top "UUID=$uuid" first
echo "step: first local-top-ms $(( ($(date +%s%N) - t0) / 1000000 ))"
echo "step: first start-state $(status_field 7) next-seq $(status_field 2)"
root_dev=$(sed -n 's/^ROOT=//p' /run/fb/param.conf)
mount "$root_dev" /tmp/root || fail "mount $root_dev"
echo "from-the-mapping" > /tmp/root/written
dd if=/dev/urandom of=/tmp/root/data bs=64k count=16 conv=fsync status=none
sync
umount /tmp/root
echo "step: first after-writes next-seq $(status_field 2) mode $(status_field 1)"
# The shutdown hook: suspend -> bitmap saved, metadata CLEAN.
sh "$boot/systemd-shutdown/ferry-boot.shutdown"
echo "step: first suspended $(dmsetup info -c --noheadings -o suspended ferry-boot) sb-flags $(sb_flags)"
dmsetup remove ferry-boot-p1 ferry-boot-p2 ferry-boot ferry-boot-meta || fail "remove"
echo "step: first removed devices=[$(ferry_devices)]"

# 4. Next "boot": CLEAN, with the saved bits (a delta resync); a ROOT by device name works too.
local_top /dev/vda1 second
echo "step: second start-state $(status_field 7) dirty $(status_field 6)"
mount "$(sed -n 's/^ROOT=//p' /run/fb/param.conf)" /tmp/root || fail "mount (second)"
echo "step: second content $(cat /tmp/root/written)"
umount /tmp/root
dmsetup remove ferry-boot-p1 ferry-boot-p2 ferry-boot ferry-boot-meta || fail "remove (second)"

# 5. A boot without dm-ferry after that clean shutdown (module refused): the disk is written
# unprotected, so the saved bitmap goes stale; the next protected boot starts DIRTY.
echo 'blacklist dm_ferry' > /run/modprobe.d/ferry-test.conf
modprobe -r dm-ferry
local_top "UUID=$uuid" refused-after-clean
rm /run/modprobe.d/ferry-test.conf
local_top "UUID=$uuid" third
echo "step: third start-state $(status_field 7)"
dmsetup remove ferry-boot-p1 ferry-boot-p2 ferry-boot ferry-boot-meta || fail "remove (third)"

# 6. ferry-boot-setup remove (install.sh --uninstall): the metadata file and the config go,
# and the plain partition mounts.
mount /dev/vda1 /tmp/root || fail "the plain partition does not mount at the end"
echo "step: final plain-mount ok $(cat /tmp/root/written)"
"$boot/ferry-boot-setup" remove --conf /run/fb/boot.conf || fail "remove"
echo "step: removed meta=$([ -e /tmp/root/var/lib/ferry/boot/boot.meta ] && echo present || echo gone) conf=$([ -e /run/fb/boot.conf ] && echo present || echo gone)"
umount /tmp/root
echo "step: done"
