// What the Linux (control.cc) and Windows (win/control_win.cc) backends of
// the ctl* functions share: the ABI structs of native/common/ferry_abi.h
// filled in as arguments and turned into JS results, so that FerryControl
// (index.ts) sees the same shapes on both.
#pragma once

#include <napi.h>

#include <cstdint>
#include <cstring>

#include "ferry_abi.h"

namespace ferry {

// Zeroes an argument struct and stamps its size and the ABI version.
template <typename T>
void InitArg(T* arg) {
  std::memset(arg, 0, sizeof(*arg));
  arg->size = sizeof(T);
  arg->version = FERRY_ABI_VERSION;
}

// A 64-bit counter as a JS number (exact up to 2^53).
inline double Num(uint64_t v) { return static_cast<double>(v); }

// Reads the devices (info[first]), holdMs (info[first + 1]), tagId
// (info[first + 2]) and the optional holdId (info[first + 3]) of ctlTag into
// `arg`. With a holdId the devices are those of the hold: the array must be
// empty and holdMs 0. On bad input leaves a pending JS exception and returns
// false.
bool ReadTagArgs(const Napi::CallbackInfo& info, size_t first,
                 ferry_ioc_tag* arg);
// Reads the devices (info[first]) and holdMs (info[first + 1]) of ctlHold.
bool ReadHoldArgs(const Napi::CallbackInfo& info, size_t first,
                  ferry_ioc_hold* arg);

Napi::Object VersionObject(Napi::Env env, const ferry_ioc_version& v);
Napi::Object DevInfoObject(Napi::Env env, const ferry_dev_info& d);
Napi::Object GetChangesObject(Napi::Env env, const ferry_ioc_get& g);
Napi::Object TagObject(Napi::Env env, const ferry_ioc_tag& t);
Napi::Object HoldObject(Napi::Env env, const ferry_ioc_hold& h);
Napi::Object ReleaseObject(Napi::Env env, const ferry_ioc_release& r);
Napi::Object StatsObject(Napi::Env env, const ferry_ioc_stats& s);
Napi::Object BitmapObject(Napi::Env env, const ferry_ioc_bitmap& b);

}  // namespace ferry
