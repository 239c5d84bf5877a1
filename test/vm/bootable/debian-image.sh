#!/usr/bin/env bash
# Builds the protected machine of the recovery tests: a small Debian 12 (bookworm) raw disk that
# boots on its own (MBR + syslinux's mbr.bin + EXTLINUX on one ext4 partition, Debian's cloud
# kernel, systemd with dbus and logind, so that the ACPI power button shuts it down cleanly in
# seconds, a serial getty on ttyS0 and a getty on the screen). Built once with debootstrap from the Debian archive,
# cached, and rebuilt when this script changes (the cache key is its hash). Needs root.
# EXTLINUX rather than GRUB: one small package, no grub-install device probing, and it installs
# from a loop device over the partition alone (mbr.bin hands it the partition offset at boot).
# Boot to `login:` takes ~20 s under TCG (-accel tcg -cpu max -smp 2) on an idle 2-core host.
#
# Usage: test/vm/bootable/debian-image.sh [--export]
#   Prints KEY=VALUE lines (with --export: `export KEY=...` lines for `eval "$(... --export)"`):
#     FERRY_DEBIAN_IMAGE             the raw disk image (sparse; never boot it directly: copy it or
#                                    put a qcow2 overlay over it)
#     FERRY_DEBIAN_SIZE              its size in bytes
#     FERRY_DEBIAN_PART_START        byte offset of partition 1 (the ext4 root), 1 MiB
#     FERRY_DEBIAN_PART_SIZE         partition 1's size in bytes
#     FERRY_DEBIAN_PART_START_SECTOR / FERRY_DEBIAN_PART_SECTORS   the same in 512-byte sectors
#     FERRY_DEBIAN_ROOT_UUID         the root filesystem's UUID (the kernel finds root by it)
#     FERRY_DEBIAN_KVER              the kernel release in the image (e.g. 6.1.0-57-cloud-amd64)
#
# What the guest does at boot (on the serial console, ttyS0, before the login prompt):
#   - `ferry-markers: <names>`: the sorted names of the files in /var/lib/ferry-markers, space
#     separated, or `ferry-markers: none`. Tests write one marker file before each recovery point.
#   - if /etc/ferry-churn exists and holds a number N: writes N MiB of random data to
#     /var/lib/ferry-churn/<boot id>, syncs, and prints `ferry-churn: done N` ("writes on the
#     recovered machine"). Without the file that unit does nothing.
#   - the hostname comes from /etc/hostname (ferry-debian unless a test replaces the file).
#   - a getty on ttyS0 prints `Debian GNU/Linux 12 <hostname> ttyS0 (kernel <release>)` and
#     `<hostname> login:`. root's password is `ferry`.
#   - systemd-networkd runs DHCP on en*/eth*, started after the getty (nothing waits for it).
#   - the journal is volatile and no timers run: a boot writes little to the disk (utmp, the
#     random seed, the superblock), so replication and failback measure the tests' own writes.
#     mkfs ran without lazy init, so no ext4lazyinit writes either.
#
# Environment:
#   FERRY_VM_CACHE         cache dir, as for test/vm/kernel.sh (default <repo>/.cache/vm); the
#                          image lives in $FERRY_VM_CACHE/bootable
#   FERRY_DEBIAN_CACHE     the image's own cache dir (overrides $FERRY_VM_CACHE/bootable)
#   FERRY_DEBIAN_MIRROR    Debian mirror (default http://deb.debian.org/debian)
#
# Needs (apt): debootstrap extlinux syslinux-common fdisk e2fsprogs util-linux, root, and the
# Debian archive over the network on the first build (~1-2 min; later calls reuse the image).
set -euo pipefail

readonly SUITE=bookworm
readonly IMAGE_MIB=512
readonly PART_START_SECTOR=2048
readonly ROOT_PASSWORD=ferry
readonly HOSTNAME_DEFAULT=ferry-debian
# Modules the initramfs needs to find a root disk on the buses qemu/libvirt commonly give a VM.
readonly INITRAMFS_MODULES="virtio_pci virtio_blk virtio_scsi sd_mod ata_piix"
readonly PACKAGES_BOOTSTRAP="systemd-sysv,udev,initramfs-tools,zstd,dbus"
readonly PACKAGES_CHROOT="linux-image-cloud-amd64"

die() { echo "debian-image.sh: error: $*" >&2; exit 1; }
note() { echo "debian-image.sh: $*" >&2; }

export_mode=0
case "${1:-}" in
  --export) export_mode=1 ;;
  '') ;;
  -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;;
  *) die "unknown argument: $1 (try --help)" ;;
esac

script_path=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
repo=$(cd "$(dirname "$script_path")/../../.." && pwd)
cache=${FERRY_DEBIAN_CACHE:-${FERRY_VM_CACHE:-$repo/.cache/vm}/bootable}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
mirror=${FERRY_DEBIAN_MIRROR:-http://deb.debian.org/debian}

key=$(cat "$script_path" "$(dirname "$script_path")/image-build-lib.sh" | sha256sum | cut -c1-16)
image=$cache/debian-12-$key.img
meta=$cache/debian-12-$key.env

# shellcheck source=test/vm/bootable/image-build-lib.sh
. "$(dirname "$script_path")/image-build-lib.sh"

# Fast path without the lock: a finished image never changes (a new script makes a new key).
if [ -f "$image" ] && [ -s "$meta" ]; then
  print_meta
  exit 0
fi

[ "$(id -u)" = 0 ] || die "building the image needs root (loop devices, mount, chroot)"
PATH=$PATH:/usr/sbin:/sbin
for tool in debootstrap extlinux sfdisk mkfs.ext4 e2fsck blkid losetup mount umount \
            mountpoint chroot flock fstrim truncate sha256sum unshare; do
  command -v "$tool" >/dev/null || die "$tool not found (install: apt-get install -y debootstrap extlinux syslinux-common fdisk e2fsprogs util-linux)"
done
# Build in a private mount namespace: a process that copies the host's mount table while the
# image is mounted (another test's virtiofsd sandbox, say) would otherwise keep it mounted, busy,
# and written to after we unmount.
if [ "${FERRY_DEBIAN_PRIVATE_NS:-}" != "$$" ]; then
  exec unshare --mount --propagation private env FERRY_DEBIAN_PRIVATE_NS=$$ bash "$script_path" "$@"
fi
mbr_bin=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$mbr_bin" ] || die "$mbr_bin not found (install: apt-get install -y syslinux-common)"

# One build at a time per cache dir (parallel test processes share it).
exec 9>"$cache/build.lock"
flock 9
if [ -f "$image" ] && [ -s "$meta" ]; then
  print_meta
  exit 0
fi

work=$cache/build-$key.$$
root=$work/root
build_traps "$work" "$root"

started=$(date +%s)
mkdir -p "$root" "$cache/debs"

note "creating a ${IMAGE_MIB} MiB disk with one ext4 partition from sector $PART_START_SECTOR"
disk=$work/disk.img
truncate -s "${IMAGE_MIB}M" "$disk"
printf 'label: dos\nstart=%d, type=83, bootable\n' "$PART_START_SECTOR" | sfdisk -q "$disk" >&2
part_sectors=$(sfdisk --dump "$disk" | sed -n 's/^.*: *start= *'"$PART_START_SECTOR"', *size= *\([0-9]*\),.*$/\1/p')
[[ "$part_sectors" =~ ^[0-9]+$ ]] || die "could not read the partition size back from sfdisk"
part_start=$((PART_START_SECTOR * 512))
part_size=$((part_sectors * 512))
# The disk's MBR boot code: syslinux's mbr.bin chains to the active partition's boot sector and
# hands it the partition entry, so EXTLINUX finds its partition offset at boot (see below).
dd if="$mbr_bin" of="$disk" bs=440 count=1 conv=notrunc status=none

# A loop device over the partition alone (offset + size limit): partition scanning (losetup -P)
# does not create partition nodes on every host, and nothing here needs the whole disk's device.
loop=$(losetup -f --show --offset "$part_start" --sizelimit "$part_size" "$disk")
# ^64bit: EXTLINUX reads ext4 but keeps to the classic 32-bit block group descriptors.
mkfs.ext4 -q -F -L ferry-root -O ^64bit -E lazy_itable_init=0,lazy_journal_init=0 "$loop" >&2
uuid=$(blkid -s UUID -o value "$loop")
[ -n "$uuid" ] || die "no UUID on the new filesystem"
mount -o noatime "$loop" "$root"

note "debootstrap $SUITE (minbase + $PACKAGES_BOOTSTRAP) from $mirror"
long debootstrap --variant=minbase --include="$PACKAGES_BOOTSTRAP" --cache-dir="$cache/debs" \
  "$SUITE" "$root" "$mirror" >&2 || die "debootstrap failed (network? see the log above)"
# Keep the downloaded packages for the next build (debootstrap --cache-dir reads them from there).
find "$root/var/cache/apt/archives" -maxdepth 1 -name '*.deb' -exec mv -f {} "$cache/debs/" \;

chroot_mounts "$root" "$cache/debs"

# Later installs leave out docs, man pages and translations.
cat > "$root/etc/dpkg/dpkg.cfg.d/01-ferry-small" <<'EOF'
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
EOF
cat > "$root/etc/apt/apt.conf.d/01-ferry-small" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
echo "deb $mirror $SUITE main" > "$root/etc/apt/sources.list"

# A small initramfs: only the disk drivers listed here (ext4 is built into the cloud kernel).
mkdir -p "$root/etc/initramfs-tools/conf.d"
cat > "$root/etc/initramfs-tools/conf.d/test-image.conf" <<'EOF'
MODULES=list
COMPRESS=zstd
RESUME=none
EOF
for m in $INITRAMFS_MODULES; do echo "$m"; done >> "$root/etc/initramfs-tools/modules"

note "installing $PACKAGES_CHROOT in the chroot"
long "${chroot_cmd[@]}" apt-get -q update >&2 || die "apt-get update in the chroot failed"
# shellcheck disable=SC2086 # a list of package names
long "${chroot_cmd[@]}" apt-get -q -y install $PACKAGES_CHROOT >&2 || die "installing the kernel failed"

kver=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sed 's/^vmlinuz-//' | sort -V | tail -n1)
[ -n "$kver" ] || die "no kernel in /boot after installing $PACKAGES_CHROOT"
[ -f "$root/boot/initrd.img-$kver" ] || die "no initramfs for $kver"

note "configuring the system (kernel $kver)"
echo "$HOSTNAME_DEFAULT" > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
  "$HOSTNAME_DEFAULT" > "$root/etc/hosts"
printf 'UUID=%s\t/\text4\tdefaults,noatime,errors=remount-ro\t0\t1\n' "$uuid" > "$root/etc/fstab"
echo "root:$ROOT_PASSWORD" | in_root chpasswd
# \r in /etc/issue: the getty prints the running kernel's release next to the login prompt.
printf 'Debian GNU/Linux 12 \\n \\l (kernel \\r)\n\n' > "$root/etc/issue"

mkdir -p "$root/etc/systemd/network"
cat > "$root/etc/systemd/network/20-ferry-dhcp.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=yes

[DHCPv4]
# Clones of this image share a machine-id: identify by MAC so each gets its own lease.
ClientIdentifier=mac
EOF
in_root systemctl enable systemd-networkd.service >&2
# The login prompt does not wait for the network: logins are allowed without network.target
# (Debian's unit orders systemd-user-sessions after it), and networkd starts after the gettys.
sed -e '/^After=/s/ network\.target//' "$root/lib/systemd/system/systemd-user-sessions.service" \
  > "$root/etc/systemd/system/systemd-user-sessions.service"
grep -q 'network\.target' "$root/etc/systemd/system/systemd-user-sessions.service" \
  && die "systemd-user-sessions.service still orders after network.target"
mkdir -p "$root/etc/systemd/system/systemd-networkd.service.d"
printf '[Unit]\nAfter=getty.target\n' > "$root/etc/systemd/system/systemd-networkd.service.d/ferry-late.conf"

mkdir -p "$root/etc/systemd/journald.conf.d"
cat > "$root/etc/systemd/journald.conf.d/ferry.conf" <<'EOF'
[Journal]
# Keep the journal in memory: fewer writes on a replicated disk, faster boots.
Storage=volatile
EOF

# Markers: one line on the console before the login prompt.
mkdir -p "$root/var/lib/ferry-markers" "$root/var/lib/ferry-churn"
cat > "$root/usr/local/sbin/ferry-markers" <<'EOF'
#!/bin/sh
# Prints the names of the marker files the recovery tests wrote, sorted, on the console.
# Shell builtins only (dash sorts glob results bytewise): forks cost time under TCG.
names=
for f in /var/lib/ferry-markers/*; do
  [ -e "$f" ] && names="$names ${f##*/}"
done
line="ferry-markers: ${names# }"
[ -n "$names" ] || line="ferry-markers: none"
echo "$line"
echo "$line" > /dev/console
EOF
cat > "$root/etc/systemd/system/ferry-markers.service" <<'EOF'
[Unit]
Description=Ferry test: list the marker files on the console
After=local-fs.target
Before=getty.target serial-getty@ttyS0.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/ferry-markers

[Install]
WantedBy=multi-user.target
EOF

cat > "$root/usr/local/sbin/ferry-churn" <<'EOF'
#!/bin/sh
# Writes N MiB (N read from /etc/ferry-churn) of random data, syncs, reports on the console.
set -e
n=$(tr -dc '0-9' < /etc/ferry-churn)
if [ -z "$n" ]; then
  echo "ferry-churn: error: /etc/ferry-churn holds no number" | tee /dev/console
  exit 1
fi
out=/var/lib/ferry-churn/$(cat /proc/sys/kernel/random/boot_id)
mkdir -p /var/lib/ferry-churn
# /dev/urandom is slow under TCG (8 MiB took ~25 s): read 1 MiB of it, and make each MiB of
# the output a different rotation of that seed (random-looking, incompressible, no two alike).
seed=/run/ferry-churn.seed
dd if=/dev/urandom of="$seed" bs=1M count=1 status=none
cat "$seed" "$seed" > "$seed.2"
: > "$out"
i=0
while [ "$i" -lt "$n" ]; do
  dd if="$seed.2" bs=1M count=1 skip=$(( (i * 4099) % 1048576 )) iflag=skip_bytes status=none >> "$out"
  i=$((i + 1))
done
rm -f "$seed" "$seed.2"
sync
echo "ferry-churn: done $n"
echo "ferry-churn: done $n" > /dev/console
EOF
cat > "$root/etc/systemd/system/ferry-churn.service" <<'EOF'
[Unit]
Description=Ferry test: write N MiB when /etc/ferry-churn exists
ConditionPathExists=/etc/ferry-churn
After=local-fs.target ferry-markers.service
Before=getty.target serial-getty@ttyS0.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/ferry-churn

[Install]
WantedBy=multi-user.target
EOF
chmod 755 "$root/usr/local/sbin/ferry-markers" "$root/usr/local/sbin/ferry-churn"
in_root systemctl enable ferry-markers.service ferry-churn.service >&2

# Nothing that slows a boot under TCG or writes to the disk on its own schedule. The serial
# getty on ttyS0 comes from console=ttyS0 (systemd-getty-generator, the last console=); a getty
# on tty1 shows the login prompt on the screen too (the screenshot a test failover keeps).
in_root systemctl mask \
  apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
  e2scrub_reap.service fstrim.timer systemd-networkd-wait-online.service \
  ldconfig.service systemd-hwdb-update.service systemd-pstore.service \
  proc-sys-fs-binfmt_misc.automount systemd-binfmt.service getty-static.service \
  systemd-network-generator.service >&2
in_root systemctl set-default multi-user.target >&2
# Generators run on every boot before any unit starts; only fstab and getty are of use here.
mkdir -p "$root/etc/systemd/system-generators"
for g in "$root"/usr/lib/systemd/system-generators/*; do
  case "${g##*/}" in
    systemd-fstab-generator|systemd-getty-generator) ;;
    *) ln -sf /dev/null "$root/etc/systemd/system-generators/${g##*/}" ;;
  esac
done

note "installing EXTLINUX"
mkdir -p "$root/boot/extlinux"
cat > "$root/boot/extlinux/extlinux.conf" <<EOF
SERIAL 0 115200
DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
  LINUX /boot/vmlinuz-$kver
  INITRD /boot/initrd.img-$kver
  APPEND root=UUID=$uuid rw console=tty0 console=ttyS0,115200 mitigations=off
EOF
extlinux --install "$root/boot/extlinux" >&2 || die "extlinux --install failed"

note "removing docs, man pages, translations and apt lists"
finish_root "$root"

write_meta "$work/meta.env" "$image" "$disk" "$PART_START_SECTOR" "$part_sectors" "$uuid" "$kver"
mv "$disk" "$image"
mv "$work/meta.env" "$meta"
# Images of older versions of this script are dead weight.
for old in "$cache"/debian-12-*.img "$cache"/debian-12-*.env; do
  [ -e "$old" ] || continue
  case "$old" in "$image"|"$meta") ;; *) rm -f "$old" ;; esac
done
note "image ready in $(( $(date +%s) - started )) s: $image (${IMAGE_MIB} MiB, ~$((used_kib / 1024)) MiB used in the filesystem, $(du -k "$image" | cut -f1) KiB on disk)"
print_meta
