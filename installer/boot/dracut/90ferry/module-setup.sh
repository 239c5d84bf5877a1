#!/bin/bash
# dracut module "ferry" (installed as /usr/lib/dracut/modules.d/90ferry by install.sh
# --protect-boot): puts the protected boot disk on dm-ferry in the pre-mount hook, before the
# root file system is mounted (see ferry-boot-lib.sh and ferry-boot.sh). install.sh fills in
# @BOOT_CONF@ (the boot config); in the initramfs it is /etc/ferry/boot.conf.

# called by dracut
check() {
    [ -f @BOOT_CONF@ ] || return 1
    require_binaries dmsetup dd readlink tr || return 1
    return 0
}

# called by dracut
depends() {
    echo dm
    return 0
}

# called by dracut
installkernel() {
    # A kernel without the module still gets an initramfs: the boot goes on unprotected.
    hostonly='' instmods dm_mod dm-ferry
}

# called by dracut
install() {
    inst_multiple dmsetup dd readlink tr
    inst_simple @BOOT_CONF@ /etc/ferry/boot.conf
    # shellcheck disable=SC2154 # moddir: set by dracut
    inst_simple "$moddir/ferry-boot-lib.sh" /lib/ferry/ferry-boot-lib.sh
    if [ -f /etc/udev/rules.d/61-ferry-boot.rules ]; then
        inst_rules /etc/udev/rules.d/61-ferry-boot.rules
    fi
    inst_hook pre-mount 10 "$moddir/ferry-boot.sh"
}
