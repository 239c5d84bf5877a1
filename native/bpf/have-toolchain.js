// Prints 1 when this machine can build the ferry_bpf addon (Linux, clang, libbpf's,
// libelf's and zlib's headers), else 0 with the reason on stderr: binding.gyp then skips
// ferry_bpf and ferry_native still builds. FERRY_BPF_REQUIRED=1 (CI) makes a missing piece
// fail the build instead.
'use strict';
const fs = require('node:fs');
const { execFileSync } = require('node:child_process');

function hasCommand(cmd) {
  try {
    execFileSync(cmd, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const missing = [];
if (process.platform !== 'linux') {
  missing.push('(not Linux)');
} else {
  if (!hasCommand('clang')) missing.push('clang');
  if (!fs.existsSync('/usr/include/bpf/libbpf.h')) missing.push('libbpf-dev');
  if (!fs.existsSync('/usr/include/gelf.h')) missing.push('libelf-dev');
  if (!fs.existsSync('/usr/include/zlib.h')) missing.push('zlib1g-dev');
}
if (missing.length === 0) {
  process.stdout.write('1\n');
} else {
  process.stderr.write(`ferry_bpf (eBPF write tracker) is not built: missing ${missing.join(' ')}\n`);
  if (process.env.FERRY_BPF_REQUIRED === '1') process.exit(1);
  process.stdout.write('0\n');
}
