// Linux-only functions of the addon, present on Windows so that calling
// one fails with a clear error ('ENOSYS') instead of "not a function".
// They serve the receiver (hole punching, reflinks, file locks) and the
// Linux freeze path; on Windows the agent takes application-consistent
// tags through VSS (vss_win.cc) instead of freezeFs/thawFs.
#include <string>

#include "errors.h"
#include "register_win.h"

namespace ferry {

namespace {

const char* const kNames[] = {
    "punchHole", "seekData", "seekHole", "cloneFile", "allocate", "dropCache", "flock", "freezeFs", "thawFs",
};

Napi::Value Unsupported(const Napi::CallbackInfo& info) {
  const char* name = static_cast<const char*>(info.Data());
  CodeError(info.Env(), "ENOSYS", 38, std::string(name) + " is not available on Windows")
      .ThrowAsJavaScriptException();
  return info.Env().Undefined();
}

}  // namespace

void RegisterUnsupportedWin(Napi::Env env, Napi::Object exports) {
  for (const char* name : kNames)
    exports.Set(name, Napi::Function::New(env, Unsupported, name,
                                          const_cast<char*>(name)));
}

}  // namespace ferry
