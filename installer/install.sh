#!/usr/bin/env bash
# Ferry agent installer for Linux. Run as root from an unpacked agent package, or with --package.
#
#   install.sh --receiver wss://HOST:PORT --fingerprint FP --volume ID=PATH[:MOUNT] [options]
#   install.sh --uninstall [--prefix DIR --config-dir DIR --state-dir DIR --systemd-dir DIR]
#
# Options:
#   --package FILE        agent package (.tar.gz from make-package.sh); default: the package this
#                         script was unpacked from
#   --prefix DIR          where the agent goes (default /opt/ferry)
#   --config-dir DIR      config folder (default /etc/ferry); the config is DIR/agent.yaml
#   --state-dir DIR       credential, resync progress, status (default /var/lib/ferry)
#   --systemd-dir DIR     where the unit goes (default /etc/systemd/system)
#   --bin-dir DIR|none    symlink DIR/ferry to the launcher (default /usr/local/bin with the
#                         default prefix, otherwise none)
#   --receiver URL        wss://HOST:PORT of the receiver
#   --fingerprint FP      SHA-256 fingerprint of the receiver certificate, or
#   --ca-file FILE        a CA bundle that verifies it (copied into the config folder)
#   --passphrase-file F   registration passphrase; without it the passphrase is read from stdin.
#                         It is never accepted on the command line.
#   --volume ID=PATH[:MOUNT]  a volume to protect (repeat for more); MOUNT is frozen for
#                         application-consistent points
#   --name NAME           agent name (default: the host name)
#   --capture MODE        auto | kernel | ebpf | scan (default auto; auto falls back, with a
#                         warning, when the dm-ferry module cannot be built or loaded)
#   --protect-boot DEV    protect the machine's boot disk: DEV is the root partition (or the disk
#                         holding it); the WHOLE disk becomes volume "boot" (bootProtected), is
#                         captured live at once (ebpf, else scan) and is put on dm-ferry by the
#                         initramfs from the next boot on. Sets up: the dm-ferry metadata (a file
#                         preallocated on a file system of that disk, immutable), the boot config
#                         CONFIG_DIR/boot.conf, the initramfs-tools hook + local-top script (or the
#                         dracut module 90ferry), a systemd-shutdown hook that saves the metadata
#                         clean, a udev rule, DKMS for every installed kernel, and regenerates the
#                         initramfs. See installer/README.md, "Protecting the boot disk".
#   --boot-meta PART      with --protect-boot: a spare, empty partition of that disk for the
#                         metadata instead of the file
#   --no-register         install and configure only; run `ferry agent register` later
#   --reregister          register again even if this machine registered before
#   --no-start            install (and enable) the service but do not start it
#   --no-systemctl        write the unit but never call systemctl (also FERRY_INSTALL_NO_SYSTEMCTL=1)
#   --keep-state          with --uninstall: keep the config and the state folder
#                         (--uninstall also removes the boot protection: hooks, boot config,
#                         metadata file, initramfs regenerated without Ferry)
#   --dry-run             print every step, change nothing
#   --uninstall           remove what the install created, in reverse order
#
# Running it again upgrades in place: without --receiver it keeps the existing config and
# registration. Every failure prints one line starting with "install.sh: error:", undoes what
# this run changed, in reverse order, and exits non-zero (2 bad arguments, 3 not installable here,
# 5 passphrase refused, 6 receiver unreachable or untrusted, 1 anything else).
# The last line is always "ferry-install: OK ..." or "ferry-install: FAILED: reason".
set -uo pipefail
umask 022

readonly SCRIPT_NAME=install.sh
readonly SERVICE=ferry-agent
readonly DEFAULT_PREFIX=/opt/ferry
readonly BOOT_VOLUME=boot

prefix=$DEFAULT_PREFIX
config_dir=/etc/ferry
state_dir=/var/lib/ferry
systemd_dir=/etc/systemd/system
systemd_dir_given=no
bin_dir=""
package=""
receiver=""
fingerprint=""
ca_file=""
passphrase_file=""
agent_name=""
capture=auto
volumes=()
protect_boot=""
boot_meta=""
do_register=yes
reregister=no
do_start=yes
use_systemctl=yes
keep_state=no
dry_run=no
mode=install
fail_after=${FERRY_INSTALL_FAIL_AFTER:-}   # test hook: fail right after the named step
# Test hook: FERRY_INSTALL_BOOT_ROOT=DIR makes --protect-boot take the file system mounted at DIR
# as the root (default /).
[ "${FERRY_INSTALL_NO_SYSTEMCTL:-}" = 1 ] && use_systemctl=no

# ---------------------------------------------------------------- output, errors, rollback

say() { printf '%s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "$SCRIPT_NAME" "$*" >&2; }
step_banner() { say "==> $*"; }

UNDO=()           # shell-quoted commands, run newest first on failure
COMMITTED=no
DIED=no

undo_push() {
  local quoted
  quoted=$(printf '%q ' "$@")
  UNDO+=("$quoted")
}

rollback() {
  [ "${#UNDO[@]}" -gt 0 ] || return 0
  say "==> rolling back ${#UNDO[@]} step(s)"
  local i
  for ((i = ${#UNDO[@]} - 1; i >= 0; i--)); do
    say "    undo: ${UNDO[i]}"
    eval "${UNDO[i]}" || warn "undo step failed: ${UNDO[i]}"
  done
  UNDO=()
}

# die CODE MESSAGE: one clear line, rollback of this run, the closing marker, exit CODE.
die() {
  local code=$1
  shift
  DIED=yes
  printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
  if [ "$COMMITTED" = no ]; then rollback; fi
  say "ferry-install: FAILED: $*"
  exit "$code"
}

on_signal() { die 1 "interrupted by a signal"; }
trap on_signal INT TERM HUP

quote_cmd() {
  local out
  out=$(printf '%q ' "$@")
  printf '%s' "${out% }"
}

# run CMD...: prints the command; in a dry run that is all it does.
run() {
  if [ "$dry_run" = yes ]; then
    say "    [dry-run] $(quote_cmd "$@")"
    return 0
  fi
  say "    + $(quote_cmd "$@")"
  "$@"
}

# write_file PATH MODE: content from stdin, written atomically (temp file + rename).
write_file() {
  local target=$1 mode=$2 tmp
  if [ "$dry_run" = yes ]; then
    say "    [dry-run] write $target (mode $mode):"
    sed 's/^/        | /'
    return 0
  fi
  say "    + write $target (mode $mode)"
  tmp=$(mktemp "$(dirname "$target")/.ferry-install.XXXXXX") || return 1
  if ! cat > "$tmp" || ! chmod "$mode" "$tmp" || ! mv -f "$tmp" "$target"; then
    rm -f "$tmp"
    return 1
  fi
}

# after_step NAME: the test hook that proves every step can be rolled back.
after_step() {
  if [ -n "$fail_after" ] && [ "$fail_after" = "$1" ]; then
    die 1 "injected failure after step '$1' (FERRY_INSTALL_FAIL_AFTER)"
  fi
}

# make_dirs DIR MODE: creates DIR and missing parents; records the topmost one it created.
CREATED_DIRS=()
make_dirs() {
  local dir=$1 mode=$2 top="" probe=$1
  while [ ! -e "$probe" ]; do
    top=$probe
    probe=$(dirname "$probe")
  done
  [ -n "$top" ] || return 0
  run mkdir -p -m "$mode" "$dir" || return 1
  [ "$dry_run" = yes ] || undo_push rm -rf -- "$top"
  CREATED_DIRS+=("$top")
}

# backup PATH: if PATH exists, keep a copy and restore it on rollback; else remove it on rollback.
BACKUP_DIR=""
backup() {
  local target=$1 saved
  [ "$dry_run" = yes ] && return 0
  if [ -e "$target" ] || [ -L "$target" ]; then
    if [ -z "$BACKUP_DIR" ]; then
      BACKUP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ferry-install-backup.XXXXXX") || return 1
    fi
    saved="$BACKUP_DIR/$(printf '%s' "$target" | tr '/' '_')"
    cp -a -- "$target" "$saved" || return 1
    undo_push cp -a -- "$saved" "$target"
  else
    undo_push rm -f -- "$target"
  fi
}

usage() {
  sed -n '2,52p' "$0" | sed 's/^# \{0,1\}//'
}

# ---------------------------------------------------------------- arguments

need_value() {
  [ "$2" -ge 2 ] || die 2 "$1 needs a value (see --help)"
}

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --package) need_value "$1" $#; package=$2; shift 2 ;;
      --prefix) need_value "$1" $#; prefix=$2; shift 2 ;;
      --config-dir) need_value "$1" $#; config_dir=$2; shift 2 ;;
      --state-dir) need_value "$1" $#; state_dir=$2; shift 2 ;;
      --systemd-dir) need_value "$1" $#; systemd_dir=$2; systemd_dir_given=yes; shift 2 ;;
      --bin-dir) need_value "$1" $#; bin_dir=$2; shift 2 ;;
      --receiver) need_value "$1" $#; receiver=$2; shift 2 ;;
      --fingerprint) need_value "$1" $#; fingerprint=$2; shift 2 ;;
      --ca-file) need_value "$1" $#; ca_file=$2; shift 2 ;;
      --passphrase-file) need_value "$1" $#; passphrase_file=$2; shift 2 ;;
      --passphrase|--password) die 2 "$1 is not accepted on the command line: use --passphrase-file FILE or stdin" ;;
      --volume) need_value "$1" $#; volumes+=("$2"); shift 2 ;;
      --name) need_value "$1" $#; agent_name=$2; shift 2 ;;
      --capture) need_value "$1" $#; capture=$2; shift 2 ;;
      --protect-boot) need_value "$1" $#; protect_boot=$2; shift 2 ;;
      --boot-meta) need_value "$1" $#; boot_meta=$2; shift 2 ;;
      --no-register) do_register=no; shift ;;
      --reregister) reregister=yes; shift ;;
      --no-start) do_start=no; shift ;;
      --no-systemctl) use_systemctl=no; shift ;;
      --keep-state) keep_state=yes; shift ;;
      --dry-run) dry_run=yes; shift ;;
      --uninstall) mode=uninstall; shift ;;
      -h|--help) usage; exit 0 ;;
      *) die 2 "unknown option '$1' (see --help)" ;;
    esac
  done
}

absolute_path() {
  case "$2" in
    /*) ;;
    *) die 2 "$1 must be an absolute path (got '$2')" ;;
  esac
  case "$2" in
    *[[:cntrl:]]*|*'"'*|*\\*) die 2 "$1 contains characters that cannot go in a path here" ;;
  esac
  [ "$2" != / ] || die 2 "$1 cannot be /"
}

validate_args() {
  absolute_path --prefix "$prefix"
  absolute_path --config-dir "$config_dir"
  absolute_path --state-dir "$state_dir"
  absolute_path --systemd-dir "$systemd_dir"
  prefix=${prefix%/}
  config_dir=${config_dir%/}
  state_dir=${state_dir%/}
  systemd_dir=${systemd_dir%/}
  if [ -z "$bin_dir" ]; then
    if [ "$prefix" = "$DEFAULT_PREFIX" ]; then bin_dir=/usr/local/bin; else bin_dir=none; fi
  fi
  [ "$bin_dir" = none ] || absolute_path --bin-dir "$bin_dir"
  case "$capture" in
    auto|kernel|ebpf|scan) ;;
    *) die 2 "--capture must be auto, kernel, ebpf or scan (got '$capture')" ;;
  esac
  if [ "$mode" = uninstall ]; then
    if [ -n "$protect_boot" ] || [ -n "$boot_meta" ]; then die 2 "--protect-boot and --boot-meta are install options (--uninstall removes the boot protection on its own)"; fi
    return 0
  fi
  if [ -n "$boot_meta" ] && [ -z "$protect_boot" ]; then die 2 "--boot-meta needs --protect-boot"; fi
  if [ -n "$protect_boot" ]; then
    absolute_path --protect-boot "$protect_boot"
    [ -z "$boot_meta" ] || absolute_path --boot-meta "$boot_meta"
    [ -n "$receiver" ] || die 2 "--protect-boot needs --receiver and --fingerprint (or --ca-file): the config is written with the boot volume"
    [ "$capture" != scan ] || die 2 "--protect-boot puts the disk on dm-ferry at boot: it does not go with --capture scan"
    local spec
    for spec in "${volumes[@]+"${volumes[@]}"}"; do
      [ "${spec%%=*}" != "$BOOT_VOLUME" ] || die 2 "--protect-boot adds the volume '$BOOT_VOLUME': choose another id for --volume $spec"
    done
  fi

  # The receiver, its trust and the volumes are checked by `ferry agent configure` (check_config).
  if [ -z "$receiver" ]; then
    if [ -n "$fingerprint" ] || [ -n "$ca_file" ] || [ "${#volumes[@]}" -gt 0 ]; then
      die 2 "--fingerprint, --ca-file and --volume need --receiver"
    fi
  fi
  if [ -n "$passphrase_file" ]; then
    if [ ! -r "$passphrase_file" ] || [ ! -s "$passphrase_file" ]; then
      die 2 "--passphrase-file $passphrase_file is missing, unreadable or empty"
    fi
  fi
}

# ---------------------------------------------------------------- environment checks

systemd_running() { [ -d /run/systemd/system ]; }

writable_parent() {
  local probe=$1
  while [ ! -e "$probe" ]; do probe=$(dirname "$probe"); done
  [ -w "$probe" ]
}

PKG_SRC=""        # unpacked package folder (from --package, or the one this script is in)
PKG_VERSION=""
UNPACK_DIR=""

locate_package() {
  if [ -n "$package" ]; then
    [ -f "$package" ] || die 3 "--package $package does not exist"
    say "    reading the package $package"
    UNPACK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ferry-install-pkg.XXXXXX") || die 1 "cannot create a temporary folder"
    tar -xzf "$package" -C "$UNPACK_DIR" || die 3 "cannot unpack $package (not a ferry agent package?)"
    local found
    found=$(find "$UNPACK_DIR" -mindepth 2 -maxdepth 2 -name PACKAGE -print -quit)
    [ -n "$found" ] || die 3 "$package is not a ferry agent package (no PACKAGE file)"
    PKG_SRC=$(dirname "$found")
  else
    PKG_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    [ -f "$PKG_SRC/PACKAGE" ] || die 3 "run install.sh from an unpacked agent package, or pass --package FILE (no PACKAGE file in $PKG_SRC)"
  fi
  local f
  for f in bin/ferry runtime/node dist/cli/main.js build/Release/ferry_native.node package.json; do
    [ -e "$PKG_SRC/$f" ] || die 3 "the agent package is incomplete: $f is missing"
  done
  PKG_VERSION=$(sed -n 's/^version=//p' "$PKG_SRC/PACKAGE")
  [ -n "$PKG_VERSION" ] || die 3 "the agent package has no version"
  local pkg_arch
  pkg_arch=$(sed -n 's/^arch=//p' "$PKG_SRC/PACKAGE")
  [ "$pkg_arch" = "$(uname -m)" ] || die 3 "the agent package is for $pkg_arch, this machine is $(uname -m)"
  "$PKG_SRC/runtime/node" -e '' 2>/dev/null || die 3 "the bundled Node runtime does not run on this machine (glibc too old?)"
}

# on_exit: an exit that did not go through die (a bug, set -u) still rolls back and reports.
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$DIED" = no ] && [ "$COMMITTED" = no ]; then
    printf '%s: error: unexpected failure (exit %s)\n' "$SCRIPT_NAME" "$rc" >&2
    rollback
    say "ferry-install: FAILED: unexpected failure (exit $rc)"
  fi
  if [ -n "$UNPACK_DIR" ]; then rm -rf -- "$UNPACK_DIR"; fi
  if [ -n "$BACKUP_DIR" ]; then rm -rf -- "$BACKUP_DIR"; fi
}
trap on_exit EXIT

PASSPHRASE=""
read_passphrase() {
  [ -z "$passphrase_file" ] || return 0
  if [ "$dry_run" = yes ]; then
    say "    [dry-run] would read the registration passphrase from stdin"
    return 0
  fi
  if [ -t 0 ]; then
    printf 'Registration passphrase: ' >&2
    IFS= read -r -s PASSPHRASE || true
    printf '\n' >&2
  else
    # push-install waits for this exact line before it sends the passphrase.
    say "    reading the registration passphrase from stdin"
    IFS= read -r PASSPHRASE || true
  fi
  [ -n "$PASSPHRASE" ] || die 2 "no registration passphrase: give --passphrase-file FILE or pipe it on stdin"
}

# ---------------------------------------------------------------- the config, through ferry

# config_args CA_PATH: the `ferry agent configure` options of this install (CA_PATH: where the
# CA bundle is, or will be, when --ca-file was given instead of --fingerprint).
CONFIG_ARGS=()
config_args() {
  CONFIG_ARGS=(--receiver "$receiver" --state-dir "$state_dir" --capture "$capture")
  if [ -n "$fingerprint" ]; then
    CONFIG_ARGS+=(--fingerprint "$fingerprint")
  elif [ -n "$ca_file" ]; then
    CONFIG_ARGS+=(--ca-file "$1")
  fi
  [ -z "$agent_name" ] || CONFIG_ARGS+=(--name "$agent_name")
  local spec
  for spec in "${volumes[@]+"${volumes[@]}"}"; do CONFIG_ARGS+=(--volume "$spec"); done
  if [ -n "$BOOT_DISK" ]; then CONFIG_ARGS+=(--volume "$BOOT_VOLUME=$BOOT_DISK" --boot-volume "$BOOT_VOLUME"); fi
}

# ferry_configure ARGS...: `ferry agent configure` of the package, which owns the config's
# format and checks. Its stdout lands in CONFIGURE_OUT; a refusal dies with its one line.
CONFIGURE_OUT=""
ferry_configure() {
  local errfile err rc=0
  errfile=$(mktemp "${TMPDIR:-/tmp}/ferry-install-configure.XXXXXX") || die 1 "cannot create a temporary file"
  CONFIGURE_OUT=$("$PKG_SRC/bin/ferry" agent configure "$@" 2>"$errfile") || rc=$?
  err=$(head -n 1 "$errfile")
  rm -f -- "$errfile"
  case "$rc" in
    0) ;;
    2) die 2 "${err#ferry: }" ;;
    *) die 1 "ferry agent configure failed (exit $rc): ${err#ferry: }" ;;
  esac
}

# check_config: bad receiver, trust or volume options fail here, before anything changes.
check_config() {
  [ -n "$receiver" ] || return 0
  config_args "$ca_file"
  ferry_configure --config "$config_dir/agent.yaml" --check "${CONFIG_ARGS[@]}"
}

# ---------------------------------------------------------------- install steps

MANIFEST_OLD=""
MANIFEST_NEW=()

manifest_add() { MANIFEST_NEW+=("$1	$2"); }

step_unpack() {
  step_banner "unpack the agent $PKG_VERSION next to $prefix"
  make_dirs "$(dirname "$prefix")" 0755 || die 1 "cannot create $(dirname "$prefix")"
  STAGE="$prefix.new.$$"
  run rm -rf -- "$STAGE" || die 1 "cannot clear $STAGE"
  [ "$dry_run" = yes ] || undo_push rm -rf -- "$STAGE"
  if [ -n "$UNPACK_DIR" ]; then
    # Our own unpacked copy: move it (a rename when /tmp and the prefix share a filesystem).
    run mv -- "$PKG_SRC" "$STAGE" || die 1 "cannot move the agent to $STAGE (disk full?)"
  else
    run cp -a -- "$PKG_SRC" "$STAGE" || die 1 "cannot copy the agent to $STAGE (disk full?)"
  fi
  [ "$dry_run" = yes ] || PKG_SRC=$STAGE
  if [ "$dry_run" = no ]; then
    "$STAGE/bin/ferry" --version >/dev/null 2>&1 || die 3 "the unpacked agent does not start ($STAGE/bin/ferry --version failed)"
  fi
  after_step unpack
}

KERNEL_MODULE=""       # name/version registered with DKMS by this run
KERNEL_OK=no           # dm-ferry is built and loads (set by step_kernel_module)
DKMS_NAME="" DKMS_VERSION=""
dkms_value() { sed -n "s/^$1=[\"']\{0,1\}\([^\"']*\)[\"']\{0,1\}.*/\1/p" "$2" | head -n 1; }

# kernel_fallback REASON [ADVICE]: fatal with --capture kernel, else a warning and scan capture.
kernel_fallback() {
  if [ "$capture" = kernel ]; then
    die 3 "kernel capture was requested but $1"
  fi
  KERNEL_OK=no
  if [ -n "$protect_boot" ]; then
    warn "$1: the boot disk cannot go on dm-ferry at boot; it is captured with ebpf (or scan) instead.${2:+ $2}"
    say "    kernel capture unavailable: $1; the boot disk stays on ebpf/scan capture"
    return 0
  fi
  warn "$1; falling back to scan capture (periodic block comparison, approximate points).${2:+ $2}"
  say "    kernel capture unavailable: $1; using scan capture"
  capture=scan
}

step_kernel_module() {
  step_banner "kernel capture module (dm-ferry through DKMS)"
  if [ "$capture" = scan ]; then
    say "    scan capture requested: no kernel module"
    after_step kernel-module
    return 0
  fi
  local conf="$PKG_SRC/native/linux/dkms.conf"
  if [ ! -f "$conf" ]; then
    kernel_fallback "this agent package has no kernel module sources (native/linux/dkms.conf)"
    after_step kernel-module
    return 0
  fi
  if ! command -v dkms >/dev/null 2>&1; then
    kernel_fallback "dkms is not installed" "Install dkms and the headers for $(uname -r), then run install.sh again to enable kernel capture."
    after_step kernel-module
    return 0
  fi
  if [ ! -d "/lib/modules/$(uname -r)/build" ]; then
    kernel_fallback "the kernel headers for $(uname -r) are not installed" "Install them (e.g. linux-headers-$(uname -r)), then run install.sh again to enable kernel capture."
    after_step kernel-module
    return 0
  fi
  local name version module src
  name=$(dkms_value PACKAGE_NAME "$conf")
  version=$(dkms_value PACKAGE_VERSION "$conf")
  module=$(dkms_value 'BUILT_MODULE_NAME\[0\]' "$conf")
  [ -n "$module" ] || module=$name
  if [ -z "$name" ] || [ -z "$version" ]; then
    kernel_fallback "native/linux/dkms.conf has no PACKAGE_NAME or PACKAGE_VERSION"
    after_step kernel-module
    return 0
  fi
  src="/usr/src/$name-$version"
  if [ "$dry_run" = yes ]; then
    run cp -a "$PKG_SRC/native/linux" "$src"
    run dkms add -m "$name" -v "$version"
    run dkms build -m "$name" -v "$version"
    run dkms install -m "$name" -v "$version"
    run modprobe "$module"
    KERNEL_OK=yes
    DKMS_NAME=$name
    DKMS_VERSION=$version
    after_step kernel-module
    return 0
  fi
  if dkms status -m "$name" -v "$version" 2>/dev/null | grep -q installed; then
    say "    $name/$version is already installed through DKMS"
  else
    backup "$src" || die 1 "cannot back up $src"
    rm -rf -- "$src"
    if ! run cp -a "$PKG_SRC/native/linux" "$src"; then
      kernel_fallback "cannot copy the module sources to $src"
      after_step kernel-module
      return 0
    fi
    undo_push dkms remove -m "$name" -v "$version" --all
    if ! { run dkms add -m "$name" -v "$version" && run dkms build -m "$name" -v "$version" && run dkms install -m "$name" -v "$version"; }; then
      dkms remove -m "$name" -v "$version" --all >/dev/null 2>&1
      rm -rf -- "$src"
      kernel_fallback "DKMS could not build $name $version for kernel $(uname -r) (see /var/lib/dkms/$name/$version/build/make.log)"
      after_step kernel-module
      return 0
    fi
    KERNEL_MODULE="$name/$version"
  fi
  local err
  if ! err=$(modprobe "$module" 2>&1); then
    local why="the $module module does not load: ${err:-modprobe failed}"
    if [[ $err == *"Key was rejected"* ]] || { command -v mokutil >/dev/null 2>&1 && mokutil --sb-state 2>/dev/null | grep -qi 'enabled'; }; then
      why="Secure Boot refuses the unsigned $module module (enroll a MOK key and sign it, or disable Secure Boot)"
    fi
    if [ -n "$KERNEL_MODULE" ]; then
      dkms remove -m "$name" -v "$version" --all >/dev/null 2>&1
      rm -rf -- "$src"
      KERNEL_MODULE=""
    fi
    kernel_fallback "$why"
    after_step kernel-module
    return 0
  fi
  KERNEL_OK=yes
  DKMS_NAME=$name
  DKMS_VERSION=$version
  if [ -n "$KERNEL_MODULE" ]; then
    manifest_add dkms "$KERNEL_MODULE"
    manifest_add modsrc "$src"
  fi
  local modload=/etc/modules-load.d/ferry.conf
  backup "$modload" || die 1 "cannot back up $modload"
  printf '%s\n' "$module" | write_file "$modload" 0644 || die 1 "cannot write $modload"
  manifest_add file "$modload"
  after_step kernel-module
}

# ---------------------------------------------------------------- boot protection

BOOT_DISK=""           # the disk --protect-boot protects (/dev/vda), set by plan_boot
BOOT_META_KIND="" BOOT_META_PATH="" BOOT_META_BYTES=""
readonly INITRAMFS_TOOLS_DIR=/etc/initramfs-tools
readonly UDEV_RULE=/etc/udev/rules.d/61-ferry-boot.rules

# boot_setup_tool: the package's ferry-boot-setup (before the package is located: the one next to
# this script, which is the package's when install.sh runs from it).
boot_setup_tool() {
  if [ -n "$PKG_SRC" ]; then printf '%s/installer/boot/ferry-boot-setup' "$PKG_SRC"; else printf '%s/boot/ferry-boot-setup' "$(dirname "${BASH_SOURCE[0]}")"; fi
}

# shutdown_dir: where systemd-shutdown looks for hooks (/usr/lib on merged-/usr systems).
shutdown_dir() {
  if [ -L /lib ] || [ -d /usr/lib/systemd/system-shutdown ]; then printf /usr/lib/systemd/system-shutdown; else printf /lib/systemd/system-shutdown; fi
}

dracut_modules_dir() {
  if [ -d /usr/lib/dracut/modules.d ]; then printf /usr/lib/dracut/modules.d; else printf /lib/dracut/modules.d; fi
}

# initramfs_kind: initramfs-tools (Debian, Ubuntu) or dracut (RHEL family), else empty.
initramfs_kind() {
  if command -v update-initramfs >/dev/null 2>&1 && [ -d "$INITRAMFS_TOOLS_DIR" ]; then
    printf initramfs-tools
  elif command -v dracut >/dev/null 2>&1; then
    printf dracut
  fi
}

regenerate_initramfs() {
  case "$1" in
    initramfs-tools) run update-initramfs -u -k all ;;
    dracut) run dracut -f --regenerate-all ;;
    *) return 0 ;;
  esac
}

human_bytes() {
  awk -v b="$1" 'BEGIN { split("B KiB MiB GiB TiB", u, " "); i = 1; while (b >= 1024 && i < 5) { b /= 1024; i++ } if (i == 1) printf "%d %s", b, u[i]; else printf "%.1f %s", b, u[i] }'
}

# plan_boot: checks --protect-boot before anything changes and says what will be protected.
plan_boot() {
  [ -n "$protect_boot" ] || return 0
  local tool out rc=0 errfile
  tool=$(boot_setup_tool)
  [ -x "$tool" ] || die 3 "this agent package has no boot protection (installer/boot/ferry-boot-setup is missing)"
  errfile=$(mktemp "${TMPDIR:-/tmp}/ferry-install-boot.XXXXXX") || die 1 "cannot create a temporary file"
  local args=(plan "$protect_boot" --root "${FERRY_INSTALL_BOOT_ROOT:-/}")
  [ -z "$boot_meta" ] || args+=(--boot-meta "$boot_meta")
  out=$("$tool" "${args[@]}" 2>"$errfile") || rc=$?
  local err
  err=$(head -n 1 "$errfile")
  rm -f -- "$errfile"
  case "$rc" in
    0) ;;
    2|3) die "$rc" "--protect-boot: ${err#ferry-boot-setup: error: }" ;;
    *) die 1 "--protect-boot: ${err#ferry-boot-setup: error: }" ;;
  esac
  local disk_bytes root
  BOOT_DISK=$(sed -n 's/^DISK=//p' <<< "$out")
  disk_bytes=$(sed -n 's/^DISK_BYTES=//p' <<< "$out")
  root=$(sed -n 's/^ROOT=//p' <<< "$out")
  BOOT_META_KIND=$(sed -n 's/^META_KIND=//p' <<< "$out")
  BOOT_META_PATH=$(sed -n 's/^META_PATH=//p' <<< "$out")
  BOOT_META_BYTES=$(sed -n 's/^META_BYTES=//p' <<< "$out")
  say "    boot disk: the whole disk $BOOT_DISK ($(human_bytes "$disk_bytes")) is protected as volume '$BOOT_VOLUME' (the root file system is on $root)"
  if [ "$BOOT_META_KIND" = file ]; then
    say "    dm-ferry metadata: the file $BOOT_META_PATH ($(human_bytes "$BOOT_META_BYTES"), preallocated, immutable) on that disk (no --boot-meta partition given)"
  else
    say "    dm-ferry metadata: the spare partition $BOOT_META_PATH (--boot-meta; $(human_bytes "$BOOT_META_BYTES") used)"
  fi
}

# install_boot_file SRC DEST MODE: a boot file with @PREFIX@ and @BOOT_CONF@ filled in.
install_boot_file() {
  local src=$1 dest=$2 mode=$3
  make_dirs "$(dirname "$dest")" 0755 || die 1 "cannot create $(dirname "$dest")"
  backup "$dest" || die 1 "cannot back up $dest"
  sed -e "s|@PREFIX@|$prefix|g" -e "s|@BOOT_CONF@|$config_dir/boot.conf|g" "$src" | write_file "$dest" "$mode" || die 1 "cannot write $dest"
  manifest_add file "$dest"
}

step_boot() {
  [ -n "$protect_boot" ] || return 0
  step_banner "boot protection of $BOOT_DISK (dm-ferry from the next boot)"
  if [ "$KERNEL_OK" = no ] && [ "$dry_run" = no ]; then
    warn "the dm-ferry module is not available, so the initramfs is not changed: $BOOT_DISK is captured with ebpf (or scan) and the agent reports capture-degraded. Fix the module (see above) and run install.sh again."
    after_step boot
    return 0
  fi
  local kind boot_src="$PKG_SRC/installer/boot" conf="$config_dir/boot.conf"
  kind=$(initramfs_kind)
  if [ -z "$kind" ]; then
    if [ "$dry_run" = yes ]; then kind=initramfs-tools; say "    [dry-run] no update-initramfs or dracut here; showing the initramfs-tools steps"
    else die 3 "--protect-boot needs initramfs-tools (update-initramfs) or dracut to put dm-ferry into the initramfs"; fi
  fi
  # Later kernels: DKMS (AUTOINSTALL) builds dm-ferry from /etc/kernel/postinst.d before the
  # initramfs is made. Kernels installed already get it now.
  if [ -n "$DKMS_NAME" ]; then
    local k
    for k in /lib/modules/*; do
      k=${k##*/}
      if [ "$k" = "$(uname -r)" ] || [ ! -d "/lib/modules/$k/build" ]; then continue; fi
      run dkms install -m "$DKMS_NAME" -v "$DKMS_VERSION" -k "$k" || warn "DKMS could not build dm-ferry for kernel $k: that kernel boots the disk unprotected"
    done
  fi
  # Regenerated on rollback and at uninstall after the files are gone (so it runs last).
  [ "$dry_run" = yes ] || undo_push regenerate_initramfs "$kind"
  manifest_add initramfs "$kind"
  if [ "$kind" = initramfs-tools ]; then
    install_boot_file "$boot_src/initramfs-tools/hooks/ferry" "$INITRAMFS_TOOLS_DIR/hooks/ferry" 0755
    install_boot_file "$boot_src/initramfs-tools/scripts/local-top/ferry" "$INITRAMFS_TOOLS_DIR/scripts/local-top/ferry" 0755
  else
    local mdir
    mdir="$(dracut_modules_dir)/90ferry"
    install_boot_file "$boot_src/dracut/90ferry/module-setup.sh" "$mdir/module-setup.sh" 0755
    install_boot_file "$boot_src/dracut/90ferry/ferry-boot.sh" "$mdir/ferry-boot.sh" 0755
    install_boot_file "$boot_src/ferry-boot-lib.sh" "$mdir/ferry-boot-lib.sh" 0644
  fi
  install_boot_file "$boot_src/systemd-shutdown/ferry-boot.shutdown" "$(shutdown_dir)/ferry-boot.shutdown" 0755
  install_boot_file "$boot_src/udev/61-ferry-boot.rules" "$UDEV_RULE" 0644
  # The metadata region and the boot config (last: the initramfs hook needs it).
  local args=(create "$protect_boot" --conf "$conf" --root "${FERRY_INSTALL_BOOT_ROOT:-/}")
  [ -z "$boot_meta" ] || args+=(--boot-meta "$boot_meta")
  if [ "$dry_run" = yes ]; then
    run "$(boot_setup_tool)" "${args[@]}"
  elif [ -e "$conf" ]; then
    say "    $conf exists: the boot disk is protected already; keeping its metadata (install.sh --uninstall first to set it up anew)"
  else
    say "    + $(quote_cmd "$(boot_setup_tool)" "${args[@]}")"
    local out rc=0
    out=$("$(boot_setup_tool)" "${args[@]}" 2>&1) || rc=$?
    [ "$rc" -eq 0 ] || die 3 "cannot set up the dm-ferry metadata: ${out#ferry-boot-setup: error: }"
    undo_push "$prefix/installer/boot/ferry-boot-setup" remove --conf "$conf"
    printf '%s\n' "$out" | sed 's/^/    | /'
  fi
  manifest_add bootconf "$conf"
  regenerate_initramfs "$kind" || die 1 "regenerating the initramfs failed (see the output above)"
  say "    from the next boot the initramfs puts $BOOT_DISK on dm-ferry (/dev/mapper/ferry-boot); until then it is captured with ebpf (or scan)"
  after_step boot
}

PREV_PREFIX=""
step_files() {
  step_banner "install the agent into $prefix"
  if [ -e "$prefix" ]; then
    [ -f "$prefix/PACKAGE" ] || die 3 "$prefix exists and is not a ferry agent install; choose another --prefix"
    PREV_PREFIX="$prefix.old.$$"
    run mv -- "$prefix" "$PREV_PREFIX" || die 1 "cannot move the previous install aside"
    [ "$dry_run" = yes ] || undo_push mv -- "$PREV_PREFIX" "$prefix"
  fi
  run mv -- "$STAGE" "$prefix" || die 1 "cannot move the agent into $prefix"
  if [ "$dry_run" = no ]; then
    undo_push mv -- "$prefix" "$STAGE"
    PKG_SRC=$prefix
  fi
  if [ "$bin_dir" != none ]; then
    make_dirs "$bin_dir" 0755 || die 1 "cannot create $bin_dir"
    if [ -e "$bin_dir/ferry" ] && [ ! -L "$bin_dir/ferry" ]; then
      die 3 "$bin_dir/ferry exists and is not a link; pass --bin-dir none or remove it"
    fi
    backup "$bin_dir/ferry" || die 1 "cannot back up $bin_dir/ferry"
    run ln -sfn -- "$prefix/bin/ferry" "$bin_dir/ferry" || die 1 "cannot link $bin_dir/ferry"
    manifest_add link "$bin_dir/ferry"
  fi
  after_step files
}

CONFIG_FILE=""
CONFIG_CACHE=""
# write_config: `ferry agent configure` (from the package) writes the config atomically, 0640.
write_config() {
  config_args "$config_dir/receiver-ca.pem"
  if [ "$dry_run" = yes ]; then
    ferry_configure --config "$CONFIG_FILE" --check "${CONFIG_ARGS[@]}"
    say "    [dry-run] write $CONFIG_FILE (mode 0640):"
    printf '%s\n' "$CONFIGURE_OUT" | sed 's/^/        | /'
    return 0
  fi
  say "    + $(quote_cmd ferry agent configure --config "$CONFIG_FILE" "${CONFIG_ARGS[@]}")"
  ferry_configure --config "$CONFIG_FILE" "${CONFIG_ARGS[@]}"
  printf '%s\n' "$CONFIGURE_OUT" | sed 's/^/    | /'
}

step_config() {
  step_banner "configuration in $config_dir, state in $state_dir"
  CONFIG_FILE="$config_dir/agent.yaml"
  # Its parsed form, which `ferry agent configure` writes beside it (agent/config-cache.ts).
  CONFIG_CACHE="$config_dir/.agent.yaml.cache.json"
  make_dirs "$config_dir" 0755 || die 1 "cannot create $config_dir"
  if [ -n "$receiver" ]; then
    if [ -n "$ca_file" ]; then
      backup "$config_dir/receiver-ca.pem" || die 1 "cannot back up the CA file"
      write_file "$config_dir/receiver-ca.pem" 0644 < "$ca_file" || die 1 "cannot copy $ca_file"
      manifest_add file "$config_dir/receiver-ca.pem"
    fi
    backup "$CONFIG_FILE" || die 1 "cannot back up $CONFIG_FILE"
    backup "$CONFIG_CACHE" || die 1 "cannot back up $CONFIG_CACHE"
    write_config
  elif [ -f "$CONFIG_FILE" ]; then
    say "    keeping the existing $CONFIG_FILE (pass --receiver to rewrite it)"
  fi
  manifest_add file "$CONFIG_FILE"
  manifest_add file "$CONFIG_CACHE"
  make_dirs "$state_dir" 0700 || die 1 "cannot create $state_dir"
  run chmod 0700 "$state_dir" || die 1 "cannot restrict $state_dir"
  after_step config
}

# Registration marker: install.sh's own record that this state folder is registered with a
# receiver URL, so a re-run (upgrade) never registers a second identity by accident.
registered_marker() { printf '%s/.installer-registered' "$state_dir"; }

# registration_needed: yes unless --no-register, or this state folder is already registered
# (with the same receiver, when --receiver is given) and --reregister was not passed.
registration_needed() {
  [ "$do_register" = yes ] || return 1
  [ "$reregister" = no ] || return 0
  local marker
  marker=$(registered_marker)
  [ -f "$marker" ] || return 0
  [ -n "$receiver" ] || return 1
  [ "$(cat "$marker")" != "$receiver" ]
}

step_register() {
  step_banner "register with the receiver"
  if [ "$do_register" = no ]; then
    say "    skipped (--no-register); later run: $prefix/bin/ferry agent register --config $CONFIG_FILE"
    after_step register
    return 0
  fi
  if ! registration_needed; then
    say "    already registered with $(cat "$(registered_marker)") (pass --reregister to register again)"
    after_step register
    return 0
  fi
  local url=$receiver
  if [ -z "$url" ] && [ "$dry_run" = no ]; then
    url=$("$prefix/bin/ferry" agent show-config --config "$CONFIG_FILE" --field receiver.url 2>/dev/null)
  fi
  if [ "$dry_run" = yes ]; then
    say "    [dry-run] $prefix/bin/ferry agent register --config $CONFIG_FILE (passphrase on stdin)"
    after_step register
    return 0
  fi
  # Files the agent adds to the state folder (its credential) go again on rollback.
  local before
  before=$(ls -A "$state_dir")
  undo_push remove_new_entries "$state_dir" "$before"
  local rc=0
  say "    + $prefix/bin/ferry agent register --config $CONFIG_FILE"
  if [ -n "$passphrase_file" ]; then
    "$prefix/bin/ferry" agent register --config "$CONFIG_FILE" --passphrase-file "$passphrase_file" 2>&1 | sed 's/^/    | /'
    rc=${PIPESTATUS[0]}
  else
    printf '%s\n' "$PASSPHRASE" | "$prefix/bin/ferry" agent register --config "$CONFIG_FILE" 2>&1 | sed 's/^/    | /'
    rc=${PIPESTATUS[1]}
  fi
  case "$rc" in
    0) ;;
    5) die 5 "registration refused: the receiver did not accept the passphrase" ;;
    6) die 6 "registration failed: the receiver at $url is unreachable or its certificate does not match" ;;
    2) die 2 "registration failed: the agent rejected the configuration in $CONFIG_FILE" ;;
    *) die 1 "registration failed (ferry agent register exited $rc)" ;;
  esac
  local marker
  marker=$(registered_marker)
  printf '%s\n' "$url" > "$marker" && chmod 0600 "$marker"
  after_step register
}

remove_new_entries() {
  local dir=$1 before=$2 entry
  [ -d "$dir" ] || return 0
  while IFS= read -r entry; do
    [ -n "$entry" ] || continue
    grep -qxF -- "$entry" <<< "$before" || rm -rf -- "${dir:?}/$entry"
  done < <(ls -A "$dir")
}

step_service() {
  step_banner "service"
  local unit="$systemd_dir/$SERVICE.service" can_systemctl=no
  if systemd_running && [ "$use_systemctl" = yes ] && command -v systemctl >/dev/null 2>&1; then
    can_systemctl=yes
  fi
  if ! systemd_running && [ "$systemd_dir_given" = no ]; then
    say "    systemd is not running (PID 1 is $(ps -p 1 -o comm= 2>/dev/null || echo unknown)); no unit installed."
    say "    Run the agent under your init system or supervisor as root:"
    say "        $prefix/bin/ferry agent run --config $CONFIG_FILE"
    after_step service
    return 0
  fi
  make_dirs "$systemd_dir" 0755 || die 1 "cannot create $systemd_dir"
  if [ "$can_systemctl" = yes ] && [ -f "$unit" ]; then
    # An upgrade: put the running service back as it was if this run fails.
    if systemctl is-active --quiet "$SERVICE"; then undo_push systemctl restart "$SERVICE"; fi
  fi
  backup "$unit" || die 1 "cannot back up $unit"
  sed -e "s|@PREFIX@|$prefix|g" -e "s|@CONFIG@|$CONFIG_FILE|g" -e "s|@STATE_DIR@|$state_dir|g" \
    "$PKG_SRC/installer/ferry-agent.service.in" | write_file "$unit" 0644 || die 1 "cannot write $unit"
  manifest_add unit "$unit"
  if [ "$can_systemctl" = no ]; then
    say "    unit written; systemctl not used (--no-systemctl or systemd not running). To start it:"
    say "        systemctl daemon-reload && systemctl enable --now $SERVICE"
    after_step service
    return 0
  fi
  run systemctl daemon-reload || die 1 "systemctl daemon-reload failed"
  [ "$dry_run" = yes ] || undo_push systemctl daemon-reload
  run systemctl enable "$SERVICE" || die 1 "cannot enable $SERVICE"
  [ "$dry_run" = yes ] || undo_push systemctl disable --now "$SERVICE"
  if [ "$do_start" = yes ]; then
    run systemctl restart "$SERVICE" || die 1 "$SERVICE did not start: see journalctl -u $SERVICE"
    if [ "$dry_run" = no ] && ! systemctl is-active --quiet "$SERVICE"; then
      die 1 "$SERVICE is not running after start: see journalctl -u $SERVICE"
    fi
  else
    say "    not started (--no-start): systemctl start $SERVICE"
  fi
  after_step service
}

step_commit() {
  step_banner "finish"
  if [ "$dry_run" = yes ]; then
    say "    [dry-run] write $prefix/installer/install-manifest"
    return 0
  fi
  local entry
  {
    [ -z "$MANIFEST_OLD" ] || printf '%s\n' "$MANIFEST_OLD"
    for entry in "${CREATED_DIRS[@]+"${CREATED_DIRS[@]}"}"; do printf 'dir\t%s\n' "$entry"; done
    for entry in "${MANIFEST_NEW[@]+"${MANIFEST_NEW[@]}"}"; do printf '%s\n' "$entry"; done
  } | awk '!seen[$0]++' > "$prefix/installer/install-manifest"
  # Point of no return: from here a failure no longer rolls back.
  COMMITTED=yes
  if [ -n "$PREV_PREFIX" ]; then rm -rf -- "$PREV_PREFIX"; fi
}

do_install() {
  step_banner "Ferry agent install$([ "$dry_run" = yes ] && printf ' (dry run: nothing is changed)')"
  say "    prefix $prefix, config $config_dir, state $state_dir, capture $capture"
  plan_boot
  locate_package
  for dir in "$prefix" "$config_dir" "$state_dir"; do
    writable_parent "$dir" || die 3 "cannot write $dir: run install.sh as root (sudo)"
  done
  if [ -f "$prefix/installer/install-manifest" ]; then
    MANIFEST_OLD=$(cat "$prefix/installer/install-manifest")
  fi
  if [ -z "$receiver" ] && [ ! -f "$config_dir/agent.yaml" ] && [ "$dry_run" = no ]; then
    die 2 "--receiver, --fingerprint (or --ca-file) and --volume are required for a first install ($config_dir/agent.yaml does not exist)"
  fi
  check_config
  if registration_needed; then read_passphrase; fi
  step_unpack
  step_kernel_module
  step_files
  step_config
  step_boot
  step_register
  step_service
  step_commit
  if [ "$dry_run" = yes ]; then
    say "ferry-install: OK (dry run, nothing changed)"
  else
    say "ferry-install: OK agent $PKG_VERSION in $prefix, capture $capture, config $CONFIG_FILE"
  fi
}

# ---------------------------------------------------------------- uninstall

do_uninstall() {
  step_banner "Ferry agent uninstall$([ "$dry_run" = yes ] && printf ' (dry run: nothing is changed)')"
  local manifest="$prefix/installer/install-manifest"
  if [ ! -f "$manifest" ]; then
    if [ ! -e "$prefix" ]; then
      say "ferry-install: OK nothing installed in $prefix"
      return 0
    fi
    die 3 "$prefix has no install manifest: it was not installed by install.sh"
  fi
  writable_parent "$prefix" || die 3 "cannot write $prefix: run install.sh as root (sudo)"
  # Nothing to undo in an uninstall: past this point each step is final.
  COMMITTED=yes
  local kind path lines=()
  mapfile -t lines < "$manifest"
  local i
  # DKMS first: `dkms remove` needs the module sources that a later entry removes.
  for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
    path=${lines[i]#*$'\t'}
    if [ "${lines[i]%%$'\t'*}" = dkms ]; then
      run dkms remove -m "${path%/*}" -v "${path#*/}" --all || warn "dkms remove ${path} failed"
    fi
  done
  for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
    kind=${lines[i]%%$'\t'*}
    path=${lines[i]#*$'\t'}
    case "$kind" in
      unit)
        if systemd_running && [ "$use_systemctl" = yes ] && command -v systemctl >/dev/null 2>&1; then
          run systemctl disable --now "$SERVICE" || warn "could not stop $SERVICE"
        fi
        run rm -f -- "$path"
        if systemd_running && [ "$use_systemctl" = yes ] && command -v systemctl >/dev/null 2>&1; then
          run systemctl daemon-reload || true
        fi
        ;;
      dkms) ;; # removed above
      modsrc) run rm -rf -- "$path" ;;
      bootconf) uninstall_boot_conf "$path" ;;
      initramfs) regenerate_initramfs "$path" || warn "regenerating the initramfs failed: run it again ($path)" ;;
      link)
        if [ -L "$path" ] && [ "$(readlink "$path")" = "$prefix/bin/ferry" ]; then run rm -f -- "$path"; fi
        ;;
      file)
        if [ "$keep_state" = no ] || [[ $path != "$config_dir"/* ]]; then run rm -f -- "$path"; fi
        ;;
      dir)
        keeps_state "$path" && continue
        [ "$path" = "$prefix" ] || [[ $prefix == "$path"/* ]] && continue
        run rm -rf -- "$path"
        ;;
    esac
  done
  if [ "$keep_state" = no ] && [ -d "$state_dir" ]; then
    # The state folder holds the agent credential: it goes with the agent unless --keep-state.
    run rm -rf -- "$state_dir/.installer-registered"
    remove_state_contents
  fi
  run rm -rf -- "$prefix"
  # Parents of the prefix that the install created (e.g. a scratch root) go last.
  for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
    kind=${lines[i]%%$'\t'*}
    path=${lines[i]#*$'\t'}
    if [ "$kind" = dir ] && [[ $prefix == "$path"/* ]] && ! keeps_state "$path"; then run rm -rf -- "$path"; fi
  done
  say "ferry-install: OK uninstalled from $prefix$([ "$keep_state" = yes ] && printf ' (config and state kept)')"
}

# uninstall_boot_conf CONF: the metadata region and the boot config. While the root runs on
# dm-ferry (until the reboot), the metadata file stays (dm-ferry still writes it) and a one-shot
# unit removes it at the next boot, when nothing uses it.
uninstall_boot_conf() {
  local conf=$1 tool="$prefix/installer/boot/ferry-boot-setup" meta kind
  [ -f "$conf" ] || return 0
  meta=$(sed -n 's/^FERRY_BOOT_META_PATH=//p' "$conf")
  kind=$(sed -n 's/^FERRY_BOOT_META_KIND=//p' "$conf")
  if [ "$kind" = file ] && command -v dmsetup >/dev/null 2>&1 && dmsetup info ferry-boot >/dev/null 2>&1; then
    local unit="$systemd_dir/ferry-boot-cleanup.service"
    say "    the root still runs on dm-ferry until the reboot: $meta is removed at the next boot ($unit)"
    printf '%s\n' "[Unit]" "Description=Remove Ferry's boot protection metadata (left by install.sh --uninstall)" \
      "ConditionPathExists=!/dev/mapper/ferry-boot" "" "[Service]" "Type=oneshot" \
      "ExecStart=/bin/sh -c 'chattr -i $meta; rm -f $meta; rmdir $(dirname "$meta") 2>/dev/null; rm -f $systemd_dir/multi-user.target.wants/ferry-boot-cleanup.service $unit'" \
      "" "[Install]" "WantedBy=multi-user.target" | write_file "$unit" 0644
    run mkdir -p "$systemd_dir/multi-user.target.wants"
    run ln -sfn "$unit" "$systemd_dir/multi-user.target.wants/ferry-boot-cleanup.service"
    run rm -f -- "$conf"
    return 0
  fi
  run "$tool" remove --conf "$conf" || warn "could not remove the boot protection metadata of $conf"
}

# keeps_state DIR: with --keep-state, DIR is (or holds) the config or state folder.
keeps_state() {
  [ "$keep_state" = yes ] || return 1
  [ "$1" = "$config_dir" ] || [ "$1" = "$state_dir" ] || [[ $config_dir == "$1"/* ]] || [[ $state_dir == "$1"/* ]]
}

remove_state_contents() {
  local entry
  while IFS= read -r entry; do
    [ -n "$entry" ] || continue
    run rm -rf -- "${state_dir:?}/$entry"
  done < <(ls -A "$state_dir")
}

main() {
  parse_args "$@"
  validate_args
  if [ "$mode" = uninstall ]; then do_uninstall; else do_install; fi
}

main "$@"
