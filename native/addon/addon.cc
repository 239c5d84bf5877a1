#include <napi.h>

#include "control.h"
#include "register.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  ferry::RegisterFileOps(env, exports);
  ferry::RegisterFlock(env, exports);
  ferry::RegisterDevice(env, exports);
  ferry::RegisterFsFreeze(env, exports);
  ferry::RegisterDirectRead(env, exports);
  ferry::RegisterMallocTune(env, exports);
  ferry::RegisterControl(env, exports);
  return exports;
}

NODE_API_MODULE(ferry_native, Init)
