// The addon's errno-shaped errors, the same on Linux and Windows; the errno
// names and texts come from errno_posix.cc or win/errors_win.cc.
#include "errors.h"

namespace ferry {

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall,
                       const std::string& label) {
  Napi::Error error =
      Napi::Error::New(env, label + " failed: " + ErrnoDescription(err));
  error.Set("code", ErrnoName(err));
  error.Set("errno", static_cast<double>(err));
  error.Set("syscall", syscall);
  return error;
}

Napi::Error CodeError(Napi::Env env, const char* code, int err,
                      const std::string& message) {
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", code);
  error.Set("errno", static_cast<double>(err));
  return error;
}

void ThrowErrno(Napi::Env env, int err, const char* syscall,
                const std::string& label) {
  ErrnoError(env, err, syscall, label).ThrowAsJavaScriptException();
}

void ThrowTypeError(Napi::Env env, const std::string& message,
                    const char* code) {
  Napi::TypeError error = Napi::TypeError::New(env, message);
  error.Set("code", code);
  error.ThrowAsJavaScriptException();
}

void ThrowRangeError(Napi::Env env, const std::string& message) {
  Napi::RangeError error = Napi::RangeError::New(env, message);
  error.Set("code", "ERR_OUT_OF_RANGE");
  error.ThrowAsJavaScriptException();
}

}  // namespace ferry
