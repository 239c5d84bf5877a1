// The Windows build's source files, each adding its functions to the
// module's exports (addon_win.cc calls them).
#pragma once

#include <napi.h>

namespace ferry {

void RegisterControlWin(Napi::Env env, Napi::Object exports);  // control_win.cc
void RegisterDeviceWin(Napi::Env env, Napi::Object exports);   // device_win.cc
void RegisterVssWin(Napi::Env env, Napi::Object exports);      // vss_win.cc
void RegisterUnsupportedWin(Napi::Env env, Napi::Object exports);  // unsupported_win.cc

}  // namespace ferry
