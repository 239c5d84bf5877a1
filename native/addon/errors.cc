#include "errors.h"

#include <string.h>

namespace ferry {

namespace {

const char* ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  return name != nullptr ? name : "UNKNOWN";
}

const char* ErrnoDescription(int err) {
  // strerrordesc_np is thread-safe, unlike strerror.
  const char* desc = strerrordesc_np(err);
  return desc != nullptr ? desc : "Unknown error";
}

}  // namespace

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
