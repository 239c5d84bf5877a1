// Building and throwing JS errors shaped like Node's own system errors.
#pragma once

#include <napi.h>

#include <string>

namespace ferry {

// Error with .code = errno name (e.g. 'EBADF'), .errno = positive errno value,
// .syscall = syscall, and message "<label> failed: <strerror>".
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall,
                       const std::string& label);

// Error with a given .code (and .errno when the code names an errno) but no
// failing syscall, e.g. a file type the operation does not support.
Napi::Error CodeError(Napi::Env env, const char* code, int err,
                      const std::string& message);

// The errno's name ('EBADF', or 'UNKNOWN') and text ("Bad file descriptor",
// or "Unknown error"): errno_posix.cc on Linux, win/errors_win.cc on Windows
// (Linux's names and numbers there too).
const char* ErrnoName(int err);
const char* ErrnoDescription(int err);

void ThrowErrno(Napi::Env env, int err, const char* syscall,
                const std::string& label);
void ThrowTypeError(Napi::Env env, const std::string& message,
                    const char* code = "ERR_INVALID_ARG_TYPE");
void ThrowRangeError(Napi::Env env, const std::string& message);

}  // namespace ferry
