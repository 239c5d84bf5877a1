#!/bin/sh
# Port 22 of the tiny disk's guest (busybox nc -ll -e): writes a banner line, reads one command
# line, answers one line. Commands (tests drive the guest through the host's probe port):
#   ping ADDR [DEV]     "reachable" when ADDR answers one ICMP echo (IPv4 or IPv6; DEV for link-local)
#   connect ADDR PORT   "reachable" when a TCP connection to ADDR:PORT opens within 3 s
#   write TEXT          writes TEXT to /written on the disk, syncs, "ok"
#   marker              the disk's /marker
export PATH=/bin
echo "ferry-tiny ready"
read -r cmd a1 a2 || exit 0
echo "ferry-tiny: command: $cmd $a1 $a2" > /dev/console
case $cmd in
  ping)
    if ping ${a2:+-I "$a2"} -c 1 -W 3 "$a1" >/dev/null 2>&1; then r=reachable; else r=unreachable; fi ;;
  connect)
    if echo | nc -w 3 "$a1" "$a2" >/dev/null 2>&1; then r=reachable; else r=unreachable; fi ;;
  write)
    if echo "$a1" > /disk/written && sync; then r=ok; else r=failed; fi ;;
  marker)
    r=$(cat /disk/marker 2>/dev/null || echo "(none)") ;;
  *) r="unknown command: $cmd" ;;
esac
echo "ferry-tiny: $cmd $a1 $a2: $r" > /dev/console
echo "$r"
