#!/usr/bin/env bash
# Builds the Linux agent package: one tarball that installs on a machine without Node.
#
#   installer/make-package.sh [--out FILE] [--source DIR] [--node FILE]
#
# The tarball holds one folder, ferry-agent-VERSION-linux-ARCH/, laid out like the install prefix:
#   bin/ferry                       launcher (runs runtime/node on dist/cli/main.js)
#   runtime/node                    the Node runtime (this machine's, or --node FILE)
#   dist/  package.json             the compiled CLI and agent
#   build/Release/ferry_native.node the N-API addon
#   build/Release/ferry_bpf.node    the eBPF tracker addon and its CO-RE program
#   build/Release/ferry_trace.bpf.o (ebpf capture), when the source tree built them
#   node_modules/                   production dependencies only (from package-lock.json)
#   installer/                      install.sh, the systemd unit template, README, and boot/
#                                   (install.sh --protect-boot: initramfs-tools, dracut,
#                                   systemd-shutdown and udev files, ferry-boot-setup)
#   native/linux/                   dm-ferry sources with dkms.conf, when the source tree has them
#   PACKAGE                         name, version, arch, node version (read by install.sh)
# It needs a built tree (`npm ci` then `npm run build`); it never downloads anything.
set -euo pipefail

die() {
  printf 'make-package: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source_dir=$(cd "$here/.." && pwd)
out=""
node_bin=$(command -v node || true)

while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a file name"; out=$2; shift 2 ;;
    --source) [ $# -ge 2 ] || die "--source needs a folder"; source_dir=$2; shift 2 ;;
    --node) [ $# -ge 2 ] || die "--node needs a file"; node_bin=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

if [ -z "$node_bin" ] || [ ! -x "$node_bin" ]; then die "no Node runtime to ship (pass --node FILE)"; fi
for need in package.json package-lock.json dist/cli/main.js build/Release/ferry_native.node node_modules; do
  [ -e "$source_dir/$need" ] || die "$source_dir/$need is missing: run 'npm ci && npm run build' first"
done

version=$("$node_bin" -p 'require(process.argv[1]).version' "$source_dir/package.json")
arch=$(uname -m)
node_version=$("$node_bin" --version)
name="ferry-agent-$version-linux-$arch"
[ -n "$out" ] || out="$PWD/$name.tar.gz"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

staging=$(mktemp -d "${TMPDIR:-/tmp}/ferry-package.XXXXXX")
trap 'rm -rf -- "$staging"' EXIT
pkg="$staging/$name"
mkdir -p "$pkg/bin" "$pkg/runtime" "$pkg/build/Release" "$pkg/installer"

cp -a "$source_dir/package.json" "$source_dir/dist" "$pkg/"
cp -a "$source_dir/build/Release/ferry_native.node" "$pkg/build/Release/"
for f in ferry_bpf.node ferry_trace.bpf.o; do
  [ -f "$source_dir/build/Release/$f" ] && cp -a "$source_dir/build/Release/$f" "$pkg/build/Release/"
done
cp -a "$node_bin" "$pkg/runtime/node"
for f in install.sh ferry-agent.service.in README.md; do
  [ -e "$here/$f" ] && cp -a "$here/$f" "$pkg/installer/"
done
[ -d "$here/boot" ] && cp -a "$here/boot" "$pkg/installer/boot"
if [ -f "$source_dir/native/linux/dkms.conf" ]; then
  mkdir -p "$pkg/native"
  cp -a "$source_dir/native/linux" "$pkg/native/linux"
  # Build leftovers do not belong in a DKMS source tree.
  find "$pkg/native/linux" \( -name '*.o' -o -name '*.ko' -o -name '*.mod*' -o -name '.*.cmd' -o -name 'Module.symvers' -o -name 'modules.order' \) -exec rm -rf {} +
  # The portable core: Kbuild finds it in ./common (the DKMS layout, native/linux/README.md).
  mkdir -p "$pkg/native/linux/common"
  cp -a "$source_dir"/native/common/*.[ch] "$pkg/native/linux/common/"
fi

# Production dependencies: every package-lock entry that is not dev-only and is installed here.
"$node_bin" -e '
  const lock = require(process.argv[1]);
  const fs = require("fs");
  const path = require("path");
  const root = path.dirname(process.argv[1]);
  const prod = Object.entries(lock.packages || {})
    .filter(([key, meta]) => key.startsWith("node_modules/") && !meta.dev && !meta.devOptional)
    .map(([key]) => key)
    .filter((key) => fs.existsSync(path.join(root, key)))
    .sort();
  // A package folder copied whole already brings the packages nested in it.
  const tops = prod.filter((key) => !prod.some((other) => other !== key && key.startsWith(other + "/")));
  process.stdout.write(tops.join("\n") + "\n");
' "$source_dir/package-lock.json" > "$staging/prod-modules"
while IFS= read -r mod; do
  [ -n "$mod" ] || continue
  mkdir -p "$pkg/$(dirname "$mod")"
  cp -a "$source_dir/$mod" "$pkg/$mod"
done < "$staging/prod-modules"
# Native build intermediates and test fixtures are not needed at run time.
find "$pkg/node_modules" -type d \( -path '*/build/Release/obj.target' -o -path '*/build/Release/obj' -o -path '*/build/Release/.deps' \) -prune -exec rm -rf {} +
find "$pkg/node_modules" -type f \( -name '*.a' -o -name 'test_extension.node' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \
  -o -name '*.md' -o -name '*.markdown' -o -name '*.c' -o -name '*.cc' -o -name '*.cpp' -o -name '*.h' -o -name '*.hpp' -o -name '*.gyp' -o -name '*.gypi' \
  -o -name '.npmignore' -o -name '.eslintrc*' -o -name '.travis.yml' -o -name '.editorconfig' \) -delete
# Tests, examples and vendored sources of dependencies: thousands of files nobody runs.
find "$pkg/node_modules" -mindepth 2 -type d \( -name test -o -name tests -o -name __tests__ -o -name example -o -name examples -o -name docs -o -name .github \) -prune -exec rm -rf {} +
find "$pkg/node_modules" -type d -empty -delete
rm -rf "$pkg/node_modules/.bin" "$pkg/node_modules/.package-lock.json"

cat > "$pkg/bin/ferry" <<'EOF'
#!/bin/sh
# Ferry launcher: runs the bundled Node runtime, so the machine needs no Node of its own.
self=$(readlink -f "$0") || exit 1
prefix=$(dirname "$(dirname "$self")")
exec "$prefix/runtime/node" "$prefix/dist/cli/main.js" "$@"
EOF
chmod 0755 "$pkg/bin/ferry" "$pkg/installer/install.sh"

cat > "$pkg/PACKAGE" <<EOF
name=ferry-agent
version=$version
arch=$arch
node=$node_version
kernel_module=$([ -d "$pkg/native/linux" ] && echo yes || echo no)
EOF

mkdir -p "$(dirname "$out")"
tar -C "$staging" -cf - "$name" | gzip -1 > "$out.partial"
mv -f "$out.partial" "$out"
printf '%s\n' "$out"
