#!/usr/bin/env bash
# Builds the VM lab's initramfs: busybox-static, the host's dmsetup with its libraries, the
# kernel modules the guest needs before it can reach the host root (resolved through
# modules.dep, in load order), and test/vm/guest-init.sh as /init. Packed with busybox cpio.
# Idempotent: the archive name carries a hash of everything that goes into it.
#
# Usage: test/vm/initramfs.sh <kernel-root> <kver> <out-dir>
#   <kernel-root>  FERRY_VM_ROOT from kernel.sh (holds lib/modules/<kver>)
#   Prints the path of the archive (<out-dir>/initramfs-<kver>-<hash>.cpio).
#
# Needs: busybox-static, dmsetup, kmod (modprobe), coreutils. No root.
set -euo pipefail

die() { echo "initramfs.sh: error: $*" >&2; exit 1; }

[ $# -eq 3 ] || die "usage: initramfs.sh <kernel-root> <kver> <out-dir>"
kroot=$1
kver=$2
mkdir -p "$3"
outdir=$(cd "$3" && pwd)
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
init_src=$script_dir/guest-init.sh
moddir=$kroot/lib/modules/$kver

# Everything the guest loads before it mounts the host root, plus what the brief's tests use
# right away. Dependencies (virtio, fuse, libcrc32c, ...) come from modules.dep.
modules=(virtio_pci virtio_blk virtio_net virtio_rng virtiofs dm_mod loop overlay crc32c_intel libcrc32c)

[ -s "$moddir/modules.dep" ] || die "no modules.dep in $moddir (run test/vm/kernel.sh first)"
[ -f "$init_src" ] || die "missing $init_src"
busybox=$(command -v busybox) || die "busybox not found (install: apt-get install -y busybox-static)"
if ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is dynamically linked: install busybox-static (apt-get install -y busybox-static)"
fi
dmsetup=$(PATH="$PATH:/usr/sbin:/sbin" command -v dmsetup) || die "dmsetup not found (install: apt-get install -y dmsetup)"
modprobe=$(PATH="$PATH:/usr/sbin:/sbin" command -v modprobe) || die "modprobe not found (install: apt-get install -y kmod)"

# Module files in load order (dependencies first), relative to the kernel root.
ordered=()
declare -A seen=()
for m in "${modules[@]}"; do
  deps=$("$modprobe" -d "$kroot" -S "$kver" --show-depends "$m") || die "modprobe cannot resolve $m for $kver"
  while read -r kind path _; do
    [ "$kind" = insmod ] || continue        # "builtin <name>" needs nothing
    rel=${path#"$kroot"/}
    if [ -z "${seen[$rel]:-}" ]; then
      seen[$rel]=1
      ordered+=("$rel")
    fi
  done <<< "$deps"
done
[ "${#ordered[@]}" -gt 0 ] || die "no modules resolved"

# Cache key: the inputs' contents.
key=$( {
  sha256sum "$init_src" "${BASH_SOURCE[0]}" "$busybox" "$dmsetup"
  for rel in "${ordered[@]}"; do sha256sum "$kroot/$rel"; done
  echo "$kver"
} | sha256sum | cut -c1-16)
out=$outdir/initramfs-$kver-$key.cpio
if [ -s "$out" ]; then
  echo "$out"
  exit 0
fi

stage=$(mktemp -d "$outdir/.initramfs-stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,dev,proc,sys,host,run,tmp,etc,lib/modules}

cp "$busybox" "$stage/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$stage/bin/$applet"
done

# dmsetup and the libraries it links, at their host paths.
copy_with_libs() {
  local bin=$1 lib
  mkdir -p "$stage$(dirname "$bin")"
  cp -L "$bin" "$stage$bin"
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$stage$(dirname "$lib")"
    cp -L "$lib" "$stage$lib"
  done
}
copy_with_libs "$dmsetup"

for rel in "${ordered[@]}"; do
  mkdir -p "$stage/$(dirname "$rel")"
  cp "$kroot/$rel" "$stage/$rel"
  echo "/$rel" >> "$stage/etc/modules.load"
done
cp "$moddir/modules.dep" "$moddir/modules.builtin" "$moddir/modules.order" "$stage/lib/modules/$kver/" 2>/dev/null || true
echo "$kver" > "$stage/etc/kver"

cp "$init_src" "$stage/init"
chmod 755 "$stage/init"

tmp_out=$(mktemp "$outdir/.initramfs.XXXXXX")
if ! cpio_err=$(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc 2>&1 > "$tmp_out"); then
  rm -f "$tmp_out"
  die "cpio failed: $cpio_err"
fi
chmod 644 "$tmp_out"
mv -f "$tmp_out" "$out"
# Archives of earlier inputs: drop those not used for a day.
find "$outdir" -maxdepth 1 -name 'initramfs-*.cpio' ! -path "$out" -mtime +0 -delete
echo "$out"
