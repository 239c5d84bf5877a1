# shellcheck shell=bash
# Sourced by the steps of test/vm/server-protect.test.ts inside the Debian server (bash, root,
# cwd = the read-only step disk). FERRY-FACT lines are read by the test on the host.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
readonly STEP_DIR=$PWD

fact() { printf 'FERRY-FACT %s=%s\n' "$1" "$2"; }

# wait_protected TIMEOUT_S: until the agent runs and every volume is protected with no resync
# running; prints each status change and the final status (what `ferry agent status --json`
# shows) as the fact `status`.
wait_protected() { /opt/ferry/runtime/node "$STEP_DIR/status.js" wait-protected "$1"; }

# marker NAME: a marker file in /var/lib/ferry-markers, durable when this returns.
marker() {
  mkdir -p /var/lib/ferry-markers
  echo "$1" > "/var/lib/ferry-markers/$1"
  sync
}

# tag: a crash-consistent point now; the fact `points` holds its id(s).
tag() { /opt/ferry/runtime/node "$STEP_DIR/status.js" tag; }

# show CMD...: runs a command, its output prefixed with `$ CMD`.
show() {
  echo "\$ $*"
  "$@"
}
