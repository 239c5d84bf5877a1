#!/bin/sh
# udhcpc hook of the tiny disk's guest: the address only, no routes (nothing to reach beyond the link).
case $1 in
  bound|renew) ip -4 addr flush dev "$interface"; ip addr add "$ip/${mask:-24}" dev "$interface"
               echo "ferry-tiny: $interface dhcp $ip" > /dev/console ;;
  deconfig) ip -4 addr flush dev "$interface" ;;
esac
exit 0
