#!/bin/sh
# dracut pre-mount hook (sourced by dracut's init; runs before the root file system is mounted):
# puts the protected boot disk on dm-ferry. Any failure leaves everything as it was, so the
# system boots from the plain partition (see ferry-boot-lib.sh).
#
# How the root is switched to the partition's mapping:
# - dracut without systemd mounts "$root" itself: the hook sets root=block:/dev/mapper/...
# - dracut with systemd mounts sysroot.mount, whose What= is the root= of the command line:
#   root=UUID=... or LABEL=... resolve through /dev/disk/by-uuid|by-label, which 61-ferry-boot.rules
#   points at the mapping. A root=/dev/sdXN, PARTUUID= or PARTLABEL= cannot be redirected: then
#   the devices are removed again and the system boots unprotected, with a "ferry:" line.

ferry_dracut() {
    [ -f /lib/ferry/ferry-boot-lib.sh ] || return 0
    [ -f /etc/ferry/boot.conf ] || return 0
    # shellcheck source-path=SCRIPTDIR source=../../ferry-boot-lib.sh
    . /lib/ferry/ferry-boot-lib.sh
    # With udevd running, dmsetup waits for udev (the dm module's rules are in), so the
    # /dev/disk links of the mappings are made; without it, dmsetup makes the nodes itself.
    if [ ! -S /run/udev/control ]; then export DM_DISABLE_UDEV=1; fi
    ferry_setup || return 0
    _spec=${root#block:}
    _map=''
    if [ "${_spec#/dev/disk/by-uuid/}" != "$_spec" ]; then _spec="UUID=${_spec#/dev/disk/by-uuid/}"; fi
    if [ "${_spec#/dev/disk/by-label/}" != "$_spec" ]; then _spec="LABEL=${_spec#/dev/disk/by-label/}"; fi
    if ! _map=$(ferry_root_map "$_spec"); then
        ferry_log "root $root is not the protected root partition; it is left as it is"
        return 0
    fi
    if [ -d /run/systemd/system ]; then
        case "$_spec" in
        UUID=* | LABEL=*)
            udevadm settle --timeout=10 >/dev/null 2>&1 || true
            ferry_log "root $root resolves to $_map through its /dev/disk link"
            ;;
        *)
            ferry_log "root=$root names the plain partition, which systemd would mount: use root=UUID=... to boot protected; removing the ferry devices"
            ferry_teardown
            ;;
        esac
    else
        root="block:$_map"
        ferry_log "root is mounted from $_map"
    fi
}

ferry_dracut
