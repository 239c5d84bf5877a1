// flock(2) advisory whole-file locks.
#include <errno.h>
#include <sys/file.h>

#include "args.h"
#include "errors.h"
#include "register.h"

namespace ferry {

namespace {

struct LockMode {
  const char* name;
  int operation;
  const char* label;
};

constexpr LockMode kModes[] = {
    {"shared", LOCK_SH, "flock(LOCK_SH)"},
    {"exclusive", LOCK_EX, "flock(LOCK_EX)"},
    {"unlock", LOCK_UN, "flock(LOCK_UN)"},
};

// With wait=true this blocks the calling (JS) thread until the lock is
// granted, exactly like flock(2); use wait=false from the event loop.
Napi::Value Flock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  std::string mode_name;
  bool wait;
  if (!ReadFd(info, 0, "fd", &fd) || !ReadString(info, 1, "mode", &mode_name) ||
      !ReadBool(info, 2, "wait", &wait)) {
    return env.Undefined();
  }
  const LockMode* mode = nullptr;
  for (const LockMode& candidate : kModes) {
    if (mode_name == candidate.name) mode = &candidate;
  }
  if (mode == nullptr) {
    ThrowTypeError(env,
                   "The \"mode\" argument must be 'shared', 'exclusive' or "
                   "'unlock', received '" + mode_name + "'",
                   "ERR_INVALID_ARG_VALUE");
    return env.Undefined();
  }
  int operation = mode->operation | (wait ? 0 : LOCK_NB);
  int rc;
  do {
    rc = flock(fd, operation);
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) return Napi::Boolean::New(env, true);
  if (errno == EWOULDBLOCK && !wait) return Napi::Boolean::New(env, false);
  ThrowErrno(env, errno, "flock", mode->label);
  return env.Undefined();
}

}  // namespace

void RegisterFlock(Napi::Env env, Napi::Object exports) {
  exports.Set("flock", Napi::Function::New(env, Flock, "flock"));
}

}  // namespace ferry
