// pinMmapThreshold: fixes glibc's mmap threshold for the process; pinTrimThreshold: how much
// free memory at the top of the heap glibc keeps instead of returning it to the OS.
//
// glibc serves allocations at or above the mmap threshold with mmap and returns them to the OS
// when freed, but each time such a block is freed it raises the threshold to that size (up to
// 32 MiB). A process that churns multi-megabyte buffers (the agent's change-set frames) then
// serves everything below that size from the heap, which never shrinks below its highest live
// block: resident memory grows by the churn, not by what is live. Fixing the threshold turns
// the dynamic adjustment off.
//
// The receiver wants the opposite for its frames: each received change set comes in a fresh
// multi-megabyte buffer, and one mapped per frame costs a page fault per 4 KiB and an munmap.
// It pins the threshold above its frames and keeps a trim threshold large enough that their
// memory stays for the next ones.
#include <errno.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "args.h"
#include "errors.h"
#include "register.h"

namespace ferry {

namespace {

// One mallopt parameter, set from argument 0 (bytes) when it lies in [min, max]. Returns true
// once set, false where the C library is not glibc (nothing changed).
struct MallocParam {
  int param;
  const char* call;
  int64_t min;
  int64_t max;
  const char* range;
};

#if !defined(__GLIBC__)
#define M_MMAP_THRESHOLD 0
#define M_TRIM_THRESHOLD 0
#endif

constexpr MallocParam kMmapThreshold = {M_MMAP_THRESHOLD, "mallopt(M_MMAP_THRESHOLD)", 4096, 32 * 1024 * 1024, "bytes must be from 4096 to 32 MiB"};
constexpr MallocParam kTrimThreshold = {M_TRIM_THRESHOLD, "mallopt(M_TRIM_THRESHOLD)", 128 * 1024, 1024 * 1024 * 1024, "bytes must be from 128 KiB to 1 GiB"};

Napi::Value SetMallocParam(const Napi::CallbackInfo& info, const MallocParam& p) {
  Napi::Env env = info.Env();
  int64_t bytes;
  if (!ReadOffset(info, 0, "bytes", &bytes)) return env.Undefined();
  if (bytes < p.min || bytes > p.max) {
    ThrowRangeError(env, p.range);
    return env.Undefined();
  }
#if defined(__GLIBC__)
  if (mallopt(p.param, static_cast<int>(bytes)) != 1) {
    ThrowErrno(env, EINVAL, "mallopt", p.call);
    return env.Undefined();
  }
  return Napi::Boolean::New(env, true);
#else
  return Napi::Boolean::New(env, false);
#endif
}

Napi::Value PinMmapThreshold(const Napi::CallbackInfo& info) {
  return SetMallocParam(info, kMmapThreshold);
}

Napi::Value PinTrimThreshold(const Napi::CallbackInfo& info) {
  return SetMallocParam(info, kTrimThreshold);
}

}  // namespace

void RegisterMallocTune(Napi::Env env, Napi::Object exports) {
  exports.Set("pinMmapThreshold", Napi::Function::New(env, PinMmapThreshold, "pinMmapThreshold"));
  exports.Set("pinTrimThreshold", Napi::Function::New(env, PinTrimThreshold, "pinTrimThreshold"));
}

}  // namespace ferry
