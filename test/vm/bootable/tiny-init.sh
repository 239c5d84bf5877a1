#!/bin/sh
# /init of the tiny bootable disk (test/vm/bootable/tiny-disk.sh). Brings the machine up far
# enough for recovery tests: disk mounted, network up, a TCP service on port 22, a login prompt
# on the serial console, and power-off on the ACPI power button.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
log() { echo "ferry-tiny: $*"; }

while read -r mod; do insmod "$mod" 2>/dev/null; done < /etc/modules.load

ip=
for arg in $(cat /proc/cmdline); do
  case $arg in
    ferry.ip=*) ip=${arg#ferry.ip=} ;;
  esac
done

# The disk: the boot partition holds the kernel and a marker telling tests which disk booted.
mkdir -p /disk
i=0
while [ ! -b /dev/vda1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if mount -t ext4 /dev/vda1 /disk 2>/dev/null; then
  if [ -f /disk/marker ]; then log "marker: $(cat /disk/marker)"; else log "marker: (none)"; fi
else
  log "disk: /dev/vda1 did not mount"
fi

# Network: every ethernet interface up (IPv6 link-local comes by itself). eth0 takes ferry.ip=
# when given, every other interface (and eth0 without ferry.ip=) asks DHCP in the background.
ip link set lo up
for path in /sys/class/net/*; do
  dev=${path##*/}
  [ "$dev" = lo ] && continue
  ip link set "$dev" up
  if [ "$dev" = eth0 ] && [ -n "$ip" ]; then
    ip addr add "$ip" dev eth0
  else
    udhcpc -b -q -s /bin/udhcpc-script -i "$dev" >/dev/null 2>&1
  fi
done
for path in /sys/class/net/*; do
  dev=${path##*/}
  [ "$dev" = lo ] || log "$dev $(cat "$path/address")${ip:+ $([ "$dev" = eth0 ] && echo "$ip")}"
done

# Port 22: a banner line, then one command line (see /bin/ferry-tiny-serve).
nc -ll -p 22 -e /bin/ferry-tiny-serve &

# ACPI power button: the first event on its input device powers off. The device may register a
# moment after its module loads.
watch_power() {
  for input in /sys/class/input/input*; do
    [ "$(cat "$input/name" 2>/dev/null)" = "Power Button" ] || continue
    for ev in "$input"/event*; do
      [ -e "$ev" ] || continue
      touch /tmp/power-armed
      n=$(dd if="/dev/input/${ev##*/}" bs=24 count=1 2>/tmp/power.err | wc -c)
      if [ "$n" -ge 24 ]; then
        log "power button: powering off"
        umount /disk 2>/dev/null
        sync
        poweroff -f
      fi
      log "power button: cannot watch /dev/input/${ev##*/} ($n bytes: $(cat /tmp/power.err))"
      return
    done
  done
  return 1
}
(i=0
 while ! watch_power; do
   i=$((i + 1))
   if [ $i -ge 100 ]; then log "power button: not found"; touch /tmp/power-armed; exit; fi
   sleep 0.1
 done) &
# The prompt says the machine is up: the power button must work by then.
i=0
while [ ! -e /tmp/power-armed ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done

# The prompt goes to the VGA console (for screenshots) first, then to serial, where tests wait for it.
[ -c /dev/tty1 ] && printf '\nferry-tiny: %s\nferry-tiny login: ' "$(cat /disk/marker 2>/dev/null)" > /dev/tty1
printf '\nferry-tiny login: '
while :; do sleep 3600; done
