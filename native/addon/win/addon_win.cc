// The addon's entry point on Windows (binding.gyp builds this instead of
// addon.cc there).  It exports the same names as the Linux build; the
// Linux-only file operations throw ENOSYS (unsupported_win.cc).
#include <napi.h>

#include "register_win.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  ferry::RegisterUnsupportedWin(env, exports);
  ferry::RegisterDeviceWin(env, exports);
  ferry::RegisterControlWin(env, exports);
  ferry::RegisterVssWin(env, exports);
  exports.Set("platform", Napi::String::New(env, "win32"));
  return exports;
}

NODE_API_MODULE(ferry_native, Init)
