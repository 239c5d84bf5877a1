#!/usr/bin/env bash
# Fetches Debian's 6.1 cloud kernel, its headers and kbuild into the VM lab cache, ready to boot
# under qemu and to build out-of-tree modules against. Idempotent: a complete tree is reused.
#
# Usage: test/vm/kernel.sh [--export]
#   Prints KEY=VALUE lines (with --export: `export KEY=...` lines for `eval "$(kernel.sh --export)"`):
#     FERRY_VM_KVER         kernel release, e.g. 6.1.0-56-cloud-amd64
#     FERRY_VM_PKG_VERSION  Debian package version it came from, e.g. 6.1.192-2
#     FERRY_VM_ROOT         the extracted packages (boot/, lib/modules/, usr/src/)
#     FERRY_VM_KERNEL       bzImage to pass to qemu -kernel
#     FERRY_VM_MODULES      modules dir (with modules.dep): <root>/lib/modules/<kver>
#     FERRY_VM_HEADERS      usable as `make -C "$FERRY_VM_HEADERS" M=<dir> modules`
#
# Environment:
#   FERRY_VM_CACHE       cache dir (default: <repo>/.cache/vm)
#   FERRY_VM_KERNEL_ABI  pin a release (e.g. 6.1.0-56-cloud-amd64) instead of apt's candidate
#   FERRY_VM_REFRESH=1   ask apt again for its candidate instead of reusing the cached kernel
#
# Needs: apt-get/apt-cache with current package lists (as root it runs `apt-get update` once if
# the packages are unknown), dpkg, depmod (kmod), flock (util-linux). No root needed otherwise.
set -euo pipefail

readonly FLAVOUR=cloud-amd64
readonly SERIES=6.1

die() { echo "kernel.sh: error: $*" >&2; exit 1; }
note() { echo "kernel.sh: $*" >&2; }

export_mode=0
case "${1:-}" in
  --export) export_mode=1 ;;
  '') ;;
  -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
  *) die "unknown argument: $1 (try --help)" ;;
esac

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$script_dir/../.." && pwd)
cache=${FERRY_VM_CACHE:-$repo/.cache/vm}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

for tool in apt-get apt-cache dpkg flock; do
  command -v "$tool" >/dev/null || die "$tool not found (install: apt-get install -y apt dpkg util-linux)"
done
depmod_bin=$(PATH="$PATH:/usr/sbin:/sbin" command -v depmod) || die "depmod not found (install: apt-get install -y kmod)"

# One fetch at a time per cache dir (parallel test processes share it).
exec 9>"$cache/kernel.lock"
flock 9

# Prints the release the cloud metapackage depends on, e.g. 6.1.0-56-cloud-amd64.
candidate_release() {
  apt-cache depends "linux-image-$FLAVOUR" 2>/dev/null \
    | sed -n "s/^ *Depends: linux-image-\\(${SERIES//./\\.}\\.[0-9]*-[0-9]*-$FLAVOUR\\)\$/\\1/p" | head -n1
}

resolve_release() {
  if [ -n "${FERRY_VM_KERNEL_ABI:-}" ]; then
    echo "$FERRY_VM_KERNEL_ABI"
    return
  fi
  if [ "${FERRY_VM_REFRESH:-0}" != 1 ] && [ -f "$cache/kernel-current" ]; then
    local current
    current=$(cat "$cache/kernel-current")
    if [ -f "$cache/kernel-$current/.complete" ]; then
      echo "$current"
      return
    fi
  fi
  local rel
  rel=$(candidate_release)
  if [ -z "$rel" ] && [ "$(id -u)" = 0 ]; then
    note "linux-image-$FLAVOUR unknown to apt; running apt-get update"
    apt-get update -qq >&2 || die "apt-get update failed"
    rel=$(candidate_release)
  fi
  [ -n "$rel" ] || die "apt offers no linux-image-$FLAVOUR depending on a $SERIES kernel (is this Debian 12 with current package lists? run: apt-get update)"
  echo "$rel"
}

kver=$(resolve_release)
[[ "$kver" =~ ^${SERIES//./\\.}\.[0-9]+-([0-9]+)-$FLAVOUR$ ]] || die "not a Debian $SERIES $FLAVOUR release: $kver"
abi=${kver%-"$FLAVOUR"}          # 6.1.0-56
dest=$cache/kernel-$kver
root=$dest/root
headers=$root/usr/src/linux-headers-$kver
common=$root/usr/src/linux-headers-$abi-common

complete() {
  [ -f "$dest/.complete" ] && [ -f "$root/boot/vmlinuz-$kver" ] && [ -f "$headers/Makefile" ] \
    && [ -s "$root/lib/modules/$kver/modules.dep" ]
}

if ! complete; then
  rm -rf "$dest"
  mkdir -p "$dest/debs" "$root"
  pkgver=$(apt-cache show --no-all-versions "linux-image-$kver" 2>/dev/null | sed -n 's/^Version: //p' | head -n1)
  [ -n "$pkgver" ] || die "apt does not know linux-image-$kver (run: apt-get update)"
  note "fetching linux-image-$kver $pkgver, its headers and linux-kbuild-$SERIES"
  apt_opts=(-q)
  # As root, apt drops privileges to _apt, which cannot write into the cache dir: skip that.
  if [ "$(id -u)" = 0 ]; then apt_opts+=(-o APT::Sandbox::User=root); fi
  (cd "$dest/debs" && apt-get "${apt_opts[@]}" download \
    "linux-image-$kver=$pkgver" \
    "linux-headers-$kver=$pkgver" \
    "linux-headers-$abi-common=$pkgver" \
    "linux-kbuild-$SERIES=$pkgver" >&2) || die "apt-get download failed (network? package lists current?)"
  for deb in "$dest"/debs/*.deb; do
    dpkg -x "$deb" "$root"
  done
  # The arch headers include the common Makefile by absolute path: point it at the extracted tree.
  sed -i "s|^include /usr/src/|include $root/usr/src/|" "$headers/Makefile"
  grep -q "^include $common/Makefile\$" "$headers/Makefile" || die "unexpected headers Makefile: $(cat "$headers/Makefile")"
  # build/source links are absolute (/usr/src/...): make them relative to the extracted tree.
  ln -sfn "../../../usr/src/linux-headers-$kver" "$root/lib/modules/$kver/build"
  ln -sfn "../../../usr/src/linux-headers-$abi-common" "$root/lib/modules/$kver/source"
  "$depmod_bin" -b "$root" "$kver" || die "depmod failed"
  [ -s "$root/lib/modules/$kver/modules.dep" ] || die "depmod wrote no modules.dep"
  [ -f "$root/boot/vmlinuz-$kver" ] || die "no kernel image in linux-image-$kver"
  rm -rf "$dest/debs"
  echo "$pkgver" > "$dest/PACKAGE_VERSION"
  touch "$dest/.complete"
  note "kernel $kver ($pkgver) ready in $dest"
fi
echo "$kver" > "$cache/kernel-current"

emit() {
  if [ "$export_mode" = 1 ]; then printf 'export %s=%q\n' "$1" "$2"; else printf '%s=%s\n' "$1" "$2"; fi
}
emit FERRY_VM_KVER "$kver"
emit FERRY_VM_PKG_VERSION "$(cat "$dest/PACKAGE_VERSION")"
emit FERRY_VM_ROOT "$root"
emit FERRY_VM_KERNEL "$root/boot/vmlinuz-$kver"
emit FERRY_VM_MODULES "$root/lib/modules/$kver"
emit FERRY_VM_HEADERS "$headers"
