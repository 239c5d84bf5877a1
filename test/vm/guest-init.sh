#!/bin/sh
# PID 1 of the VM lab guest (busybox sh, from the initramfs built by initramfs.sh).
#
# Loads the modules listed in /etc/modules.load, configures the network (10.0.2.15/24 via
# 10.0.2.2), mounts the host's root read-only over virtiofs at /host, loads the run's extra
# modules, prepares /host (proc, sys, dev, run, a tmpfs-backed /tmp, the guest kernel's modules
# at /lib/modules/<kver>), then runs <job>/run.sh chrooted in /host and powers off.
#
# Channels (qemu serial ports):
#   ttyS0  console: kernel log and these init messages
#   ttyS1  the script's stdout+stderr (raw)
#   ttyS2  status: "exit <code>" after a clean end, "init-error <message>" if setup failed
# Kernel command line: ferrylab.job=<host dir> ferrylab.moddir=<host modules dir>
# A script that powers off itself (`poweroff -f`) never reaches the status line: the host
# reports that no clean exit happened.

PATH=/bin:/usr/sbin:/usr/bin
export PATH

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

say() { echo "ferrylab-init: $*"; }

# Waits until everything written to a tty has left the UART (the last close drains it).
drain() { stty -F "$1" raw -echo; }

status() {
  printf '%s\n' "$*" > /dev/ttyS2
  drain /dev/ttyS2
}

fail() {
  say "FATAL: $*"
  status "init-error $*"
  poweroff -f
  exit 1
}

job=
moddir=
read -r cmdline < /proc/cmdline
for arg in $cmdline; do
  case $arg in
    ferrylab.job=*) job=${arg#ferrylab.job=} ;;
    ferrylab.moddir=*) moddir=${arg#ferrylab.moddir=} ;;
  esac
done
kver=$(uname -r)
[ -n "$job" ] || fail "no ferrylab.job= on the kernel command line"
stty -F /dev/ttyS1 raw -echo || fail "no /dev/ttyS1 (output port)"
stty -F /dev/ttyS2 raw -echo || fail "no /dev/ttyS2 (status port)"

while read -r ko; do
  insmod "$ko" || fail "insmod $ko failed"
done < /etc/modules.load

ip link set lo up || fail "lo"
ip link set eth0 up || fail "no eth0 (virtio-net)"
ip addr add 10.0.2.15/24 dev eth0 || fail "ip addr"
ip route add default via 10.0.2.2 || fail "ip route"

mount -t virtiofs -o ro hostroot /host || fail "cannot mount the host root (virtiofs tag hostroot)"
[ -f "/host$job/run.sh" ] || fail "missing $job/run.sh in the host root"

# Extra modules (host paths), in order, after dm-mod.
if [ -s "/host$job/modules" ]; then
  while IFS= read -r ko; do
    [ -n "$ko" ] || continue
    [ -f "/host$ko" ] || fail "module not found: $ko"
    out=$(insmod "/host$ko" 2>&1) || fail "insmod $ko: $out $(dmesg | tail -n 3 | tr '\n' ' ')"
    say "loaded $ko"
  done < "/host$job/modules"
fi

mount -t proc proc /host/proc || fail "proc"
mount -t sysfs sysfs /host/sys || fail "sysfs"
mount -t debugfs debugfs /host/sys/kernel/debug 2>/dev/null
mount -t devtmpfs devtmpfs /host/dev || fail "devtmpfs"
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts || fail "devpts"
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm || fail "shm"
mount -t tmpfs -o mode=755 tmpfs /host/run || fail "tmpfs /run"
mkdir -p /host/run/ferrylab/bin /host/run/ferrylab/home
# /tmp: writes go to a tmpfs; the host's /tmp shows through read-only underneath, so files a test
# prepared in its temp dir are at the same path in the guest.
mkdir -p /tmpfs
mount -t tmpfs tmpfs /tmpfs || fail "tmpfs for /tmp"
mkdir -p /tmpfs/upper /tmpfs/work && chmod 1777 /tmpfs/upper
mount -t overlay overlay -o lowerdir=/host/tmp,upperdir=/tmpfs/upper,workdir=/tmpfs/work /host/tmp \
  || fail "overlay on /tmp"

# The guest kernel's modules at /lib/modules/<kver>, so modprobe works inside the chroot. If the
# host root has no /lib/modules to mount on, they go to /run/ferrylab/kernel and a modprobe
# wrapper first in PATH points kmod there.
if [ -n "$moddir" ] && [ -d "/host$moddir" ]; then
  if [ -d /host/lib/modules ]; then
    mount -t tmpfs -o mode=755 tmpfs /host/lib/modules || fail "tmpfs on /lib/modules"
    mkdir "/host/lib/modules/$kver"
    mount --bind "/host$moddir" "/host/lib/modules/$kver" || fail "bind $moddir"
  else
    mkdir -p "/host/run/ferrylab/kernel/lib/modules/$kver"
    mount --bind "/host$moddir" "/host/run/ferrylab/kernel/lib/modules/$kver" || fail "bind $moddir"
    printf '#!/bin/sh\nexec /sbin/modprobe -d /run/ferrylab/kernel "$@"\n' > /host/run/ferrylab/bin/modprobe
    chmod 755 /host/run/ferrylab/bin/modprobe
  fi
fi

# busybox's poweroff/reboot/halt first in PATH: they work without systemd.
cp /bin/busybox /host/run/ferrylab/bin/busybox
for a in poweroff reboot halt; do ln -s busybox "/host/run/ferrylab/bin/$a"; done

shell=/bin/sh
[ -x /host/bin/bash ] && shell=/bin/bash
say "running $job/script.sh"
env -i \
  PATH=/run/ferrylab/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/run/ferrylab/home TERM=dumb LANG=C.UTF-8 DM_DISABLE_UDEV=1 \
  /bin/chroot /host "$shell" "$job/run.sh" </dev/null >/dev/ttyS1 2>&1
rc=$?
say "script exited with $rc"

# Leftover background processes of the script: stop them so their output is complete.
kill -KILL -1 2>/dev/null
drain /dev/ttyS1
sync
status "exit $rc"
poweroff -f
