// Control-device wrappers for dm-ferry's /dev/ferry-ctl (control.cc).
#pragma once

#include <napi.h>

namespace ferry {

void RegisterControl(Napi::Env env, Napi::Object exports);

}  // namespace ferry
