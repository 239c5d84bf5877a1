// Size queries that work on both block devices and regular (image) files.
#include <errno.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <cstdint>

#include "args.h"
#include "errors.h"
#include "register.h"

namespace ferry {

namespace {

// Leaves a pending JS error and returns false unless fd is a block device or
// a regular file.
bool StatSupported(Napi::Env env, int fd, const char* fn, struct stat* st) {
  if (fstat(fd, st) != 0) {
    ThrowErrno(env, errno, "fstat", "fstat");
    return false;
  }
  if (S_ISBLK(st->st_mode) || S_ISREG(st->st_mode)) return true;
  CodeError(env, "EINVAL", EINVAL,
            std::string(fn) +
                ": fd must refer to a block device or a regular file")
      .ThrowAsJavaScriptException();
  return false;
}

Napi::Value DeviceSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  struct stat st;
  if (!ReadFd(info, 0, "fd", &fd) || !StatSupported(env, fd, "deviceSize", &st)) {
    return env.Undefined();
  }
  if (S_ISREG(st.st_mode)) {
    return Napi::Number::New(env, static_cast<double>(st.st_size));
  }
  uint64_t size;
  if (ioctl(fd, BLKGETSIZE64, &size) != 0) {
    ThrowErrno(env, errno, "ioctl", "ioctl(BLKGETSIZE64)");
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(size));
}

Napi::Value LogicalBlockSize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  struct stat st;
  if (!ReadFd(info, 0, "fd", &fd) ||
      !StatSupported(env, fd, "logicalBlockSize", &st)) {
    return env.Undefined();
  }
  if (S_ISREG(st.st_mode)) return Napi::Number::New(env, 512);
  int size;
  if (ioctl(fd, BLKSSZGET, &size) != 0) {
    ThrowErrno(env, errno, "ioctl", "ioctl(BLKSSZGET)");
    return env.Undefined();
  }
  return Napi::Number::New(env, size);
}

}  // namespace

void RegisterDevice(Napi::Env env, Napi::Object exports) {
  exports.Set("deviceSize", Napi::Function::New(env, DeviceSize, "deviceSize"));
  exports.Set("logicalBlockSize",
              Napi::Function::New(env, LogicalBlockSize, "logicalBlockSize"));
}

}  // namespace ferry
