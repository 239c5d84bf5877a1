// Each source file adds its functions to the module's exports.
#pragma once

#include <napi.h>

namespace ferry {

void RegisterFileOps(Napi::Env env, Napi::Object exports);
void RegisterFlock(Napi::Env env, Napi::Object exports);
void RegisterDevice(Napi::Env env, Napi::Object exports);
void RegisterFsFreeze(Napi::Env env, Napi::Object exports);
void RegisterDirectRead(Napi::Env env, Napi::Object exports);
void RegisterMallocTune(Napi::Env env, Napi::Object exports);

}  // namespace ferry
