// A failure of the write tracker's loader or handle, before it becomes a JS
// error (addon_bpf.cc): an errno, the failing call, a reason a program can
// branch on, and a message an operator can act on.
#pragma once

#include <string>

namespace ferry_bpf {

struct TraceError {
  int err = 0;           // positive errno (0: none applies)
  std::string syscall;   // the failing call, or empty
  // 'no-btf', 'permission', 'bpffs', 'object', 'load', 'attach', 'pinned',
  // 'slots', 'bitmap-room', 'geometry', 'not-tracked', 'closed', 'system'
  std::string reason;
  std::string message;
};

// Fills *out and returns false, so that callers can `return Fail(...)`.
inline bool Fail(TraceError* out, int err, const char* syscall,
                 const char* reason, std::string message) {
  out->err = err;
  out->syscall = syscall != nullptr ? syscall : "";
  out->reason = reason;
  out->message = std::move(message);
  return false;
}

}  // namespace ferry_bpf
