#!/usr/bin/env bash
# Assembles the Windows agent package folder that install.ps1 installs and push-install --smb copies.
#
#   installer/make-windows-package.sh --node-exe FILE --modules DIR [--driver DIR] --out DIR
#
#   --node-exe FILE  node.exe for Windows x64 (same major version as the build, Node 20)
#   --modules DIR    production node_modules built ON WINDOWS (`npm ci --omit=dev` in a checkout
#                    of the same commit): the native modules (better-sqlite3, lz4, bufferutil, ...)
#                    must be win32 builds, which this Linux machine cannot make
#   --driver DIR     ferryflt.inf, ferryflt.sys and ferryflt.cat from the WDK build (optional;
#                    without it the agent uses scan capture)
#   --out DIR        the package folder to create (must not exist)
#
# The JavaScript (dist/, package.json) is platform-neutral and comes from this tree (npm run build).
set -euo pipefail

die() {
  printf 'make-windows-package: %s\n' "$*" >&2
  exit 1
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source_dir=$(cd "$here/.." && pwd)
node_exe=""
modules=""
driver=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --node-exe) [ $# -ge 2 ] || die "--node-exe needs a file"; node_exe=$2; shift 2 ;;
    --modules) [ $# -ge 2 ] || die "--modules needs a folder"; modules=$2; shift 2 ;;
    --driver) [ $# -ge 2 ] || die "--driver needs a folder"; driver=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a folder"; out=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
if [ -z "$node_exe" ] || [ -z "$modules" ] || [ -z "$out" ]; then
  die "--node-exe, --modules and --out are required (see --help)"
fi
[ -f "$node_exe" ] || die "--node-exe $node_exe does not exist"
[ -d "$modules" ] || die "--modules $modules is not a folder"
[ ! -e "$out" ] || die "--out $out already exists"
[ -f "$source_dir/dist/cli/main.js" ] || die "$source_dir/dist is missing: run 'npm run build' first"
if [ -n "$driver" ]; then
  [ -f "$driver/ferryflt.inf" ] || die "--driver $driver has no ferryflt.inf"
fi

staging="$out.partial"
rm -rf -- "$staging"
trap 'rm -rf -- "$staging"' EXIT
mkdir -p "$staging/runtime"
cp -a "$here/install.ps1" "$here/windows/FerryService.cs" "$staging/"
[ -f "$here/README.md" ] && cp -a "$here/README.md" "$staging/"
cp -a "$source_dir/dist" "$source_dir/package.json" "$staging/"
cp -a "$node_exe" "$staging/runtime/node.exe"
cp -a "$modules" "$staging/node_modules"
if [ -n "$driver" ]; then
  mkdir -p "$staging/driver"
  cp -a "$driver/." "$staging/driver/"
fi
version=$(node -p 'require(process.argv[1]).version' "$source_dir/package.json")
printf 'name=ferry-agent\nversion=%s\nplatform=windows\narch=x64\ndriver=%s\n' "$version" "$([ -n "$driver" ] && echo yes || echo no)" > "$staging/PACKAGE"
mv -- "$staging" "$out"
trap - EXIT
printf '%s\n' "$out"
